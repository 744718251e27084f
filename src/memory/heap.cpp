// hakobu — the shared heap of a domain (see heap.hpp for the rules).
#include "memory/heap.hpp"

#include <cstdio>
#include <vector>

#include "platform/os.hpp"

namespace hakobu::detail {
namespace {

constexpr std::uint64_t kChunkBytes = std::uint64_t{64} * 1024;    // small classes are carved this many bytes at a time
constexpr std::uint64_t kTrimMinBytes = std::uint64_t{64} * 1024;  // blocks this large may have their pages returned
constexpr std::uint64_t kPrefaultMinBytes = 1 << 20;               // fresh blocks this large are prefaulted in one call

constexpr std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) noexcept {
  return (value + alignment - 1) & ~(alignment - 1);
}

}  // namespace

std::string format_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  auto value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(units)) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    (void)std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    (void)std::snprintf(text, sizeof text, "%.1f %s", value, units[unit]);
  }
  return text;
}

void Heap::bind(RegistryHeader* registry, std::byte* base, int fd, std::uint64_t capacity) noexcept {
  registry_ = registry;
  base_ = base;
  fd_ = fd;
  capacity_ = capacity;
  known_file_size_.store(0, std::memory_order_relaxed);
}

bool Heap::inside_file(std::uint64_t end) noexcept {
  if (end <= known_file_size_.load(std::memory_order_relaxed)) return true;
  auto info = platform::file_info(fd_);
  if (!info) return false;
  std::uint64_t known = known_file_size_.load(std::memory_order_relaxed);
  while (info->size > known && !known_file_size_.compare_exchange_weak(known, info->size)) {
  }
  return end <= info->size;
}

bool Heap::check_block(std::uint64_t block, std::uint64_t payload_bytes) noexcept {
  if (block < kHeapStart || block % 64 != 0 || block >= capacity_ || capacity_ - block < kBlockHeaderBytes) {
    return false;
  }
  if (!inside_file(block + kBlockHeaderBytes)) return false;
  const BlockHeader* h = header(block);
  const std::uint32_t magic = h->magic;
  const unsigned size_class = h->size_class;
  if (magic != kBlockMagic || size_class >= kSizeClassCount) return false;
  const std::uint64_t bytes = class_bytes(size_class);
  if (bytes > capacity_ - block || payload_bytes > bytes - kBlockHeaderBytes) return false;
  return inside_file(block + kBlockHeaderBytes + payload_bytes);
}

std::string out_of_memory_message(std::uint64_t asked, const std::string& cause) {
  std::string text = "shared memory is full: asked for " + format_bytes(asked);
  if (auto space = platform::space_info(std::string(platform::shm_directory()))) {
    text += ", " + format_bytes(space->free) + " free of " + format_bytes(space->total) + " in " +
            std::string(platform::shm_directory());
  }
  text += " (" + cause +
          "). Release received messages or loans, run `hakobu gc` to reclaim what dead "
          "processes held, or enlarge /dev/shm (mount -o remount,size=N /dev/shm).";
  return text;
}

Result<void, LoanError> Heap::back_range(std::uint64_t offset, std::uint64_t length, std::uint64_t asked) {
  // Refuse at once what cannot fit: fallocate would fill /dev/shm first and undo.
  if (auto space = platform::space_info(std::string(platform::shm_directory()));
      space && length > space->free + registry_->cached_bytes.load(std::memory_order_relaxed)) {
    return {LoanError::OutOfMemory, out_of_memory_message(asked, "not enough free space")};
  }
  auto backed = platform::allocate(fd_, offset, length);
  if (!backed && backed.error().code == ENOSPC) {
    trim_cache();  // cached free blocks may be what fills /dev/shm
    backed = platform::allocate(fd_, offset, length);
  }
  if (!backed) {
    if (backed.error().code == ENOSPC)
      return {LoanError::OutOfMemory, out_of_memory_message(asked, backed.error().message)};
    return {LoanError::OutOfMemory, backed.error().message};
  }
  if (length >= kPrefaultMinBytes) platform::prefault_write(base_ + offset, length);
  return {};
}

