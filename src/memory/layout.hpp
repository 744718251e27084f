// hakobu — what lives in a domain's shared memory, byte for byte.
//
// Memory-layout rules
// -------------------
// * Everything here is read and written by several processes at once, some of
//   which may be buggy, hostile or dead. Only plain integers and lock-free
//   atomics live here (static_asserts below); no pointers: positions are
//   offsets into the heap file.
// * Every value read from these structures is untrusted: offsets, lengths,
//   counts and indices are bounds-checked before use (Heap::check_block,
//   parse_array, QueueState::read_descriptor).
// * Layouts are versioned by `kLayoutVersion`; a process never attaches to a
//   layout it does not know.
//
// * Which pages of the heap are backed by memory is recorded outside them, in
//   the page map (below). A page is read through an offset from shared memory
//   only when its bit says it is backed: reading a hole of /dev/shm allocates a
//   page, and when /dev/shm is full that is a SIGBUS, not an error.
//
// Files of domain D (under /dev/shm; ':' cannot appear in names):
//   hakobu:D:registry      RegistryHeader (with ProcessSlot[max_processes]),
//                          then at `page_map_offset` the page map: one bit per
//                          page of each heap segment, backed as the heap grows
//   hakobu:D:heap          the heap: blocks, each starting with a BlockHeader
//                          (and, where huge pages are used, a second heap file
//                          of that name on a hugetlbfs mount)
//   hakobu:D:q:NAME        a queue: QueueHeader, then QueueSlot[capacity]
//   hakobu:D:new:NAME:...  a queue being built, before link() publishes it
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace hakobu::detail {

inline constexpr std::uint32_t kLayoutVersion = 3;  // 3: BlockHeader::payload_shift, queue watcher tables
inline constexpr std::uint64_t kRegistryMagic = 0x5245'554B'4F42'414BULL;  // "KABOKUER"
inline constexpr std::uint32_t kBlockMagic = 0x4B4C'4248U;                 // "HBLK"

static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free &&
                  std::atomic<std::uint16_t>::is_always_lock_free,
              "shared memory needs lock-free (address-free) 16-, 32- and 64-bit atomics");

// --- size classes -------------------------------------------------------------
// Block sizes grow in quarter steps of powers of two (256, 320, 384, 448, 512,
// 640, ...), so a block wastes at most a fifth of its size; pages of a block
// that are never touched cost no memory.
inline constexpr std::uint64_t kBlockHeaderBytes = 64;
inline constexpr std::uint64_t kMinBlockBytes = 256;
inline constexpr unsigned kSizeClassCount = 160;

constexpr std::uint64_t class_bytes(unsigned size_class) noexcept {
  return static_cast<std::uint64_t>(4U + size_class % 4U) << (6U + size_class / 4U);
}

/// Smallest class whose blocks hold `total` bytes (header included).
constexpr unsigned class_for(std::uint64_t total) noexcept {
  if (total <= kMinBlockBytes) return 0;
  const auto exponent = static_cast<unsigned>(63 - std::countl_zero(total - 1));  // 2^e < total <= 2^(e+1)
  const std::uint64_t unit = std::uint64_t{1} << (exponent - 2);
  const std::uint64_t quarters = (total + unit - 1) / unit;  // 5..8
  if (quarters == 8) return 4U * (exponent + 1U - 8U);
  return 4U * (exponent - 8U) + static_cast<unsigned>(quarters - 4U);
}
static_assert(class_bytes(class_for(257)) == 320 && class_bytes(class_for(512)) == 512 &&
                  class_bytes(class_for(513)) == 640 && class_bytes(class_for(1ULL << 30)) == (1ULL << 30),
              "size classes: four per power of two, and class_for picks the smallest class that holds the size");

/// Alignment of a block of `bytes`: 2 MiB for huge-page-sized blocks, a page
/// for page-sized ones (so their pages can be returned), else a cache line.
constexpr std::uint64_t block_alignment(std::uint64_t bytes) noexcept {
  if (bytes >= (std::uint64_t{2} << 20)) return std::uint64_t{2} << 20;
  if (bytes >= 4096) return 4096;
  return 64;
}

