// hakobu — the shared heap of a domain (see heap.hpp for the rules).
#include "memory/heap.hpp"

#include <cstdio>
#include <vector>

#include "platform/os.hpp"
#include "support/kill_point.hpp"

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

void Heap::bind(RegistryHeader* registry, std::byte* base, HeapSegment shm, HeapSegment huge) noexcept {
  registry_ = registry;
  base_ = base;
  segments_[0] = shm;
  segments_[1] = huge;
  capacity_ = shm.capacity + huge.capacity;
  known_file_size_[0].store(0, std::memory_order_relaxed);
  known_file_size_[1].store(0, std::memory_order_relaxed);
}

bool Heap::inside_file(unsigned segment, std::uint64_t end) const noexcept {
  if (segments_[segment].huge) {
    // hugetlbfs sets a file's size to its mapping's on mmap, so the size says
    // nothing; what was carved (and so backed) is below the bump pointer.
    return end <= registry_->huge_top.load(std::memory_order_acquire);
  }
  const std::uint64_t file_end = end - segments_[segment].start;
  auto& known_size = known_file_size_[segment];
  if (file_end <= known_size.load(std::memory_order_relaxed)) return true;
  auto info = platform::file_info(segments_[segment].fd);
  if (!info) return false;
  std::uint64_t known = known_size.load(std::memory_order_relaxed);
  while (info->size > known && !known_size.compare_exchange_weak(known, info->size)) {
  }
  return file_end <= info->size;
}

bool Heap::check_block(std::uint64_t block, std::uint64_t payload_bytes) const noexcept {
  if (block < kHeapStart || block % 64 != 0 || block >= capacity_) return false;
  const unsigned segment = segment_of(block);
  const std::uint64_t segment_end = segments_[segment].start + segments_[segment].capacity;
  if (segment_end - block < kBlockHeaderBytes || !inside_file(segment, block + kBlockHeaderBytes)) return false;
  const BlockHeader* h = header(block);
  const std::uint32_t magic = h->magic;
  const unsigned size_class = h->size_class;
  if (magic != kBlockMagic || size_class >= kSizeClassCount) return false;
  const std::uint64_t bytes = class_bytes(size_class);
  if (bytes > segment_end - block || payload_bytes > bytes - kBlockHeaderBytes) return false;
  // Only what was backed may be read: on hugetlbfs, touching an unbacked page
  // is a SIGBUS once the pool is empty.
  if (kBlockHeaderBytes + payload_bytes > h->backed_bytes.load(std::memory_order_relaxed)) return false;
  return inside_file(segment, block + kBlockHeaderBytes + payload_bytes);
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
  const HeapSegment& segment = segments_[segment_of(offset)];
  const std::uint64_t file_offset = offset - segment.start;
  if (segment.huge) {
    // The pool of reserved huge pages is global and small: check it first, and
    // give back a partial allocation (the caller falls back to /dev/shm).
    const auto pool = platform::huge_page_info();
    if (length > pool.free_pages * pool.page_size) {
      return {LoanError::OutOfMemory, "the huge-page pool has " + format_bytes(pool.free_pages * pool.page_size) +
                                          " free, asked for " + format_bytes(length)};
    }
    if (auto backed = platform::allocate(segment.fd, file_offset, length); !backed) {
      (void)platform::punch_hole(segment.fd, file_offset, length);
      return {LoanError::OutOfMemory, backed.error().message};
    }
  } else {
    // Refuse at once what cannot fit: fallocate would fill /dev/shm first and undo.
    if (auto space = platform::space_info(std::string(platform::shm_directory()));
        space && length > space->free + registry_->cached_bytes.load(std::memory_order_relaxed)) {
      return {LoanError::OutOfMemory, out_of_memory_message(asked, "not enough free space")};
    }
    auto backed = platform::allocate(segment.fd, file_offset, length);
    if (!backed && backed.error().code == ENOSPC) {
      trim_cache();  // cached free blocks may be what fills /dev/shm
      backed = platform::allocate(segment.fd, file_offset, length);
    }
    if (!backed) {
      if (backed.error().code == ENOSPC) {
        return {LoanError::OutOfMemory, out_of_memory_message(asked, backed.error().message)};
      }
      return {LoanError::OutOfMemory, backed.error().message};
    }
  }
  if (length >= kPrefaultMinBytes) platform::prefault_write(base_ + offset, length);
  return {};
}

Result<void, LoanError> Heap::ensure_backed(std::uint64_t block, std::uint64_t bytes) {
  BlockHeader* h = header(block);
  const std::uint64_t backed = h->backed_bytes.load(std::memory_order_relaxed);
  if (backed >= bytes) return {};
  const std::uint64_t target = align_up(bytes, segments_[segment_of(block)].page);
  if (auto r = back_range(block + backed, target - backed, bytes); !r) return r;
  h->backed_bytes.store(target, std::memory_order_relaxed);
  return {};
}

