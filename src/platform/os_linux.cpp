// hakobu — the thin OS layer, Linux.
#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>

#include "platform/os.hpp"

namespace hakobu::platform {
namespace {

template <class F>
auto retry_on_eintr(F&& call) {
  for (;;) {
    auto result = call();
    if (result != -1 || errno != EINTR) return result;
  }
}

std::string shm_path(const std::string& name) {
  return "/" + name;
}

struct flock one_byte(std::uint64_t offset, short type) {
  struct flock lock {};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = static_cast<off_t>(offset);
  lock.l_len = 1;
  lock.l_pid = 0;  // required for OFD locks
  return lock;
}

}  // namespace

std::string describe(int err, std::string_view context) {
  std::string out(context);
  out += ": ";
  out += std::strerror(err);  // NOLINT(concurrency-mt-unsafe): messages only
  return out;
}

SysResult<int> shm_open_file(const std::string& name, int flags, mode_t mode) {
  const int fd = retry_on_eintr([&] { return ::shm_open(shm_path(name).c_str(), flags | O_CLOEXEC, mode); });
  if (fd < 0) return {Errno{errno}, describe(errno, "open /dev/shm/" + name)};
  return fd;
}

SysResult<void> shm_remove(const std::string& name) {
  if (::shm_unlink(shm_path(name).c_str()) != 0) return {Errno{errno}, describe(errno, "remove /dev/shm/" + name)};
  return {};
}

SysResult<void> shm_link(const std::string& from, const std::string& to) {
  const std::string dir(shm_directory());
  if (::linkat(AT_FDCWD, (dir + "/" + from).c_str(), AT_FDCWD, (dir + "/" + to).c_str(), 0) != 0) {
    return {Errno{errno}, describe(errno, "link /dev/shm/" + to)};
  }
  return {};
}

std::vector<std::string> shm_list(std::string_view prefix) {
  return list_directory(std::string(shm_directory()), prefix);
}

std::vector<std::string> list_directory(const std::string& directory, std::string_view prefix) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return names;
  while (const dirent* entry = ::readdir(dir)) {  // NOLINT(concurrency-mt-unsafe): a private DIR stream
    const std::string_view name(entry->d_name);
    if (name.substr(0, prefix.size()) == prefix) names.emplace_back(name);
  }
  ::closedir(dir);
  return names;
}

std::string_view shm_directory() noexcept {
  return "/dev/shm";
}

SysResult<int> open_path(const std::string& path, int flags, mode_t mode) {
  const int fd = retry_on_eintr([&] { return ::open(path.c_str(), flags | O_CLOEXEC, mode); });
  if (fd < 0) return {Errno{errno}, describe(errno, "open " + path)};
  return fd;
}

SysResult<void> remove_path(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return {Errno{errno}, describe(errno, "remove " + path)};
  return {};
}

HugePageInfo huge_page_info() {
  HugePageInfo info;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::uint64_t value = 0;
  std::string unit;
  while (meminfo >> key >> value) {
    if (key == "HugePages_Free:") info.free_pages = value;
    if (key == "Hugepagesize:") {
      meminfo >> unit;  // "kB"
      info.page_size = value * 1024;
    }
    std::getline(meminfo, unit);
  }
  return info;
}

bool on_hugetlbfs(int fd) noexcept {
  constexpr long kHugetlbfsMagic = 0x958458f6;  // linux/magic.h HUGETLBFS_MAGIC
  struct statfs fs {};
  return ::fstatfs(fd, &fs) == 0 && static_cast<long>(fs.f_type) == kHugetlbfsMagic;
}

