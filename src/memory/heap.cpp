// hakobu — the shared heap of a domain (see heap.hpp for the rules).
#include "memory/heap.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

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

void Heap::bind(RegistryHeader* registry, std::byte* base, HeapSegment shm, HeapSegment huge, PageMap map) noexcept {
  registry_ = registry;
  base_ = base;
  segments_[0] = shm;
  segments_[1] = huge;
  capacity_ = shm.capacity + huge.capacity;
  map_ = map;
  known_file_size_[0].store(0, std::memory_order_relaxed);
  known_file_size_[1].store(0, std::memory_order_relaxed);
}

// --- the page map ---------------------------------------------------------------

bool Heap::inside_file(unsigned segment, std::uint64_t end) const noexcept {
  if (segments_[segment].huge) {
    // hugetlbfs sets a file's size to its mapping's on mmap, so the size says
    // nothing; what was carved is below the bump pointer.
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

template <class Visit>
bool Heap::for_page_bits(unsigned segment, std::uint64_t first, std::uint64_t last, Visit&& visit) const noexcept {
  std::atomic<std::uint64_t>* words = map_.words + (segment == 0 ? 0 : map_.segment_words[0]);
  for (std::uint64_t word = first / 64; word <= last / 64; ++word) {
    const std::uint64_t low = word == first / 64 ? first % 64 : 0;
    const std::uint64_t high = word == last / 64 ? last % 64 : 63;
    const std::uint64_t mask =
        (high == 63 ? ~std::uint64_t{0} : (std::uint64_t{1} << (high + 1)) - 1) & ~((std::uint64_t{1} << low) - 1);
    if (!visit(words[word], mask)) return false;
  }
  return true;
}

bool Heap::is_backed(std::uint64_t offset, std::uint64_t length) const noexcept {
  if (length == 0 || offset >= capacity_ || length > capacity_ - offset) return false;
  const unsigned segment = segment_of(offset);
  const HeapSegment& s = segments_[segment];
  if (offset + length > s.start + s.capacity) return false;
  const std::uint64_t first = (offset - s.start) / s.page;
  const std::uint64_t last = (offset + length - 1 - s.start) / s.page;
  // The words themselves are read only where they are backed (a count from
  // shared memory, bounded by the map's validated size).
  const std::uint64_t backed_words =
      std::min(registry_->page_map_backed[segment].load(std::memory_order_acquire) / 8, map_.segment_words[segment]);
  if (last / 64 >= backed_words) return false;
  // The bits are in shared memory too: a page beyond what the file holds is
  // never backed, whatever its bit says.
  if (!inside_file(segment, offset + length)) return false;
  // Acquire pairs with the release of set_page_bits (a plain load on x86).
  return for_page_bits(segment, first, last, [](const std::atomic<std::uint64_t>& word, std::uint64_t mask) {
    return (word.load(std::memory_order_acquire) & mask) == mask;
  });
}

Result<void, LoanError> Heap::back_map_words(unsigned segment, std::uint64_t word_end) {
  std::atomic<std::uint64_t>& backed = registry_->page_map_backed[segment];
  const std::uint64_t need = word_end * 8;
  std::uint64_t have = backed.load(std::memory_order_acquire);
  if (need <= have) return {};
  // Whole 64 KiB steps (each covers 2 GiB of 4 KiB pages), at most the map.
  constexpr std::uint64_t kStep = std::uint64_t{64} << 10;
  const std::uint64_t target = std::min((need + kStep - 1) / kStep * kStep, map_.segment_words[segment] * 8);
  const std::uint64_t start = map_.file_offset + (segment == 0 ? 0 : map_.segment_words[0] * 8);
  const std::uint64_t from = std::min(have, target);
  if (auto r = platform::allocate(map_.registry_fd, start + from, target - from); !r) {
    return {LoanError::OutOfMemory, out_of_memory_message(target - from, r.error().message)};
  }
  while (have < target && !backed.compare_exchange_weak(have, target, std::memory_order_acq_rel)) {
  }
  return {};
}

void Heap::set_page_bits(std::uint64_t offset, std::uint64_t length) noexcept {
  const unsigned segment = segment_of(offset);
  const HeapSegment& s = segments_[segment];
  const std::uint64_t first = (offset - s.start) / s.page;
  const std::uint64_t last = (offset + length - 1 - s.start) / s.page;
  (void)for_page_bits(segment, first, last, [](std::atomic<std::uint64_t>& word, std::uint64_t mask) {
    word.fetch_or(mask, std::memory_order_release);
    return true;
  });
}

bool Heap::return_pages(std::uint64_t offset, std::uint64_t length) noexcept {
  if (offset >= capacity_ || length > capacity_ - offset) return false;
  const unsigned segment = segment_of(offset);
  const HeapSegment& s = segments_[segment];
  if (offset + length > s.start + s.capacity) return false;
  // Only pages wholly inside the range are returned (a punch zeroes the rest).
  const std::uint64_t begin = offset - s.start;
  const std::uint64_t first = (begin + s.page - 1) / s.page;
  const std::uint64_t end_page = (begin + length) / s.page;
  if (end_page <= first) return false;
  (void)for_page_bits(segment, first, end_page - 1, [](std::atomic<std::uint64_t>& word, std::uint64_t mask) {
    word.fetch_and(~mask, std::memory_order_acq_rel);  // cleared before the hole exists
    return true;
  });
  return platform::punch_hole(s.fd, first * s.page, (end_page - first) * s.page).has_value();
}

// --- blocks ---------------------------------------------------------------------

std::byte* Heap::checked_payload(std::uint64_t block, std::uint64_t payload_bytes) const noexcept {
  if (block < kHeapStart || block % 64 != 0 || block >= capacity_) return nullptr;
  const unsigned segment = segment_of(block);
  const std::uint64_t segment_end = segments_[segment].start + segments_[segment].capacity;
  // The header is read only once the page map says its page is backed.
  if (segment_end - block < kBlockHeaderBytes || !is_backed(block, kBlockHeaderBytes)) return nullptr;
  const BlockHeader* h = header(block);
  const std::uint32_t magic = h->magic.load(std::memory_order_relaxed);
  const unsigned size_class = h->size_class.load(std::memory_order_relaxed);
  const std::uint64_t shift =
      h->payload_shift.load(std::memory_order_relaxed);  // read once: the address below is made of this value
  if (magic != kBlockMagic || size_class >= kSizeClassCount) return nullptr;
  if (shift > kMaxPayloadShift || shift % 64 != 0) return nullptr;
  const std::uint64_t bytes = class_bytes(size_class);
  const std::uint64_t start = kBlockHeaderBytes + shift;
  if (bytes > segment_end - block || start > bytes || payload_bytes > bytes - start) return nullptr;
  if (start + payload_bytes > h->backed_bytes.load(std::memory_order_relaxed)) return nullptr;
  if (payload_bytes != 0 && !is_backed(block + start, payload_bytes)) return nullptr;
  return base_ + block + start;
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
  const unsigned segment_index = segment_of(offset);
  const HeapSegment& segment = segments_[segment_index];
  const std::uint64_t file_offset = offset - segment.start;
  // The map's words first: pages are never backed without a bit to say so.
  if (auto r = back_map_words(segment_index, ((file_offset + length - 1) / segment.page) / 64 + 1); !r) return r;
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
  set_page_bits(offset, length);
  if (length >= kPrefaultMinBytes) platform::prefault_write(base_ + offset, length);
  return {};
}

std::uint64_t Heap::backed_bytes_of(std::uint64_t block) const noexcept {
  // A count from shared memory: never more than the block. Used for accounting
  // and for what to return; what is read or written is confirmed by the page map.
  const BlockHeader* h = header(block);
  const unsigned size_class = h->size_class.load(std::memory_order_relaxed);
  if (size_class >= kSizeClassCount) return 0;
  // A block owns up to its class's size rounded up to its segment's page (the next block starts there).
  const std::uint64_t owned = align_up(class_bytes(size_class), segments_[segment_of(block)].page);
  return std::min(h->backed_bytes.load(std::memory_order_relaxed), owned);
}

Result<void, LoanError> Heap::ensure_backed(std::uint64_t block, std::uint64_t bytes) {
  BlockHeader* h = header(block);
  // The block is about to be written: its header's figure counts only where the page map confirms it.
  const std::uint64_t claimed = backed_bytes_of(block);
  const std::uint64_t backed = claimed >= bytes && is_backed(block, bytes) ? claimed : 0;
  if (backed >= bytes) return {};
  const std::uint64_t target = align_up(bytes, segments_[segment_of(block)].page);
  if (auto r = back_range(block + backed, target - backed, bytes); !r) return r;
  h->backed_bytes.store(target, std::memory_order_relaxed);
  return {};
}

namespace {

CopyPlacement detect_copy_placement() noexcept {
  const char* forced = std::getenv("HAKOBU_PLACEMENT");  // NOLINT(concurrency-mt-unsafe): read once, see below
  if (forced != nullptr && std::strcmp(forced, "page") == 0) return CopyPlacement::PageStart;
  if (forced != nullptr && std::strcmp(forced, "away") == 0) return CopyPlacement::AwayFromAliasing;
#if defined(__x86_64__) || defined(__i386__)
  // 4K aliasing is what makes Intel cores slow (layout.hpp); "GenuineIntel" is
  // EBX, EDX, ECX of leaf 0.
  unsigned eax = 0;
  unsigned ebx = 0;
  unsigned ecx = 0;
  unsigned edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) != 0 && ebx == 0x756E'6547U && edx == 0x4965'6E69U &&
      ecx == 0x6C65'746EU) {
    return CopyPlacement::AwayFromAliasing;
  }
#endif
  return CopyPlacement::PageStart;
}

}  // namespace

