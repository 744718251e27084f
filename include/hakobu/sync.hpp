// hakobu — named synchronization between independent programs: locks (plain
// and recursive), events, semaphores (plain and bounded), barriers, conditions
// and shared integer values/arrays, opened by name from any process of the
// user's domain.
//
//   auto lock = hakobu::Lock::open("db").value();
//   if (auto got = lock.acquire(); got && *got == hakobu::Acquired::OwnerDied) {
//     // the previous holder died holding it: check what it protected
//   }
//   lock.release();
//
// Futex-based, no daemon, no system call when uncontended. A lock whose holder
// process dies is taken over by the next acquirer, which learns it
// (Acquired::OwnerDied); semaphore counts held by a dead process return; a
// party that dies at a barrier breaks it. Rules and layout:
// src/sync/sync_layout.hpp.
#pragma once

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "hakobu/array.hpp"
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
  WouldBlock,  ///< `try_acquire`: another process (or thread of this one) holds it; a semaphore has no count.
  Timeout,     ///< `acquire_for`: held by a living holder (a semaphore: no count) for the whole timeout.
  Forked,      ///< The handle was inherited across fork(): open the object again in the child.
  TooDeep,     ///< RLock: the owner thread's recursion count is at its limit (2^32 - 1).
};

/// Why releasing a lock failed. The lock is left as it was.
enum class ReleaseError : std::uint8_t {
  NotHeld,         ///< The lock is free.
  NotOwner,        ///< Another process holds it (or took it over from this one, which had left the domain).
  Forked,          ///< The handle was inherited across fork(): the parent holds it, not the child.
  NotOwnerThread,  ///< RLock: another thread of this process owns it (only the owner thread may release).
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
  friend class Condition;
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

/// A recursive lock named in a domain: owned by one thread of one process,
/// which may acquire it again (a count); only that thread releases it, once per
/// acquire (like threading.RLock). The owner process dying (any of its threads
/// holding it) hands it to the next acquirer with Acquired::OwnerDied.
class RLock {
 public:
  /// Opens the recursive lock `name`; a new one is free. Incompatible if
  /// `name` is another kind of sync object.
  static Result<RLock, OpenError> open(std::string_view name, OpenMode mode = OpenMode::CreateOrAttach,
                                       const SyncOptions& options = {});
  /// Removes the sync object `name` (see Lock::remove).
  static Result<void, UnlinkError> remove(std::string_view name, std::string_view domain = {});

  RLock(RLock&& other) noexcept;
  RLock& operator=(RLock&& other) noexcept;
  RLock(const RLock&) = delete;
  RLock& operator=(const RLock&) = delete;
  ~RLock();

  /// Takes the lock (or counts one more level if this thread owns it); never sleeps.
  Result<Acquired, AcquireError> try_acquire() noexcept;
  Result<Acquired, AcquireError> acquire() noexcept;
  Result<Acquired, AcquireError> acquire_for(std::chrono::nanoseconds timeout) noexcept;
  /// Drops one level; the last one frees the lock and wakes one waiter.
  /// NotOwnerThread when another thread of this process owns it.
  Result<void, ReleaseError> release() noexcept;

  /// The owner thread's recursion count (0 when this thread does not own it).
  [[nodiscard]] std::uint32_t depth() const noexcept;
  [[nodiscard]] LockInfo info() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;

 private:
  RLock() = default;
  std::shared_ptr<detail::SyncState> state_;
};

/// Why releasing a semaphore failed. Nothing was released.
enum class SemaphoreReleaseError : std::uint8_t {
  InvalidArgument,  ///< `n` is 0, or the count would pass 2^31 - 1.
  TooMany,          ///< BoundedSemaphore: the count would pass its initial value (ValueError in Python).
  Forked,           ///< The handle was inherited across fork(): open the semaphore again in the child.
};
std::string_view to_string(SemaphoreReleaseError code) noexcept;

/// What a semaphore's shared words say now (a snapshot, for people and tools).
struct SemaphoreInfo {
  std::uint32_t value = 0;  ///< counts free now
  std::uint32_t bound = 0;  ///< BoundedSemaphore: the initial value, the most it may hold; 0 for Semaphore
  bool waiters = false;     ///< someone may be asleep waiting for a count
  std::uint32_t held_by_this_process = 0;
  std::uint32_t holders = 0;       ///< process slots recorded as holding counts
  std::uint32_t returned = 0;      ///< counts given back from dead holders so far
  std::uint32_t maybe_leaked = 0;  ///< counts possibly lost by holders killed mid-operation (see sync_layout.hpp)
};

/// A counting semaphore named in a domain (threading.Semaphore). Every count a
/// process takes is recorded for its process slot until it releases it; when
/// the process dies, a waiter that finds no count returns the dead process's
/// counts (each exactly once). A release without a matching acquire (a
/// producer signalling a consumer) adds a count and is not recorded.
/// Note: a consumer that acquires counts it never releases holds them: when it
/// exits they come back (the semaphore is for resources, not messages).
class Semaphore {
 public:
  /// Opens the semaphore `name`; a new one starts at `value` (at most
  /// 2^31 - 1; ignored when attaching). Incompatible if `name` is another kind
  /// (a BoundedSemaphore too).
  static Result<Semaphore, OpenError> open(std::string_view name, std::uint32_t value = 1,
                                           OpenMode mode = OpenMode::CreateOrAttach, const SyncOptions& options = {});
  /// Removes the sync object `name` (see Lock::remove).
  static Result<void, UnlinkError> remove(std::string_view name, std::string_view domain = {});

