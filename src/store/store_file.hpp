// hakobu — the store file: named, immutable values of a domain, by key.
//
// A store is one file, /dev/shm/hakobu:D:st:NAME, made, attached and let go
// of by the protocol of domain/named_file.hpp (built under a temporary name
// and published with link(); the last handle out of an unlinked store drains
// it). It holds a fixed table of entries, one per key; an entry names its
// current value by the heap offset of a *record* block. The store file holds
// one counted reference to each current record; a record holds the value (see
// "records"). The store outlives the processes that use it: it goes away at
// unlink, and its last attached process then drops the references its entries
// hold.
//
// Memory layout
// -------------
//   0      StoreHeader (128 bytes): magic, layout version, capacity (entries,
//          a power of two), file_bytes, creator token and pid, flags
//          (kStoreUnlinked), next_version, keys (live keys, for display),
//          published and waiters (Store::wait, below), inserter: the
//          insert lock (0, or kInsertLockHeld | token of the process inserting
//          a key)
//   128    StoreEntry[capacity], 256 bytes each:
//            state      atomic u32: kEntryFree (0: never used), ready(g)
//                       (1 | g << 2: holds a key, entry generation g), or
//                       claiming(token) (2 | token << 2: a key is being written)
//            key_bytes  1..kMaxKeyBytes (0: a retired entry, no key)
//            key_hash   FNV-1a of the key
//            current    atomic u64: empty_value(g) (no value: never published
//                       or erased; record bits 0, generation in the version
//                       bits), kValueRetired (the key is leaving the entry),
//                       else pack_value(record offset, version)
//            generation the entry's generation, g of ready(g) (insert-lock holder only)
//            key        the key's bytes, 28 atomic words
//          key_bytes, key_hash and key change only while the state is
//          claiming; they are read as a seqlock (below).
//
// Records. A record is a heap block whose payload starts with a StoreRecord
// (magic, version, size, kind, where the data is): either the value's bytes
// follow it in the same block (put of bytes: one copy in), or the block has one
// attachment, the value's own block (put of a loan: no copy; the loan's block
// may itself hold attachments, e.g. an array's elements). Records are written
// before they are published and never after: a reader that holds one reads it
// without a lock. Freeing a record drops its attachment, so the value's memory
// goes back to the heap when the record's last reference goes, in whatever
// process. A put of more than kMaxInlineValueBytes is stored attached too, so
// a record block is always small and never a huge-page block: a lookup reads
// the header of a record that may have been freed a moment ago (check_block,
// add_ref, below), and a freed huge-page block gives back every page, header
// included (Heap::return_whole). Touching it would fault a huge page back in
// (taken from the global pool, or SIGBUS when the pool is empty); a small
// block keeps its header page backed while it is free.
//
// Entries. Keys are found by open addressing: probing starts at key_hash modulo
// capacity and goes on to the next entry until the key or a free entry is found,
// at most capacity steps. An entry never becomes free again (a probe sequence
// through it must not end there), but its key may leave it: an erased key's
// entry is reused for another key, so a store takes any number of distinct
// keys over its life, `capacity` of them with a value at a time.
//
// Locking rules
// -------------
// * Inserting a key (it is in no entry) takes the insert lock, one per store:
//   a CAS of `inserter` from 0 to kInsertLockHeld | token, taken over by CAS
//   from a holder whose token is dead (token_alive), given up with Busy after a
//   second behind a live one. One thread of a process at a time tries for an
//   insert lock (of any store), so the word naming its own process then is a
//   leftover or damage, and taken too. Only the holder changes an entry's state, key or
//   generation, so two writers of one key never insert it twice. Publishing to
//   an entry that holds the key, erasing and reading take no lock.
// * The holder probes the key's sequence once more to its end (a free entry;
//   a writer may have inserted the key before the lock was taken). An entry in
//   state claiming (its holder died: only a holder claims) or in a state no
//   writer makes is retired first: claimed, key_bytes 0, current
//   kValueRetired, ready(g + 1). The key goes to the first reusable entry of
//   the sequence (ready, current empty_value or kValueRetired), else to the
//   free entry at its end, else the store is Full.
// * Reusing an entry of key X: a CAS of current from empty_value(g) to
//   kValueRetired (it fails if X was published meanwhile: probe again), then a
//   CAS of state from ready(g) to claiming(token). The holder writes key_bytes,
//   key_hash and key, stores current = empty_value(g + 1) and the generation,
//   then state = ready(g + 1) with release. A free entry is claimed by CAS from
//   kEntryFree the same way.
// * Finding a key (readers and writers): in each ready(g) entry, key_bytes,
//   key_hash and key are read (acquire; the claimer stores them with release
//   after its claim), then the state again: changed means the key may be torn,
//   and the entry is read again. A
//   key whose current is kValueRetired is leaving: the probe goes on (the key
//   may be inserted again further on). Entries in state claiming are skipped.
// * Every operation on a found entry re-reads its state after reading current:
//   still ready(g) means the entry held the key the whole time (a generation
//   only grows; 24 bits, so 2^24 reuses of one entry inside one call would be
//   missed), so the value read is the key's. Else, or if current is
//   kValueRetired, the key is looked for again (bounded: Busy).
// * A value is published by one CAS of `current` (old -> new record), where old
//   was read under ready(g) as above; erase is a CAS to empty_value(g). Both
//   fail if the entry was retired or reused since (current is then
//   kValueRetired or empty_value(g + 1)), and the writer looks the key up
//   again. A writer killed at any instruction of them leaves no lock behind
//   and `current` is always the old or the new record; one killed holding the
//   insert lock is taken over, its half-written entry retired.
// * Looking a value up must not take a reference to a freed block. The reader
//   reads `current` (w), adds a reference to w's record with Heap::add_ref (a
//   CAS that fails on 0: a free block is never revived), lists it in its
//   holdings, and reads `current` and the state again. If both are unchanged,
//   the entry pointed to the record the whole time, so the store's reference was
//   held the whole time and the reference taken is on that record. If not, the
//   block may have been freed and reused in between: the reference is unlisted
//   and dropped (a net zero on whatever block it is now) and the lookup starts
//   again. `current` packs the version's low 24 bits with the offset, so a
//   record freed and carved again at the same offset in that window is told
//   apart (unless 2^24 publishes happen inside one lookup).
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
// more.
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

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

