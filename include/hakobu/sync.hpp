// hakobu — named synchronization between independent programs: a robust lock
// and an event, opened by name from any process of the user's domain.
//
//   auto lock = hakobu::Lock::open("db").value();
//   if (auto got = lock.acquire(); got && *got == hakobu::Acquired::OwnerDied) {
//     // the previous holder died holding it: check what it protected
//   }
//   lock.release();
//
// Futex-based, no daemon, no system call when uncontended. A lock whose holder
// process dies is taken over by the next acquirer, which learns it
// (Acquired::OwnerDied). Rules and layout: src/sync/sync_layout.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "hakobu/domain.hpp"
#include "hakobu/error.hpp"
#include "hakobu/queue.hpp"

namespace hakobu {

namespace detail {
struct SyncState;
}  // namespace detail

/// Settings of a sync object's handle.
struct SyncOptions {
  DomainOptions domain{};
};

/// How a lock was acquired.
enum class Acquired : std::uint8_t {
  Clean,      ///< From a release (or never held).
  OwnerDied,  ///< Taken over from a holder process that died holding it: what it guarded may be half-changed.
};

/// Why acquiring a lock (any form) failed. The lock is not held by the caller.
enum class AcquireError : std::uint8_t {
  WouldBlock,  ///< `try_acquire`: another process (or thread of this one) holds it.
  Timeout,     ///< `acquire_for`: held by a living holder for the whole timeout.
  Forked,      ///< The handle was inherited across fork(): open the lock again in the child.
};

/// Why releasing a lock failed. The lock is left as it was.
enum class ReleaseError : std::uint8_t {
  NotHeld,   ///< The lock is free.
  NotOwner,  ///< Another process holds it (or took it over from this one, which had left the domain).
  Forked,    ///< The handle was inherited across fork(): the parent holds it, not the child.
};

std::string_view to_string(Acquired value) noexcept;
std::string_view to_string(AcquireError code) noexcept;
std::string_view to_string(ReleaseError code) noexcept;

/// What a lock's shared word says now (a snapshot, for people and tools).
struct LockInfo {
  bool held = false;
  bool waiters = false;  ///< someone may be asleep waiting for it
  bool held_by_this_process = false;
  std::uint32_t holder_slot = 0;   ///< the holder's process slot in the domain
  std::int32_t holder_pid = 0;     ///< as the holder wrote it (0: not yet or unknown)
  std::uint32_t owner_deaths = 0;  ///< times it was taken over from a dead holder
};

/// A mutual-exclusion lock named in a domain, held by a process.
/// Any thread of the holding process may release it (like threading.Lock);
/// a thread acquiring it again without releasing waits for itself.
class Lock {
 public:
  /// Opens the lock `name` ([A-Za-z0-9._-]); a new lock is free.
  /// Incompatible if `name` is another kind of sync object.
  static Result<Lock, OpenError> open(std::string_view name, OpenMode mode = OpenMode::CreateOrAttach,
                                      const SyncOptions& options = {});
  /// Removes the sync object `name` (whatever its kind) from `domain` (empty:
  /// the default). Open handles keep working on the removed object; a new open
  /// of the name makes a new one.
  static Result<void, UnlinkError> remove(std::string_view name, std::string_view domain = {});

  Lock(Lock&& other) noexcept;
  Lock& operator=(Lock&& other) noexcept;
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
  ~Lock();

  /// Takes the lock if it is free or its holder died; never sleeps.
  Result<Acquired, AcquireError> try_acquire() noexcept;
  /// Waits for the lock as long as it takes.
  Result<Acquired, AcquireError> acquire() noexcept;
  /// Waits for the lock at most `timeout` (0: like try_acquire).
  Result<Acquired, AcquireError> acquire_for(std::chrono::nanoseconds timeout) noexcept;
  /// Releases the lock held by this process and wakes one waiter.
  Result<void, ReleaseError> release() noexcept;

  [[nodiscard]] LockInfo info() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;

 private:
  Lock() = default;
  std::shared_ptr<detail::SyncState> state_;
};

/// An event named in a domain: a flag that programs set, clear and wait for.
/// It has no owner: any process (a forked child too) may set or clear it.
class Event {
 public:
  /// Opens the event `name` ([A-Za-z0-9._-]); a new event is clear.
  /// Incompatible if `name` is another kind of sync object.
  static Result<Event, OpenError> open(std::string_view name, OpenMode mode = OpenMode::CreateOrAttach,
                                       const SyncOptions& options = {});
  /// Removes the sync object `name` (see Lock::remove).
  static Result<void, UnlinkError> remove(std::string_view name, std::string_view domain = {});

  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

  /// Sets the flag and wakes every waiter, in every process.
  void set() noexcept;
  /// Clears the flag.
  void clear() noexcept;
  [[nodiscard]] bool is_set() const noexcept;
  /// Waits until the flag is set.
  void wait() noexcept;
  /// Waits at most `timeout` for the flag; true if it was set.
  [[nodiscard]] bool wait_for(std::chrono::nanoseconds timeout) noexcept;

  [[nodiscard]] const std::string& name() const noexcept;

 private:
  Event() = default;
  std::shared_ptr<detail::SyncState> state_;
};

}  // namespace hakobu