namespace {
// /proc/mounts writes a space, tab, newline or backslash in a path as a
// backslash and three octal digits.
std::string unescape_mount_path(std::string_view escaped) {
  std::string path;
  for (std::size_t i = 0; i < escaped.size(); ++i) {
    const auto octal = [&](std::size_t at) { return at < escaped.size() && escaped[at] >= '0' && escaped[at] <= '7'; };
    if (escaped[i] == '\\' && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      path += static_cast<char>(((escaped[i + 1] - '0') << 6) | ((escaped[i + 2] - '0') << 3) | (escaped[i + 3] - '0'));
      i += 3;
    } else {
      path += escaped[i];
    }
  }
  return path;
}

// The "pagesize=2M" mount option in bytes; `fallback` (the default size) when absent or unreadable.
std::uint64_t mount_page_size(std::string_view options, std::uint64_t fallback) {
  constexpr std::string_view kKey = "pagesize=";
  const auto at = options.find(kKey);
  if (at == std::string_view::npos) return fallback;
  std::uint64_t size = 0;
  std::size_t i = at + kKey.size();
  for (; i < options.size() && options[i] >= '0' && options[i] <= '9' && size < (std::uint64_t{1} << 40); ++i) {
    size = size * 10 + static_cast<std::uint64_t>(options[i] - '0');
  }
  const char unit = i < options.size() ? options[i] : ',';
  const int shift = unit == 'G' ? 30 : unit == 'M' ? 20 : unit == 'K' || unit == 'k' ? 10 : 0;
  return size == 0 ? fallback : size << shift;
}
}  // namespace

std::vector<HugetlbfsMountPoint> hugetlbfs_mount_points() {
  std::vector<HugetlbfsMountPoint> mounts;
  const std::uint64_t default_size = huge_page_info().page_size;
  std::ifstream table("/proc/mounts");
  std::string device;
  std::string mount_point;
  std::string type;
  std::string options;
  while (table >> device >> mount_point >> type >> options) {
    std::string rest;
    std::getline(table, rest);
    if (type != "hugetlbfs") continue;
    mounts.push_back({unescape_mount_path(mount_point), mount_page_size(options, default_size)});
  }
  return mounts;
}

std::vector<std::string> hugetlbfs_mounts() {
  std::vector<std::string> paths;
  const std::uint64_t default_size = huge_page_info().page_size;
  for (auto& mount : hugetlbfs_mount_points()) {
    if (default_size == 0 || mount.page_size == default_size) paths.push_back(std::move(mount.path));
  }
  return paths;
}

namespace {
FileInfo to_file_info(const struct stat& st) {
  FileInfo info;
  info.size = static_cast<std::uint64_t>(st.st_size);
  info.allocated = static_cast<std::uint64_t>(st.st_blocks) * 512U;
  info.owner = st.st_uid;
  info.mode = st.st_mode;
  info.links = st.st_nlink;
  info.inode = st.st_ino;
  return info;
}
}  // namespace

SysResult<FileInfo> file_info(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return {Errno{errno}, describe(errno, "fstat")};
  return to_file_info(st);
}

SysResult<FileInfo> path_info(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {Errno{errno}, describe(errno, "stat " + path)};
  return to_file_info(st);
}

SysResult<void> set_mode(int fd, mode_t mode) {
  if (::fchmod(fd, mode) != 0) return {Errno{errno}, describe(errno, "fchmod")};
  return {};
}

SysResult<void> resize(int fd, std::uint64_t size) {
  if (retry_on_eintr([&] { return ::ftruncate(fd, static_cast<off_t>(size)); }) != 0) {
    return {Errno{errno}, describe(errno, "ftruncate")};
  }
  return {};
}

SysResult<void> allocate(int fd, std::uint64_t offset, std::uint64_t length) {
  if (length == 0) return {};
  if (retry_on_eintr([&] { return ::fallocate(fd, 0, static_cast<off_t>(offset), static_cast<off_t>(length)); }) != 0) {
    return {Errno{errno}, describe(errno, "fallocate")};
  }
  return {};
}

SysResult<void> punch_hole(int fd, std::uint64_t offset, std::uint64_t length) {
  if (length == 0) return {};
  if (retry_on_eintr([&] {
        return ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                           static_cast<off_t>(length));
      }) != 0) {
    return {Errno{errno}, describe(errno, "fallocate(punch hole)")};
  }
  return {};
}

void close_fd(int fd) noexcept {
  if (fd >= 0) ::close(fd);  // never retried: Linux releases the fd even on EINTR
}

