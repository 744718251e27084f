// hakobu — a topic's file, byte for byte, and its protocol.
//
// hakobu:D:t:NAME (made, attached and closed as every named file:
// domain/named_file.hpp)
//
//   0      TopicHeader: magic "HKBTOPIC", layout version, capacity (2^k
//          slots), history, max_subscribers, slot_bytes, inline_capacity,
//          file_bytes, creator token and pid, flags (unlinked)
//   64     publish_pos: the next position to publish (a hint)
//   128    published (futex word) | subscribers_waiting | published_at
//   192    room (futex word) | publishers_waiting | room_at
//   256    publish_count (messages published, 64 bits)
//   320    watchers[16]: event loops' wake sockets, signalled by publishes
//   448    SubscriberEntry[max_subscribers], 64 bytes each
//   ...    slots[capacity]: SlotHeader (ring.hpp) + inline bytes, slot_bytes each
//
// Slots
// -----
// A slot's control word has the queue's format (ring.hpp: 32-bit position,
// state, 30-bit token), with the states read as
//
//   EMPTY(p)        free for the publisher of position p
//   WRITING(p, t)   claimed by that publisher (t: who)
//   FULL(p)         message p is published; the slot holds one reference to
//                   its block (none for an inline message or a tombstone)
//   RETIRING(p, t)  (the queue's READING) t is giving the slot back; it
//                   becomes FULL(p) again or EMPTY(p + capacity)
//
// Publishing p: CAS EMPTY(p) -> WRITING(p, me); fill kind, length, block (a
// loan's reference, unlisted first, as for a queue); release-store FULL(p);
// bump publish_count; notify subscribers (one futex wake for all sleepers).
// Publishers meet in the ring as in a queue: a publisher that finds its slot
// taken moves publish_pos on. A WRITING slot whose claimer died becomes a
// FULL tombstone (kind 0) that subscribers skip.
//
// Subscriber entries
// ------------------
// cursor = position (32 bits) | state (2 bits) << 32 | token (30 bits) << 34,
// 0 for a free entry; the position is the next message the subscriber reads.
//
//   FREE (0)          nobody
//   JOINING(c, t)     t is setting the entry up; c already holds slots back
//   ACTIVE(c, t)      subscribed
//   READING(c, t)     taking message c: no one may move c or retire slot c
//
// Next to it: on_full (0 drop oldest, 1 block), pid (for display), dropped
// (messages skipped by publishers), received.
//
// The cursor is the pin
// ---------------------
// A slot p is given back (retired) only when no subscriber's cursor is at or
// before p and p has left the history (p < publish_pos - history), or, when a
// publisher needs the slot, after it moved every DROP_OLDEST cursor that is
// at or before p past it (CAS ACTIVE(c, t) -> ACTIVE(p + 1, t), dropped +=
// p + 1 - c; never a READING cursor, never a BLOCK one: then the ring is full).
// Retiring is two steps so that a subscriber joining meanwhile is seen:
//
//   retirer:     CAS FULL(p) -> RETIRING(p, me)   (seq_cst)
//                load every cursor                (seq_cst)
//                one at or before p: store FULL(p) back; else store
//                EMPTY(p + capacity), then drop the slot's reference.
//   subscriber:  CAS its cursor ACTIVE(c) -> READING(c)   (seq_cst)
//                load slot c's control                    (seq_cst)
//                FULL(c): the slot keeps its reference until the cursor
//                moves, so add_ref on the block is safe; list it, then
//                store ACTIVE(c + 1) (release).
//                RETIRING(c): wait for it to resolve.
//
// Both sides store, then load the other's word, all seq_cst: either the
// subscriber sees RETIRING (and waits) or the retirer sees the cursor (and
// puts the slot back). A subscriber thus never takes a reference on a block
// the ring no longer holds, so it never reads a freed block.
//
// Joining: CAS a FREE entry to JOINING(start, me), write on_full and pid, then
// store ACTIVE(start, me). start is publish_pos minus the history asked for;
// slots already retired before the cursor was seen are skipped (they are not
// counted as dropped: they were gone before the subscription began).
//
// Death
// -----
// * A publisher killed in WRITING: subscribers waiting on the slot check the
//   claimer every 20 ms and publish a tombstone in its place (as a queue).
// * A retirer killed in RETIRING(p, t): whoever finds the slot there checks t
//   and stores FULL(p) back (the reference was not dropped yet: a kill between
//   EMPTY and the drop leaks the block, never frees it twice).
// * A subscriber killed: publishers waiting behind its cursor check its token
//   (20 ms apart) and free the entry (CAS cursor -> 0); so does every
//   publishing process, every 20 ms, for a few cursors that hold a message
//   back and stood still since its last look (a dead DROP_OLDEST subscriber
//   stalls nobody, yet would keep its messages), and a subscribe that finds
//   the table full. The references it received are in its holdings table: the
//   domain's garbage collection drops them, as for any process.
//
// Closing a subscription
// ----------------------
// Every subscription of a process has the process's token in its cursor, so a
// freed entry taken by another subscription of the same process would look
// like its own. A subscription's gets therefore never outlive its entry: close
// frees the entry only when no get of the subscription is in progress in this
// process (a process-local count, ordered seq_cst with the closed flag), and
// otherwise the last get to leave frees it. A reader leaves READING by CAS.
//
// Everything read here is untrusted: positions are compared modulo 2^32,
// every loop over slots or entries is bounded by the header's sizes, checked
// against the file's size when attaching, and blocks are checked as a queue's.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "channel/ring.hpp"
#include "hakobu/topic.hpp"

