// hakobu — the queue's ring, byte for byte.
//
// A bounded MPMC ring of fixed-size slots with a per-slot control word
// (after the per-slot sequence-number design of bounded MPMC queues), extended
// so that a process that dies in the middle of a put or a get can be repaired
// around: every claim records who made it.
//
// Slot protocol
// -------------
// control = position (32 bits) | state (2 bits) << 32 | claimer token (30 bits) << 34
//
//   EMPTY(p)    ready for the producer of position p
//   WRITING(p)  claimed by that producer (token = who)
//   FULL(p)     message p is ready for a consumer
//   READING(p)  claimed by the consumer of p (token = who)
//   → after the read: EMPTY(p + capacity)
//
// * Claims are compare-and-swaps on the control word; enqueue_pos/dequeue_pos
//   are hints anyone may advance past a claimed slot ("helping").
// * Publishing (FULL, EMPTY) is a release store; claiming reads with acquire.
// * A WRITING slot whose claimer died is turned into a FULL tombstone that
//   consumers skip; a READING slot whose claimer died becomes EMPTY(p + capacity).
//   Whoever finds such a slot while waiting repairs it.
// * Positions are 32-bit and compared modulo 2^32 (capacity, at most 2^24,
//   divides 2^32, and no two live positions are 2^31 apart).
// * The token names the claimer's process slot and that slot's generation
//   (20 bits: a slot is reused a million times before a dead claim could
//   look like its new owner's; slots are taken round-robin, see take_slot).
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "hakobu/message.hpp"
#include "memory/heap.hpp"

namespace hakobu::detail {

inline constexpr std::uint64_t kQueueMagic = 0x5545'5551'4F42'414BULL;  // "KABOQUEU"
inline constexpr std::uint64_t kPositionMask = (std::uint64_t{1} << 32) - 1;
inline constexpr std::size_t kMaxQueueCapacity = std::size_t{1} << 24;

enum class SlotState : std::uint8_t { Empty = 0, Writing = 1, Full = 2, Reading = 3 };

constexpr std::uint64_t make_control(std::uint64_t position, SlotState state, std::uint32_t token) noexcept {
  return (position & kPositionMask) | (static_cast<std::uint64_t>(state) << 32U) |
         (static_cast<std::uint64_t>(token) << 34U);
}
constexpr std::uint64_t control_position(std::uint64_t control) noexcept {
  return control & kPositionMask;
}
constexpr SlotState control_state(std::uint64_t control) noexcept {
  return static_cast<SlotState>((control >> 32U) & 3U);
}
constexpr std::uint32_t control_token(std::uint64_t control) noexcept {
  return static_cast<std::uint32_t>(control >> 34U);
}
/// (a - b) modulo 2^32, as a signed number.
constexpr std::int64_t position_diff(std::uint64_t a, std::uint64_t b) noexcept {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(a - b));
}
static_assert(position_diff(0, kPositionMask) == 1 && position_diff(kPositionMask, 0) == -1,
              "position_diff must see across the wrap of the 32-bit ring positions");

/// Message kind of a slot whose producer died before publishing.
inline constexpr std::uint8_t kTombstone = 0;

/// The fixed part of a slot; the inline payload follows.
struct SlotHeader {
  std::atomic<std::uint64_t> control;
  std::uint8_t kind;  ///< MessageKind, or kTombstone
  /// A queue's: the payload bytes of the blocks the message holds by reference
  /// (its attachments: arrays sent without a copy), counted with `length`
  /// against the byte capacity. 56 bits, little-endian (attached_bytes() below).
  std::uint8_t attached[7];
  std::uint64_t length;  ///< payload bytes
  std::uint64_t block;   ///< heap offset of the payload's block; 0: payload inline
};
inline constexpr std::size_t kSlotHeaderBytes = sizeof(SlotHeader);
static_assert(kSlotHeaderBytes == 32, "a ring slot's header is 32 bytes in shared memory: its layout changed");
static_assert(std::is_standard_layout_v<SlotHeader>, "SlotHeader lives in shared memory: it must be standard-layout");
static_assert(std::endian::native == std::endian::little, "SlotHeader::attached holds the low 7 bytes of a uint64");

/// The most SlotHeader::attached records. A producer clamps what it reserves to it (a heap holds
/// at most 2^46 bytes, and each attached block is counted once, so a true count fits); the value
/// is shared memory all the same, and its reader clamps what it subtracts.
inline constexpr std::uint64_t kMaxAttachedBytes = (std::uint64_t{1} << 56) - 1;
inline std::uint64_t attached_bytes(const SlotHeader& s) noexcept {
  std::uint64_t bytes = 0;
  std::memcpy(&bytes, s.attached, sizeof s.attached);
  return bytes;
}
inline void set_attached_bytes(SlotHeader& s, std::uint64_t bytes) noexcept {
  bytes = std::min(bytes, kMaxAttachedBytes);
  std::memcpy(s.attached, &bytes, sizeof s.attached);
}