CopyPlacement Heap::copy_placement() noexcept {
  static const CopyPlacement rule = detect_copy_placement();  // thread-safe, once per process
  return rule;
}

Result<std::uint64_t, LoanError> Heap::allocate(std::uint64_t payload_bytes) {
  return allocate_shifted(payload_bytes, 0, 0, 0);
}

Result<std::uint64_t, LoanError> Heap::allocate(std::uint64_t payload_bytes, const Placement& placement) {
  if (payload_bytes < kPlacedMinBytes) return allocate_shifted(payload_bytes, 0, 0, 0);
  // Blocks this large are page-aligned (block_alignment), so the shift is known
  // before the block is: the class is chosen with room for it.
  const std::uint64_t anchor = placement.anchor % kPlacementPage / 64 * 64;
  const std::uint64_t offset = placement_offset(reinterpret_cast<std::uintptr_t>(placement.source), copy_placement());
  return allocate_shifted(payload_bytes, payload_shift_for(0, anchor, offset), anchor, offset);
}

Result<std::uint64_t, LoanError> Heap::allocate_shifted(std::uint64_t payload_bytes, std::uint64_t shift,
                                                        std::uint64_t anchor, std::uint64_t offset) {
  if (payload_bytes > segments_[0].capacity - kHeapStart - kBlockHeaderBytes - shift) {
    return {LoanError::TooLarge, "a message of " + format_bytes(payload_bytes) + " does not fit the domain heap of " +
                                     format_bytes(segments_[0].capacity)};
  }
  // What the block must hold past its header, shift included.
  const std::uint64_t reserve = shift + payload_bytes;
  auto block = obtain(reserve);
  if (!block) return block;
  BlockHeader* h = header(*block);
  // Every block of a placed size is page-aligned; should one not be, its
  // payload follows the header (still correct, only not placed).
  const std::uint64_t actual = shift == 0 ? 0 : payload_shift_for(*block, anchor, offset);
  h->payload_shift.store(static_cast<std::uint16_t>(actual == shift ? shift : 0), std::memory_order_relaxed);
  h->payload_bytes.store(payload_bytes, std::memory_order_relaxed);
  return block;
}

