// hakobu — named synchronization objects (locks, recursive locks, events,
// semaphores, barriers, conditions, shared values/arrays), byte for byte.
//
// Where they live
// ---------------
// Each object is its own file of the domain:
//
//   hakobu:D:s:NAME          a sync object: SyncHeader, its kind's body, and for
//                            some kinds a table or data; `kind` says which
//
//   offset 0     SyncHeader (128 bytes: identity, then the futex word's line)
//   offset 128   the kind's body (RLockBody, SemaphoreBody, ...; none for
//                Lock and Event), inside the first page
//   offset 4096  Semaphore/BoundedSemaphore: the held-count table, Barrier:
//                the arrival table (1024 x 8 bytes, one per process slot);
//                SharedArray: the data bytes
//
//   kind               file bytes
//   Lock, Event,       4096 (one page, as in the first version)
//   RLock, Condition
//   (Bounded)Semaphore 4096 + 8192
//   Barrier            4096 + 8192
//   SharedArray        4096 + data bytes (itemsize x elements, 0 allowed)
//
// * `file_bytes` in the header says the size; an opener computes the size its
//   kind (and, for an array, the body's dtype and shape) implies and requires
//   header, computation and the file's size to agree before it maps more
//   than the first page. Parameters in bodies (bound, parties, dtype, shape)
//   are written once before magic and copied into the handle at attach: a
//   later hostile write to them changes nothing a handle relies on.
// * Layout version stays 1: the header did not change, Lock and Event files
//   are byte for byte as before, new kinds only add kind numbers. A library
//   that knew only Lock and Event refuses the new kinds' files (their size is
//   not one page, or their kind unknown): it never misreads them.
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
//   its OFD byte lock on the registry still held; a system call): a try when it
//   meets the lock held, a blocking acquire after every kLivenessPollNs it
//   sleeps (a dead holder will never wake it) and once more before it fails
//   at its deadline. So a lock handed to and fro between living processes
//   costs no such call, and every acquire that would fail looks first. If
//   dead: compare-and-swap held|dead → held|me (keeping kLockWaiters), and the
//   acquire reports OwnerDied, like EOWNERDEAD. The compare-and-swap makes
//   exactly one waiter the heir.
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
//
// The recursive lock (RLock)
// --------------------------
// * header.word is a lock word exactly as above (the owner *process*), and
//   RLockBody adds `owner_thread` (a number unique among this process's
//   threads, never 0) and `depth` (the recursion count). Both are written only
//   by the owner thread while the word names its process, and cleared before
//   the release compare-and-swap: a thread that reads its own number in
//   `owner_thread` while the word names its process is the owner (nobody else
//   writes its number there), so recursion needs no atomic read-modify-write.
// * Release by another thread of the owner process: NotOwnerThread; by
//   another process: NotOwner. A dead owner process is taken over exactly as
//   for Lock (OwnerDied), and the heir sets owner_thread and depth = 1.
// * Hostile `depth`: at most a wrong number of releases before the lock is
//   free; at 2^32 - 1 a further acquire fails (TooDeep) rather than wrap.
//
// Semaphores (Semaphore, BoundedSemaphore)
// ----------------------------------------
//   header.word   bit 31 kSemWaiters (someone may sleep), bits 0..30 the count
//   body          `bound` (BoundedSemaphore: the initial value; unused else),
//                 `returned` and `maybe_leaked` (statistics for people)
//   table[1024]   per process slot: bits 0..31 counts held, bits 32..51 the
//                 holder slot's generation, bit 63 kHeldBusy (an operation of
//                 that process is between the count word and this entry)
// * acquire: compare-and-swap count → count-1 on the word (no system call),
//   then record +1 in the caller's entry. release(n): record -min(n, held) in
//   the entry first, then add n to the word and wake up to n sleepers if
//   kSemWaiters was set. A waiter that finds 0 sets kSemWaiters and sleeps.
// * Return of dead holders' counts: a caller that finds the count 0 (at once,
//   then every kLivenessPollNs while it sleeps) scans the table: an entry with
//   counts whose (slot, generation) token is not alive is swapped to 0 by one
//   compare-and-swap (so exactly one scanner returns it), and its counts are
//   added to the word. A process that takes the slot next (a new generation)
//   and finds an older generation's counts in its entry returns them the
//   same way before recording its own.
// * Crash-safety order: the count is taken before it is recorded, and the
//   record is dropped before the count is given back. A process killed
//   between the two steps has one count taken but not recorded (acquire) or
//   unrecorded but not given back (release): that count is lost, never
//   created twice. To make the window visible, each operation sets kHeldBusy
//   in its entry before touching the word and clears it with the record; a
//   scanner that returns a dead entry with kHeldBusy set adds 1 to
//   `maybe_leaked` (it cannot tell whether the step happened). The lost count
//   stays lost until the semaphore is removed and made again: at most one per
//   operation killed between two adjacent atomic instructions. Likewise a
//   scanner killed after swapping a dead entry to 0 and before adding its
//   counts loses those counts (it never adds them twice). kHeldBusy is one bit
//   per process: with several threads mid-operation, `maybe_leaked` may
//   undercount; it is a hint for people, never used to make counts.
// * A release with nothing recorded (signalling: one process releases,
//   another acquires) just adds to the word. Counts a process acquired and
//   never released are returned when it leaves: semaphores count resources.
// * Bounded: release fails (TooMany) when the count would pass `bound`; dead
//   holders' counts are returned up to `bound` (a hostile entry cannot push a
//   bounded semaphore past its bound). Hostile entries can add counts to an
//   unbounded one, up to 2^31 - 1: any process of the user could release.
// * Forked children refuse: their token is their parent's.
//
// The barrier
// -----------
//   header.word   bit 31 kBarrierBroken, bit 30 kBarrierWasReset (the last
//                 change of generation was a reset, not a trip), bits 16..29
//                 the generation (14 bits, wrapping), bits 0..15 the number
//                 of parties arrived in it
//   body          `parties` (1..65535)
//   table[1024]   per process slot: the parties of that process that arrived
//                 in a generation: bits 0..15 count, 16..35 the slot's
//                 generation, 36..49 the barrier generation, bit 63 valid
// * wait: record the arrival in the caller's entry first, then increment the
//   word's count by compare-and-swap; the party that makes it `parties`
//   instead swaps in (generation + 1, count 0) and wakes every sleeper. Others
//   sleep while the word keeps their generation and is not broken.
// * Dead parties: every kLivenessPollNs a sleeper scans the table for an entry
//   of the current generation whose process is dead, and then breaks the
//   barrier (sets kBarrierBroken, wakes all). Recording before counting means
//   a party killed between the two steps is seen as arrived and dead: it
//   breaks the barrier, which is right (it will never arrive). A party that
//   opened the barrier but died before recording is not known to be a party
//   (parties are anonymous: any thread of any process may be one), so its
//   absence is noticed only by the waiters' timeouts, which break the
//   barrier like threading's. Scanners also clear dead entries of other
//   generations, so a stale entry cannot match a generation 2^14 later.
// * abort: sets kBarrierBroken (sticky). reset: swaps in (generation + 1,
//   count 0, kBarrierWasReset): waiters of the old generation see the change
//   with kBarrierWasReset and report Broken. A waiter that sleeps through
//   more than one change of generation judges by the last one.
// * Hostile words: a count at or past `parties` is treated as a trip by the
//   next arrival; every wait still returns by its deadline.
//
// The condition
// -------------
// * Own lock: header.word is a lock word as above (the Condition's file is
//   also its lock). Bound to a named Lock: the body records the lock's name,
//   and every opener must give the same one; header.word is then unused.
// * `seq` (body, own cache line): bit 0 kCondWaiters, bits 1..31 a counter.
//   wait: read seq (holding the lock), set kCondWaiters, release the lock,
//   futex-wait while seq is unchanged, then re-acquire the lock. notify(n):
//   add 2 to seq (holding the lock), wake n sleepers if kCondWaiters.
//   notify_all: also clears kCondWaiters and wakes all. A waiter that has
//   read seq but not slept yet sees it changed and returns: notify may wake
//   more than n, never fewer (callers re-check their predicate).
// * A waiter killed while asleep leaves at most kCondWaiters set: one
//   needless wake system call. A dead lock holder is handled by the lock
//   (the waiter's re-acquire reports OwnerDied).
//
// Shared values and arrays (SharedArray)
// --------------------------------------
//   header.word   a lock word as above (get_lock())
//   body          dtype (code, bits, lanes), ndim, shape[64], data_bytes
//   offset 4096   the data bytes, C order
// * The data starts on a page, so every element of an integer type of 1, 2, 4
//   or 8 bytes is aligned for std::atomic_ref; itemsize must be a whole
//   number of bytes. Atomics work on the shared bytes without the lock; data
//   bytes are plain numbers (no hostile value can harm a reader).
// * Attach checks dtype and shape against the caller's (Incompatible) and
//   itemsize x elements against data_bytes and the file size (Corrupt).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "domain/domain_state.hpp"
#include "hakobu/array.hpp"
#include "hakobu/error.hpp"

