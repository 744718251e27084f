// hakobu — the thin OS layer.
//
// Wraps system calls and nothing else: retries on EINTR, reports errno with the
// name of the object involved, makes no policy decisions. Everything above this
// file is written against these functions so another OS can follow (macOS:
// os_sync_wait_on_address and 31-character shm names; Windows: file mappings).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hakobu/error.hpp"

namespace hakobu::platform {

/// An errno value; the error message says what was being done ("open /dev/shm/x: ...").
enum class Errno : int {};
constexpr bool operator==(Errno a, int b) noexcept {
  return static_cast<int>(a) == b;
}
constexpr int value(Errno e) noexcept {
  return static_cast<int>(e);
}

template <class T>
using SysResult = Result<T, Errno>;

/// Formats "context: strerror(err)".
std::string describe(int err, std::string_view context);

// --- shared-memory files ----------------------------------------------------
/// Opens (creating with `mode` when `flags` has O_CREAT) the shm object `name`
/// (no leading slash). Always O_CLOEXEC.
SysResult<int> shm_open_file(const std::string& name, int flags, mode_t mode);
/// Removes the shm object `name`.
SysResult<void> shm_remove(const std::string& name);
/// Gives the shm object `from` the additional name `to`; fails with EEXIST if
/// `to` exists. Publishes a fully built object atomically.
SysResult<void> shm_link(const std::string& from, const std::string& to);
/// Names of the shm objects that start with `prefix`.
std::vector<std::string> shm_list(std::string_view prefix);
/// Names of the entries of `directory` that start with `prefix` (none if it
/// cannot be read).
std::vector<std::string> list_directory(const std::string& directory, std::string_view prefix);
/// Path of the directory shm objects live in ("/dev/shm").
std::string_view shm_directory() noexcept;

/// Opens a file by path (for heap files on a hugetlbfs mount). Always O_CLOEXEC.
SysResult<int> open_path(const std::string& path, int flags, mode_t mode);
SysResult<void> remove_path(const std::string& path);

/// Reserved huge pages of the default size.
struct HugePageInfo {
  std::uint64_t page_size = 0;
  std::uint64_t free_pages = 0;
};
/// The default huge-page size and how many are free in the reserved pool.
HugePageInfo huge_page_info();
/// True when `fd` is a file on a hugetlbfs file system.
bool on_hugetlbfs(int fd) noexcept;
/// A hugetlbfs mount point and the size of its pages (0: unknown).
struct HugetlbfsMountPoint {
  std::string path;
  std::uint64_t page_size = 0;
};
/// Every hugetlbfs mount point, of any page size.
std::vector<HugetlbfsMountPoint> hugetlbfs_mount_points();
/// Mount points of hugetlbfs file systems with the default huge-page size.
std::vector<std::string> hugetlbfs_mounts();

struct FileInfo {
  std::uint64_t size = 0;
  std::uint64_t allocated = 0;  ///< bytes actually backed by memory
  uid_t owner = 0;
  mode_t mode = 0;
  std::uint64_t links = 0;
  std::uint64_t inode = 0;
};
SysResult<FileInfo> file_info(int fd);
/// The same facts of the file at `path`, without opening it.
SysResult<FileInfo> path_info(const std::string& path);
/// Sets the permission bits (creation is subject to the umask; this is not).
SysResult<void> set_mode(int fd, mode_t mode);
SysResult<void> resize(int fd, std::uint64_t size);
/// Backs [offset, offset+length) with memory (extends the file if needed);
/// fails with ENOSPC instead of a later SIGBUS when memory is short.
SysResult<void> allocate(int fd, std::uint64_t offset, std::uint64_t length);
/// Returns the memory of [offset, offset+length) to the system, keeping the size.
SysResult<void> punch_hole(int fd, std::uint64_t offset, std::uint64_t length);
void close_fd(int fd) noexcept;

/// Free and total bytes of the filesystem holding `path`.
struct SpaceInfo {
  std::uint64_t free = 0;
  std::uint64_t total = 0;
};
SysResult<SpaceInfo> space_info(const std::string& path);

// --- mappings ---------------------------------------------------------------
/// Maps `length` bytes of `fd` from `offset` (page-aligned) shared, without reserving swap.
SysResult<void*> map_shared(int fd, std::uint64_t length, std::uint64_t offset = 0);
/// Reserves `length` bytes of address space (no access, no memory).
SysResult<void*> reserve_address_space(std::uint64_t length);
/// Maps `length` bytes of `fd` shared at `address`, inside a reservation.
SysResult<void> map_shared_at(void* address, int fd, std::uint64_t length);
void unmap(void* address, std::uint64_t length) noexcept;
/// Keeps the range out of children made by fork(): a mapping holds its open file,
/// and with it the file's locks, alive for as long as any process maps it.
void keep_from_children(void* address, std::uint64_t length) noexcept;
/// Asks for transparent huge pages on the range (a hint; ignored if unsupported).
void advise_huge_pages(void* address, std::uint64_t length) noexcept;
/// Faults the range in for writing in one call (a hint; ignored if unsupported).
void prefault_write(void* address, std::uint64_t length) noexcept;
std::size_t page_size() noexcept;

// --- byte-range locks ---------------------------------------------------------
// Open-file-description locks: owned by the open file, released by the kernel
// when the last descriptor of it closes, including when the process dies. They
// are hakobu's liveness tokens and lifecycle guards.
/// Takes a lock on one byte without waiting; false if another holder has it.
SysResult<bool> try_lock_byte(int fd, std::uint64_t offset, bool exclusive);
/// Takes a lock on one byte, waiting for it.
SysResult<void> lock_byte(int fd, std::uint64_t offset, bool exclusive);
void unlock_byte(int fd, std::uint64_t offset) noexcept;
/// True when an open file other than `fd`'s holds a lock on the byte.
SysResult<bool> byte_locked_by_other(int fd, std::uint64_t offset);

// --- futex ------------------------------------------------------------------
enum class WaitResult : std::uint8_t { Woken, ValueChanged, TimedOut, Interrupted };
/// Sleeps while `*word == expected`, until `deadline_ns` on the monotonic clock
/// (negative: no deadline). The word may be in memory shared between processes.
WaitResult futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                      std::int64_t deadline_ns) noexcept;
/// Wakes up to `count` sleepers on `word` in any process.
void futex_wake(const std::atomic<std::uint32_t>* word, int count) noexcept;