  Semaphore(Semaphore&& other) noexcept;
  Semaphore& operator=(Semaphore&& other) noexcept;
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;
  ~Semaphore();

  /// Takes one count if there is one (returning dead holders' counts first if
  /// there is none); never sleeps. WouldBlock when none.
  Result<void, AcquireError> try_acquire() noexcept;
  Result<void, AcquireError> acquire() noexcept;
  Result<void, AcquireError> acquire_for(std::chrono::nanoseconds timeout) noexcept;
  /// Adds `n` counts and wakes up to `n` waiters.
  Result<void, SemaphoreReleaseError> release(std::uint32_t n = 1) noexcept;

  [[nodiscard]] SemaphoreInfo info() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;

 protected:
  Semaphore() = default;
  std::shared_ptr<detail::SyncState> state_;
};

/// A semaphore whose count may never pass its initial value
/// (threading.BoundedSemaphore): such a release fails with TooMany.
class BoundedSemaphore : public Semaphore {
 public:
  /// Opens the bounded semaphore `name`; a new one starts at `value`, its
  /// bound. Attaching checks `value` against the bound it was created with
  /// (Incompatible if they differ).
  static Result<BoundedSemaphore, OpenError> open(std::string_view name, std::uint32_t value = 1,
                                                  OpenMode mode = OpenMode::CreateOrAttach,
                                                  const SyncOptions& options = {});

 private:
  BoundedSemaphore() = default;
};

/// Why waiting at a barrier failed.
enum class BarrierError : std::uint8_t {
  Broken,   ///< The barrier is broken (abort(), reset() while waiting, a waiter's timeout, a dead party):
            ///< BrokenBarrierError in Python. It stays broken until reset().
  Timeout,  ///< This wait timed out; like threading, that breaks the barrier for every other waiter.
  Forked,   ///< The handle was inherited across fork(): open the barrier again in the child.
};
std::string_view to_string(BarrierError code) noexcept;

/// A barrier named in a domain (threading.Barrier): `parties` waits, in any
/// threads of any processes, release each other. A party that arrived and dies
/// before the barrier trips breaks it for the others (they get Broken rather
/// than hanging). A process that opened the barrier but dies before arriving
/// is not a party of anything yet (parties are anonymous): waiters then wait
/// for their timeout, which breaks the barrier.
class Barrier {
 public:
  /// Opens the barrier `name` for `parties` (1 to 65 535). Attaching checks
  /// `parties` against the barrier's (Incompatible if they differ).
  static Result<Barrier, OpenError> open(std::string_view name, std::uint32_t parties,
                                         OpenMode mode = OpenMode::CreateOrAttach, const SyncOptions& options = {});
  /// Removes the sync object `name` (see Lock::remove).
  static Result<void, UnlinkError> remove(std::string_view name, std::string_view domain = {});

  Barrier(Barrier&& other) noexcept;
  Barrier& operator=(Barrier&& other) noexcept;
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;
  ~Barrier();

  /// Waits for all parties; returns this party's arrival index (0 for the
  /// first to arrive, parties - 1 for the one that trips the barrier).
  Result<std::uint32_t, BarrierError> wait() noexcept;
  /// As wait(), at most `timeout`; a timeout breaks the barrier.
  Result<std::uint32_t, BarrierError> wait_for(std::chrono::nanoseconds timeout) noexcept;
  /// Breaks the barrier: current and future waiters get Broken until reset().
  void abort() noexcept;
  /// Back to empty and unbroken; parties waiting now get Broken.
  void reset() noexcept;

  [[nodiscard]] bool broken() const noexcept;
  [[nodiscard]] std::uint32_t parties() const noexcept;
  /// Parties waiting in the current generation (a snapshot).
  [[nodiscard]] std::uint32_t n_waiting() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;

