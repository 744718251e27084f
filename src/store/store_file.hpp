// hakobu — the store file: named, immutable values of a domain, by key.
//
// A store is one file, /dev/shm/hakobu:D:st:NAME, built under a temporary
// name (hakobu:D:new:NAME:<nonce>) and published with link() like a queue, so
// a store is seen whole under its name or not at all. It holds a fixed table of
// entries, one per key; an entry names its current value by the heap offset of
// a *record* block. The store file holds one counted reference to each current
// record; a record holds the value (see "records"). The store outlives the
// processes that use it: it goes away at unlink, and its last attached process
// then drops the references its entries hold.
//
// Memory layout
// -------------
//   0      StoreHeader (128 bytes): magic, layout version, capacity (entries,
//          a power of two), file_bytes, creator token and pid, flags
//          (kStoreUnlinked), next_version, keys (live keys, for display),
//          published and waiters (Store::wait, below)
//   128    StoreEntry[capacity], 256 bytes each:
//            state      atomic u32: kEntryFree (0), kEntryReady (1), or
//                       kEntryClaiming | token << 2 while a writer writes the key
//            key_bytes  1..kMaxKeyBytes, written once, before state = Ready
//            key_hash   FNV-1a of the key, written once
//            current    atomic u64: 0 (no value: never published, or erased),
//                       else pack_value(record offset, version)
//            key        the key's bytes (kMaxKeyBytes)
//
// Records. A record is a heap block whose payload starts with a StoreRecord
// (magic, version, size, kind, where the data is): either the value's bytes
// follow it in the same block (put of bytes: one copy in), or the block has one
// attachment, the value's own block (put of a loan: no copy; the loan's block
// may itself hold attachments, e.g. an array's elements). Records are written
// before they are published and never after: a reader that holds one reads it
// without a lock. Freeing a record drops its attachment, so the value's memory
// goes back to the heap when the record's last reference goes, in whatever
// process.
//
// Entries. Keys are found by open addressing: probing starts at key_hash modulo
// capacity and goes on to the next entry until the key or a free entry is found,
// at most capacity steps. An entry, once Ready, keeps its key for the store's
// life (an erased key keeps its entry and gets it back when it is published
// again), so a free entry ends every probe sequence that could hold the key.
//
// Locking rules
// -------------
// * Claiming a free entry is a CAS of state from Free to Claiming|token; the
//   claimer writes key_bytes, key_hash and key, then stores Ready (release).
//   Readers skip a Claiming entry (its key has no value yet). A writer that
//   meets one waits for it (two writers of one key must not both claim), and
//   takes it over when its claimer is dead (token_alive), by CAS from the dead
//   claimer's state to its own: the key was never published, so no reader
//   can have used it.
// * A value is published by one CAS of `current` (old -> new record); erase is
//   a CAS to 0. No lock is held anywhere, so a writer killed at any instruction
//   leaves no lock behind and `current` is always the old or the new record.
// * Looking a value up must not take a reference to a freed block. The reader
//   reads `current` (w), adds a reference to w's record with Heap::add_ref (a
//   CAS that fails on 0: a free block is never revived), lists it in its
//   holdings, and reads `current` again. If it is still w, the entry pointed to
//   the record the whole time, so the store's reference was held the whole time
//   and the reference taken is on that record. If not, the block may have been
//   freed and reused in between: the reference is unlisted and dropped (a net
//   zero on whatever block it is now) and the lookup starts again. `current`
//   packs the version's low 24 bits with the offset, so a record freed and
//   carved again at the same offset for the same key in that window is
//   told apart (unless 2^24 publishes of that key happen inside one lookup).
//
// Waiting for a key (Store::wait)
// -------------------------------
// `published` is a futex word that every publish increments (seq_cst) after
// its CAS, then wakes every sleeper if `waiters` is non-zero. A waiter reads
// `published`, looks the key up, announces itself in `waiters` (seq_cst) and
// sleeps on the word unless it changed since it read it: a publish after the
// read changes the word (the sleep returns at once), one before it is seen by
// the lookup, and a publisher that read `waiters` before the announcement
// incremented the word before the sleep compares it. Sleeps last at most
// kStoreWaitPollNs, so a waiter sees its handle closed or the store unlinked
// (which wake nobody) within that time. A waiter killed while announced leaves
// `waiters` too high: publishers then make a wake-up call nobody needs, no
// more. Both words are in what was `reserved` (zero in files made before):
// the layout version is unchanged.
//
// Crash safety
// ------------
// Following the holdings rules (domain_state.hpp): a reference is counted
// before it is listed and unlisted before it is dropped or handed over, so a
// process killed at any instruction leaks at most, never frees twice.
//   * put: the record is built in a loan (counted, listed). Its holdings entry
//     is emptied (unlisted, still reserved) before the CAS that publishes it:
//     killed before the CAS, the record leaks; after it, the store holds it.
//     The displaced record's reference, now the writer's, is dropped right
//     after the CAS; killed in between, the old record leaks.
//   * get: killed between add_ref and listing, one reference leaks.
//   * erase: the displaced record is dropped after the CAS, as for put.
// Readers are never harmed by a writer's death: they hold their own counted,
// listed references.
//
// Hostile contents. Everything read from the file is checked before use: the
// header's capacity and size against the file at attach, key_bytes against
// kMaxKeyBytes, record offsets with Heap::check_block, a record's magic, size,
// kind and data location against its block, and every probe is bounded by the
// capacity read at attach (kept in process memory).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace hakobu::detail {