namespace hakobu::detail {

inline constexpr std::uint64_t kStoreMagic = 0x4552'4F54'5342'4B48ULL;  // "HKBSTORE"
inline constexpr std::uint32_t kStoreLayoutVersion = 2;                 ///< 2: entries are reused (generations)
inline constexpr std::uint32_t kStoreUnlinked = 1;
inline constexpr std::uint64_t kMaxStoreCapacity = std::uint64_t{1} << 20;
inline constexpr std::size_t kMaxKeyBytes = 224;
/// Longest sleep of Store::wait before it looks at its handle and the store again.
inline constexpr std::int64_t kStoreWaitPollNs = 20'000'000;  // 20 ms

/// Byte offsets of the open-file-description locks on a store file.
inline constexpr std::uint64_t kStoreInitLockByte = 0;       ///< shared while attaching; exclusive to drain
inline constexpr std::uint64_t kStoreLifecycleLockByte = 1;  ///< shared by every attached handle

inline constexpr std::uint32_t kEntryFree = 0;
inline constexpr std::uint32_t kEntryReady = 1;     ///< | generation << 2
inline constexpr std::uint32_t kEntryClaiming = 2;  ///< | token << 2
inline constexpr std::uint64_t kGenerationMask = 0xFF'FFFFU;
constexpr std::uint32_t ready_state(std::uint64_t generation) noexcept {
  return kEntryReady | static_cast<std::uint32_t>((generation & kGenerationMask) << 2U);
}
constexpr bool is_ready(std::uint32_t state) noexcept {
  return (state & 3U) == kEntryReady && (state >> 2U) <= kGenerationMask;
}
constexpr std::uint64_t ready_generation(std::uint32_t state) noexcept {
  return state >> 2U;
}
constexpr std::uint32_t claiming_state(std::uint32_t token) noexcept {
  return kEntryClaiming | (token << 2U);
}
constexpr bool is_claiming(std::uint32_t state) noexcept {
  return (state & 3U) == kEntryClaiming;
}
constexpr std::uint32_t claiming_token(std::uint32_t state) noexcept {
  return state >> 2U;
}

/// The insert lock's word (header `inserter`, header word 8): kInsertLockHeld | token, or 0.
inline constexpr std::uint64_t kInsertLockHeld = std::uint64_t{1} << 32U;

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
/// `current` of an entry with no value in generation g: record bits 0.
constexpr std::uint64_t empty_value(std::uint64_t generation) noexcept {
  return (generation & kGenerationMask) << 40U;
}
/// `current` of an entry whose key is leaving it. Never a packed record: that
/// would be a record in the last 64 bytes of a 64 TiB heap, where no block fits.
inline constexpr std::uint64_t kValueRetired = ~std::uint64_t{0};
/// True when `current` names a record.
constexpr bool has_value(std::uint64_t packed) noexcept {
  return packed != kValueRetired && value_record(packed) != 0;
}
static_assert(!has_value(empty_value(kGenerationMask)) && !has_value(kValueRetired) && has_value(pack_value(64, 0)),
              "empty and retired values name no record");
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
  std::atomic<std::uint64_t> inserter;      ///< the insert lock (insert_lock())
  std::uint64_t reserved[7];
};
static_assert(sizeof(StoreHeader) == 128, "the store header's size is part of the store layout");
static_assert(std::is_standard_layout_v<StoreHeader>, "StoreHeader lives in shared memory: standard-layout");