 private:
  Barrier() = default;
  std::shared_ptr<detail::SyncState> state_;
};

/// Why a condition operation failed.
enum class ConditionError : std::uint8_t {
  NotHeld,      ///< wait/notify without holding the condition's lock (RuntimeError in Python).
  LockTimeout,  ///< wait_for: woken or timed out, but the lock stayed held by another until the
                ///< deadline: the lock is NOT held on return.
  Forked,       ///< The handle was inherited across fork(): open the condition again in the child.
};
std::string_view to_string(ConditionError code) noexcept;

/// How a condition wait ended. The lock is held again either way.
struct Wakeup {
  bool notified = false;            ///< false: the timeout passed first
  Acquired lock = Acquired::Clean;  ///< OwnerDied: the lock was re-taken from a holder that died
};

/// A condition variable named in a domain (threading.Condition), bound to a
/// lock: its own (in the condition's file) or a named Lock given at open.
/// Waiters may be woken without a notify (a notify can wake a waiter that was
/// only about to sleep): re-check the predicate, or use wait_until.
class Condition {
 public:
  /// Opens the condition `name` with a lock of its own.
  static Result<Condition, OpenError> open(std::string_view name, OpenMode mode = OpenMode::CreateOrAttach,
                                           const SyncOptions& options = {});
  /// Opens the condition `name` bound to `lock` (the handle is shared, not
  /// copied: the lock stays usable on its own). The file records the lock's
  /// name; attaching with another lock (or none) is Incompatible.
  static Result<Condition, OpenError> open(std::string_view name, const Lock& lock,
                                           OpenMode mode = OpenMode::CreateOrAttach, const SyncOptions& options = {});
  /// Removes the sync object `name` (see Lock::remove); a bound Lock stays.
  static Result<void, UnlinkError> remove(std::string_view name, std::string_view domain = {});

  Condition(Condition&& other) noexcept;
  Condition& operator=(Condition&& other) noexcept;
  Condition(const Condition&) = delete;
  Condition& operator=(const Condition&) = delete;
  ~Condition();

  /// The lock (as Lock's methods of the same names).
  Result<Acquired, AcquireError> acquire() noexcept;
  Result<Acquired, AcquireError> acquire_for(std::chrono::nanoseconds timeout) noexcept;
  Result<void, ReleaseError> release() noexcept;

  /// Releases the lock, sleeps until notified, then takes the lock again.
  Result<Wakeup, ConditionError> wait() noexcept;
  /// As wait(), sleeping at most `timeout`; the lock is re-taken by the same
  /// deadline (else LockTimeout, lock not held).
  Result<Wakeup, ConditionError> wait_for(std::chrono::nanoseconds timeout) noexcept;
  /// Waits until `predicate()` (called with the lock held) is true or the
  /// timeout passes (nanoseconds::max(): no limit); the Wakeup's `notified`
  /// says whether the predicate held.
  template <std::predicate P>
  Result<Wakeup, ConditionError> wait_until(P predicate, std::chrono::nanoseconds timeout) noexcept {
    using Clock = std::chrono::steady_clock;
    // Saturated: now() + a huge timeout would overflow.
    const auto start = Clock::now();
    const auto deadline = timeout >= Clock::time_point::max() - start ? Clock::time_point::max() : start + timeout;
    Wakeup out;
    while (!predicate()) {
      const auto left = deadline - Clock::now();
      if (left <= std::chrono::nanoseconds::zero()) return Wakeup{false, out.lock};
      auto woke = wait_for(std::chrono::duration_cast<std::chrono::nanoseconds>(left));
      if (!woke) return woke;
      if (woke->lock == Acquired::OwnerDied) out.lock = Acquired::OwnerDied;
    }
    out.notified = true;
    return out;
  }
  /// Wakes up to `n` waiters (the lock must be held by this process).
  Result<void, ConditionError> notify(std::uint32_t n = 1) noexcept;
  Result<void, ConditionError> notify_all() noexcept;

  [[nodiscard]] const std::string& name() const noexcept;