/// A dead publisher's WRITING(p) claim, read as `control`: taken over by `me`
/// and emptied into a tombstone, for the caller to publish (FULL(p)) in its
/// place. False if the slot changed meanwhile (someone else repaired it).
inline bool claim_as_tombstone(SlotHeader& s, std::uint64_t control, std::uint32_t me) noexcept {
  if (!s.control.compare_exchange_strong(control, make_control(control_position(control), SlotState::Writing, me))) {
    return false;
  }
  s.kind = kTombstone;
  set_attached_bytes(s, 0);
  s.length = 0;
  s.block = 0;
  return true;
}

/// Drops the reference each published message of a ring of `capacity` slots
/// holds (`slot_at(i)`: slot i), when the last handle of an unlinked queue or
/// topic lets go. Descriptors are checked: the file is shared memory.
template <class SlotAt>
void drop_ring_references(Heap& heap, std::uint64_t capacity, SlotAt&& slot_at) noexcept {
  for (std::uint64_t i = 0; i < capacity; ++i) {
    SlotHeader* s = slot_at(i);
    const std::uint64_t c = s->control.load(std::memory_order_acquire);
    if (control_state(c) != SlotState::Full || s->kind == kTombstone || s->block == 0) continue;
    if (heap.check_block(s->block, s->length)) heap.drop_ref(s->block);
    s->block = 0;
  }
}

inline constexpr std::uint32_t kQueueUnlinked = 1;

/// The queue file's own layout version (the registry and heap have kLayoutVersion).
/// 4: senders (end of stream) and the byte count; before it, queues used kLayoutVersion 3.
/// 5: slots carry the bytes their message holds by reference (SlotHeader::attached).
inline constexpr std::uint32_t kQueueLayoutVersion = 5;

// Senders and the end of the stream
// ---------------------------------
// senders[] lists the handles that send on the queue: an entry is 0 (free) or
//   kSenderEntry | the sender's process token
// taken (CAS from 0) by a handle before its first put (or when it opens with
// QueueOptions::sends), given back (store 0) when it closes. stream_flags:
//   kEverSent        a sender registered since the queue was made
//   kSenderFailed    a sender closed with Ending::Failed, or died (its entry was
//                    reaped); cleared by a sender that registers into an empty table
// A sender that finds the table full (after reaping dead entries) is counted in
// untracked_senders instead, until it closes; a dead one is never counted down,
// and its queue's streams never end (64 senders at once is the design's bound).
// registrations is bumped (seq_cst) after each entry is taken: a receiver that
// finds the queue empty reads it, the flags, then the entries, then it again;
// if it did not change, kEverSent is set, nothing is untracked and no entry is
// in use, the table was empty at one instant (a sender registering during the
// scan and another leaving would otherwise look like none), so it tries once
// more and, still empty, reports the end (Ended, or SendersLost with
// kSenderFailed). A sender frees its entry after its last put was published
// (release), and the receiver read the entry with acquire: that second try
// sees every message. Entries of dead processes are reaped (kSenderFailed set,
// then the entry taken over by CAS as the reaper's own while it settles the
// dead one's reserved bytes, then freed) by receivers waiting on an empty
// queue, every kSenderCheckNs, and by pollers now and then; whoever frees the last entry
// wakes every receiver. Entries are untrusted: a forged one can only delay
// the end (until reaped) or report it early to a queue that is empty anyway.
inline constexpr std::size_t kSenderSlots = 64;
inline constexpr std::uint64_t kSenderEntry = std::uint64_t{1} << 32;
inline constexpr std::uint32_t kEverSent = 1;
inline constexpr std::uint32_t kSenderFailed = 2;

// Bytes queued
// ------------
// bytes_queued counts the payload bytes of the messages carried in blocks
// (inline ones are bounded by the ring), with the payload bytes of the blocks
// each holds by reference (its attachments: an array sent without a copy is
// memory the queue keeps alive, as a copied one is). A message's count is its
// length plus its slot's `attached`, fixed by the producer when it sends, so
// that whoever subtracts it later (receiver, repairer) needs nothing but the
// slot. A producer reserves a message's count (CAS: only while the total
// stays within capacity_bytes, or the ring is empty, so one message always
// gets in) before claiming a slot, and gives it back if the claim fails; the
// receiver subtracts it when it takes the message, then zeroes the slot's
// length, attached and block. Between its reservation
// and the fill of its slot's descriptor a listed sender shows the amount in
// senders_reserving[its entry]: whoever reaps its entry after its death
// subtracts that. A dead claimer's slot is settled by its repairer: a dead
// producer's reservation (its slot names a block) or a dead receiver's
// unsubtracted one is subtracted. A process killed between two of these steps
// leaves the count too low by one message at most (it holds one message more;
// healed when the queue drains: a reservation on a negative count starts from 0)
// — except a receiver killed after it took the message and before it zeroed the
// descriptor's length, or an unlisted sender (table full) killed in between:
// then too high by one message, and the queue holds that much less (never stuck:
// an empty ring always admits).

