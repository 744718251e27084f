// hakobu — the shared heap of a domain.
//
// One sparse file in /dev/shm, mapped once per process at the same size (its
// capacity), so a block is reached by offset with no per-message mapping. Where
// the system has reserved huge pages, a second file on a hugetlbfs mount is
// mapped right after the first; blocks of 2 MiB and more are carved there first
// and from /dev/shm when the huge-page pool runs dry. Offsets below
// `segments_[0].capacity` are in the first file, the rest in the second. Memory is committed
// only when a block is first carved (fallocate, so a full /dev/shm is an error
// here rather than a SIGBUS later); freed blocks go to per-class lock-free free
// lists and are reused with their pages already faulted in, up to the domain's
// cache limit, beyond which their pages are returned to the system.
//
// Locking rules
// -------------
// * There are no locks: free lists are Treiber stacks with tagged heads, the
//   bump pointer advances by compare-and-swap, and a block's header is written
//   only by whoever holds it (refs > 0) or, while free, by whoever pops it.
// * A block is freed exactly once: by the holder whose `drop_ref` takes refs
//   from 1 to 0.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "hakobu/error.hpp"
#include "memory/layout.hpp"

namespace hakobu::detail {

/// One file of the heap and the part of the heap's offsets it backs.
struct HeapSegment {
  int fd = -1;
  std::uint64_t start = 0;     ///< heap offset of the file's byte 0
  std::uint64_t capacity = 0;  ///< bytes of offsets it backs (0: absent)
  std::uint64_t page = 4096;   ///< allocation granule (2 MiB on hugetlbfs)
  bool huge = false;
};

/// The page map (see layout.hpp) as this process has it mapped.
struct PageMap {
  std::atomic<std::uint64_t>* words = nullptr;  ///< segment 0's words, then segment 1's
  std::uint64_t segment_words[2] = {0, 0};      ///< validated at attach
  int registry_fd = -1;                         ///< to back the map's words as the heap grows
  std::uint64_t file_offset = 0;                ///< of segment 0's words in the registry file
};

/// Where a block's payload goes (see "payload placement" in layout.hpp).
struct Placement {
  std::uint64_t anchor = 0;      ///< payload offset of the first byte that is copied (a multiple of 64)
  const void* source = nullptr;  ///< the address it is copied from; nullptr: unknown
};

class Heap {
 public:
  Heap() = default;
  /// Binds to a mapped heap: `base` maps the segments back to back.
  void bind(RegistryHeader* registry, std::byte* base, HeapSegment shm, HeapSegment huge, PageMap map) noexcept;

  /// A block whose payload holds `payload_bytes`, with refs = 1. Its memory is
  /// backed; the payload is not cleared.
  Result<std::uint64_t, LoanError> allocate(std::uint64_t payload_bytes);
  /// As above, a payload to be filled by copying: a large one is placed so
  /// that copies in (from `placement.source`) and out run at memcpy speed.
  Result<std::uint64_t, LoanError> allocate(std::uint64_t payload_bytes, const Placement& placement);
  /// Drops one reference; frees the block when it was the last (and drops its
  /// attachments). Returns true if freed.
  bool drop_ref(std::uint64_t block) noexcept { return drop_ref(block, 0); }
  /// The attachments table of `block` (a block this process holds), bounds-checked;
  /// empty when it has none or the header is damaged.
  [[nodiscard]] std::span<std::atomic<std::uint64_t>> attachments(std::uint64_t block) const noexcept;
  /// The payload bytes of the blocks `block` (one this process holds) has attached, each block
  /// once: what it keeps alive by reference besides its own payload. Entries that fail
  /// check_block count 0.
  [[nodiscard]] std::uint64_t attached_bytes(std::uint64_t block) const noexcept;
  /// Adds one reference to a block the caller already holds one of. False (and
  /// nothing changed) when the block is free: a stale or corrupt offset.
  [[nodiscard]] bool add_ref(std::uint64_t block) const noexcept;

  /// True when `block` is a carved, in-bounds block whose payload can hold
  /// `payload_bytes`, every byte of it backed by memory (the page map says so
  /// before any of it is read). The check every offset read from shared memory
  /// must pass before use.
  [[nodiscard]] bool check_block(std::uint64_t block, std::uint64_t payload_bytes) const noexcept {
    return checked_payload(block, payload_bytes) != nullptr;
  }
  /// The payload of `block` when check_block(block, payload_bytes) holds, else
  /// nullptr: the header's values are read once, checked, and the address is
  /// made of the values checked.
  [[nodiscard]] std::byte* checked_payload(std::uint64_t block, std::uint64_t payload_bytes) const noexcept;