// --- payload placement ----------------------------------------------------------
// A block's payload is copied twice: in, from the sender's buffer, and out, into
// the receiver's. Ordinary large buffers start 16 bytes past a page (glibc's
// mmap'ed chunks: NumPy arrays, std::vector) or on a page (aligned allocations).
// How fast a large copy runs depends on (dst - src) mod 4096, differently on
// different cores (1 GiB, glibc 2.36 memcpy, memcpy alone ~90 ms):
//   * Intel: loads that seem to depend on recent stores 4 KiB apart ("4K
//     aliasing") when the destination sits a little *after* the source:
//     48 -> 306 ms, 112 -> 330 ms, 496 -> 171 ms; 0 and 4080 -> 80-95 ms.
//   * AMD Zen 4 (this project's VM at times): no difference at all into memory
//     already faulted in; into fresh memory (np.array(received), x.copy()),
//     glibc's two-page loop, taken unless 1 <= distance <= ~240, costs 45% more
//     unless the distance is 0 (64 MiB: 6.5 ms at 0-240, 9.5 ms elsewhere).
// So, modulo 4 KiB, a large payload (or an array's elements: the "anchor" of
// the placement) is put where both copies avoid the slow distances:
//   * AwayFromAliasing (Intel): at the source's offset rounded down to 64
//     bytes when the source is known and that offset lies in [64, 4096 - 1024]
//     (copying in goes to the same offset or up to 63 bytes before it; out into
//     a buffer at 0 or 16 goes more than 1 KiB before the payload); else in the
//     middle of a page (2048): ~2 KiB from buffers at 0 or 16 both ways.
//   * PageStart (other cores): on a page. Copying in from a buffer at 0 or 16 is
//     then at distance 0 or 4080 (both fast into a recycled block), copying out
//     into a fresh buffer at 0 or 16 at distance 0 or 16 (the fast ones).
// The payload stays 64-byte aligned (DLPack consumers such as XLA copy what is
// not). Blocks of kPlacedMinBytes and more (which are page-aligned) are placed
// so; smaller ones keep their payload right after the header (a 300-byte message
// does not spend a page on this). The shift from the header to the payload is
// recorded in the block header; read from shared memory, it is bounds-checked
// (kMaxPayloadShift, a multiple of 64, and with the payload inside the block)
// before any use.
inline constexpr std::uint64_t kPlacementPage = 4096;
inline constexpr std::uint64_t kPlacedMinBytes = std::uint64_t{64} << 10;
inline constexpr std::uint64_t kMaxPayloadShift = kPlacementPage - 64;
inline constexpr std::uint64_t kAliasReach = 1024;  ///< how far ahead of a source a destination aliases
inline constexpr std::uint64_t kUnknownSourceOffset = 2048;

/// Which rule places payloads on this machine (see "payload placement").
enum class CopyPlacement : std::uint8_t {
  PageStart,         ///< on a page boundary
  AwayFromAliasing,  ///< away from 4K aliasing with the source and with buffers at 0 or 16
};

/// The page offset (mod kPlacementPage) for the copied bytes of a large payload
/// whose copy source is at `source` (0: unknown). See "payload placement".
constexpr std::uint64_t placement_offset(std::uintptr_t source, CopyPlacement rule) noexcept {
  if (rule == CopyPlacement::PageStart) return 0;
  if (source == 0) return kUnknownSourceOffset;
  const std::uint64_t down = source % kPlacementPage / 64 * 64;
  if (down >= 64 && down <= kPlacementPage - kAliasReach) return down;
  return kUnknownSourceOffset;
}

/// The shift (header end to payload) that puts payload byte `anchor` of the block
/// at `block_address` at `offset` modulo kPlacementPage; a multiple of 64 when
/// all three are. Heap offsets serve as addresses: every process maps the heap
/// at a page boundary, so an offset and its address agree modulo a page.
constexpr std::uint64_t payload_shift_for(std::uintptr_t block_address, std::uint64_t anchor,
                                          std::uint64_t offset) noexcept {
  const std::uint64_t natural = (block_address + 64 + anchor) % kPlacementPage;
  return (offset + kPlacementPage - natural) % kPlacementPage;
}
static_assert(
    placement_offset(0, CopyPlacement::AwayFromAliasing) == 2048 &&
        placement_offset(0x7f0000000010, CopyPlacement::AwayFromAliasing) == 2048 &&
        placement_offset(0x7f0000000040, CopyPlacement::AwayFromAliasing) == 64 &&
        placement_offset(0x7f0000000850, CopyPlacement::AwayFromAliasing) == 2112 &&
        placement_offset(0x7f0000000ff0, CopyPlacement::AwayFromAliasing) == 2048 &&
        placement_offset(0x7f0000000850, CopyPlacement::PageStart) == 0,
    "placement_offset: the source's page offset rounded down to 64 in [64, 3072], else mid-page; 0 for PageStart");