// Waiter counts and event-loop watchers
// --------------------------------------
// consumers_waiting / producers_waiting hold two counts in one word, so that a
// put or get reads both with the one read-modify-write it already makes:
//
//   bits 0..19   threads asleep on the futex word (announced before sleeping)
//   bits 20..31  entries registered in the side's watcher table
//
// A watcher table (get_watchers: woken by puts; put_watchers: woken by gets)
// has kWatcherSlots entries; an entry is 0 (free) or
//   socket id (48 bits, random, nonzero) << 16 | cookie (16 bits)
// naming the abstract datagram socket "hakobu-wake.<uid>.<socket id in hex>"
// of a process whose event loop waits, and the cookie it sends there.
// Registering: CAS a free entry from 0, then add kWatcherUnit (seq_cst), then
// try the queue again; a notifier reads the count with its read-modify-write
// after publishing, and if the watcher bits are set sends the entry's cookie
// to every nonzero entry. Whoever empties an entry (CAS entry -> 0) subtracts
// kWatcherUnit once: the owner when it stops watching, or a notifier whose
// datagram found no socket under the name (the owner died or closed it).
//
// The table is shared memory, so untrusted: a forged entry can only name a
// socket of this user's "hakobu-wake." names (the uid comes from the sender,
// not from the table), so the worst it does is a spurious wake-up, which every
// waiter tolerates; a forged count only makes notifiers scan the table.
inline constexpr std::size_t kWatcherSlots = 16;
inline constexpr std::uint32_t kSleeperMask = (std::uint32_t{1} << 20) - 1;
inline constexpr std::uint32_t kWatcherUnit = std::uint32_t{1} << 20;

struct QueueHeader {  // NOLINT(clang-analyzer-optin.performance.Padding): padding keeps hot counters apart
  std::atomic<std::uint64_t> magic;  ///< kQueueMagic once initialized
  std::uint32_t layout_version;
  std::uint32_t slot_bytes;
  std::uint64_t capacity;
  std::uint64_t file_bytes;
  std::uint32_t inline_capacity;
  std::uint32_t creator_token;
  std::int32_t creator_pid;
  std::atomic<std::uint32_t> flags;
  std::uint64_t reserved0[2];

  // Each hot counter on its own cache line: producers and consumers would
  // otherwise invalidate each other's line on every operation (false sharing).
  alignas(64) std::atomic<std::uint64_t> enqueue_pos;
  alignas(64) std::atomic<std::uint64_t> dequeue_pos;
  alignas(64) std::atomic<std::uint32_t> not_empty;  ///< futex word, bumped when a message arrives
  std::atomic<std::uint32_t> consumers_waiting;      ///< sleepers | watchers (see above)
  /// Monotonic ns of the last wake-up of sleeping consumers: when their message
  /// came, wake-up latency left out (a hint for the adaptive spin; checked).
  std::atomic<std::int64_t> not_empty_at;
  alignas(64) std::atomic<std::uint32_t> not_full;  ///< futex word, bumped when a slot frees
  std::atomic<std::uint32_t> producers_waiting;     ///< sleepers | watchers
  std::atomic<std::int64_t> not_full_at;            ///< as not_empty_at, for sleeping producers
  alignas(64) std::atomic<std::uint64_t> put_count;
  alignas(64) std::atomic<std::uint64_t> get_count;
  alignas(64) std::atomic<std::uint64_t> get_watchers[kWatcherSlots];  ///< signalled by puts (see above)
  alignas(64) std::atomic<std::uint64_t> put_watchers[kWatcherSlots];  ///< signalled by gets
  alignas(64) std::atomic<std::int64_t> bytes_queued;                  ///< see "Bytes queued"
  std::uint64_t capacity_bytes;                                        ///< 0: no limit
  alignas(64) std::atomic<std::uint32_t> stream_flags;                 ///< see "Senders"
  std::atomic<std::uint32_t> registrations;      ///< bumped by every registration, after its entry
  std::atomic<std::uint32_t> untracked_senders;  ///< senders that found the table full
  std::uint32_t reserved1;
  alignas(64) std::atomic<std::uint64_t> senders[kSenderSlots];
  /// Bytes each listed sender reserved and has not yet named in a slot (see "Bytes queued").
  alignas(64) std::atomic<std::uint64_t> senders_reserving[kSenderSlots];
};
static_assert(std::is_standard_layout_v<QueueHeader>, "QueueHeader lives in shared memory: it must be standard-layout");
static_assert(sizeof(QueueHeader) % 64 == 0, "the ring's slots start on a cache line after the queue header");

/// Lock bytes on the queue file (open-file-description locks).
inline constexpr std::uint64_t kQueueInitLockByte = 0;       ///< shared while attaching, exclusive while draining
inline constexpr std::uint64_t kQueueLifecycleLockByte = 1;  ///< shared by every process that has it open

}  // namespace hakobu::detail