  [[nodiscard]] BlockHeader* header(std::uint64_t block) const noexcept {
    return reinterpret_cast<BlockHeader*>(base_ + block);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
  }
  /// The payload of a block this process holds and has checked. The shift is
  /// read from shared memory: one out of range counts as 0, so the address
  /// stays within the block's first page past the header whatever it says.
  [[nodiscard]] std::byte* payload(std::uint64_t block) const noexcept {
    return base_ + block + kBlockHeaderBytes + shift_of(header(block));
  }
  /// Bytes from the block's start to its payload (the header, then the shift).
  [[nodiscard]] std::uint64_t payload_offset(std::uint64_t block) const noexcept {
    return kBlockHeaderBytes + shift_of(header(block));
  }
  /// The heap's byte 0 in this process.
  [[nodiscard]] std::byte* base() const noexcept { return base_; }
  [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }
  /// True when blocks of 2 MiB and more come from a hugetlbfs file.
  [[nodiscard]] bool has_huge_pages() const noexcept { return segments_[1].capacity != 0; }
  /// True when `block` lies in the hugetlbfs segment.
  [[nodiscard]] bool on_huge_pages(std::uint64_t block) const noexcept {
    return has_huge_pages() && block >= segments_[1].start;
  }
  /// The rule that places large payloads in this process: AwayFromAliasing on
  /// Intel cores, PageStart elsewhere; $HAKOBU_PLACEMENT=page|away overrides
  /// (read once per process).
  [[nodiscard]] static CopyPlacement copy_placement() noexcept;
  /// Returns the pages of every cached free block to the system.
  void trim_cache() noexcept;

 private:
  static std::uint64_t shift_of(const BlockHeader* h) noexcept {
    const std::uint64_t shift = h->payload_shift.load(std::memory_order_relaxed);
    return shift <= kMaxPayloadShift && shift % 64 == 0 ? shift : 0;
  }
  Result<std::uint64_t, LoanError> allocate_shifted(std::uint64_t payload_bytes, std::uint64_t shift,
                                                    std::uint64_t anchor, std::uint64_t offset);
  /// A block with refs = 1 holding `payload_bytes` past its header, backed.
  Result<std::uint64_t, LoanError> obtain(std::uint64_t payload_bytes);
  Result<std::uint64_t, LoanError> carve(unsigned size_class, std::uint64_t payload_bytes);
  Result<std::uint64_t, LoanError> carve_in(unsigned segment, unsigned size_class, std::uint64_t payload_bytes);
  [[nodiscard]] unsigned segment_of(std::uint64_t offset) const noexcept { return on_huge_pages(offset) ? 1U : 0U; }
  bool pop(unsigned size_class, std::uint64_t& block) noexcept;
  void push_chain(unsigned size_class, std::uint64_t first, std::uint64_t last) noexcept;
  bool drop_ref(std::uint64_t block, unsigned depth) noexcept;
  void free_block(std::uint64_t block, unsigned depth) noexcept;
  Result<void, LoanError> ensure_backed(std::uint64_t block, std::uint64_t bytes);
  bool return_whole(std::uint64_t block, unsigned size_class, std::uint64_t backed) noexcept;
  Result<std::uint64_t, LoanError> take_returned(unsigned size_class, std::uint64_t payload_bytes);
  void remember_returned(std::uint64_t packed) noexcept;
  /// Bytes from the block's start that are backed: its header's figure, checked.
  [[nodiscard]] std::uint64_t backed_bytes_of(std::uint64_t block) const noexcept;
  Result<void, LoanError> back_range(std::uint64_t offset, std::uint64_t length, std::uint64_t asked);
  /// Returns the memory of [offset, offset + length) (pages wholly inside it):
  /// their bits are cleared first, so no reader trusts them once they are holes.
  bool return_pages(std::uint64_t offset, std::uint64_t length) noexcept;
  /// True when [.., end) lies inside the segment's file (a cross-check of the page map).
  [[nodiscard]] bool inside_file(unsigned segment, std::uint64_t end) const noexcept;

  // --- the page map ---
  /// True when every page touched by [offset, offset + length) is backed.
  [[nodiscard]] bool is_backed(std::uint64_t offset, std::uint64_t length) const noexcept;
  /// Backs the map's words for pages up to `offset + length`, then sets the bits
  /// of every page the range touches (backed whole by fallocate).
  Result<void, LoanError> back_map_words(unsigned segment, std::uint64_t word_end);
  void set_page_bits(std::uint64_t offset, std::uint64_t length) noexcept;
  /// Visits the words and masks covering pages [first, last] of `segment`;
  /// `visit(word, mask)` returns false to stop. False if stopped.
  template <class Visit>
  bool for_page_bits(unsigned segment, std::uint64_t first, std::uint64_t last, Visit&& visit) const noexcept;

  RegistryHeader* registry_ = nullptr;
  std::byte* base_ = nullptr;
  std::uint64_t capacity_ = 0;  // of all segments
  HeapSegment segments_[2];
  PageMap map_;
  mutable std::atomic<std::uint64_t> known_file_size_[2]{};  // grow only; refreshed by fstat on a miss
};

/// "1.5 GiB", "320 B": sizes for messages.
std::string format_bytes(std::uint64_t bytes);
/// The message of an allocation that /dev/shm cannot hold: asked, free, what to do.
std::string out_of_memory_message(std::uint64_t asked, const std::string& cause);

}  // namespace hakobu::detail