inline constexpr std::uint64_t kStoreMagic = 0x4552'4F54'5342'4B48ULL;  // "HKBSTORE"
inline constexpr std::uint32_t kStoreLayoutVersion = 1;
inline constexpr std::uint32_t kStoreUnlinked = 1;
inline constexpr std::uint64_t kMaxStoreCapacity = std::uint64_t{1} << 20;
inline constexpr std::size_t kMaxKeyBytes = 224;
/// Longest sleep of Store::wait before it looks at its handle and the store again.
inline constexpr std::int64_t kStoreWaitPollNs = 20'000'000;  // 20 ms

/// Byte offsets of the open-file-description locks on a store file.
inline constexpr std::uint64_t kStoreInitLockByte = 0;       ///< shared while attaching; exclusive to drain
inline constexpr std::uint64_t kStoreLifecycleLockByte = 1;  ///< shared by every attached handle

inline constexpr std::uint32_t kEntryFree = 0;
inline constexpr std::uint32_t kEntryReady = 1;
inline constexpr std::uint32_t kEntryClaiming = 2;  ///< | token << 2
constexpr std::uint32_t claiming_state(std::uint32_t token) noexcept {
  return kEntryClaiming | (token << 2U);
}
constexpr bool is_claiming(std::uint32_t state) noexcept {
  return (state & 3U) == kEntryClaiming;
}
constexpr std::uint32_t claiming_token(std::uint32_t state) noexcept {
  return state >> 2U;
}

/// `current`: record offset / 64 (40 bits, heaps up to 64 TiB), version's low 24 bits.
constexpr std::uint64_t pack_value(std::uint64_t record, std::uint64_t version) noexcept {
  return (record >> 6U) | ((version & 0xFF'FFFFU) << 40U);
}
constexpr std::uint64_t value_record(std::uint64_t packed) noexcept {
  return (packed & ((std::uint64_t{1} << 40U) - 1)) << 6U;
}
constexpr std::uint64_t value_version_bits(std::uint64_t packed) noexcept {
  return packed >> 40U;
}
static_assert(value_record(pack_value(12288, 0x1234'5678)) == 12288 &&
                  value_version_bits(pack_value(4096, 0x1234'5678)) == 0x34'5678,
              "pack_value: the record offset and the version's low 24 bits come back");

struct StoreHeader {
  std::atomic<std::uint64_t> magic;  ///< kStoreMagic once built (before link())
  std::uint32_t layout_version;
  std::atomic<std::uint32_t> flags;  ///< kStoreUnlinked
  std::uint64_t capacity;            ///< entries; a power of two
  std::uint64_t file_bytes;
  std::uint32_t creator_token;
  std::int32_t creator_pid;
  std::atomic<std::uint64_t> next_version;  ///< versions of values, store-wide, from 1
  std::atomic<std::uint64_t> keys;          ///< keys with a value (display only; may drift after a crash)
  std::atomic<std::uint32_t> published;     ///< futex word: +1 at every publish (Store::wait sleeps on it)
  std::atomic<std::uint32_t> waiters;       ///< waiters announced on `published` (may drift after a crash)
  std::uint64_t reserved[8];
};
static_assert(sizeof(StoreHeader) == 128, "the store header's size is part of the store layout");
static_assert(std::is_standard_layout_v<StoreHeader>, "StoreHeader lives in shared memory: standard-layout");

struct StoreEntry {
  std::atomic<std::uint32_t> state;
  std::uint32_t key_bytes;
  std::uint64_t key_hash;
  std::atomic<std::uint64_t> current;
  std::uint64_t reserved;
  char key[kMaxKeyBytes];
};
static_assert(sizeof(StoreEntry) == 256, "a store entry is 256 bytes of the store layout");
static_assert(std::is_standard_layout_v<StoreEntry>, "StoreEntry lives in shared memory: standard-layout");

inline constexpr std::uint64_t kRecordMagic = 0x4443'4552'5453'4B48ULL;  // "HKSTRECD"
inline constexpr std::uint32_t kRecordInline = 0;                        ///< the value's bytes follow the record
inline constexpr std::uint32_t kRecordAttached = 1;  ///< the value is the record block's attachment 0

/// The start of a record block's payload; the value's bytes (inline) follow at kRecordBytes.
struct StoreRecord {
  std::uint64_t magic;
  std::uint64_t version;
  std::uint64_t size;   ///< the value's bytes
  std::uint32_t kind;   ///< MessageKind
  std::uint32_t where;  ///< kRecordInline or kRecordAttached
  std::uint64_t reserved[4];
};
inline constexpr std::uint64_t kRecordBytes = 64;
static_assert(sizeof(StoreRecord) == kRecordBytes, "a record header is 64 bytes, so inline data is 64-byte aligned");

constexpr std::uint64_t store_file_bytes(std::uint64_t capacity) noexcept {
  return sizeof(StoreHeader) + capacity * sizeof(StoreEntry);
}

/// FNV-1a, 64 bits: the probe start of a key.
constexpr std::uint64_t key_hash(const char* data, std::size_t size) noexcept {
  std::uint64_t h = 0xcbf2'9ce4'8422'2325ULL;
  for (std::size_t i = 0; i < size; ++i) {
    h ^= static_cast<unsigned char>(data[i]);  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    h *= 0x100'0000'01b3ULL;
  }
  return h;
}

}  // namespace hakobu::detail
