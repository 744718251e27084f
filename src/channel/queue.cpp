// hakobu — Queue (protocol in ring.hpp, ownership rules in domain_state.hpp).
#include "hakobu/queue.hpp"

#include <fcntl.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <utility>

#include "channel/loans.hpp"
#include "channel/message_access.hpp"
#include "channel/ring.hpp"
#include "channel/wait_loop.hpp"
#include "channel/watchers.hpp"
#include "domain/domain_state.hpp"
#include "domain/named_file.hpp"
#include "platform/os.hpp"
#include "support/kill_point.hpp"

namespace hakobu {
namespace detail {

constexpr const char* kClosedHandle =
    "the queue handle is closed (a handle inherited across fork() counts as closed: open the queue again in the "
    "child)";

class QueueState : public WaitingHandle {
 public:
  std::shared_ptr<DomainState> domain;
  std::string name;
  std::string file;
  NamedFile named{NamedFile::LockBytes{kQueueInitLockByte, kQueueLifecycleLockByte}};
  QueueHeader* header = nullptr;  // named's mapping
  std::byte* slots = nullptr;
  std::uint64_t capacity = 0;
  std::uint64_t mask = 0;
  std::uint32_t slot_bytes = 0;
  std::uint32_t inline_capacity = 0;
  bool creator = false;
  std::uint32_t epoch = 0;
  std::uint64_t capacity_bytes = 0;  // header->capacity_bytes, read once
  // This handle as a sender (ring.hpp, "Senders"): registered once, under the mutex.
  std::atomic<bool> sending{false};
  std::mutex sender_mutex;
  int sender_slot = -1;  // its entry in header->senders; -1: none (the table was full)
  // Puts of this handle in progress (any thread). close() marks the handle closed;
  // whichever of close() and the last such put comes second ends the sending, so
  // a message another thread publishes during close() is never after the end.
  std::atomic<std::uint32_t> puts_in_flight{0};
  std::atomic<Ending> closing_ending{Ending::Finished};

  QueueState() = default;
  QueueState(const QueueState&) = delete;
  QueueState& operator=(const QueueState&) = delete;
  ~QueueState();

  [[nodiscard]] SlotHeader* slot(std::uint64_t position) const noexcept {
    return reinterpret_cast<SlotHeader*>(slots + (position & mask) * slot_bytes);  // NOLINT
  }
  static std::byte* inline_data(SlotHeader* s) noexcept { return reinterpret_cast<std::byte*>(s) + kSlotHeaderBytes; }
  /// False once closed, and in a child of fork(): the handle is the parent's.
  [[nodiscard]] bool usable() const noexcept {
    return !closed.load(std::memory_order_acquire) && !domain->forked_away();
  }
  [[nodiscard]] bool unlinked() const noexcept {
    return (header->flags.load(std::memory_order_acquire) & kQueueUnlinked) != 0;
  }
  [[nodiscard]] bool dequeue_ready() const noexcept {
    const std::uint64_t c = slot(header->dequeue_pos.load(std::memory_order_relaxed))->control.load();
    return control_state(c) == SlotState::Full;
  }

  Result<void, OpenError> create(const QueueOptions& options);
  Result<void, OpenError> attach();
  /// Points header and slots at named's mapping.
  void use_mapping() noexcept;

  Attempt claim_write(SlotHeader*& out, std::uint64_t& position, std::uint32_t& blocker) noexcept;
  Attempt claim_read(SlotHeader*& out, std::uint64_t& position, std::uint32_t& blocker,
                     std::optional<std::uint32_t>& holding);
  void publish(SlotHeader* s, std::uint64_t position) const noexcept;
  /// Empties the slot for the next lap; wakes one waiting producer (all, with `freed_bytes`:
  /// who fits the byte capacity now depends on each one's size).
  void release_slot(SlotHeader* s, std::uint64_t position, bool freed_bytes = false) const noexcept;
  void repair(std::uint32_t blocker) noexcept;
  /// The side gets wait on (a message arrives) and the side puts wait on (room frees).
  [[nodiscard]] WaitSide get_side() const noexcept {
    return {header->not_empty, header->consumers_waiting, header->not_empty_at, true};
  }
  [[nodiscard]] WaitSide put_side() const noexcept {
    return {header->not_full, header->producers_waiting, header->not_full_at, false};
  }
  /// Wakes `count` sleepers of `side` and signals its watchers (watchers.hpp).
  void notify(const WaitSide& side, int count) const noexcept {
    notify_waiters(side.word, side.waiting, side.stamp, side.is_get ? header->get_watchers : header->put_watchers,
                   count);
  }
  /// wait_loop.hpp: a sleeper woken for a message it did not take passes the wake-up on.
  void pass_wake_on(const WaitSide& side) const noexcept {
    if (side.is_get && dequeue_ready()) notify(side, 1);
  }
  /// One try at claiming a slot, filling its descriptor with `fill` and publishing it.
  /// `block_bytes`: what a message carried in a block counts against the byte capacity, its
  /// length and the bytes it holds by reference (0: inline).
  template <class Fill>
  Attempt try_send(std::uint32_t& blocker, std::uint64_t block_bytes, Fill&& fill) noexcept {
    // Shown in this sender's entry while reserved but not yet named in a slot (ring.hpp).
    const bool shown = block_bytes != 0 && sender_slot >= 0;
    const auto entry = static_cast<std::size_t>(std::max(sender_slot, 0));
    if (shown) header->senders_reserving[entry].fetch_add(block_bytes);
    auto unshow = [&] {
      if (shown) header->senders_reserving[entry].fetch_sub(block_bytes);
    };
    if (block_bytes != 0 && !reserve_bytes(block_bytes)) {
      unshow();
      return Attempt::Full;
    }
    SlotHeader* s = nullptr;
    std::uint64_t position = 0;
    const Attempt claimed = claim_write(s, position, blocker);
    if (claimed != Attempt::Done) {
      if (block_bytes != 0) header->bytes_queued.fetch_sub(static_cast<std::int64_t>(block_bytes));
      unshow();
      return claimed;
    }
    kill_point("put.claimed");
    fill(*s);
    unshow();  // the descriptor names it now: a repairer settles it
    kill_point("put.filled");
    publish(s, position);
    return Attempt::Done;
  }
  /// One try at receiving into `sample`.
  Attempt try_take(Sample& sample, std::uint32_t& blocker, std::optional<std::uint32_t>& holding);
  /// try_take; on an empty queue whose stream ended, Ended or SendersLost.
  Attempt try_take_or_end(Sample& sample, std::uint32_t& blocker, std::optional<std::uint32_t>& holding) {
    const Attempt attempt = try_take(sample, blocker, holding);
    if (attempt != Attempt::Empty) return attempt;
    const Attempt end = stream_end();
    if (end == Attempt::Empty) return attempt;
    // No sender left: every message they sent is visible now (ring.hpp, "Senders").
    const Attempt again = try_take(sample, blocker, holding);
    return again == Attempt::Empty ? end : again;
  }

