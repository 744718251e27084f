// hakobu — domains: the namespace every named object lives in.
//
// A domain is a process table plus a shared heap. Every process that opens a
// queue of the domain attaches to it once (later opens share the attachment)
// and holds a slot in its process table with a liveness token the kernel
// releases when the process dies. Any live process can then reclaim what a dead
// one held. There is no daemon: the domain's files appear with its first user
// and disappear when its last process detaches and no named object is left.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hakobu/error.hpp"
#include "hakobu/message.hpp"

namespace hakobu {

namespace detail {
class DomainState;
/// The library's one way to make a Domain handle on an attachment it already
/// holds (`Queue::domain()`); defined in src/domain/domain_state.hpp, which is
/// not installed. Not API.
struct DomainAccess;
}  // namespace detail

/// Whether a domain's large blocks live in reserved huge pages.
enum class HugePages : std::uint8_t {
  Auto,     ///< Use huge pages if a hugetlbfs mount and reserved pages exist.
  Never,    ///< Always /dev/shm (transparent huge pages are still requested).
  Require,  ///< Fail to create the domain if no huge pages can be used.
};

/// Settings a domain is created with (ignored when it already exists).
struct DomainOptions {
  /// Domain name; empty means `default_domain_name()`.
  std::string name;
  /// Virtual size of the shared heap. Memory is committed only when used.
  std::uint64_t heap_capacity = std::uint64_t{1} << 40;  // 1 TiB
  /// Freed blocks kept faulted-in for reuse, in bytes; beyond this their pages
  /// are returned to the system. 0 means a quarter of /dev/shm.
  std::uint64_t cache_limit = 0;
  /// Blocks of 2 MiB and more come from reserved huge pages (hugetlbfs) when
  /// the system has them (`echo N > /proc/sys/vm/nr_hugepages` and a hugetlbfs
  /// mount), falling back to /dev/shm when the pool runs dry.
  HugePages huge_pages = HugePages::Auto;
  /// The hugetlbfs mount to use; empty means the first one found.
  std::string hugetlbfs_directory;
  /// Reclaim what dead processes held when this process attaches (the first
  /// time). Tools that want to see dead processes first (`hakobu ls`, `gc`) turn
  /// it off and call Domain::collect_garbage themselves.
  bool collect_on_attach = true;
};

/// The default domain name: `$HAKOBU_DOMAIN` if set, else `u<uid>`.
[[nodiscard]] std::string default_domain_name();

/// Checks a domain or object name: 1–64 characters of [A-Za-z0-9._-], not
/// starting with '.' or '-'. Returns an explanation, or empty if valid.
[[nodiscard]] std::string validate_name(std::string_view name);

/// One process attached to a domain.
struct ProcessInfo {
  std::uint32_t slot = 0;
  std::int32_t pid = 0;
  bool alive = false;
  std::uint64_t held_blocks = 0;  ///< loans and samples it holds
};

/// Counters of a domain's shared heap.
struct DomainStats {
  std::uint64_t heap_capacity = 0;
  std::uint64_t heap_used = 0;       ///< bytes carved from the heap so far
  std::uint64_t live_bytes = 0;      ///< bytes of blocks held by messages, loans and samples
  std::uint64_t cached_bytes = 0;    ///< bytes of free blocks kept faulted-in
  std::uint64_t live_blocks = 0;     ///< blocks held by messages, loans and samples
  bool huge_pages = false;           ///< large blocks come from a hugetlbfs mount
  std::uint64_t huge_page_used = 0;  ///< bytes carved from huge pages so far
  std::uint32_t named_objects = 0;   ///< queues that exist in the domain
  std::vector<ProcessInfo> processes;
};

/// A handle on this process's attachment to a domain.
class Domain {
 public:
  /// Attaches to the domain, creating it if needed.
  static Result<Domain, OpenError> open(const DomainOptions& options = {});

  Domain(Domain&&) noexcept = default;
  Domain& operator=(Domain&&) noexcept = default;
  Domain(const Domain&) = delete;
  Domain& operator=(const Domain&) = delete;
  ~Domain();

  [[nodiscard]] const std::string& name() const noexcept;
  /// Reclaims what dead processes held (loans, unreleased samples). Returns the
  /// number of dead processes reclaimed.
  std::size_t collect_garbage();
  [[nodiscard]] DomainStats stats() const;
  /// The process-table slot of this process.
  [[nodiscard]] std::uint32_t process_slot() const noexcept;
  /// Lends `size` bytes of the domain's shared memory, to fill and then attach
  /// to messages of any queue of the domain without a copy (see Loan::attach).
  Result<Loan, LoanError> loan(std::size_t size, MessageKind kind = MessageKind::Bytes);
  /// The prefix of the names of every file of domain `name` in /dev/shm
  /// ("hakobu:NAME:"); queues are "hakobu:NAME:q:QUEUE".
  [[nodiscard]] static std::string file_prefix(std::string_view name);

  /// For language bindings at interpreter exit: this process leaves every
  /// domain it is attached to now, although loans and samples that the runtime
  /// will never free (e.g. held by a foreign library until exit) still refer
  /// to them. What the process holds is given back, its slot freed, and the
  /// last process out removes the domain's files as on a normal detach. The
  /// memory stays mapped, so leftover views read stale data, never fault;
  /// releasing a leftover loan or sample afterwards does nothing, and new loans
  /// fail with Closed. Call it only when no other thread uses hakobu.
  static void leave_all_at_exit() noexcept;

 private:
  friend struct detail::DomainAccess;
  explicit Domain(std::shared_ptr<detail::DomainState> state) noexcept : state_(std::move(state)) {}
  std::shared_ptr<detail::DomainState> state_;
};

}  // namespace hakobu