SysResult<SpaceInfo> space_info(const std::string& path) {
  struct statvfs vfs {};
  if (::statvfs(path.c_str(), &vfs) != 0) return {Errno{errno}, describe(errno, "statvfs " + path)};
  return SpaceInfo{static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize,
                   static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize};
}

SysResult<void*> map_shared(int fd, std::uint64_t length, std::uint64_t offset) {
  void* address =
      ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, static_cast<off_t>(offset));
  if (address == MAP_FAILED) return {Errno{errno}, describe(errno, "mmap")};
  return address;
}

SysResult<void*> reserve_address_space(std::uint64_t length) {
  void* address = ::mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (address == MAP_FAILED) return {Errno{errno}, describe(errno, "mmap (reserve)")};
  return address;
}

SysResult<void> map_shared_at(void* address, int fd, std::uint64_t length) {
  void* mapped = ::mmap(address, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd, 0);
  if (mapped == MAP_FAILED) return {Errno{errno}, describe(errno, "mmap (fixed)")};
  return {};
}

void unmap(void* address, std::uint64_t length) noexcept {
  if (address != nullptr) ::munmap(address, length);
}

void keep_from_children(void* address, std::uint64_t length) noexcept {
  ::madvise(address, length, MADV_DONTFORK);
}

void advise_huge_pages(void* address, std::uint64_t length) noexcept {
#ifdef MADV_HUGEPAGE
  ::madvise(address, length, MADV_HUGEPAGE);
#endif
}

void prefault_write(void* address, std::uint64_t length) noexcept {
#ifndef MADV_POPULATE_WRITE
  constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14
#endif
  ::madvise(address, length, MADV_POPULATE_WRITE);  // older kernels: EINVAL, pages fault on touch
}

std::size_t page_size() noexcept {
  static const auto size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

SysResult<bool> try_lock_byte(int fd, std::uint64_t offset, bool exclusive) {
  auto lock = one_byte(offset, exclusive ? F_WRLCK : F_RDLCK);
  if (retry_on_eintr([&] { return ::fcntl(fd, F_OFD_SETLK, &lock); }) == 0) return true;
  if (errno == EAGAIN || errno == EACCES) return false;
  return {Errno{errno}, describe(errno, "fcntl(F_OFD_SETLK)")};
}

SysResult<void> lock_byte(int fd, std::uint64_t offset, bool exclusive) {
  auto lock = one_byte(offset, exclusive ? F_WRLCK : F_RDLCK);
  if (retry_on_eintr([&] { return ::fcntl(fd, F_OFD_SETLKW, &lock); }) != 0) {
    return {Errno{errno}, describe(errno, "fcntl(F_OFD_SETLKW)")};
  }
  return {};
}

void unlock_byte(int fd, std::uint64_t offset) noexcept {
  auto lock = one_byte(offset, F_UNLCK);
  retry_on_eintr([&] { return ::fcntl(fd, F_OFD_SETLK, &lock); });
}

SysResult<bool> byte_locked_by_other(int fd, std::uint64_t offset) {
  auto lock = one_byte(offset, F_WRLCK);
  if (retry_on_eintr([&] { return ::fcntl(fd, F_OFD_GETLK, &lock); }) != 0) {
    return {Errno{errno}, describe(errno, "fcntl(F_OFD_GETLK)")};
  }
  return lock.l_type != F_UNLCK;
}

WaitResult futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                      std::int64_t deadline_ns) noexcept {
  static_assert(
      sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) && std::atomic<std::uint32_t>::is_always_lock_free,
      "a futex word must be a plain lock-free 32-bit word");
  struct timespec deadline {};
  struct timespec* deadline_ptr = nullptr;
  if (deadline_ns >= 0) {
    deadline.tv_sec = static_cast<time_t>(deadline_ns / 1'000'000'000);
    deadline.tv_nsec = static_cast<long>(deadline_ns % 1'000'000'000);
    deadline_ptr = &deadline;
  }
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a retry
  // after a signal does not stretch the total wait.
  const long rc =
      ::syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, deadline_ptr, nullptr, FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return WaitResult::Woken;
  switch (errno) {
    case EAGAIN: return WaitResult::ValueChanged;
    case ETIMEDOUT: return WaitResult::TimedOut;
    default: return WaitResult::Interrupted;
  }
}

void futex_wake(const std::atomic<std::uint32_t>* word, int count) noexcept {
  ::syscall(SYS_futex, word, FUTEX_WAKE, count, nullptr, nullptr, 0);
}

namespace {

/// The address of abstract name `name`; its length in `length` (0: too long).
sockaddr_un abstract_address(std::string_view name, socklen_t& length) noexcept {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  length = 0;
  if (name.size() + 1 > sizeof address.sun_path) return address;
  address.sun_path[0] = '\0';  // abstract: no file, gone with the socket
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return address;
}

}  // namespace

SysResult<int> bind_datagram_socket(std::string_view name) {
  socklen_t length = 0;
  const sockaddr_un address = abstract_address(name, length);
  if (length == 0) return {Errno{ENAMETOOLONG}, describe(ENAMETOOLONG, "socket name")};
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return {Errno{errno}, describe(errno, "socket(AF_UNIX, SOCK_DGRAM)")};
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0) {  // NOLINT
    const int err = errno;
    ::close(fd);
    return {Errno{err}, describe(err, "bind a wake-up socket")};
  }
  return fd;
}