Result<void, LoanError> Heap::ensure_backed(std::uint64_t block, std::uint64_t bytes) {
  BlockHeader* h = header(block);
  const std::uint64_t backed = h->backed_bytes.load(std::memory_order_relaxed);
  if (backed >= bytes) return {};
  const std::uint64_t target = align_up(bytes, platform::page_size());
  if (auto r = back_range(block + backed, target - backed, bytes); !r) return r;
  h->backed_bytes.store(target, std::memory_order_relaxed);
  return {};
}

Result<std::uint64_t, LoanError> Heap::allocate(std::uint64_t payload_bytes) {
  if (payload_bytes > capacity_ - kHeapStart - kBlockHeaderBytes) {
    return {LoanError::TooLarge, "a message of " + format_bytes(payload_bytes) + " does not fit the domain heap of " +
                                     format_bytes(capacity_)};
  }
  const std::uint64_t total = payload_bytes + kBlockHeaderBytes;
  const unsigned size_class = class_for(total);
  std::uint64_t block = 0;
  if (!pop(size_class, block)) return carve(size_class, payload_bytes);

  BlockHeader* h = header(block);
  registry_->cached_bytes.fetch_sub(
      std::min(h->backed_bytes.load(std::memory_order_relaxed), registry_->cached_bytes.load()),
      std::memory_order_relaxed);
  if (auto r = ensure_backed(block, total); !r) {
    push_chain(size_class, block, block);
    return std::move(r).error();
  }
  h->payload_bytes.store(payload_bytes, std::memory_order_relaxed);
  h->refs.store(1, std::memory_order_release);
  registry_->live_blocks.fetch_add(1, std::memory_order_relaxed);
  registry_->live_bytes.fetch_add(class_bytes(size_class), std::memory_order_relaxed);
  return block;
}

Result<std::uint64_t, LoanError> Heap::carve(unsigned size_class, std::uint64_t payload_bytes) {
  const std::uint64_t bytes = class_bytes(size_class);
  const std::uint64_t count = bytes < kChunkBytes ? kChunkBytes / bytes : 1;
  const std::uint64_t chunk = count * bytes;
  const std::uint64_t alignment = block_alignment(bytes);
  const std::uint64_t total = payload_bytes + kBlockHeaderBytes;

  std::uint64_t top = registry_->heap_top.load(std::memory_order_relaxed);
  std::uint64_t start = 0;
  do {
    start = align_up(std::max(top, kHeapStart), alignment);
    if (start > capacity_ || chunk > capacity_ - start) {
      return {LoanError::OutOfMemory, "the domain heap's address space of " + format_bytes(capacity_) +
                                          " is used up; asked for " + format_bytes(total) +
                                          ". Create the domain with a larger heap_capacity."};
    }
  } while (!registry_->heap_top.compare_exchange_weak(top, start + chunk, std::memory_order_relaxed));

  // A chunk of small blocks is backed whole; a large block only as far as asked.
  const std::uint64_t commit_bytes = count > 1 ? chunk : align_up(total, platform::page_size());
  if (auto r = back_range(start, commit_bytes, total); !r) return std::move(r).error();  // the range stays unused

  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint64_t block = start + i * bytes;
    BlockHeader* h = header(block);
    h->magic = kBlockMagic;
    h->size_class = static_cast<std::uint16_t>(size_class);
    h->refs.store(0, std::memory_order_relaxed);
    h->backed_bytes.store(count > 1 ? bytes : commit_bytes, std::memory_order_relaxed);
    h->payload_bytes.store(0, std::memory_order_relaxed);
    h->next_free.store(i + 1 < count ? pack_free(block + bytes, 0) : 0, std::memory_order_relaxed);
  }
  if (count > 1) {
    registry_->cached_bytes.fetch_add((count - 1) * bytes, std::memory_order_relaxed);
    push_chain(size_class, start + bytes, start + (count - 1) * bytes);
  }
  BlockHeader* h = header(start);
  h->payload_bytes.store(payload_bytes, std::memory_order_relaxed);
  h->refs.store(1, std::memory_order_release);
  registry_->live_blocks.fetch_add(1, std::memory_order_relaxed);
  registry_->live_bytes.fetch_add(bytes, std::memory_order_relaxed);
  return start;
}