Result<std::uint64_t, LoanError> Heap::allocate(std::uint64_t payload_bytes) {
  if (payload_bytes > segments_[0].capacity - kHeapStart - kBlockHeaderBytes) {
    return {LoanError::TooLarge, "a message of " + format_bytes(payload_bytes) + " does not fit the domain heap of " +
                                     format_bytes(segments_[0].capacity)};
  }
  const std::uint64_t total = payload_bytes + kBlockHeaderBytes;
  const unsigned size_class = class_for(total);
  std::uint64_t block = 0;
  if (pop(size_class, block)) {
    BlockHeader* h = header(block);
    registry_->cached_bytes.fetch_sub(
        std::min(h->backed_bytes.load(std::memory_order_relaxed), registry_->cached_bytes.load()),
        std::memory_order_relaxed);
    std::uint32_t free_refs = 0;
    if (!h->refs.compare_exchange_strong(free_refs, 1, std::memory_order_acq_rel)) {
      // A block on the free list that someone holds: the list is damaged.
      // Leave the block to its holder and carve a fresh one.
      return carve(size_class, payload_bytes);
    }
    if (ensure_backed(block, total)) {
      h->payload_bytes.store(payload_bytes, std::memory_order_relaxed);
      h->attachment_count = 0;
      h->attachment_table = 0;
      registry_->live_blocks.fetch_add(1, std::memory_order_relaxed);
      registry_->live_bytes.fetch_add(class_bytes(size_class), std::memory_order_relaxed);
      return block;
    }
    // Its pages were returned and cannot come back now (e.g. the huge-page pool
    // is empty): keep it for later and carve elsewhere.
    registry_->cached_bytes.fetch_add(h->backed_bytes.load(std::memory_order_relaxed), std::memory_order_relaxed);
    h->refs.store(0, std::memory_order_release);
    push_chain(size_class, block, block);
  }
  return carve(size_class, payload_bytes);
}

Result<std::uint64_t, LoanError> Heap::carve(unsigned size_class, std::uint64_t payload_bytes) {
  if (has_huge_pages() && class_bytes(size_class) >= segments_[1].page) {
    if (auto block = carve_in(1, size_class, payload_bytes)) return block;
  }
  return carve_in(0, size_class, payload_bytes);
}