  // --- senders and bytes (ring.hpp) ---
  /// Counts this handle as a sender (once).
  void become_sender() noexcept;
  /// Ends this handle's sending as `ending` says; wakes receivers if it was the last sender.
  void stop_sending(Ending ending) noexcept;
  /// Empty while a sender may still send; else Ended or SendersLost.
  [[nodiscard]] Attempt stream_end() const noexcept;
  /// True if a sender entry of another process is in use (it could die unnoticed).
  [[nodiscard]] bool has_remote_senders() const noexcept;
  /// Frees the entries of senders whose process died (a system call per other live process).
  void reap_dead_senders() noexcept;
  [[nodiscard]] bool no_senders_listed() const noexcept;
  /// Reserves `bytes` of the byte capacity; false if the queue is at its limit.
  [[nodiscard]] bool reserve_bytes(std::uint64_t bytes) const noexcept;
  /// Whether a message of `bytes` would fit now (a look, nothing reserved).
  [[nodiscard]] bool bytes_fit(std::uint64_t bytes) const noexcept;
  [[nodiscard]] bool ring_empty() const noexcept {
    return position_diff(header->enqueue_pos.load(std::memory_order_relaxed),
                         header->dequeue_pos.load(std::memory_order_relaxed)) <= 0;
  }
  /// What a block message's slot counts against the byte capacity: its length and the bytes it
  /// holds by reference ("Bytes queued"). Read from shared memory: clamped so that the sum
  /// stays a positive int64 whatever the slot says.
  static std::int64_t counted_bytes(const SlotHeader& s) noexcept {
    constexpr std::uint64_t kBound = INT64_MAX / 4;
    return static_cast<std::int64_t>(std::min(s.length, kBound) + std::min(attached_bytes(s), kBound));
  }
  /// Takes a taken block message's bytes off the count (receiver, or repairer of a dead one).
  void settle_taken_bytes(SlotHeader* s) const noexcept {
    if (s->block != 0) header->bytes_queued.fetch_sub(counted_bytes(*s));
    s->length = 0;
    set_attached_bytes(*s, 0);
    s->block = 0;
  }
  void wake_everyone() const noexcept;
  bool mark_unlinked() noexcept;
  void drain() noexcept;
};

QueueState::~QueueState() {
  // Last process out of an unlinked queue frees the messages left in it
  // (named_file.hpp; nothing is released by a handle inherited across fork()).
  if (header != nullptr && domain && !domain->forked_away()) {
    stop_sending(Ending::Finished);  // dropped without close(): its sending ended normally
    named.close([this]() noexcept {
      if (unlinked()) drain();
    });
  }
}

void QueueState::use_mapping() noexcept {
  header = reinterpret_cast<QueueHeader*>(named.base());  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
  slots = named.base() + sizeof(QueueHeader);             // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
}

// Builds the queue under a temporary name and publishes it with link()
// (named_file.hpp), so others see a complete queue under its name or none at
// all. Fails with AlreadyExists if the name is taken.
Result<void, OpenError> QueueState::create(const QueueOptions& options) {
  capacity = std::bit_ceil(std::max<std::size_t>(options.capacity, 1));
  mask = capacity - 1;
  inline_capacity = static_cast<std::uint32_t>(options.inline_capacity);
  slot_bytes = static_cast<std::uint32_t>((kSlotHeaderBytes + inline_capacity + 63) / 64 * 64);
  capacity_bytes = options.capacity_bytes;
  if (capacity_bytes == kAutoCapacityBytes) {
    // Half the file system that holds shared memory: room for the queue's
    // messages and as much again for everything else (no limit if unknown).
    auto space = platform::space_info(std::string(platform::shm_directory()));
    capacity_bytes = space ? space->total / 2 : 0;
  }
  const std::uint64_t bytes = sizeof(QueueHeader) + capacity * slot_bytes;
  auto created = named.create(*domain, name, file, "queue '" + name + "'", bytes, [&](std::byte* /*base*/) {
    use_mapping();
    header->layout_version = kQueueLayoutVersion;
    header->slot_bytes = slot_bytes;
    header->capacity_bytes = capacity_bytes;
    header->capacity = capacity;
    header->file_bytes = bytes;
    header->inline_capacity = inline_capacity;
    header->creator_token = domain->token();
    header->creator_pid = platform::process_id();
    for (std::uint64_t i = 0; i < capacity; ++i) slot(i)->control.store(make_control(i, SlotState::Empty, 0));
    header->magic.store(kQueueMagic, std::memory_order_release);
  });
  if (!created) {
    header = nullptr;
    slots = nullptr;
    return created;
  }
  domain->object_created();
  creator = true;
  return {};
}

Result<void, OpenError> QueueState::attach() {
  const std::string damaged = "queue '" + name + "' is damaged; remove it with `hakobu rm " + name + "`";
  NamedFile::AttachRules rules = NamedFile::rules_for("queue '" + name + "'", name, sizeof(QueueHeader));
  // Everything in the header comes from shared memory: checked before it is
  // trusted, then kept in process memory.
  rules.check_header = [&](const std::byte* base, std::uint64_t file_size) -> Result<std::uint64_t, OpenError> {
    const auto* h = reinterpret_cast<const QueueHeader*>(base);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    if (h->magic.load(std::memory_order_acquire) != kQueueMagic) return {OpenError::Corrupt, damaged};
    if (h->layout_version != kQueueLayoutVersion) {
      return layout_mismatch("queue '" + name + "'", h->layout_version, kQueueLayoutVersion);
    }
    const std::uint64_t cap = h->capacity;
    const std::uint32_t sb = h->slot_bytes;
    const std::uint32_t inline_cap = h->inline_capacity;
    const std::uint64_t bytes = h->file_bytes;
    if (cap == 0 || cap > kMaxQueueCapacity || !std::has_single_bit(cap) || inline_cap > kMaxInlineBytes ||
        sb < kSlotHeaderBytes + inline_cap || sb % 64 != 0 || sb > 4096 || bytes != sizeof(QueueHeader) + cap * sb ||
        bytes > file_size) {
      return {OpenError::Corrupt, damaged};
    }
    capacity = cap;
    mask = cap - 1;
    slot_bytes = sb;
    inline_capacity = inline_cap;
    capacity_bytes = h->capacity_bytes;  // any value is a limit (0: none)
    return bytes;
  };
  rules.unlinked = [](const std::byte* base) {
    const auto* h = reinterpret_cast<const QueueHeader*>(base);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    return (h->flags.load(std::memory_order_acquire) & kQueueUnlinked) != 0;
  };
  if (auto attached = named.attach(rules); !attached) return attached;
  use_mapping();
  return {};
}

Attempt QueueState::claim_write(SlotHeader*& out, std::uint64_t& position, std::uint32_t& blocker) noexcept {
  const std::uint32_t me = domain->token();
  // Bounded: positions come from shared memory, and a damaged ring must not
  // keep a caller here past its deadline.
  for (std::uint64_t step = 0; step <= 2 * capacity + 64; ++step) {
    const std::uint64_t p = header->enqueue_pos.load(std::memory_order_relaxed);
    SlotHeader* s = slot(p);
    std::uint64_t c = s->control.load(std::memory_order_acquire);
    const std::int64_t d = position_diff(control_position(c), p);
    if (d == 0) {
      if (control_state(c) == SlotState::Empty) {
        if (s->control.compare_exchange_weak(c, make_control(p, SlotState::Writing, me), std::memory_order_acquire,
                                             std::memory_order_relaxed)) {
          std::uint64_t expected = p;
          header->enqueue_pos.compare_exchange_strong(expected, p + 1, std::memory_order_relaxed);
          out = s;
          position = p;
          return Attempt::Done;
        }
      } else {
        std::uint64_t expected = p;  // claimed by someone else: help it along
        header->enqueue_pos.compare_exchange_strong(expected, p + 1, std::memory_order_relaxed);
      }
    } else if (d < 0) {
      // The slot still holds the message one lap behind: the queue is full.
      const SlotState state = control_state(c);
      if (state == SlotState::Reading || state == SlotState::Writing) {
        blocker = control_token(c);
        return Attempt::Pending;
      }
      return Attempt::Full;
    } else {
      // d > 0: the slot is past position p, so p was claimed (and maybe its
      // claimer died before advancing the hint): help the hint along.
      std::uint64_t expected = p;
      header->enqueue_pos.compare_exchange_strong(expected, p + 1, std::memory_order_relaxed);
    }
  }
  return Attempt::Busy;
}

Attempt QueueState::claim_read(SlotHeader*& out, std::uint64_t& position, std::uint32_t& blocker,
                               std::optional<std::uint32_t>& holding) {
  const std::uint32_t me = domain->token();
  for (std::uint64_t step = 0; step <= 2 * capacity + 64; ++step) {  // bounded, as in claim_write
    const std::uint64_t p = header->dequeue_pos.load(std::memory_order_relaxed);
    SlotHeader* s = slot(p);
    std::uint64_t c = s->control.load(std::memory_order_acquire);
    const std::int64_t d = position_diff(control_position(c), p);
    if (d == 0) {
      const SlotState state = control_state(c);
      if (state == SlotState::Full) {
        if (!holding) {
          // Reserve a holdings entry before claiming: once claimed, the
          // message must not be lost to a failed allocation.
          auto reserved = domain->reserve_holding();
          if (!reserved) return Attempt::OutOfMemory;
          holding = *reserved;
          continue;
        }
        if (s->control.compare_exchange_weak(c, make_control(p, SlotState::Reading, me), std::memory_order_acquire,
                                             std::memory_order_relaxed)) {
          std::uint64_t expected = p;
          header->dequeue_pos.compare_exchange_strong(expected, p + 1, std::memory_order_relaxed);
          out = s;
          position = p;
          return Attempt::Done;
        }
      } else if (state == SlotState::Reading) {
        std::uint64_t expected = p;
        header->dequeue_pos.compare_exchange_strong(expected, p + 1, std::memory_order_relaxed);
      } else if (state == SlotState::Writing) {
        blocker = control_token(c);
        return Attempt::Pending;
      } else {
        return Attempt::Empty;
      }
    } else if (d < 0) {
      return Attempt::Empty;
    } else {
      // d > 0: position p was consumed (its claimer may have died before
      // advancing the hint): help the hint along.
      std::uint64_t expected = p;
      header->dequeue_pos.compare_exchange_strong(expected, p + 1, std::memory_order_relaxed);
    }
  }
  return Attempt::Busy;
}

void QueueState::publish(SlotHeader* s, std::uint64_t position) const noexcept {
  s->control.store(make_control(position, SlotState::Full, 0), std::memory_order_release);
  header->put_count.fetch_add(1, std::memory_order_relaxed);
  notify(get_side(), 1);
}

void QueueState::release_slot(SlotHeader* s, std::uint64_t position, bool freed_bytes) const noexcept {
  s->control.store(make_control(position + capacity, SlotState::Empty, 0), std::memory_order_release);
  notify(put_side(), freed_bytes && capacity_bytes != 0 ? INT_MAX : 1);
}

void QueueState::wake_everyone() const noexcept {
  wake_all_waiters(header->not_empty, header->consumers_waiting, header->get_watchers);
  wake_all_waiters(header->not_full, header->producers_waiting, header->put_watchers);
}

void QueueState::repair(std::uint32_t blocker) noexcept {
  if (domain->token_alive(blocker)) return;
  // Find the slots the dead process claimed near the ends of the queue.
  const std::uint64_t starts[] = {header->dequeue_pos.load(), header->enqueue_pos.load() - capacity};
  for (const std::uint64_t start : starts) {
    for (std::uint64_t i = 0; i < capacity; ++i) {
      SlotHeader* s = slot(start + i);
      std::uint64_t c = s->control.load(std::memory_order_acquire);
      if (control_token(c) != blocker) continue;
      const std::uint64_t p = control_position(c);
      if (control_state(c) == SlotState::Writing) {
        // A descriptor naming a block says the dead producer had reserved its bytes.
        const std::uint64_t block = s->block;
        const std::int64_t counted = counted_bytes(*s);
        if (claim_as_tombstone(*s, c, domain->token())) {
          if (block != 0) header->bytes_queued.fetch_sub(counted);
          publish(s, p);
        }
      } else if (control_state(c) == SlotState::Reading) {
        // The dead consumer's message is gone with it (its holdings return
        // the block, if it got that far); take its claim over, settle the
        // bytes it had not, free the slot.
        if (s->control.compare_exchange_strong(c, make_control(p, SlotState::Reading, domain->token()))) {
          settle_taken_bytes(s);
          s->control.store(make_control(p + capacity, SlotState::Empty, 0), std::memory_order_release);
          notify(put_side(), 1);
        }
      }
    }
  }
}

void QueueState::become_sender() noexcept {
  if (sending.load(std::memory_order_acquire)) return;
  const std::lock_guard<std::mutex> lock(sender_mutex);
  if (sending.load(std::memory_order_relaxed)) return;
  // A closed handle sends nothing more (its put returns Closed): no new entry for it.
  if (closed.load() && puts_in_flight.load() == 0) return;
  const std::uint64_t mine = kSenderEntry | domain->token();
  bool others = false;
  for (int round = 0; round < 2 && sender_slot < 0; ++round) {
    if (round == 1) reap_dead_senders();  // a full table: make room of the dead ones
    others = false;
    for (std::size_t i = 0; i < kSenderSlots; ++i) {
      std::uint64_t entry = header->senders[i].load(std::memory_order_acquire);
      if (entry == 0 && sender_slot < 0 && header->senders[i].compare_exchange_strong(entry, mine)) {
        sender_slot = static_cast<int>(i);
        header->senders_reserving[i].store(0);  // a forged or stale amount is not ours
      } else if (entry != 0) {
        others = true;
      }
    }
  }
  if (sender_slot < 0) {
    header->untracked_senders.fetch_add(1);
  } else {
    header->registrations.fetch_add(1);  // after the entry: see stream_end
    if (!others && header->untracked_senders.load() == 0) {
      header->stream_flags.fetch_and(~kSenderFailed);  // a new stream: the last one's failure is told
    }
  }
  header->stream_flags.fetch_or(kEverSent);
  sending.store(true, std::memory_order_release);
}

void QueueState::stop_sending(Ending ending) noexcept {
  if (!sending.load(std::memory_order_acquire)) return;
  const std::lock_guard<std::mutex> lock(sender_mutex);
  if (!sending.load(std::memory_order_relaxed)) return;
  sending.store(false, std::memory_order_relaxed);
  if (ending == Ending::Failed) header->stream_flags.fetch_or(kSenderFailed);  // before the entry goes
  if (sender_slot >= 0) {
    std::uint64_t mine = kSenderEntry | domain->token();
    header->senders[static_cast<std::size_t>(sender_slot)].compare_exchange_strong(mine, 0);  // release: after my puts
    sender_slot = -1;
  } else {
    header->untracked_senders.fetch_sub(1);  // seq_cst: after my puts
  }
  if (no_senders_listed()) wake_all_waiters(header->not_empty, header->consumers_waiting, header->get_watchers);
}

bool QueueState::no_senders_listed() const noexcept {
  return std::ranges::none_of(header->senders, [](const auto& entry) { return entry.load() != 0; });
}

Attempt QueueState::stream_end() const noexcept {
  // One snapshot of the table: no registration may have happened during the scan.
  const std::uint32_t registrations = header->registrations.load();
  const std::uint32_t flags = header->stream_flags.load(std::memory_order_acquire);
  if ((flags & kEverSent) == 0 || header->untracked_senders.load() != 0 || !no_senders_listed() ||
      header->registrations.load() != registrations) {
    return Attempt::Empty;
  }
  // Read again: a sender marks a failure before its entry goes.
  return (header->stream_flags.load(std::memory_order_acquire) & kSenderFailed) != 0 ? Attempt::SendersLost
                                                                                     : Attempt::Ended;
}

bool QueueState::has_remote_senders() const noexcept {
  const std::uint32_t me = domain->token();
  return std::ranges::any_of(header->senders, [me](const auto& entry) {
    const std::uint64_t e = entry.load(std::memory_order_relaxed);
    return e != 0 && static_cast<std::uint32_t>(e) != me;
  });
}

void QueueState::reap_dead_senders() noexcept {
  const std::uint32_t me = domain->token();
  bool freed = false;
  for (auto& entry : header->senders) {
    std::uint64_t e = entry.load(std::memory_order_acquire);
    if (e == 0 || static_cast<std::uint32_t>(e) == me || domain->token_alive(static_cast<std::uint32_t>(e))) continue;
    header->stream_flags.fetch_or(kSenderFailed);  // before the entry goes (see stream_end)
    const auto index = static_cast<std::size_t>(&entry - header->senders);
    // The entry stays taken (as this process's) while its reservation is settled: a new sender
    // takes only a free entry, so it cannot reset or reserve into the amount being given back.
    if (entry.compare_exchange_strong(e, kSenderEntry | me)) {
      // What it had reserved and not yet named in a slot (ring.hpp, "Bytes queued").
      const std::uint64_t reserved =
          std::min<std::uint64_t>(header->senders_reserving[index].exchange(0), INT64_MAX / 2);
      if (reserved != 0) header->bytes_queued.fetch_sub(static_cast<std::int64_t>(reserved));
      entry.store(0, std::memory_order_release);
      freed = true;
    }
  }
  if (freed && no_senders_listed()) {
    wake_all_waiters(header->not_empty, header->consumers_waiting, header->get_watchers);
  }
}

bool QueueState::bytes_fit(std::uint64_t bytes) const noexcept {
  if (capacity_bytes == 0) return true;
  const std::int64_t queued = header->bytes_queued.load(std::memory_order_relaxed);
  const std::uint64_t held = queued > 0 ? static_cast<std::uint64_t>(queued) : 0;
  return held == 0 || bytes <= capacity_bytes - std::min(held, capacity_bytes) || ring_empty();
}

bool QueueState::reserve_bytes(std::uint64_t bytes) const noexcept {
  auto& queued = header->bytes_queued;
  const auto amount = static_cast<std::int64_t>(std::min<std::uint64_t>(bytes, INT64_MAX / 2));
  if (capacity_bytes == 0) {
    queued.fetch_add(amount, std::memory_order_relaxed);
    return true;
  }
  std::int64_t current = queued.load(std::memory_order_relaxed);
  // Bounded: the count is shared memory; a try that keeps losing reports no
  // room, and the caller's wait loop tries again within its deadline.
  for (int attempt = 0; attempt < 64; ++attempt) {
    const std::uint64_t held = current > 0 ? static_cast<std::uint64_t>(current) : 0;
    if (held != 0 && bytes > capacity_bytes - std::min(held, capacity_bytes) && !ring_empty()) return false;
    // The count is shared memory: clamped, so that the sum cannot overflow.
    if (queued.compare_exchange_weak(current, std::clamp<std::int64_t>(current, 0, INT64_MAX / 2) + amount,
                                     std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

bool QueueState::mark_unlinked() noexcept {
  const std::uint32_t old = header->flags.fetch_or(kQueueUnlinked, std::memory_order_acq_rel);
  if ((old & kQueueUnlinked) != 0) return false;
  remove_if_same({file, true, "queue '" + name + "'"}, named.fd());  // never a newer queue of the same name
  domain->object_removed();
  wake_everyone();
  return true;
}

void QueueState::drain() noexcept {
  drop_ring_references(domain->heap(), capacity, [this](std::uint64_t i) { return slot(i); });
}

Attempt QueueState::try_take(Sample& sample, std::uint32_t& blocker, std::optional<std::uint32_t>& holding) {
  for (std::uint64_t skipped = 0; skipped <= capacity; ++skipped) {  // tombstones are skipped, at most a lap
    SlotHeader* s = nullptr;
    std::uint64_t position = 0;
    const Attempt attempt = claim_read(s, position, blocker, holding);
    if (attempt != Attempt::Done) return attempt;
    kill_point("get.claimed");
    // The descriptor came from shared memory: check it before use.
    const std::uint8_t kind = s->kind;
    const std::uint64_t length = s->length;
    const std::uint64_t block = s->block;
    if (kind == kTombstone) {  // its producer died before publishing: skip
      release_slot(s, position);
      continue;
    }
    settle_taken_bytes(s);  // the descriptor is copied above
    const bool kind_ok =
        kind >= static_cast<std::uint8_t>(MessageKind::Bytes) && kind <= static_cast<std::uint8_t>(MessageKind::Object);
    // The payload's address is made of the header values checked here, read once:
    // a shift rewritten after this check cannot move it.
    std::byte* const payload = block != 0 ? domain->heap().checked_payload(block, length) : nullptr;
    if (!kind_ok || (block == 0 && length > inline_capacity) ||
        (block != 0 &&
         (payload == nullptr || domain->heap().header(block)->refs.load(std::memory_order_acquire) == 0))) {
      release_slot(s, position);  // drop the bad message, keep the queue going
      return Attempt::Corrupt;
    }
    if (block == 0) {
      MessageAccess::fill_inline(sample, inline_data(s), length, static_cast<MessageKind>(kind));
      release_slot(s, position);
    } else {
      domain->fill_holding(*holding, block);  // listed before the ring lets go of it
      kill_point("get.listed");
      release_slot(s, position, /*freed_bytes=*/true);
      domain->fill_sample(sample, block, payload, *holding, length, static_cast<MessageKind>(kind));
      holding.reset();
    }
    header->get_count.fetch_add(1, std::memory_order_relaxed);
    return Attempt::Done;
  }
  return Attempt::Busy;
}

}  // namespace detail

using detail::Attempt;
using detail::kClosedHandle;

// --- opening and closing ---------------------------------------------------------

Result<Queue, OpenError> Queue::open(std::string_view name, OpenMode mode, const QueueOptions& options) {
  if (auto why = validate_name(name); !why.empty()) {
    return {OpenError::InvalidName, "invalid queue name '" + std::string(name) + "': " + why};
  }
  if (options.capacity == 0 || options.capacity > detail::kMaxQueueCapacity) {
    return {OpenError::InvalidArgument, "capacity must be between 1 and " + std::to_string(detail::kMaxQueueCapacity) +
                                            ", got " + std::to_string(options.capacity)};
  }
  if (options.latency > Latency::Fixed) {
    return {OpenError::InvalidArgument, "latency must be Adaptive, Spin, Sleep or Fixed"};
  }
  if (options.latency == Latency::Fixed && options.spin.count() < 0) {
    return {OpenError::InvalidArgument, "spin must not be negative"};
  }
  if (options.inline_capacity > kMaxInlineBytes) {
    return {OpenError::InvalidArgument, "inline_capacity must be at most " + std::to_string(kMaxInlineBytes)};
  }
  auto domain = detail::DomainState::attach(options.domain);
  if (!domain) return std::move(domain).error();

  auto state = std::make_shared<detail::QueueState>();
  state->domain = *domain;
  state->name = std::string(name);
  state->file = state->domain->file_name("q:" + state->name);
  state->epoch = detail::fork_epoch();
  state->spin_ns.store(options.spin.count(), std::memory_order_relaxed);
  state->latency.store(options.latency, std::memory_order_relaxed);

  const detail::DomainFile file{state->file, true, "queue '" + state->name + "'"};
  auto opened = detail::open_by_mode(
      state->named, file, mode, "no queue '" + state->name + "' in domain '" + state->domain->name() + "'",
      [&] { return state->attach(); }, [&] { return state->create(options); });
  if (!opened) return std::move(opened).error();
  if (options.sends) state->become_sender();
  Queue queue;
  queue.state_ = std::move(state);
  return queue;
}

Result<void, UnlinkError> Queue::remove(std::string_view name, std::string_view domain) {
  QueueOptions options;
  options.domain.name = std::string(domain);
  auto queue = open(name, OpenMode::AttachOnly, options);
  if (!queue) return detail::remove_unopenable(queue.error(), options.domain, "q:" + std::string(name));
  if (!queue->state_->mark_unlinked()) return {UnlinkError::NotFound, "queue '" + std::string(name) + "' was removed"};
  return {};
}

Queue::Queue(Queue&&) noexcept = default;
Queue& Queue::operator=(Queue&&) noexcept = default;
Queue::~Queue() {
  // A sending handle destroyed while an exception unwinds the stack stopped early.
  if (state_ && std::uncaught_exceptions() > 0 && !state_->domain->forked_away()) {
    state_->stop_sending(Ending::Failed);
  }
}

void Queue::close(Ending ending) noexcept {
  if (!state_) return;
  state_->closing_ending.store(ending);
  state_->closed.store(true);
  if (state_->domain->forked_away()) return;  // inherited across fork(): not mapped here
  state_->wake_everyone();                    // this process's waiters see `closed`; others go back to sleep
  // The sending ends once no put of this handle is in progress: here, or by the last one.
  if (state_->puts_in_flight.load() == 0) state_->stop_sending(ending);
}

Result<void, UnlinkError> Queue::unlink() {
  if (!state_ || !state_->usable()) return {UnlinkError::Closed, kClosedHandle};
  if (!state_->creator) {
    return {UnlinkError::NotCreator, "only the handle that created queue '" + state_->name +
                                         "' may unlink it; use Queue::remove (or `hakobu rm`) to remove it anyway"};
  }
  const bool removed = state_->mark_unlinked();
  close();
  if (!removed) return {UnlinkError::NotFound, "queue '" + state_->name + "' was already removed"};
  return {};
}

std::size_t Queue::size() const noexcept {
  if (!state_ || state_->domain->forked_away()) return 0;
  const std::uint64_t head = state_->header->dequeue_pos.load(std::memory_order_relaxed);
  const std::uint64_t tail = state_->header->enqueue_pos.load(std::memory_order_relaxed);
  const auto n = static_cast<std::int64_t>(tail - head);
  return n <= 0 ? 0 : std::min<std::size_t>(static_cast<std::size_t>(n), state_->capacity);
}

std::size_t Queue::capacity() const noexcept {
  return state_ ? state_->capacity : 0;
}

std::size_t Queue::capacity_bytes() const noexcept {
  return state_ ? state_->capacity_bytes : 0;
}

const std::string& Queue::name() const noexcept {
  static const std::string empty;
  return state_ ? state_->name : empty;
}

bool Queue::is_creator() const noexcept {
  return state_ && state_->creator;
}

QueueStats Queue::stats() const noexcept {
  QueueStats out;
  if (!state_) return out;
  out.size = size();
  out.capacity = state_->capacity;
  out.inline_capacity = state_->inline_capacity;
  if (state_->domain->forked_away()) return out;  // inherited across fork(): its counters are not mapped here
  const auto& h = *state_->header;
  out.put_count = h.put_count.load(std::memory_order_relaxed);
  out.get_count = h.get_count.load(std::memory_order_relaxed);
  out.creator_pid = h.creator_pid;
  out.bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(h.bytes_queued.load(std::memory_order_relaxed), 0));
  out.capacity_bytes = state_->capacity_bytes;
  for (const auto& entry : h.senders) out.senders += entry.load(std::memory_order_relaxed) != 0 ? 1U : 0U;
  out.ended = out.size == 0 && state_->stream_end() != Attempt::Empty;
  out.senders_lost = (h.stream_flags.load(std::memory_order_relaxed) & detail::kSenderFailed) != 0;
  // The waiter words hold sleepers (low bits) and watchers (high bits): ring.hpp.
  auto waiting = [](std::uint32_t word) { return (word & detail::kSleeperMask) + (word / detail::kWatcherUnit); };
  out.receivers_waiting = waiting(h.consumers_waiting.load(std::memory_order_relaxed));
  out.senders_waiting = waiting(h.producers_waiting.load(std::memory_order_relaxed));
  return out;
}

void Queue::set_spin(std::chrono::nanoseconds spin) noexcept {
  if (state_) state_->set_spin(spin);
}

void Queue::set_latency(Latency latency) noexcept {
  if (state_) state_->latency.store(latency, std::memory_order_relaxed);
}

Latency Queue::latency() const noexcept {
  return state_ ? state_->latency.load(std::memory_order_relaxed) : Latency::Adaptive;
}

std::int64_t Queue::planned_spin_ns() const noexcept {
  return state_ ? state_->planned_get_spin() : 0;  // before the budget: a snapshot must not refill it
}

// --- event loops -------------------------------------------------------------------------

WakeSocket::WakeSocket(WakeSocket&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), id_(std::exchange(other.id_, 0)) {}
WakeSocket& WakeSocket::operator=(WakeSocket&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}
WakeSocket::~WakeSocket() {
  close();
}

void WakeSocket::close() noexcept {
  platform::close_fd(fd_);
  fd_ = -1;
  id_ = 0;
}

Result<WakeSocket, WatchError> WakeSocket::open() {
  // A random 48-bit id names the socket: two processes (or loops) never share
  // one; a clash with a live socket fails bind (EADDRINUSE): draw again.
  for (int attempt = 0; attempt < 8; ++attempt) {
    const std::uint64_t id = platform::random_u64() & ((std::uint64_t{1} << 48) - 1);
    if (id == 0) continue;
    auto bound = platform::bind_datagram_socket(detail::WakeSocketName(id).view);
    if (bound) {
      WakeSocket socket;
      socket.fd_ = *bound;
      socket.id_ = id;
      return socket;
    }
    if (bound.error().code != EADDRINUSE) return {WatchError::SystemError, bound.error().message};
  }
  return {WatchError::SystemError, "no free wake-up socket name"};
}

// NOLINTNEXTLINE(readability-make-member-function-const): reading empties the socket's queue
std::size_t WakeSocket::drain(std::span<std::uint16_t> out) noexcept {
  std::size_t stored = 0;
  while (fd_ >= 0 && stored < out.size()) {
    std::uint64_t entry = 0;
    auto got = platform::receive_datagram(fd_, &entry, sizeof entry);
    if (!got || *got < 0) break;  // none left (or an error: the loop will call again)
    // Anyone of any user may send to an abstract name: keep only what names us.
    if (*got != static_cast<std::int64_t>(sizeof entry) || (entry >> 16U) != id_) continue;
    out[stored++] = static_cast<std::uint16_t>(entry & 0xFFFFU);
  }
  return stored;
}

Result<void, WatchError> Queue::watch(const WakeSocket& socket, Readiness readiness, std::uint16_t cookie) {
  if (!state_ || !state_->usable()) return {WatchError::Closed, detail::kClosedHandle};
  if (socket.fd() < 0) return {WatchError::Closed, "the wake-up socket is closed"};
  auto& h = *state_->header;
  const bool readable = readiness == Readiness::Readable;
  if (detail::add_watcher(readable ? h.get_watchers : h.put_watchers,
                          readable ? h.consumers_waiting : h.producers_waiting, socket.id(), cookie)) {
    return {};
  }
  return {WatchError::Full,
          "queue '" + state_->name + "' is watched by " + std::to_string(kMaxWatchers) + " event loops already"};
}

void Queue::unwatch(const WakeSocket& socket, Readiness readiness, std::uint16_t cookie) noexcept {
  if (!state_ || state_->domain->forked_away()) return;
  auto& h = *state_->header;
  const bool readable = readiness == Readiness::Readable;
  detail::remove_watcher(readable ? h.get_watchers : h.put_watchers,
                         readable ? h.consumers_waiting : h.producers_waiting, socket.id(), cookie);
}

Domain Queue::domain() const {
  return detail::DomainAccess::wrap(state_ ? state_->domain : nullptr);
}

// --- sending -----------------------------------------------------------------------------

namespace {

/// A put of a handle in progress (QueueState::puts_in_flight): counted before the
/// handle's closed check, so that close() and the put agree on who ends the sending.
class PutInFlight {
 public:
  explicit PutInFlight(detail::QueueState& q) noexcept : q_(q) { q_.puts_in_flight.fetch_add(1); }
  ~PutInFlight() {
    if (q_.puts_in_flight.fetch_sub(1) == 1 && q_.closed.load() && !q_.domain->forked_away()) {
      q_.stop_sending(q_.closing_ending.load());
    }
  }
  PutInFlight(const PutInFlight&) = delete;
  PutInFlight& operator=(const PutInFlight&) = delete;

 private:
  detail::QueueState& q_;
};

Result<void, PutError> put_failure(Attempt attempt, const std::string& name) {
  switch (attempt) {
    // Short texts for the expected outcomes: no allocation in a polling loop.
    case Attempt::Full: return {PutError::Full, "queue is full"};
    case Attempt::Timeout: return {PutError::Timeout, "put timed out"};
    case Attempt::Unlinked: return {PutError::Unlinked, "queue '" + name + "' was unlinked by its creator"};
    default: return {PutError::Closed, "the handle of queue '" + name + "' was closed"};
  }
}

}  // namespace

Result<void, PutError> Queue::put_bytes(std::span<const std::byte> bytes, MessageKind kind,
                                        std::chrono::nanoseconds timeout) {
  if (!state_) return {PutError::Closed, kClosedHandle};
  auto& q = *state_;
  const PutInFlight in_flight(q);
  if (!q.usable()) return {PutError::Closed, kClosedHandle};
  if (bytes.size() > q.inline_capacity) {
    // Too large for a slot: copy into a block, then hand the block over.
    if (timeout.count() == 0 && (size() >= q.capacity || !q.bytes_fit(bytes.size()))) {
      return {PutError::Full, "queue is full"};
    }
    auto loan = detail::copy_into_loan(*q.domain, bytes, kind);
    if (!loan) return std::move(loan).error();
    return put_loan(*loan, timeout);
  }
  q.become_sender();
  const Attempt outcome = detail::wait_until_done(q, q.put_side(), timeout, [&](std::uint32_t& blocker) {
    return q.try_send(blocker, 0, [&](detail::SlotHeader& s) {
      s.kind = static_cast<std::uint8_t>(kind);
      detail::set_attached_bytes(s, 0);
      s.length = bytes.size();
      s.block = 0;
      if (!bytes.empty()) std::memcpy(detail::QueueState::inline_data(&s), bytes.data(), bytes.size());
    });
  });
  if (outcome == Attempt::Done) return {};
  return put_failure(outcome, q.name);
}

Result<void, PutError> Queue::put_loan(Loan& loan, std::chrono::nanoseconds timeout) {
  if (!state_) return {PutError::Closed, kClosedHandle};
  auto& q = *state_;
  const PutInFlight in_flight(q);
  if (!q.usable()) return {PutError::Closed, kClosedHandle};
  using detail::MessageAccess;
  if (!loan.valid() || MessageAccess::domain(loan) != q.domain.get() ||
      MessageAccess::fork_epoch(loan) != detail::fork_epoch()) {
    return {PutError::Invalid, "the loan is empty, already sent, or from another domain"};
  }
  // What the message carries by reference counts too ("Bytes queued" in ring.hpp): its
  // attachments, each block once; an array's elements, not the whole block they are a view of.
  std::uint64_t attached = q.domain->heap().attached_bytes(MessageAccess::block(loan));
  if (loan.kind() == MessageKind::Array) {
    // Refuse here what the receiver would refuse: metadata that does not match
    // the elements (e.g. an array by reference whose data was never attached).
    auto view = loan.array();
    if (!view) return {PutError::Invalid, view.error().message};
    // Checked by array(): the elements lie inside their block, so the product does not overflow.
    attached = std::min(attached, static_cast<std::uint64_t>(view->size()) * view->dtype.itemsize());
  }
  attached = std::min(attached, detail::kMaxAttachedBytes);  // what the slot can record
  q.become_sender();
  const std::uint64_t length = loan.bytes().size();
  const Attempt outcome = detail::wait_until_done(q, q.put_side(), timeout, [&](std::uint32_t& blocker) {
    return q.try_send(blocker, length + attached, [&](detail::SlotHeader& s) {
      s.kind = static_cast<std::uint8_t>(loan.kind());
      detail::set_attached_bytes(s, attached);
      s.length = length;
      s.block = MessageAccess::block(loan);
      q.domain->clear_holding(MessageAccess::holding(loan));  // the reference moves to the ring: unlisted first
    });
  });
  if (outcome != Attempt::Done) return put_failure(outcome, q.name);
  MessageAccess::hand_over(loan);
  return {};
}

Result<void, PutError> Queue::try_put(std::span<const std::byte> bytes, MessageKind kind) {
  return put_bytes(bytes, kind, std::chrono::nanoseconds(0));
}
Result<void, PutError> Queue::put(std::span<const std::byte> bytes, MessageKind kind) {
  return put_bytes(bytes, kind, std::chrono::nanoseconds::max());
}
Result<void, PutError> Queue::put(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout,
                                  MessageKind kind) {
  return put_bytes(bytes, kind, timeout);
}
Result<void, PutError> Queue::try_put(Loan& loan) {
  return put_loan(loan, std::chrono::nanoseconds(0));
}
Result<void, PutError> Queue::put(Loan& loan) {
  return put_loan(loan, std::chrono::nanoseconds::max());
}
Result<void, PutError> Queue::put(Loan& loan, std::chrono::nanoseconds timeout) {
  return put_loan(loan, timeout);
}
Result<void, PutError> Queue::put(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout, MessageKind kind,
                                  Latency latency) {
  const detail::CallLatency scope(latency);
  return put(bytes, timeout, kind);
}
Result<void, PutError> Queue::put(Loan& loan, std::chrono::nanoseconds timeout, Latency latency) {
  const detail::CallLatency scope(latency);
  return put(loan, timeout);
}

Result<Loan, LoanError> Queue::loan(std::size_t size, MessageKind kind, std::size_t attachments,
                                    const void* copy_source) {
  if (!state_ || !state_->usable()) return {LoanError::Closed, kClosedHandle};
  return state_->domain->make_loan(size, kind, attachments, detail::Placement{0, copy_source});
}

Result<Loan, LoanError> Queue::loan_array(DType dtype, std::span<const std::int64_t> shape, Order order,
                                          std::string_view typestr, const void* copy_source) {
  if (!state_ || !state_->usable()) return {LoanError::Closed, kClosedHandle};
  return detail::lend_array(*state_->domain, dtype, shape, order, typestr, copy_source);
}

Result<Loan, LoanError> Queue::loan_array_ref(DType dtype, std::span<const std::int64_t> shape,
                                              std::span<const std::int64_t> strides, std::int64_t byte_offset,
                                              std::string_view typestr) {
  if (!state_ || !state_->usable()) return {LoanError::Closed, kClosedHandle};
  return detail::lend_array_ref(*state_->domain, dtype, shape, strides, byte_offset, typestr);
}

Result<void, PutError> Queue::put_array(const void* data, DType dtype, std::span<const std::int64_t> shape,
                                        std::chrono::nanoseconds timeout) {
  if (!state_ || !state_->usable()) return {PutError::Closed, kClosedHandle};
  return detail::send_array(
      *state_->domain, state_->inline_capacity, data, dtype, shape,
      [&](std::span<const std::byte> bytes) { return put_bytes(bytes, MessageKind::Array, timeout); },
      [&](Loan& loan) { return put_loan(loan, timeout); });
}

// --- receiving ------------------------------------------------------------------------------

Result<Sample, GetError> Queue::get_for(std::chrono::nanoseconds timeout) {
  if (!state_ || !state_->usable()) return {GetError::Closed, kClosedHandle};
  auto& q = *state_;
  Sample sample;
  std::optional<std::uint32_t> holding;
  const Attempt outcome = detail::wait_until_done(
      q, q.get_side(), timeout, [&](std::uint32_t& blocker) { return q.try_take_or_end(sample, blocker, holding); });
  if (holding) q.domain->unreserve_holding(*holding);  // reserved but not used
  switch (outcome) {
    case Attempt::Done: return sample;
    // Short texts for the expected outcomes: no allocation in a polling loop.
    case Attempt::Empty: return {GetError::Empty, "queue is empty"};
    case Attempt::Timeout: return {GetError::Timeout, "get timed out"};
    case Attempt::Unlinked: return {GetError::Unlinked, "queue '" + q.name + "' was unlinked by its creator"};
    case Attempt::Corrupt:
      return {GetError::Corrupt, "queue '" + q.name + "': a message failed validation and was dropped"};
    case Attempt::OutOfMemory:
      return {GetError::OutOfMemory, "no memory to record the message as held (shared memory full); nothing was taken"};
    case Attempt::Ended:
      return {GetError::Ended, "end of stream: queue '" + q.name + "' is empty and every sender closed"};
    case Attempt::SendersLost:
      return {GetError::SendersLost, "queue '" + q.name +
                                         "' is empty and every sender is gone, but one failed or died: the "
                                         "stream may be incomplete"};
    default: return {GetError::Closed, "the handle of queue '" + q.name + "' was closed"};
  }
}

Result<Sample, GetError> Queue::try_get() {
  return get_for(std::chrono::nanoseconds(0));
}
Result<Sample, GetError> Queue::get() {
  return get_for(std::chrono::nanoseconds::max());
}
Result<Sample, GetError> Queue::get(std::chrono::nanoseconds timeout) {
  return get_for(timeout);
}
Result<Sample, GetError> Queue::get(std::chrono::nanoseconds timeout, Latency latency) {
  const detail::CallLatency scope(latency);
  return get_for(timeout);
}

bool Queue::spin_until_ready(Readiness readiness, std::chrono::nanoseconds at_most) noexcept {
  if (!state_ || !state_->usable() || at_most.count() <= 0) return false;
  auto& q = *state_;
  auto& h = *q.header;
  const bool readable = readiness == Readiness::Readable;
  // Looks only: nothing is claimed, so giving up at any point leaves the queue as it was.
  auto look = [&](std::uint32_t& /*blocker*/) {
    if (readable) return q.dequeue_ready() ? Attempt::Done : Attempt::Empty;
    const std::uint64_t p = h.enqueue_pos.load(std::memory_order_relaxed);
    const std::uint64_t c = q.slot(p)->control.load(std::memory_order_acquire);
    const bool free = detail::control_state(c) == detail::SlotState::Empty &&
                      detail::position_diff(detail::control_position(c), p) == 0;
    return free ? Attempt::Done : Attempt::Full;
  };
  const Attempt outcome =
      detail::wait_until_done(q, readable ? q.get_side() : q.put_side(), at_most, look, /*may_sleep=*/false);
  return outcome == Attempt::Done;
}

}  // namespace hakobu