static_assert(payload_shift_for(0x10000, 0, 2048) == 1984 && payload_shift_for(0x10000, 128, 64) == 3968,
              "payload_shift_for: the shift that puts the anchor byte at the wanted offset within its page");

// --- heap blocks ----------------------------------------------------------------
/// Most attachments one block may hold.
inline constexpr std::uint64_t kMaxAttachments = 0xFFFF;
// A block may hold references to other blocks ("attachments": the data of an
// array sent by reference, out-of-band buffers of a pickle). Their heap offsets
// are a table inside the payload; they are dropped when the block is freed.
/// The first 64 bytes of every heap block.
struct BlockHeader {
  // Written when the block is carved and read by any process that checks an offset it was given
  // (perhaps a stale or forged one, into memory being carved at that moment): atomic, relaxed.
  std::atomic<std::uint32_t> magic;       ///< kBlockMagic once carved
  std::atomic<std::uint16_t> size_class;  ///< never changes once carved
  // Rewritten by each new owner and read by processes that check the block
  // without holding it (a free-list head being popped): atomic, relaxed.
  std::atomic<std::uint16_t> payload_shift;  ///< bytes between the header and the payload (see "payload placement")
  std::atomic<std::uint32_t> refs;           ///< holders; 0 while free
  std::uint32_t attachment_count;            ///< references to other blocks this block holds
  std::atomic<std::uint64_t> next_free;      ///< free-list link, packed like FreeList::head
  std::atomic<std::uint64_t> backed_bytes;   ///< bytes from the block start known to have memory
  std::atomic<std::uint64_t> payload_bytes;  ///< size asked by the current owner
  std::uint64_t attachment_table;            ///< payload offset of the attachments' heap offsets
  std::uint64_t reserved2[2];
};
static_assert(sizeof(BlockHeader) == kBlockHeaderBytes,
              "a block header's size is part of the heap's layout: its fields changed without kBlockHeaderBytes");
static_assert(std::is_standard_layout_v<BlockHeader>, "BlockHeader lives in shared memory: it must be standard-layout");

/// A lock-free stack of free blocks of one class. The head packs the block
/// offset / 64 (40 bits, heaps up to 64 TiB) with a 24-bit tag against ABA.
struct alignas(64) FreeList {
  std::atomic<std::uint64_t> head;
};
inline constexpr std::uint64_t kMaxHeapCapacity = std::uint64_t{1} << 46;
constexpr std::uint64_t pack_free(std::uint64_t offset, std::uint64_t tag) noexcept {
  return (offset >> 6) | (tag << 40);
}
constexpr std::uint64_t free_offset(std::uint64_t packed) noexcept {
  return (packed & ((1ULL << 40) - 1)) << 6;
}
constexpr std::uint64_t free_tag(std::uint64_t packed) noexcept {
  return packed >> 40;
}

/// Free huge-page blocks whose pages were all returned, remembered outside them.
inline constexpr std::size_t kReturnedHugeBlocks = 256;
constexpr std::uint64_t pack_returned(std::uint64_t offset, unsigned size_class) noexcept {
  return (offset >> 6) | (static_cast<std::uint64_t>(size_class) << 48);
}
constexpr std::uint64_t returned_offset(std::uint64_t packed) noexcept {
  return (packed & ((std::uint64_t{1} << 40) - 1)) << 6;
}
constexpr unsigned returned_class(std::uint64_t packed) noexcept {
  return static_cast<unsigned>((packed >> 48) & 0xFFU);
}

// --- process table ----------------------------------------------------------------
inline constexpr std::uint32_t kSlotFree = 0;
inline constexpr std::uint32_t kSlotActive = 1;
inline constexpr std::uint32_t kMaxProcesses = 1024;  // claim tokens have 10 bits for the slot