namespace hakobu::detail {

inline constexpr std::uint64_t kSyncMagic = 0x434E'5953'4F42'414BULL;  // "KABOSYNC"
inline constexpr std::uint32_t kSyncLayoutVersion = 1;
inline constexpr std::uint64_t kSyncFileBytes = 4096;

/// What a sync file holds.
enum class SyncKind : std::uint32_t {
  Lock = 1,
  Event = 2,
  RLock = 3,
  Semaphore = 4,
  BoundedSemaphore = 5,
  Barrier = 6,
  Condition = 7,
  SharedArray = 8,
};
inline constexpr std::uint32_t kSyncKindLast = 8;

inline constexpr std::uint32_t kLockWaiters = 1U << 31U;
inline constexpr std::uint32_t kLockHeld = 1U << 30U;
inline constexpr std::uint32_t kLockTokenMask = kLockHeld - 1;
static_assert(kTokenSlotBits + 20 == 30, "a process token fits the lock word's low 30 bits");

inline constexpr std::uint32_t kEventSet = 1U;
inline constexpr std::uint32_t kEventWaiters = 2U;

inline constexpr std::uint32_t kSemWaiters = 1U << 31U;
inline constexpr std::uint32_t kSemCountMask = kSemWaiters - 1;
inline constexpr std::uint64_t kHeldBusy = 1ULL << 63U;

inline constexpr std::uint32_t kBarrierBroken = 1U << 31U;
inline constexpr std::uint32_t kBarrierWasReset = 1U << 30U;
inline constexpr std::uint32_t kBarrierGenShift = 16;
inline constexpr std::uint32_t kBarrierGenMask = (1U << 14U) - 1;  // after the shift
inline constexpr std::uint32_t kBarrierCountMask = (1U << 16U) - 1;
inline constexpr std::uint32_t kMaxBarrierParties = kBarrierCountMask;
inline constexpr std::uint64_t kArrivalValid = 1ULL << 63U;

inline constexpr std::uint32_t kCondWaiters = 1U;

/// Where the per-process table (semaphores, barriers) or the data (arrays) starts.
inline constexpr std::uint64_t kSyncTableOffset = 4096;
inline constexpr std::uint64_t kSyncTableBytes = std::uint64_t{kMaxProcesses} * 8;
inline constexpr std::uint64_t kSyncBodyOffset = 128;
inline constexpr std::size_t kMaxArrayDimsInFile = 64;
inline constexpr std::uint64_t kMaxArrayDataBytes = std::uint64_t{1} << 40U;

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

struct RLockBody {
  std::atomic<std::uint32_t> owner_thread;  ///< the owner thread's number in its process; 0: none
  std::atomic<std::uint32_t> depth;         ///< recursion count of the owner thread
};

struct SemaphoreBody {
  std::uint32_t bound;  ///< BoundedSemaphore: the initial value (unused for Semaphore)
  std::uint32_t reserved;
  std::atomic<std::uint32_t> returned;      ///< counts returned from dead holders (statistics)
  std::atomic<std::uint32_t> maybe_leaked;  ///< dead holders killed mid-operation (statistics)
};

struct BarrierBody {
  std::uint32_t parties;
};

struct ConditionBody {
  alignas(64) std::atomic<std::uint32_t> seq;  ///< kCondWaiters | counter << 1
  std::uint32_t lock_name_bytes;               ///< 0: the condition's own lock (header.word)
  char lock_name[64];                          ///< the bound Lock's name, not terminated
};

struct ArrayBody {
  std::uint8_t code;  ///< DTypeCode
  std::uint8_t bits;
  std::uint16_t lanes;
  std::uint32_t ndim;
  std::uint64_t data_bytes;
  std::int64_t shape[kMaxArrayDimsInFile];
};

static_assert(kSyncBodyOffset >= sizeof(SyncHeader), "bodies follow the header");
static_assert(kSyncBodyOffset + sizeof(ArrayBody) <= kSyncTableOffset &&
                  kSyncBodyOffset + sizeof(ConditionBody) <= kSyncTableOffset,
              "every body fits the first page");
static_assert(std::is_standard_layout_v<ConditionBody> && std::is_standard_layout_v<ArrayBody> &&
                  std::is_standard_layout_v<RLockBody> && std::is_standard_layout_v<SemaphoreBody>,
              "bodies live in shared memory");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "table entries are lock-free atomics");

/// A sync file's parameters as its first page says (bodies above), and the
/// file size its kind and they imply.
struct SyncParams {
  std::uint64_t file_bytes = 0;
  std::uint32_t bound = 0;    ///< BoundedSemaphore
  std::uint32_t parties = 0;  ///< Barrier
  std::string lock_name;      ///< Condition: the bound Lock's name, empty for its own
  DType dtype{};              ///< SharedArray
  std::vector<std::int64_t> shape;
  std::uint64_t elements = 0;
  std::uint64_t data_bytes = 0;
};

/// Reads the parameters of a file of kind `kind` (its header's, untrusted)
/// from the mapped first page `header`, each field once; Corrupt when they
/// make no sense or the kind is unknown. The one size rule of handles (attach)
/// and tools (inspect_sync): sync.cpp.
Result<SyncParams, OpenError> read_sync_params(const SyncHeader& header, std::uint32_t kind);

}  // namespace hakobu::detail