 private:
  Condition() = default;
  std::shared_ptr<detail::SyncState> state_;  // the condition's file
  std::shared_ptr<detail::SyncState> lock_;   // the lock's file (the same one for an own lock)
};

/// Why an element operation of a SharedArray failed.
enum class ValueError : std::uint8_t {
  TypeMismatch,  ///< The C++ type is not the array's dtype (or not an integer of 1, 2, 4 or 8 bytes for atomics).
  OutOfRange,    ///< The element index is past the array's end.
};
std::string_view to_string(ValueError code) noexcept;

/// Numbers named in a domain, like multiprocessing.Value and Array: a file
/// with a lock and the data bytes (dtype and shape fixed at creation, zeros
/// when new). Integer elements of 1, 2, 4 and 8 bytes have atomic load, store,
/// fetch_add and compare_exchange; anything else goes under the lock.
class SharedArray {
 public:
  /// Opens the array `name` of `dtype` and `shape` (C order; empty: one value).
  /// Attaching checks dtype and shape (Incompatible if they differ).
  /// InvalidArgument: a dtype of no whole bytes, negative extents, more than
  /// 64 dimensions or 2^40 bytes.
  static Result<SharedArray, OpenError> open(std::string_view name, DType dtype, std::span<const std::int64_t> shape,
                                             OpenMode mode = OpenMode::CreateOrAttach, const SyncOptions& options = {});
  /// Opens the single value `name` (multiprocessing.Value): created with
  /// `initial`'s bytes (dtype.itemsize() of them, or empty for zero); attaching
  /// leaves the value as it is.
  static Result<SharedArray, OpenError> open_value(std::string_view name, DType dtype,
                                                   std::span<const std::byte> initial = {},
                                                   OpenMode mode = OpenMode::CreateOrAttach,
                                                   const SyncOptions& options = {});
  /// Removes the sync object `name` (see Lock::remove).
  static Result<void, UnlinkError> remove(std::string_view name, std::string_view domain = {});

  SharedArray(SharedArray&& other) noexcept;
  SharedArray& operator=(SharedArray&& other) noexcept;
  SharedArray(const SharedArray&) = delete;
  SharedArray& operator=(const SharedArray&) = delete;
  ~SharedArray();

  /// The array's lock (get_lock() in Python), as Lock's methods of the same names.
  Result<Acquired, AcquireError> acquire() noexcept;
  Result<Acquired, AcquireError> acquire_for(std::chrono::nanoseconds timeout) noexcept;
  Result<void, ReleaseError> release() noexcept;

  [[nodiscard]] DType dtype() const noexcept;
  [[nodiscard]] std::span<const std::int64_t> shape() const noexcept;
  [[nodiscard]] std::size_t size() const noexcept;  ///< elements
  /// The data bytes (C order). Other processes write them too: read and
  /// write under the lock, or through the atomics below.
  [[nodiscard]] std::span<std::byte> bytes() const noexcept;

  template <std::integral T>
  Result<T, ValueError> load(std::size_t index) const noexcept {
    auto p = atomic_element<T>(index);
    if (!p) return std::move(p).error();
    return std::atomic_ref<T>(**p).load(std::memory_order_seq_cst);
  }
  template <std::integral T>
  Result<void, ValueError> store(std::size_t index, T value) noexcept {
    auto p = atomic_element<T>(index);
    if (!p) return std::move(p).error();
    std::atomic_ref<T>(**p).store(value, std::memory_order_seq_cst);
    return {};
  }
  /// Adds `delta` (wrapping, like NumPy integers); returns the value before.
  template <std::integral T>
  Result<T, ValueError> fetch_add(std::size_t index, T delta) noexcept {
    auto p = atomic_element<T>(index);
    if (!p) return std::move(p).error();
    return std::atomic_ref<T>(**p).fetch_add(delta, std::memory_order_seq_cst);
  }
  /// Stores `desired` if the element equals `expected`; true if it did, else
  /// false with `expected` set to the element's value.
  template <std::integral T>
  Result<bool, ValueError> compare_exchange(std::size_t index, T& expected, T desired) noexcept {
    auto p = atomic_element<T>(index);
    if (!p) return std::move(p).error();
    return std::atomic_ref<T>(**p).compare_exchange_strong(expected, desired, std::memory_order_seq_cst);
  }

  [[nodiscard]] const std::string& name() const noexcept;

 private:
  SharedArray() = default;
  /// The element `index` if the array's dtype is an integer type of `bytes`
  /// bytes and signedness `is_signed` (aligned for atomics by the layout).
  [[nodiscard]] Result<void*, ValueError> element(std::size_t index, std::size_t bytes, bool is_signed) const noexcept;
  template <class T>
  [[nodiscard]] Result<T*, ValueError> atomic_element(std::size_t index) const noexcept {
    static_assert(sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8,
                  "atomics on integers of 1, 2, 4 or 8 bytes");
    auto p = element(index, sizeof(T), std::is_signed_v<T> && !std::is_same_v<T, bool>);
    if (!p) return std::move(p).error();
    return static_cast<T*>(*p);
  }
  std::shared_ptr<detail::SyncState> state_;
};

}  // namespace hakobu