SysResult<int> datagram_socket() {
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return {Errno{errno}, describe(errno, "socket(AF_UNIX, SOCK_DGRAM)")};
  return fd;
}

SysResult<void> send_datagram(int fd, std::string_view name, const void* data, std::size_t size) noexcept {
  socklen_t length = 0;
  const sockaddr_un address = abstract_address(name, length);
  if (length == 0) return {Errno{ENAMETOOLONG}};
  const ssize_t sent = retry_on_eintr([&] {
    return ::sendto(fd, data, size, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&address),  // NOLINT
                    length);
  });
  if (sent < 0) return {Errno{errno}};  // no message text: this runs on the put path
  return {};
}

SysResult<std::int64_t> receive_datagram(int fd, void* data, std::size_t size) noexcept {
  const ssize_t got = retry_on_eintr([&] { return ::recv(fd, data, size, MSG_DONTWAIT | MSG_TRUNC); });
  if (got >= 0) return static_cast<std::int64_t>(got);
  if (errno == EAGAIN || errno == EWOULDBLOCK) return std::int64_t{-1};
  return {Errno{errno}};
}

void yield_cpu() noexcept {
  ::sched_yield();
}

std::int64_t monotonic_ns() noexcept {
  struct timespec now {};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

std::int32_t process_id() noexcept {
  return static_cast<std::int32_t>(::getpid());
}
uid_t user_id() noexcept {
  return ::geteuid();
}

std::string user_name(uid_t uid) {
  struct passwd entry {};
  struct passwd* found = nullptr;
  char buffer[1024];
  if (::getpwuid_r(uid, &entry, buffer, sizeof buffer, &found) == 0 && found != nullptr) {
    return std::string(found->pw_name) + " (uid " + std::to_string(uid) + ")";
  }
  return "uid " + std::to_string(uid);
}

std::uint64_t random_u64() noexcept {
  std::uint64_t value = 0;
  auto* bytes = reinterpret_cast<unsigned char*>(&value);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
  std::size_t got = 0;
  while (got < sizeof value) {
    const ssize_t n = ::getrandom(bytes + got, sizeof value - got, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (errno != EINTR) {
      // No random source (very old kernels): mix the clock and pid instead.
      return static_cast<std::uint64_t>(monotonic_ns()) * 0x9E3779B97F4A7C15ULL ^
             static_cast<std::uint64_t>(::getpid());
    }
  }
  return value;
}

void on_fork(void (*prepare)(), void (*parent)(), void (*child)()) noexcept {
  ::pthread_atfork(prepare, parent, child);
}

}  // namespace hakobu::platform