bool Heap::pop(unsigned size_class, std::uint64_t& block) noexcept {
  auto& head = registry_->free_lists[size_class].head;
  std::uint64_t old = head.load(std::memory_order_acquire);
  for (;;) {
    const std::uint64_t offset = free_offset(old);
    if (offset == 0) return false;
    if (!check_block(offset, 0) || header(offset)->size_class != size_class) {
      // A corrupted list: abandon it (its blocks leak) rather than hand out garbage.
      head.compare_exchange_strong(old, 0, std::memory_order_acq_rel);
      return false;
    }
    const std::uint64_t next = header(offset)->next_free.load(std::memory_order_relaxed);
    const std::uint64_t desired = pack_free(free_offset(next), (free_tag(old) + 1) & 0xFFFFFF);
    if (head.compare_exchange_weak(old, desired, std::memory_order_acq_rel, std::memory_order_acquire)) {
      block = offset;
      return true;
    }
  }
}

void Heap::push_chain(unsigned size_class, std::uint64_t first, std::uint64_t last) noexcept {
  auto& head = registry_->free_lists[size_class].head;
  std::uint64_t old = head.load(std::memory_order_relaxed);
  do {
    header(last)->next_free.store(pack_free(free_offset(old), 0), std::memory_order_relaxed);
  } while (!head.compare_exchange_weak(old, pack_free(first, (free_tag(old) + 1) & 0xFFFFFF), std::memory_order_release,
                                       std::memory_order_relaxed));
}

void Heap::add_ref(std::uint64_t block) const noexcept {
  header(block)->refs.fetch_add(1, std::memory_order_relaxed);
}

bool Heap::drop_ref(std::uint64_t block) noexcept {
  BlockHeader* h = header(block);
  std::uint32_t refs = h->refs.load(std::memory_order_relaxed);
  do {
    if (refs == 0) return false;  // already free: a corrupted or doubled reference, ignored
  } while (!h->refs.compare_exchange_weak(refs, refs - 1, std::memory_order_acq_rel, std::memory_order_relaxed));
  if (refs != 1) return false;
  free_block(block);
  return true;
}

void Heap::free_block(std::uint64_t block) noexcept {
  BlockHeader* h = header(block);
  const unsigned size_class = h->size_class;
  const std::uint64_t bytes = class_bytes(size_class);
  registry_->live_blocks.fetch_sub(1, std::memory_order_relaxed);
  registry_->live_bytes.fetch_sub(bytes, std::memory_order_relaxed);
  std::uint64_t backed = h->backed_bytes.load(std::memory_order_relaxed);
  const std::uint64_t page = platform::page_size();
  if (bytes >= kTrimMinBytes && backed > page &&
      registry_->cached_bytes.load(std::memory_order_relaxed) + backed > registry_->cache_limit) {
    // Over the cache limit: give the pages back, keep the header page.
    if (platform::punch_hole(fd_, block + page, backed - page)) {
      backed = page;
      h->backed_bytes.store(backed, std::memory_order_relaxed);
    }
  }
  registry_->cached_bytes.fetch_add(backed, std::memory_order_relaxed);
  push_chain(size_class, block, block);
}

void Heap::trim_cache() noexcept {
  const std::uint64_t page = platform::page_size();
  for (unsigned size_class = 0; size_class < kSizeClassCount; ++size_class) {
    if (class_bytes(size_class) < kTrimMinBytes) continue;
    std::vector<std::uint64_t> blocks;
    std::uint64_t block = 0;
    while (pop(size_class, block)) blocks.push_back(block);
    for (const auto b : blocks) {
      BlockHeader* h = header(b);
      const std::uint64_t backed = h->backed_bytes.load(std::memory_order_relaxed);
      if (backed > page && platform::punch_hole(fd_, b + page, backed - page)) {
        h->backed_bytes.store(page, std::memory_order_relaxed);
        registry_->cached_bytes.fetch_sub(std::min(backed - page, registry_->cached_bytes.load()),
                                          std::memory_order_relaxed);
      }
      push_chain(size_class, b, b);
    }
  }
}

}  // namespace hakobu::detail