/// The insert lock of a store (see "Locking rules"): the header's `inserter` word.
inline std::atomic<std::uint64_t>& insert_lock(StoreHeader& header) noexcept {
  return header.inserter;
}

inline constexpr std::size_t kKeyWords = kMaxKeyBytes / 8;

struct StoreEntry {
  std::atomic<std::uint32_t> state;
  std::atomic<std::uint32_t> key_bytes;
  std::atomic<std::uint64_t> key_hash;
  std::atomic<std::uint64_t> current;
  std::atomic<std::uint64_t> generation;
  std::atomic<std::uint64_t> key[kKeyWords];  ///< the key's bytes, in memory order
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
/// Larger puts of bytes get a value block of their own (see "Records"); well
/// below the smallest huge page (64 KiB).
inline constexpr std::uint64_t kMaxInlineValueBytes = std::uint64_t{16} << 10U;
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

/// A key as read from an entry (its bytes in whole words).
struct KeyCopy {
  std::uint32_t bytes = 0;
  std::uint64_t hash = 0;
  std::array<std::uint64_t, kKeyWords> words{};
  [[nodiscard]] std::string_view view() const noexcept {
    return {reinterpret_cast<const char*>(words.data()), bytes};  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
  }
};

/// Reads the key of a ready entry as a seqlock (store_file.hpp). The key's
/// words are read with acquire, so the state read after them is not read
/// before them; write_key stores them with release, so a reader that sees one
/// of them also sees the claim before it, and reads the state as changed.
/// (Fences would do the same; ThreadSanitizer does not model them.) With `want`,
/// only a key of that hash and length is read in full; `out.bytes` is 0 for
/// any other. Returns the state the key was read under, or 0: not ready (free,
/// claiming, damaged) or never stable.
inline std::uint32_t read_key(const StoreEntry& entry, KeyCopy& out, const std::string_view* want = nullptr,
                              std::uint64_t want_hash = 0) noexcept {
  for (int again = 0; again < 64; ++again) {
    const std::uint32_t state = entry.state.load(std::memory_order_acquire);
    if (!is_ready(state)) return 0;
    out.bytes = entry.key_bytes.load(std::memory_order_acquire);
    out.hash = entry.key_hash.load(std::memory_order_acquire);
    // A damaged or hostile file may say anything: never a word past the entry.
    if (out.bytes > kMaxKeyBytes || (want != nullptr && (out.bytes != want->size() || out.hash != want_hash))) {
      out.bytes = 0;
    }
    for (std::size_t i = 0; i * 8 < out.bytes; ++i) {
      out.words[i] =
          entry.key[i].load(std::memory_order_acquire);  // NOLINT(cppcoreguidelines-pro-bounds-constant-array-index)
    }
    if (entry.state.load(std::memory_order_relaxed) == state) return state;
  }
  return 0;
}

/// Writes a key into an entry its writer holds in state claiming (release: see read_key).
inline void write_key(StoreEntry& entry, std::string_view key, std::uint64_t hash) noexcept {
  entry.key_bytes.store(static_cast<std::uint32_t>(key.size()), std::memory_order_release);
  entry.key_hash.store(hash, std::memory_order_release);
  for (std::size_t i = 0; i * 8 < key.size(); ++i) {
    std::uint64_t word = 0;
    std::memcpy(&word, key.data() + i * 8, std::min<std::size_t>(8, key.size() - i * 8));
    entry.key[i].store(word, std::memory_order_release);  // NOLINT(cppcoreguidelines-pro-bounds-constant-array-index)
  }
}

}  // namespace hakobu::detail