Result<std::uint64_t, LoanError> Heap::obtain(std::uint64_t payload_bytes) {
  const std::uint64_t total = payload_bytes + kBlockHeaderBytes;
  const unsigned size_class = class_for(total);
  std::uint64_t block = 0;
  if (pop(size_class, block)) {
    BlockHeader* h = header(block);
    registry_->cached_bytes.fetch_sub(std::min(backed_bytes_of(block), registry_->cached_bytes.load()),
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
    registry_->cached_bytes.fetch_add(backed_bytes_of(block), std::memory_order_relaxed);
    h->refs.store(0, std::memory_order_release);
    push_chain(size_class, block, block);
  }
  if (auto returned = take_returned(size_class, payload_bytes)) return returned;
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
  // Whole pages: a block owns up to the next page boundary, where the next carve starts.
  const std::uint64_t chunk = align_up(count * bytes, segment.page);
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
    h->magic.store(kBlockMagic, std::memory_order_relaxed);
    h->size_class.store(static_cast<std::uint16_t>(size_class), std::memory_order_relaxed);
    h->payload_shift.store(0, std::memory_order_relaxed);
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
    if (!check_block(offset, 0) || header(offset)->size_class.load(std::memory_order_relaxed) != size_class) {
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

bool Heap::add_ref(std::uint64_t block) const noexcept {
  // Never from 0: a free block (a corrupt or stale offset) must not come back
  // to life, or it would be on a free list and held at the same time.
  std::atomic<std::uint32_t>& refs = header(block)->refs;
  std::uint32_t count = refs.load(std::memory_order_relaxed);
  do {
    if (count == 0 || count == UINT32_MAX) return false;
  } while (!refs.compare_exchange_weak(count, count + 1, std::memory_order_relaxed));
  return true;
}

std::span<std::atomic<std::uint64_t>> Heap::attachments(std::uint64_t block) const noexcept {
  if (!check_block(block, 0)) return {};
  const BlockHeader* h = header(block);
  // Both come from shared memory: the table must lie inside the block, in
  // memory that is backed and inside the file (check_block), or reading it
  // could run past the end of the heap file.
  const std::uint64_t count = h->attachment_count;
  const std::uint64_t table = h->attachment_table;
  if (count == 0 || count > kMaxAttachments || table % 8 != 0 || table > kMaxHeapCapacity) return {};
  std::byte* const data = checked_payload(block, table + count * sizeof(std::uint64_t));
  if (data == nullptr) return {};
  return {reinterpret_cast<std::atomic<std::uint64_t>*>(data + table), count};  // NOLINT
}

std::uint64_t Heap::attached_bytes(std::uint64_t block) const noexcept {
  const auto table = attachments(block);
  if (table.empty()) return 0;  // the put of a copied message: nothing more to do
  // Each block once: views of one array attached again and again keep one block alive.
  std::vector<std::uint64_t> children;
  for (const auto& entry : table) {
    const std::uint64_t child = entry.load(std::memory_order_relaxed);
    if (child == 0 || child == block) continue;
    try {
      children.push_back(child);
    } catch (const std::bad_alloc&) {
      break;  // no memory for the list: the blocks listed so far are counted
    }
  }
  std::sort(children.begin(), children.end());
  children.erase(std::unique(children.begin(), children.end()), children.end());
  std::uint64_t total = 0;  // at most kMaxAttachments blocks of at most kMaxHeapCapacity each: no overflow
  for (const std::uint64_t child : children) {
    if (!check_block(child, 0)) continue;
    const std::uint64_t bytes = header(child)->payload_bytes.load(std::memory_order_relaxed);
    if (check_block(child, bytes)) total += bytes;  // a size its block cannot hold counts nothing
  }
  return total;
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
  const unsigned size_class = h->size_class.load(std::memory_order_relaxed);
  const std::uint64_t bytes = class_bytes(size_class);
  registry_->live_blocks.fetch_sub(1, std::memory_order_relaxed);
  registry_->live_bytes.fetch_sub(bytes, std::memory_order_relaxed);
  std::uint64_t backed = backed_bytes_of(block);
  const HeapSegment& segment = segments_[segment_of(block)];
  const std::uint64_t page = segment.page;
  if (bytes >= kTrimMinBytes && backed > page &&
      registry_->cached_bytes.load(std::memory_order_relaxed) + backed > registry_->cache_limit) {
    if (return_whole(block, size_class, backed)) return;
    // Over the cache limit: give the pages back, keep the header page.
    if (return_pages(block + page, backed - page)) {
      backed = page;
      h->backed_bytes.store(backed, std::memory_order_relaxed);
    }
  }
  registry_->cached_bytes.fetch_add(backed, std::memory_order_relaxed);
  push_chain(size_class, block, block);
}

// A free huge-page block gives back every page, header included, and is
// remembered in the registry instead of on its free list. Pages go back before
// the block is listed: once listed, another process may take and use it.
bool Heap::return_whole(std::uint64_t block, unsigned size_class, std::uint64_t backed) noexcept {
  if (!on_huge_pages(block) || backed == 0) return false;
  std::atomic<std::uint64_t>* empty = nullptr;
  for (auto& entry : registry_->returned_huge) {
    if (entry.load(std::memory_order_relaxed) == 0) {
      empty = &entry;
      break;
    }
  }
  if (empty == nullptr) return false;  // no room to remember it: it keeps its header page
  if (!return_pages(block, backed)) return false;
  remember_returned(pack_returned(block, size_class));
  return true;
}

void Heap::remember_returned(std::uint64_t packed) noexcept {
  for (auto& entry : registry_->returned_huge) {
    std::uint64_t expected = 0;
    if (entry.compare_exchange_strong(expected, packed, std::memory_order_acq_rel)) return;
  }
  // The table filled meanwhile: the block's address range leaks, its memory does not.
}

// A remembered huge-page block of `size_class`, backed again and carved afresh.
Result<std::uint64_t, LoanError> Heap::take_returned(unsigned size_class, std::uint64_t payload_bytes) {
  if (!has_huge_pages() || class_bytes(size_class) < segments_[1].page) return {LoanError::OutOfMemory, {}};
  const std::uint64_t bytes = class_bytes(size_class);
  const std::uint64_t segment_end = segments_[1].start + segments_[1].capacity;
  for (auto& entry : registry_->returned_huge) {
    std::uint64_t packed = entry.load(std::memory_order_relaxed);
    if (packed == 0 || returned_class(packed) != size_class) continue;
    if (!entry.compare_exchange_strong(packed, 0, std::memory_order_acq_rel)) continue;
    // From shared memory: the block must lie in the huge-page segment, aligned.
    const std::uint64_t block = returned_offset(packed);
    if (block < segments_[1].start || block % segments_[1].page != 0 || bytes > segment_end - block) continue;
    const std::uint64_t commit = align_up(payload_bytes + kBlockHeaderBytes, segments_[1].page);
    if (!back_range(block, commit, payload_bytes + kBlockHeaderBytes)) {
      remember_returned(packed);  // the pool is dry now; keep it for later
      return {LoanError::OutOfMemory, {}};
    }
    BlockHeader* h = header(block);
    h->magic.store(kBlockMagic, std::memory_order_relaxed);
    h->size_class.store(static_cast<std::uint16_t>(size_class), std::memory_order_relaxed);
    h->payload_shift.store(0, std::memory_order_relaxed);
    h->backed_bytes.store(commit, std::memory_order_relaxed);
    h->payload_bytes.store(payload_bytes, std::memory_order_relaxed);
    h->attachment_count = 0;
    h->attachment_table = 0;
    h->next_free.store(0, std::memory_order_relaxed);
    h->refs.store(1, std::memory_order_release);
    registry_->live_blocks.fetch_add(1, std::memory_order_relaxed);
    registry_->live_bytes.fetch_add(bytes, std::memory_order_relaxed);
    return block;
  }
  return {LoanError::OutOfMemory, {}};
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
      const std::uint64_t backed = backed_bytes_of(b);
      if (return_whole(b, size_class, backed)) {
        registry_->cached_bytes.fetch_sub(std::min(backed, registry_->cached_bytes.load()), std::memory_order_relaxed);
        continue;
      }
      if (backed > page && return_pages(b + page, backed - page)) {
        h->backed_bytes.store(page, std::memory_order_relaxed);
        registry_->cached_bytes.fetch_sub(std::min(backed - page, registry_->cached_bytes.load()),
                                          std::memory_order_relaxed);
      }
      push_chain(size_class, b, b);
    }
  }
}

}  // namespace hakobu::detail