Result<std::uint64_t, LoanError> Heap::carve_in(unsigned segment_index, unsigned size_class,
                                                std::uint64_t payload_bytes) {
  const HeapSegment& segment = segments_[segment_index];
  std::atomic<std::uint64_t>& top_word = segment_index == 0 ? registry_->heap_top : registry_->huge_top;
  const std::uint64_t bytes = class_bytes(size_class);
  const std::uint64_t count = bytes < kChunkBytes ? kChunkBytes / bytes : 1;
  const std::uint64_t chunk = count * bytes;
  const std::uint64_t alignment = std::max(block_alignment(bytes), std::min(segment.page, bytes));
  const std::uint64_t total = payload_bytes + kBlockHeaderBytes;
  const std::uint64_t lowest = segment_index == 0 ? kHeapStart : segment.start;
  const std::uint64_t end = segment.start + segment.capacity;

  std::uint64_t top = top_word.load(std::memory_order_relaxed);
  std::uint64_t start = 0;
  do {
    if (top > end) {  // from shared memory: a damaged top must not wrap around
      return {LoanError::OutOfMemory, "the domain heap is damaged (its top lies beyond its end)"};
    }
    start = align_up(std::max(top, lowest), alignment);
    if (start > end || chunk > end - start) {
      return {LoanError::OutOfMemory, "the domain heap's address space of " + format_bytes(segment.capacity) +
                                          " is used up; asked for " + format_bytes(total) +
                                          ". Create the domain with a larger heap_capacity."};
    }
  } while (!top_word.compare_exchange_weak(top, start + chunk, std::memory_order_relaxed));
  kill_point("carve.reserved");

  // A chunk of small blocks is backed whole; a large block only as far as asked.
  const std::uint64_t commit_bytes = count > 1 ? chunk : align_up(total, segment.page);
  if (auto r = back_range(start, commit_bytes, total); !r) {
    // Give the range back if nobody carved after it; else it stays an unused gap.
    std::uint64_t expected = start + chunk;
    top_word.compare_exchange_strong(expected, top, std::memory_order_relaxed);
    return std::move(r).error();
  }

  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint64_t block = start + i * bytes;
    BlockHeader* h = header(block);
    h->magic = kBlockMagic;
    h->size_class = static_cast<std::uint16_t>(size_class);
    h->refs.store(0, std::memory_order_relaxed);
    h->backed_bytes.store(count > 1 ? bytes : commit_bytes, std::memory_order_relaxed);
    h->payload_bytes.store(0, std::memory_order_relaxed);
    h->attachment_count = 0;
    h->attachment_table = 0;
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

bool Heap::add_ref(std::uint64_t block) noexcept {
  // Never from 0: a free block (a corrupt or stale offset) must not come back
  // to life, or it would be on a free list and held at the same time.
  std::atomic<std::uint32_t>& refs = header(block)->refs;
  std::uint32_t count = refs.load(std::memory_order_relaxed);
  do {
    if (count == 0 || count == UINT32_MAX) return false;
  } while (!refs.compare_exchange_weak(count, count + 1, std::memory_order_relaxed));
  return true;
}

std::span<std::atomic<std::uint64_t>> Heap::attachments(std::uint64_t block) noexcept {
  if (!check_block(block, 0)) return {};
  const BlockHeader* h = header(block);
  // Both come from shared memory: the table must lie inside the block, in
  // memory that is backed and inside the file (check_block), or reading it
  // could run past the end of the heap file.
  const std::uint64_t count = h->attachment_count;
  const std::uint64_t table = h->attachment_table;
  if (count == 0 || count > kMaxAttachments || table % 8 != 0 || table > kMaxHeapCapacity) return {};
  if (!check_block(block, table + count * sizeof(std::uint64_t))) return {};
  return {reinterpret_cast<std::atomic<std::uint64_t>*>(payload(block) + table), count};  // NOLINT
}

bool Heap::drop_ref(std::uint64_t block, unsigned depth) noexcept {
  BlockHeader* h = header(block);
  std::uint32_t refs = h->refs.load(std::memory_order_relaxed);
  do {
    if (refs == 0) return false;  // already free: a corrupted or doubled reference, ignored
  } while (!h->refs.compare_exchange_weak(refs, refs - 1, std::memory_order_acq_rel, std::memory_order_relaxed));
  if (refs != 1) return false;
  free_block(block, depth);
  return true;
}

void Heap::free_block(std::uint64_t block, unsigned depth) noexcept {
  BlockHeader* h = header(block);
  if (!check_block(block, 0)) return;  // damaged since it was checked: leak it rather than push garbage
  // Drop what it holds. Depth is bounded: a forwarded array attaches the block
  // holding the data, not the message it came in, so chains stay short; a
  // damaged chain deeper than this leaks instead of exhausting the stack.
  constexpr unsigned kMaxAttachmentDepth = 16;
  for (auto& entry : attachments(block)) {
    const std::uint64_t child = entry.exchange(0, std::memory_order_acq_rel);
    if (child != 0 && child != block && depth < kMaxAttachmentDepth && check_block(child, 0)) {
      drop_ref(child, depth + 1);
    }
  }
  h->attachment_count = 0;
  kill_point("free.detached");
  const unsigned size_class = h->size_class;
  const std::uint64_t bytes = class_bytes(size_class);
  registry_->live_blocks.fetch_sub(1, std::memory_order_relaxed);
  registry_->live_bytes.fetch_sub(bytes, std::memory_order_relaxed);
  std::uint64_t backed = h->backed_bytes.load(std::memory_order_relaxed);
  const HeapSegment& segment = segments_[segment_of(block)];
  const std::uint64_t page = segment.page;
  if (bytes >= kTrimMinBytes && backed > page &&
      registry_->cached_bytes.load(std::memory_order_relaxed) + backed > registry_->cache_limit) {
    // Over the cache limit: give the pages back, keep the header page.
    if (platform::punch_hole(segment.fd, block - segment.start + page, backed - page)) {
      backed = page;
      h->backed_bytes.store(backed, std::memory_order_relaxed);
    }
  }
  registry_->cached_bytes.fetch_add(backed, std::memory_order_relaxed);
  push_chain(size_class, block, block);
}

void Heap::trim_cache() noexcept {
  // Carved bytes bound how many blocks a free list can hold: a damaged list
  // with a cycle ends the walk instead of looping forever.
  const std::uint64_t carved = registry_->heap_top.load(std::memory_order_relaxed) +
                               (has_huge_pages() ? registry_->huge_top.load(std::memory_order_relaxed) -
                                                       std::min(registry_->huge_top.load(), segments_[1].start)
                                                 : 0);
  for (unsigned size_class = 0; size_class < kSizeClassCount; ++size_class) {
    if (class_bytes(size_class) < kTrimMinBytes) continue;
    std::vector<std::uint64_t> blocks;
    std::uint64_t block = 0;
    const std::uint64_t most = carved / class_bytes(size_class) + 1;
    while (blocks.size() < most && pop(size_class, block)) blocks.push_back(block);
    for (const auto b : blocks) {
      BlockHeader* h = header(b);
      const HeapSegment& segment = segments_[segment_of(b)];
      const std::uint64_t page = segment.page;
      const std::uint64_t backed = h->backed_bytes.load(std::memory_order_relaxed);
      if (backed > page && platform::punch_hole(segment.fd, b - segment.start + page, backed - page)) {
        h->backed_bytes.store(page, std::memory_order_relaxed);
        registry_->cached_bytes.fetch_sub(std::min(backed - page, registry_->cached_bytes.load()),
                                          std::memory_order_relaxed);
      }
      push_chain(size_class, b, b);
    }
  }
}

}  // namespace hakobu::detail
