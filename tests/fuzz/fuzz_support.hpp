// hakobu fuzzing — helpers shared by the fuzz targets.
//
// Record format
// -------------
// The targets that corrupt live shared memory (fuzz_block, fuzz_registry_attach)
// read their input as records: an opcode byte, then a little-endian 64-bit
// value (missing bytes at the end of the input read as zero). Some opcodes take
// an extra index byte or two before the value. Opcodes are target-specific (see
// each target and README.md).
//
// A value whose top 16 bits are 0xB10C is a reference to a known block of the
// target's heap: bits 32..39 pick the block (modulo the number of known
// blocks) and the low 32 bits, as a signed number, are added to its offset.
// With top bits 0xF4EE the same offset is packed as a free-list link
// (offset / 64, tag 0). libFuzzer cannot guess heap offsets; this lets it point
// at real blocks (and near them) with a few bytes.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hakobu/queue.hpp"
#include "memory/layout.hpp"

namespace hakobu::fuzz {

/// Reads a fuzz input front to back; past its end, everything reads as zero.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) noexcept : data_(data), size_(size) {}
  [[nodiscard]] bool empty() const noexcept { return offset_ >= size_; }
  std::uint8_t u8() noexcept { return offset_ < size_ ? data_[offset_++] : 0; }
  std::uint16_t u16() noexcept {
    const auto low = u8();
    return static_cast<std::uint16_t>(low | (u8() << 8U));
  }
  std::uint64_t u64() noexcept {
    std::uint64_t value = 0;
    for (unsigned i = 0; i < 8; ++i) value |= std::uint64_t{u8()} << (8U * i);
    return value;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t offset_ = 0;
};

inline constexpr std::uint64_t kBlockRefTag = 0xB10CULL << 48U;
inline constexpr std::uint64_t kPackedRefTag = 0xF4EEULL << 48U;
inline constexpr std::uint64_t kTagMask = 0xFFFFULL << 48U;

/// A value that `resolve` turns into `blocks[index] + delta`.
constexpr std::uint64_t block_ref(unsigned index, std::int32_t delta = 0) noexcept {
  return kBlockRefTag | (std::uint64_t{index & 0xFFU} << 32U) | static_cast<std::uint32_t>(delta);
}
/// A value that `resolve` turns into the free-list link of `blocks[index] + delta`.
constexpr std::uint64_t packed_block_ref(unsigned index, std::int32_t delta = 0) noexcept {
  return kPackedRefTag | (block_ref(index, delta) & ~kTagMask);
}

/// Resolves a block reference (see the file comment); other values pass unchanged.
inline std::uint64_t resolve(std::uint64_t value, std::span<const std::uint64_t> blocks) noexcept {
  const std::uint64_t tag = value & kTagMask;
  if ((tag != kBlockRefTag && tag != kPackedRefTag) || blocks.empty()) return value;
  const std::uint64_t block = blocks[((value >> 32U) & 0xFFU) % blocks.size()];
  const auto delta = static_cast<std::int32_t>(static_cast<std::uint32_t>(value & 0xFFFF'FFFFULL));
  const std::uint64_t offset = block + static_cast<std::uint64_t>(static_cast<std::int64_t>(delta));
  return tag == kBlockRefTag ? offset : offset >> 6U;
}

/// Fields of a block that a record can overwrite (fuzz_block, fuzz_registry_attach).
enum class BlockField : std::uint8_t {
  Magic,
  SizeClass,
  Refs,
  AttachmentCount,
  NextFree,
  BackedBytes,
  PayloadBytes,
  AttachmentTable,
  PayloadWord,      ///< an extra u16 index follows the opcode: payload word [index]
  AttachmentEntry,  ///< an extra u8 index follows the opcode: attachment table entry [index]
  PayloadShift,     ///< the header's payload shift (layout 3)
  Count,
};

/// Writes `value` into `field` of the block whose header is at `block` in a heap
/// image of `heap_bytes` bytes at `base` (the live heap, or a copy). Writes that
/// would fall outside [block, block + limit) or the image are skipped: the
/// harness itself never writes out of bounds. `table` is where the block's
/// attachment table was before any corruption (payload offset).
inline void patch_block(std::byte* base, std::uint64_t heap_bytes, std::uint64_t block, std::uint64_t limit,
                        std::uint64_t table, BlockField field, std::uint64_t value, std::uint16_t index) noexcept {
  if (block > heap_bytes || limit > heap_bytes - block) return;
  std::byte* const start = base + block;
  const auto put = [&](std::uint64_t offset, const void* bytes, std::size_t size) {
    if (offset > limit || size > limit - offset) return;
    std::memcpy(start + offset, bytes, size);
  };
  const auto u16 = static_cast<std::uint16_t>(value);
  const auto u32 = static_cast<std::uint32_t>(value);
  switch (field) {
    case BlockField::Magic: put(offsetof(detail::BlockHeader, magic), &u32, 4); break;
    case BlockField::SizeClass: put(offsetof(detail::BlockHeader, size_class), &u16, 2); break;
    case BlockField::Refs: put(offsetof(detail::BlockHeader, refs), &u32, 4); break;
    case BlockField::AttachmentCount: put(offsetof(detail::BlockHeader, attachment_count), &u32, 4); break;
    case BlockField::NextFree: put(offsetof(detail::BlockHeader, next_free), &value, 8); break;
    case BlockField::BackedBytes: put(offsetof(detail::BlockHeader, backed_bytes), &value, 8); break;
    case BlockField::PayloadBytes: put(offsetof(detail::BlockHeader, payload_bytes), &value, 8); break;
    case BlockField::AttachmentTable: put(offsetof(detail::BlockHeader, attachment_table), &value, 8); break;
    case BlockField::PayloadWord: put(detail::kBlockHeaderBytes + std::uint64_t{index} * 8, &value, 8); break;
    case BlockField::AttachmentEntry:
      put(detail::kBlockHeaderBytes + table + std::uint64_t{index & 0xFFU} * 8, &value, 8);
      break;
    case BlockField::PayloadShift: put(offsetof(detail::BlockHeader, payload_shift), &u16, 2); break;
    case BlockField::Count: break;
  }
}

/// True when the comma-separated list in $HAKOBU_FUZZ_MASK names `what`. Off by
/// default; it lets an exploratory run look past a known, not yet fixed finding
/// (each target lists its mask names). CI runs never set it.
inline bool masked(std::string_view what) {
  const char* env = std::getenv("HAKOBU_FUZZ_MASK");  // NOLINT(concurrency-mt-unsafe): read-only
  if (env == nullptr) return false;
  std::string_view list(env);
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    if (list.substr(0, comma) == what) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

/// Reads a byte the way a consumer would, so a bad address faults here.
inline void touch(const std::byte* address) noexcept {
  (void)*static_cast<const volatile std::byte*>(address);  // a volatile read is never optimized away
}
inline void touch(std::span<const std::byte> bytes) noexcept {
  if (bytes.empty()) return;
  touch(bytes.data());
  touch(bytes.data() + bytes.size() - 1);
}

/// "fz<pid><suffix>": a domain of this process only.
inline std::string domain_name(std::string_view suffix) {
  return "fz" + std::to_string(::getpid()) + std::string(suffix);
}

inline std::string shm_path(const std::string& name) {
  return "/dev/shm/" + name;
}

/// Names of the /dev/shm files of domain `domain`.
inline std::vector<std::string> domain_files(const std::string& domain) {
  std::vector<std::string> names;
  const std::string prefix = "hakobu:" + domain + ":";
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return names;
  while (const dirent* entry = ::readdir(dir)) {  // NOLINT(concurrency-mt-unsafe): one thread
    const std::string_view name(entry->d_name);
    if (name.substr(0, prefix.size()) == prefix) names.emplace_back(name);
  }
  ::closedir(dir);
  return names;
}

/// Removes whatever an iteration left of domain `domain` in /dev/shm (a damaged
/// domain may not remove itself), so that a long run does not fill /dev/shm.
inline void remove_domain_files(const std::string& domain) {
  for (const auto& name : domain_files(domain)) ::unlink(shm_path(name).c_str());
}

/// The contents of /dev/shm/`name` (empty if it cannot be read).
inline std::vector<std::byte> read_file(const std::string& name) {
  std::vector<std::byte> out;
  const int fd = ::open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  struct stat info {};
  if (::fstat(fd, &info) == 0 && info.st_size > 0) {
    out.resize(static_cast<std::size_t>(info.st_size));
    std::size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    out.resize(done);
  }
  ::close(fd);
  return out;
}

/// Creates /dev/shm/`name` (mode 0600, owned by this user) holding `bytes`.
/// Aborts if it cannot: the harness is broken then, not the library.
inline void write_file(const std::string& name, std::span<const std::byte> bytes) {
  const int fd = ::open(shm_path(name).c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::perror(("fuzz harness: create " + shm_path(name)).c_str());
    std::abort();
  }
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n <= 0) {
      std::perror(("fuzz harness: write " + shm_path(name)).c_str());
      std::abort();
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

/// A shared mapping of a whole /dev/shm file, for writing into it behind the
/// library's back (as another process would).
class MappedFile {
 public:
  explicit MappedFile(const std::string& name) {
    fd_ = ::open(shm_path(name).c_str(), O_RDWR | O_CLOEXEC);
    if (fd_ < 0) return;
    struct stat info {};
    if (::fstat(fd_, &info) != 0 || info.st_size <= 0) return;
    size_ = static_cast<std::size_t>(info.st_size);
    void* mapped = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (mapped == MAP_FAILED) {
      size_ = 0;
      return;
    }
    data_ = static_cast<std::byte*>(mapped);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(data_, size_);
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  int fd_ = -1;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Open descriptors of this process.
/// Sockets are not counted: the process's socket for sending event-loop wake-ups
/// is made once, at the first signal to a watcher (a damaged queue header can
/// announce one), and kept for the process's life by design; the targets make
/// no socket of their own.
inline int count_fds() {
  int count = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (const dirent* entry = ::readdir(dir)) {  // NOLINT(concurrency-mt-unsafe): one thread
    if (entry->d_name[0] == '.') continue;
    std::array<char, 64> target{};
    const std::string link = std::string("/proc/self/fd/") + entry->d_name;
    const ssize_t n = ::readlink(link.c_str(), target.data(), target.size() - 1);
    if (n > 0 && std::string_view(target.data(), static_cast<std::size_t>(n)).starts_with("socket:")) continue;
    ++count;
  }
  ::closedir(dir);
  return count - 1;  // the directory stream's own descriptor
}

/// Mappings of files of domain `domain` in this process.
inline int count_mappings(const std::string& domain) {
  const std::string needle = "/dev/shm/hakobu:" + domain + ":";
  std::FILE* maps = std::fopen("/proc/self/maps", "r");
  if (maps == nullptr) return -1;
  int count = 0;
  char line[4096];
  while (std::fgets(line, sizeof line, maps) != nullptr) {
    if (std::strstr(line, needle.c_str()) != nullptr) ++count;
  }
  std::fclose(maps);
  return count;
}

/// Checks that an iteration gave back every descriptor and mapping it took and
/// left no file of its domain behind; aborts (a finding) otherwise. The files
/// are removed first either way, so one finding does not spoil the next runs.
class LeakCheck {
 public:
  explicit LeakCheck(std::string domain) : domain_(std::move(domain)), fds_(count_fds()) {
    remove_domain_files(domain_);  // left by an earlier run that crashed
  }
  LeakCheck(const LeakCheck&) = delete;
  LeakCheck& operator=(const LeakCheck&) = delete;
  ~LeakCheck() {
    const auto left = domain_files(domain_);
    remove_domain_files(domain_);
    const int fds = count_fds();
    const int mappings = count_mappings(domain_);
    if (fds != fds_ || mappings != 0) {
      std::fprintf(stderr, "fuzz harness: the iteration leaked %d descriptor(s) and %d mapping(s) of domain %s\n",
                   fds - fds_, mappings, domain_.c_str());
      std::abort();
    }
    // Files left behind are expected when the input damaged the domain (its
    // last user cannot tell it is empty); they were removed above.
    (void)left;
  }

 private:
  std::string domain_;
  int fds_;
};

/// Ends a run whose own setup failed (not a finding): says which target and why.
[[noreturn]] inline void harness_broken(const char* target, const std::string& what) {
  std::fprintf(stderr, "%s: harness setup failed: %s\n", target, what.c_str());
  std::abort();
}

/// Options of the small, fast domain every target works in (16 MiB heap, no huge pages).
inline hakobu::QueueOptions small_queue_options(const std::string& domain, std::size_t capacity) {
  hakobu::QueueOptions options;
  options.capacity = capacity;
  options.spin = std::chrono::nanoseconds(0);
  options.domain.name = domain;
  options.domain.heap_capacity = std::uint64_t{16} << 20;
  options.domain.cache_limit = std::uint64_t{256} << 10;
  options.domain.huge_pages = hakobu::HugePages::Never;
  return options;
}

}  // namespace hakobu::fuzz