// --- datagram sockets in the abstract namespace (event-loop wake-ups) ------------
/// A non-blocking Unix datagram socket bound to the abstract name `name`
/// (no leading NUL; it vanishes with the last descriptor, so a dead process
/// leaves nothing behind). Always SOCK_CLOEXEC.
SysResult<int> bind_datagram_socket(std::string_view name);
/// An unbound non-blocking Unix datagram socket to send from. Always SOCK_CLOEXEC.
SysResult<int> datagram_socket();
/// Sends `size` bytes to the abstract name `name` through `fd` without
/// waiting. ECONNREFUSED: nobody is bound to the name; EAGAIN: its queue is full.
SysResult<void> send_datagram(int fd, std::string_view name, const void* data, std::size_t size) noexcept;
/// Receives one datagram without waiting: its size, or -1 when none is queued.
/// A datagram longer than `size` is cut to `size`.
SysResult<std::int64_t> receive_datagram(int fd, void* data, std::size_t size) noexcept;

// --- processes and time ---------------------------------------------------------
std::int64_t monotonic_ns() noexcept;
std::int32_t process_id() noexcept;
uid_t user_id() noexcept;
/// The login name of `uid`, or "uid N" when it has none.
std::string user_name(uid_t uid);
/// 64 bits from the kernel's random source (for names others must not guess).
std::uint64_t random_u64() noexcept;
/// A pause instruction for spin loops.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}
/// Gives the CPU to another runnable thread, if any (sched_yield).
void yield_cpu() noexcept;
/// Calls `prepare` before every fork() and `parent`/`child` after it.
void on_fork(void (*prepare)(), void (*parent)(), void (*child)()) noexcept;

}  // namespace hakobu::platform
