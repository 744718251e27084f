// hakobu — a process's attachment to a domain.
//
// Process table rules
// -------------------
// * A process owns slot s of the table while it holds the exclusive OFD lock
//   on byte kSlotLockBase + s of the registry file. The kernel drops the lock
//   when the process dies, so "slot ACTIVE and its lock free" means "owner
//   dead". Whoever then takes the lock is the one reclaimer of that slot.
// * Every reference a process holds on a heap block (a loan or a sample) is an
//   entry in its holdings table, a heap block listed in its slot. Reclaiming a
//   dead process drops each reference it lists.
// * Ordering is chosen so that a process killed at any instruction can cause
//   a leak, never a double free: a reference is counted (refs++) before it is
//   listed, unlisted before it is dropped, and handed to a ring only after it
//   was unlisted.
// * Within a process the holdings table is guarded by `holdings_mutex_`.
// * Slot locks are open-file-description locks, shared by the threads of a
//   process (they use one registry descriptor): two threads would both "own"
//   a dead slot. `reclaim_mutex_` makes one thread at a time the reclaimer.
//
// Lifecycle: every attached process holds a shared lock on kLifecycleLockByte.
// A detaching process that can turn it exclusive is the last one; if no named
// object is left, it removes the domain's files. Attach and destroy serialize
// on the exclusive kInitLockByte.
//
// Leaving early (leave_all, at interpreter exit): the process table part of a
// detach (give back holdings, free the slot, last one out removes the files)
// runs while loans and samples still point at the state, and `left_` is set
// first. From then on every use of the holdings table (release, reserve, fill,
// clear) is a no-op or fails with Closed: that table's block went back to the
// heap with the slot. Mappings and descriptors stay until the destructor.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hakobu/domain.hpp"
#include "hakobu/error.hpp"
#include "hakobu/message.hpp"
#include "memory/heap.hpp"
#include "memory/layout.hpp"
#include "platform/os.hpp"

namespace hakobu::detail {

/// Who claimed a ring slot: process slot (10 bits) and its generation (20 bits).
inline constexpr std::uint32_t kTokenSlotBits = 10;
inline constexpr std::uint32_t kTokenGenerationMask = (1U << 20U) - 1;
static_assert(kMaxProcesses <= (1U << kTokenSlotBits), "a token names every process slot");
constexpr std::uint32_t make_token(std::uint32_t slot, std::uint32_t generation) noexcept {
  return (slot & ((1U << kTokenSlotBits) - 1)) | ((generation & kTokenGenerationMask) << kTokenSlotBits);
}

/// The OpenError for an errno value from opening or creating a file.
OpenError open_error_from_errno(int err) noexcept;

/// An OpenError carrying a failed system call's message.
template <class T>
Error<OpenError> to_open_error(const platform::SysResult<T>& failed) {
  return {open_error_from_errno(platform::value(failed.error().code)), failed.error().message};
}

/// Where a file of a domain lives: a shm object name, or a path (hugetlbfs).
struct DomainFile {
  std::string name;  ///< shm object name ("hakobu:D:registry") or absolute path
  bool shm = true;
  std::string what;  ///< for messages: "the registry of domain 'D'", "queue 'q'"
  [[nodiscard]] std::string path() const;
};

/// Opens a file of a domain. With `create`, makes it exclusively, mode 0600
/// whatever the umask. Otherwise the file is checked before any lock is taken
/// on it or any byte read from it: it must belong to this user and be closed
/// to every other user, or the error names its owner and the way out.
Result<int, OpenError> open_domain_file(const DomainFile& file, bool create);
/// Removes the file at `file` only if it is still the one `fd` has open (a
/// newer file of the same name is left alone).
void remove_if_same(const DomainFile& file, int fd) noexcept;

/// Closes `fd` in the child after a fork() (files whose locks say "alive").
void close_after_fork(int fd) noexcept;
/// No longer closes `fd` after a fork (call before closing it).
void keep_after_fork(int fd) noexcept;

/// Incremented in the child after every fork(): handles inherited across a
/// fork belong to the parent and must not free anything in the child.
std::uint32_t fork_epoch() noexcept;

class DomainState : public std::enable_shared_from_this<DomainState> {
 public:
  /// This process's attachment to the domain, creating the domain if needed.
  static Result<std::shared_ptr<DomainState>, OpenError> attach(const DomainOptions& options);
  /// Leaves every domain this process is attached to (Domain::leave_all_at_exit).
  static void leave_all() noexcept;
  ~DomainState();
  DomainState(const DomainState&) = delete;
  DomainState& operator=(const DomainState&) = delete;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] Heap& heap() noexcept { return heap_; }
  [[nodiscard]] RegistryHeader* registry() const noexcept { return registry_; }
  [[nodiscard]] std::uint32_t slot() const noexcept { return slot_; }
  [[nodiscard]] std::uint32_t token() const noexcept { return make_token(slot_, generation_); }
  [[nodiscard]] bool forked_away() const noexcept { return epoch_ != fork_epoch(); }
  /// The shm object name of one of this domain's files, e.g. "hakobu-D-q-NAME".
  [[nodiscard]] std::string file_name(std::string_view suffix) const;
  /// Named objects (queues, stores, sync objects) are built under a temporary
  /// name and published whole by link(). The temporary name, "new:NAME:NONCE",
  /// is unguessable: processes of other PID namespaces share /dev/shm and may
  /// have our pid; nobody may predict, take or remove it.
  [[nodiscard]] std::string temporary_file_name(std::string_view object_name) const;
  /// Publishes a built object: links `temporary` to `file` and removes the
  /// temporary name either way. AlreadyExists (another creator was first) says
  /// which object, `what` (e.g. "queue 'frames'").
  Result<void, OpenError> publish_file(const std::string& temporary, const std::string& file,
                                       std::string_view what) const;

