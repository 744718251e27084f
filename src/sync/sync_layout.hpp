// hakobu — named synchronization objects (locks, events), byte for byte.
//
// Where they live
// ---------------
// Each object is its own file of the domain, one page:
//
//   hakobu:D:s:NAME          a sync object: SyncHeader, then (later kinds) a
//                            per-process table; `kind` says which object it is
//   hakobu:D:new:NAME:NONCE  one being built, before link() publishes it
//
// * Locks, events (and the kinds to come: RLock, semaphores, barriers,
//   conditions) share one namespace per domain, apart from queues ("q:").
//   Opening a name as another kind than it was created fails (Incompatible).
// * A file per object, not slots of a per-domain table: creation is published
//   whole with link() like a queue (others see a complete object or none), the
//   object outlives its creator until removed, an administration tool lists it
//   by name without attaching, and a damaged object harms nobody else.
// * A sync file counts as a named object of its domain (DomainState::
//   count_queues_removing_leftovers counts "s:" files): the domain, and with it
//   the registry whose slot generations make owner tokens unique, stays while
//   any sync object exists. A registry made anew would restart generations, and
//   a dead holder's token could then name a living process.
// * No file locks are taken on a sync file: nothing in it needs draining when
//   the last user leaves, so the descriptor is closed once the page is mapped.
//
// Memory-layout rules (as in memory/layout.hpp)
// ---------------------------------------------
// * Only plain integers and lock-free atomics; every word is untrusted: any
//   process of the user may write any value into it. A hostile value may make
//   a lock look held or free, or wake sleepers for nothing; it must never make
//   a caller crash, read out of bounds, or wait past its deadline.
// * `magic` is stored last (release) before the file is linked under its name;
//   an opener checks magic, layout version, kind and file size before use.
//
// The lock word (32 bits)
// -----------------------
//   bit 31      kLockWaiters: someone may sleep on the word (release must wake)
//   bit 30      kLockHeld
//   bits 0..29  the holder's process token (make_token: process slot, 10 bits,
//               and that slot's generation, 20 bits; domain_state.hpp)
//   0           free
//
// * Acquire, uncontended: one compare-and-swap 0 → held|token (acquire order).
//   Release, uncontended: one compare-and-swap held|token → 0 (release order).
//   No system call on either path.
// * Contended (after Drepper's three-state futex mutex): a waiter sets
//   kLockWaiters and sleeps on the word (futex, with the caller's deadline);
//   release wakes one sleeper when the bit was set. A woken waiter acquires
//   with kLockWaiters set, because it cannot know whether others still sleep:
//   at worst one wake-up too many, never one too few.
// * The holder is a process, not a thread: any thread of the holding process
//   may release (threading.Lock semantics). A release by another process fails
//   (NotOwner). Same-thread ownership for RLock is the next kind's business
//   (a holder thread word and a recursion count beside the lock word).
// * A word with kLockHeld clear but other bits set is not a valid state (no
//   release leaves it): it is treated as free and overwritten.
//
// Crash safety (lock)
// -------------------
// * A holder that dies leaves held|token. A waiter checks whether the token's
//   process is alive (DomainState::token_alive: slot active, same generation,
//   its OFD byte lock on the registry still held) when it first meets the lock
//   held and then every kLivenessPollNs while it sleeps (a dead holder will
//   never wake it). If dead: compare-and-swap held|dead → held|me (keeping
//   kLockWaiters), and the acquire reports OwnerDied, like EOWNERDEAD. The
//   compare-and-swap makes exactly one waiter the heir.
// * A forged token is only a token of a slot that is dead or alive: out-of-range
//   slots cannot be encoded (10 bits for 1024 slots), a wrong generation reads
//   as dead. At worst a forger makes a lock look held by a living process
//   (which any process of the user could do by holding it).
// * Liveness is decided per process: a thread that ends while holding the
//   lock in a living process is not detected (as with threading.Lock).
// * A process that closes the domain (leaves its slot) while holding a lock
//   counts as dead for it: the next acquirer takes over with OwnerDied.
// * After fork() a lock handle refuses to acquire or release in the child (its
//   token is the parent's); the child opens the lock again.
// * Every loop over the word re-reads the clock and returns at the caller's
//   deadline, whatever another process writes.
//
// The event word (32 bits)
// ------------------------
//   bit 0  set;  bit 1  kEventWaiters: someone may sleep on the word.
// * set: exchange(word, set) (clears kEventWaiters); wakes every sleeper if
//   the bit was there. clear: clears bit 0 only. wait: returns when bit 0 is
//   seen; else sets kEventWaiters and sleeps while the word is unchanged.
// * No counter of waiters is kept: a waiter killed while asleep leaves at most
//   a bit that costs one spurious wake-up, never a count that stays wrong.
// * An event has no owner: it works from any process, including a forked child.
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "domain/domain_state.hpp"

namespace hakobu::detail {

inline constexpr std::uint64_t kSyncMagic = 0x434E'5953'4F42'414BULL;  // "KABOSYNC"
inline constexpr std::uint32_t kSyncLayoutVersion = 1;
inline constexpr std::uint64_t kSyncFileBytes = 4096;

/// What a sync file holds.
enum class SyncKind : std::uint32_t { Lock = 1, Event = 2 };

inline constexpr std::uint32_t kLockWaiters = 1U << 31U;
inline constexpr std::uint32_t kLockHeld = 1U << 30U;
inline constexpr std::uint32_t kLockTokenMask = kLockHeld - 1;
static_assert(kTokenSlotBits + 20 == 30, "a process token fits the lock word's low 30 bits");

inline constexpr std::uint32_t kEventSet = 1U;
inline constexpr std::uint32_t kEventWaiters = 2U;

/// How often a sleeping waiter looks whether the holder still lives.
inline constexpr std::int64_t kLivenessPollNs = 20'000'000;  // 20 ms

struct SyncHeader {
  std::atomic<std::uint64_t> magic;  ///< kSyncMagic once complete
  std::uint32_t layout_version;      ///< kSyncLayoutVersion
  std::uint32_t kind;                ///< a SyncKind
  std::uint64_t file_bytes;          ///< the file's size as created
  std::uint32_t creator_token;
  std::int32_t creator_pid;
  std::uint64_t reserved0[4];

  // The word every operation works on, alone on its cache line with what
  // only its holders write.
  alignas(64) std::atomic<std::uint32_t> word;  ///< lock word or event word (above)
  std::atomic<std::int32_t> holder_pid;         ///< Lock: the holder's pid, for people only (never trusted)
  std::atomic<std::uint32_t> owner_deaths;      ///< Lock: times taken over from a dead holder
  std::uint32_t reserved1[13];
};
static_assert(std::is_standard_layout_v<SyncHeader>, "SyncHeader lives in shared memory: it must be standard-layout");
static_assert(sizeof(SyncHeader) == 128 && sizeof(SyncHeader) <= kSyncFileBytes,
              "a sync header is two cache lines of its page: its layout changed");

}  // namespace hakobu::detail