/// One attached process. Only its owner writes it while the owner lives; after
/// the owner's death only the reclaimer (who holds the slot's lock) does.
struct ProcessSlot {
  std::atomic<std::uint32_t> state;
  std::atomic<std::uint32_t> generation;  ///< bumped each time the slot is taken
  std::atomic<std::int32_t> pid;
  std::uint32_t reserved0;
  std::atomic<std::uint64_t> holdings;           ///< heap offset of the holdings table (0: none)
  std::atomic<std::uint64_t> holdings_capacity;  ///< entries that table holds
  std::atomic<std::uint64_t> holdings_used;      ///< entries [0, used) may be non-zero
  std::uint64_t reserved1[3];
};
static_assert(sizeof(ProcessSlot) == 64, "a process slot is one cache line of the registry: its layout changed");
static_assert(std::is_standard_layout_v<ProcessSlot>, "ProcessSlot lives in shared memory: it must be standard-layout");

/// Byte offsets of the open-file-description locks on the registry file.
inline constexpr std::uint64_t kInitLockByte = 0;       ///< exclusive while initializing
inline constexpr std::uint64_t kLifecycleLockByte = 1;  ///< shared by every attached process
inline constexpr std::uint64_t kSlotLockBase = 1024;    ///< + slot: held by the slot's owner

struct RegistryHeader {  // NOLINT(clang-analyzer-optin.performance.Padding): hot counters on their own lines
  std::atomic<std::uint64_t> magic;  ///< kRegistryMagic once initialized
  std::uint32_t layout_version;
  std::uint32_t max_processes;
  std::uint64_t file_bytes;
  std::uint64_t heap_capacity;
  std::uint64_t cache_limit;
  std::atomic<std::uint32_t> named_objects;
  std::atomic<std::uint32_t> next_slot;  ///< where the next attacher starts looking (slots are reused round-robin)
  std::uint64_t reserved1[2];

  alignas(64) std::atomic<std::uint64_t> heap_top;  ///< bump pointer: [top, capacity) never carved
  std::atomic<std::uint64_t> live_bytes;
  std::atomic<std::uint64_t> live_blocks;
  std::atomic<std::uint64_t> cached_bytes;

  // The page map: bit i of segment s's words is set while page i of that
  // segment is backed (set after backing, cleared before returning the page).
  // Its words are backed in order; page_map_backed[s] bytes of them are.
  alignas(64) std::uint64_t page_map_offset;  ///< registry file offset of segment 0's words
  std::uint64_t page_map_words[2];            ///< words of each segment's map (segment 1's follow segment 0's)
  std::atomic<std::uint64_t> page_map_backed[2];

  // Free blocks of the hugetlbfs segment whose every page went back to the
  // pool, header included (a kept header page would pin a whole huge page):
  // pack_returned(offset, class) or 0. Taken by compare-and-swap to 0.
  std::atomic<std::uint64_t> returned_huge[kReturnedHugeBlocks];

  // The optional hugetlbfs segment: heap offsets [heap_capacity, heap_capacity + huge_capacity).
  alignas(64) std::atomic<std::uint64_t> huge_top;  ///< its bump pointer
  std::uint64_t huge_capacity;                      ///< 0: no huge-page segment
  std::uint64_t huge_page_size;
  char huge_directory[192];  ///< its hugetlbfs mount, NUL-terminated

  FreeList free_lists[kSizeClassCount];
  ProcessSlot processes[kMaxProcesses];
};
static_assert(std::is_standard_layout_v<RegistryHeader>,
              "RegistryHeader lives in shared memory: it must be standard-layout");

/// The heap's first block starts here (offset 0 means "no block").
inline constexpr std::uint64_t kHeapStart = 4096;

/// Where the page map starts in the registry file, and its words for a segment.
constexpr std::uint64_t page_map_offset() noexcept {
  return (sizeof(RegistryHeader) + 4095) / 4096 * 4096;
}
constexpr std::uint64_t page_map_words(std::uint64_t segment_bytes, std::uint64_t page) noexcept {
  return (segment_bytes / page + 63) / 64;
}

}  // namespace hakobu::detail