namespace hakobu::detail {

inline constexpr std::uint64_t kTopicMagic = 0x4349'504F'5442'4B48ULL;  // "HKBTOPIC"
inline constexpr std::uint32_t kTopicLayoutVersion = 1;
inline constexpr std::uint32_t kTopicUnlinked = 1;

/// The ring's RETIRING state is the queue's READING code.
inline constexpr SlotState kRetiring = SlotState::Reading;

enum class CursorState : std::uint8_t { Free = 0, Joining = 1, Active = 2, Reading = 3 };

constexpr std::uint64_t make_cursor(std::uint64_t position, CursorState state, std::uint32_t token) noexcept {
  return make_control(position, static_cast<SlotState>(state), token);
}
constexpr CursorState cursor_state(std::uint64_t cursor) noexcept {
  return static_cast<CursorState>(control_state(cursor));
}

inline constexpr std::uint32_t kOnFullDropOldest = 0;
inline constexpr std::uint32_t kOnFullBlock = 1;

struct SubscriberEntry {
  std::atomic<std::uint64_t> cursor;     ///< see above; 0: free
  std::atomic<std::uint32_t> on_full;    ///< kOnFullDropOldest or kOnFullBlock
  std::atomic<std::int32_t> pid;         ///< for display
  std::atomic<std::uint64_t> dropped;    ///< messages publishers skipped it past
  std::atomic<std::uint64_t> received;   ///< messages it took
  std::atomic<std::uint64_t> joined_at;  ///< publish_count when it joined (display)
  std::uint64_t reserved[3];
};
static_assert(sizeof(SubscriberEntry) == 64, "a subscriber entry is one cache line in shared memory");
static_assert(std::is_standard_layout_v<SubscriberEntry>, "SubscriberEntry lives in shared memory");

struct TopicHeader {  // NOLINT(clang-analyzer-optin.performance.Padding): padding keeps hot counters apart
  std::atomic<std::uint64_t> magic;  ///< kTopicMagic once initialized
  std::uint32_t layout_version;
  std::uint32_t slot_bytes;
  std::uint32_t capacity;
  std::uint32_t history;
  std::uint32_t max_subscribers;
  std::uint32_t inline_capacity;
  std::uint64_t file_bytes;
  std::uint32_t creator_token;
  std::int32_t creator_pid;
  std::atomic<std::uint32_t> flags;
  /// Subscriber entries ever claimed: scans stop here (only grows; read bounded by max_subscribers).
  std::atomic<std::uint32_t> entries_used;
  std::uint32_t reserved0[2];

  alignas(64) std::atomic<std::uint64_t> publish_pos;
  alignas(64) std::atomic<std::uint32_t> published;  ///< futex word, bumped when a message is published
  std::atomic<std::uint32_t> subscribers_waiting;    ///< sleepers | watchers (ring.hpp)
  std::atomic<std::int64_t> published_at;            ///< monotonic ns of the last wake-up of sleepers
  alignas(64) std::atomic<std::uint32_t> room;       ///< futex word, bumped when a blocking cursor moves
  std::atomic<std::uint32_t> publishers_waiting;     ///< sleepers | watchers
  std::atomic<std::int64_t> room_at;
  alignas(64) std::atomic<std::uint64_t> publish_count;
  alignas(64) std::atomic<std::uint64_t> watchers[kWatcherSlots];  ///< signalled by publishes
};
static_assert(std::is_standard_layout_v<TopicHeader>, "TopicHeader lives in shared memory");
static_assert(sizeof(TopicHeader) == 448, "the topic header's layout changed: bump kTopicLayoutVersion");

/// Lock bytes on the topic file (open-file-description locks), as a queue's.
inline constexpr std::uint64_t kTopicInitLockByte = 0;
inline constexpr std::uint64_t kTopicLifecycleLockByte = 1;

/// Bytes of a topic file with these sizes.
constexpr std::uint64_t topic_file_bytes(std::uint64_t capacity, std::uint64_t max_subscribers,
                                         std::uint64_t slot_bytes) noexcept {
  return sizeof(TopicHeader) + max_subscribers * sizeof(SubscriberEntry) + capacity * slot_bytes;
}

/// The sizes of a topic file, read once from its header (shared memory,
/// untrusted): whoever opens or inspects the file checks these copies and uses
/// nothing else.
struct TopicGeometry {
  std::uint64_t capacity = 0;
  std::uint64_t history = 0;
  std::uint64_t max_subscribers = 0;
  std::uint64_t inline_capacity = 0;
  std::uint64_t slot_bytes = 0;
  std::uint64_t file_bytes = 0;

  [[nodiscard]] static TopicGeometry read(const TopicHeader& header) noexcept {
    return {header.capacity,        header.history,    header.max_subscribers,
            header.inline_capacity, header.slot_bytes, header.file_bytes};
  }
  /// Whether they describe a file this library makes, no larger than `file_size`.
  [[nodiscard]] bool valid(std::uint64_t file_size) const noexcept {
    return capacity != 0 && capacity <= kMaxTopicCapacity && (capacity & (capacity - 1)) == 0 && history < capacity &&
           max_subscribers != 0 && max_subscribers <= kMaxTopicSubscribers && inline_capacity <= kMaxInlineBytes &&
           slot_bytes >= kSlotHeaderBytes + inline_capacity && slot_bytes % 64 == 0 && slot_bytes <= 4096 &&
           file_bytes == topic_file_bytes(capacity, max_subscribers, slot_bytes) && file_bytes <= file_size;
  }
};

}  // namespace hakobu::detail