  // --- references held by this process ---------------------------------------
  /// Reserves an entry in the holdings table (may grow it).
  Result<std::uint32_t, LoanError> reserve_holding();
  /// Lists `block` in a reserved entry.
  void fill_holding(std::uint32_t index, std::uint64_t block) noexcept;
  /// Empties a filled entry and returns it to the free ones.
  void clear_holding(std::uint32_t index) noexcept;
  /// Returns a reserved entry that was never filled.
  void unreserve_holding(std::uint32_t index) noexcept;
  /// Unlists and drops one reference (a loan or sample going away).
  void release(std::uint32_t index, std::uint64_t block) noexcept;

  /// Allocates a block and wraps it in a loan, with room for `attachments`.
  Result<Loan, LoanError> make_loan(std::uint64_t payload_bytes, MessageKind kind, std::size_t attachments = 0,
                                    const Placement& placement = {});
  /// Wraps a listed block in a sample.
  void fill_sample(Sample& sample, std::uint64_t block, std::byte* payload, std::uint32_t holding, std::uint64_t size,
                   MessageKind kind);

  // --- other processes ------------------------------------------------------
  /// False when the process that claimed with `token` has died.
  [[nodiscard]] bool token_alive(std::uint32_t token) noexcept;
  std::size_t collect_garbage();
  [[nodiscard]] DomainStats stats() const;

  // --- named objects -------------------------------------------------------
  void object_created() noexcept { registry_->named_objects.fetch_add(1, std::memory_order_relaxed); }
  void object_removed() noexcept;

 private:
  DomainState() = default;
  Result<void, OpenError> open_files(const DomainOptions& options);
  Result<void, OpenError> initialize(const DomainOptions& options);
  Result<void, OpenError> create_registry(const DomainOptions& options);
  Result<void, OpenError> open_registry();
  Error<OpenError> abandon(Error<OpenError> error);
  [[nodiscard]] bool nobody_attached() const noexcept;
  Result<void, OpenError> create_huge_segment(const DomainOptions& options);
  Result<void, OpenError> open_huge_segment();
  Result<void, OpenError> map_heap();
  Result<void, OpenError> map_page_map();
  [[nodiscard]] std::string huge_file_path() const;
  Result<void, OpenError> take_slot();
  void reclaim_slot(std::uint32_t slot) noexcept;
  /// The first `used` entries of a holdings table read from shared memory, checked.
  [[nodiscard]] std::span<std::atomic<std::uint64_t>> holdings_table(std::uint64_t table,
                                                                     std::uint64_t used) const noexcept;
  Result<void, LoanError> grow_holdings();
  void detach() noexcept;
  /// The process-table part of detach(); runs once (sets left_).
  void leave() noexcept;
  [[nodiscard]] bool left() const noexcept { return left_.load(std::memory_order_acquire); }
  std::uint32_t count_queues_removing_leftovers() noexcept;

  std::string name_;
  int registry_fd_ = -1;
  int heap_fd_ = -1;
  RegistryHeader* registry_ = nullptr;
  void* page_map_ = nullptr;  // the registry file's page map (layout.hpp)
  std::uint64_t page_map_bytes_ = 0;
  std::byte* heap_base_ = nullptr;
  std::uint64_t heap_capacity_ = 0;
  int huge_fd_ = -1;             // the hugetlbfs segment's file, if any
  void* reservation_ = nullptr;  // address space holding both heap segments
  std::uint64_t reservation_bytes_ = 0;
  Heap heap_;
  std::uint32_t slot_ = 0;
  std::uint32_t generation_ = 0;
  bool has_slot_ = false;
  bool attached_ = false;  // holds the shared lifecycle lock
  std::uint32_t epoch_ = 0;

  std::mutex reclaim_mutex_;
  std::mutex holdings_mutex_;
  std::atomic<std::uint64_t>* holdings_ = nullptr;  // entries of the table block
  std::uint64_t holdings_capacity_ = 0;
  std::uint64_t holdings_used_ = 0;
  std::vector<std::uint32_t> free_holdings_;
  // One reserved entry kept aside, so that a get that finds an inline message
  // reserves and returns an entry without taking the mutex.
  std::atomic<std::int64_t> spare_holding_{-1};
  std::atomic<bool> left_{false};  // leave() ran: the holdings table is gone
};

/// The only friend of `Domain` (include/hakobu/domain.hpp): hands out public
/// handles on an attachment, for the library's own types (a queue's domain).
struct DomainAccess {
  [[nodiscard]] static Domain wrap(std::shared_ptr<DomainState> state) noexcept { return Domain(std::move(state)); }
};

}  // namespace hakobu::detail
