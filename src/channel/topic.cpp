// hakobu — Topic (protocol in topic_file.hpp, ownership rules in domain_state.hpp).
#include "hakobu/topic.hpp"

#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "channel/loans.hpp"
#include "channel/message_access.hpp"
#include "channel/topic_file.hpp"
#include "channel/wait_loop.hpp"
#include "channel/watchers.hpp"
#include "domain/domain_state.hpp"
#include "domain/named_file.hpp"
#include "platform/os.hpp"
#include "support/kill_point.hpp"

namespace hakobu {

std::string_view to_string(SubscribeError code) noexcept {
  switch (code) {
    case SubscribeError::Closed: return "Closed";
    case SubscribeError::Unlinked: return "Unlinked";
    case SubscribeError::TooManySubscribers: return "TooManySubscribers";
    case SubscribeError::InvalidArgument: return "InvalidArgument";
  }
  return "?";
}

namespace detail {

namespace {

constexpr const char* kClosedTopic =
    "the topic handle is closed (a handle inherited across fork() counts as closed: open the topic again in the "
    "child)";
constexpr const char* kClosedSubscriber =
    "the subscriber is closed (a subscriber inherited across fork() counts as closed: subscribe again in the child)";

// A subscriber that finds its slot being retired spins this many looks for the
// retirer to see its cursor and put the slot back before it waits as for any claim.
constexpr int kRetiringSpins = 4096;
// Subscribers a publish looks at for life, at most, each kStuckCheckNs.
constexpr std::uint32_t kLivenessChecksPerRound = 8;

}  // namespace

/// A process's handle on a topic file, shared by its Topic handle and the
/// subscriptions made from it (the file is let go of when the last one goes).
class TopicState : public WaitingHandle {
 public:
  std::shared_ptr<DomainState> domain;
  std::string name;
  std::string file;
  NamedFile named{NamedFile::LockBytes{kTopicInitLockByte, kTopicLifecycleLockByte}};
  TopicHeader* header = nullptr;  // named's mapping
  SubscriberEntry* entries = nullptr;
  std::byte* slots = nullptr;
  std::uint64_t capacity = 0;
  std::uint64_t mask = 0;
  std::uint32_t slot_bytes = 0;
  std::uint32_t inline_capacity = 0;
  std::uint32_t history = 0;
  std::uint32_t max_subscribers = 0;
  bool creator = false;
  // When this process's publishes next look whether lagging subscribers live;
  // the cursors they saw last time, and where the round-robin goes on
  // (process-local, one checker at a time: liveness_mutex).
  std::atomic<std::int64_t> next_liveness_check{0};
  std::mutex liveness_mutex;
  std::vector<std::uint64_t> cursors_seen;
  std::uint32_t next_to_check = 0;

  TopicState() = default;
  TopicState(const TopicState&) = delete;
  TopicState& operator=(const TopicState&) = delete;
  ~TopicState();

  [[nodiscard]] SlotHeader* slot(std::uint64_t position) const noexcept {
    return reinterpret_cast<SlotHeader*>(slots + (position & mask) * slot_bytes);  // NOLINT
  }
  static std::byte* inline_data(SlotHeader* s) noexcept { return reinterpret_cast<std::byte*>(s) + kSlotHeaderBytes; }
  /// False in a child of fork(): the mapping is the parent's.
  [[nodiscard]] bool mapped() const noexcept { return header != nullptr && !domain->forked_away(); }
  [[nodiscard]] bool usable() const noexcept { return !closed.load(std::memory_order_acquire) && mapped(); }
  [[nodiscard]] bool unlinked() const noexcept {
    return (header->flags.load(std::memory_order_acquire) & kTopicUnlinked) != 0;
  }
  /// Subscriber entries to scan: those ever claimed, never more than the table.
  [[nodiscard]] std::uint32_t entries_in_use() const noexcept {
    // seq_cst: a retirer's second look must reach an entry claimed before its
    // subscriber pinned (topic_file.hpp, "The cursor is the pin").
    return std::min(header->entries_used.load(std::memory_order_seq_cst), max_subscribers);
  }
  [[nodiscard]] WaitSide publish_side() const noexcept {
    return {header->published, header->subscribers_waiting, header->published_at, true};
  }
  [[nodiscard]] WaitSide room_side() const noexcept {
    return {header->room, header->publishers_waiting, header->room_at, false};
  }
  /// Every sleeping subscriber wakes for a message (each must see it).
  void notify_subscribers() const noexcept {
    notify_waiters(header->published, header->subscribers_waiting, header->published_at, header->watchers, INT_MAX);
  }
  /// Publishers waiting for room look again.
  void notify_publishers() const noexcept {
    // No watcher table: event loops wait only for messages (the table's
    // entries are counted in subscribers_waiting alone).
    notify_waiters(header->room, header->publishers_waiting, header->room_at, nullptr, INT_MAX);
  }
  /// wait_loop.hpp: every sleeper of a side is woken, so nothing is passed on.
  void pass_wake_on(const WaitSide& /*side*/) const noexcept {}

  Result<void, OpenError> create(const TopicOptions& options);
  Result<void, OpenError> attach();
  void use_mapping() noexcept;

  Attempt claim_publish(SlotHeader*& out, std::uint64_t& position, std::uint32_t& blocker) noexcept;
  void publish_slot(SlotHeader* s, std::uint64_t position) noexcept;
  /// Tries to give slot `r` back (topic_file.hpp, "The cursor is the pin").
  /// `for_room`: a publisher needs the slot (history ignored; DROP_OLDEST
  /// cursors are moved past r). Done when the slot no longer holds r;
  /// Pending (blocker: whose cursor is in the way) or Full (kept: history,
  /// not yet published) otherwise.
  Attempt retire(std::uint64_t r, bool for_room, std::uint32_t& blocker) noexcept;
  /// Retires what is retirable in [from, publish_pos - history) (after a
  /// subscription moved on or ended), at most a ring's worth.
  void retire_behind(std::uint64_t from) noexcept;
  void repair(std::uint32_t blocker) noexcept;
  /// Checks every subscriber that has not read `position` yet for life and
  /// repairs the dead (at most every kStuckCheckNs per process: a system call each).
  void check_lagging_subscribers(std::uint64_t position) noexcept;
  bool mark_unlinked() noexcept;
  void wake_everyone() const noexcept;
  void drain() noexcept;
  template <class Fill>
  Attempt try_publish(std::uint32_t& blocker, Fill&& fill) noexcept {
    SlotHeader* s = nullptr;
    std::uint64_t position = 0;
    const Attempt claimed = claim_publish(s, position, blocker);
    if (claimed != Attempt::Done) return claimed;
    kill_point("topic.claimed");
    fill(*s);
    kill_point("topic.filled");
    publish_slot(s, position);
    return Attempt::Done;
  }

 private:
  /// Finds the first cursor at or before `r`, moving DROP_OLDEST ones past it
  /// when `push`. Returns true if none is left in the way; otherwise `blocker`
  /// is its owner. seq_cst loads: the second scan of retire() relies on them.
  bool cursors_past(std::uint64_t r, bool push, std::uint32_t& blocker) const noexcept;
};

/// One subscription: its entry in the topic's table and what this process
/// remembers of it. The channel its blocking gets wait in (wait_loop.hpp).
class Subscription : public WaitingHandle {
 public:
  std::shared_ptr<TopicState> topic;
  std::uint32_t entry = 0;
  std::uint32_t token = 0;
  OnFull on_full = OnFull::DropOldest;
  // Touched only by the thread whose cursor is READING, so by one at a time;
  // atomics for the readers of the counters.
  std::atomic<std::uint64_t> next_sequence{0};  // 64-bit position of the next message
  // The entry's `dropped` (bumped by publishers as they move this cursor on)
  // when the last message was taken, and when the entry was freed.
  std::atomic<std::uint64_t> dropped_seen{0};
  std::atomic<std::uint64_t> dropped_at_end{0};
  std::atomic<std::uint64_t> received{0};
  // This process's threads inside get() of this subscription. The entry is
  // freed (free_entry) by end() when none is, else by the last to leave after
  // end(): a get never touches an entry freed under it (and perhaps taken by
  // another subscription of this process, whose cursor has the same token).
  std::atomic<int> gets_in_progress{0};

  Subscription() = default;
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() { end(); }

  [[nodiscard]] SubscriberEntry& my_entry() const noexcept { return topic->entries[entry]; }
  [[nodiscard]] bool unlinked() const noexcept { return topic->unlinked(); }
  void repair(std::uint32_t blocker) noexcept { topic->repair(blocker); }
  void pass_wake_on(const WaitSide& side) const noexcept { topic->pass_wake_on(side); }
  [[nodiscard]] bool next_is_published() const noexcept;
  Attempt try_take(TopicMessage& message, std::uint32_t& blocker, std::optional<std::uint32_t>& holding);
  /// Closes the subscription (once): frees the entry now if no get of this
  /// process is in progress, else the last get to leave does.
  void end() noexcept;
  /// A get starts (false: the subscription is closed) / leaves.
  bool enter_get() noexcept;
  void leave_get() noexcept;

 private:
  /// The cursor moves from READING(c) on to `next`, then publishers waiting
  /// for room are told (seq_cst: ordered against their announcement).
  void move_on(std::uint64_t c, std::uint64_t next) noexcept;
  /// Frees the entry (once), letting go of what it held back.
  void free_entry() noexcept;
  std::atomic<bool> ended_{false};
  std::atomic<bool> freed_{false};
};

TopicState::~TopicState() {
  // Last process out of an unlinked topic frees the messages left in it.
  if (header != nullptr && domain && !domain->forked_away()) {
    named.close([this]() noexcept {
      if (unlinked()) drain();
    });
  }
}

void TopicState::use_mapping() noexcept {
  header = reinterpret_cast<TopicHeader*>(named.base());  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
  entries = reinterpret_cast<SubscriberEntry*>(named.base() + sizeof(TopicHeader));  // NOLINT
  slots = named.base() + sizeof(TopicHeader) +                                       // NOLINT
          static_cast<std::uint64_t>(max_subscribers) * sizeof(SubscriberEntry);
}

Result<void, OpenError> TopicState::create(const TopicOptions& options) {
  capacity = std::bit_ceil(std::max<std::size_t>(options.capacity, 1));
  mask = capacity - 1;
  history = static_cast<std::uint32_t>(options.history);
  max_subscribers = static_cast<std::uint32_t>(options.max_subscribers);
  inline_capacity = static_cast<std::uint32_t>(options.inline_capacity);
  slot_bytes = static_cast<std::uint32_t>((kSlotHeaderBytes + inline_capacity + 63) / 64 * 64);
  const std::uint64_t bytes = topic_file_bytes(capacity, max_subscribers, slot_bytes);
  auto created = named.create(*domain, name, file, "topic '" + name + "'", bytes, [&](std::byte* /*base*/) {
    use_mapping();
    header->layout_version = kTopicLayoutVersion;
    header->slot_bytes = slot_bytes;
    header->capacity = static_cast<std::uint32_t>(capacity);
    header->history = history;
    header->max_subscribers = max_subscribers;
    header->inline_capacity = inline_capacity;
    header->file_bytes = bytes;
    header->creator_token = domain->token();
    header->creator_pid = platform::process_id();
    for (std::uint64_t i = 0; i < capacity; ++i) slot(i)->control.store(make_control(i, SlotState::Empty, 0));
    header->magic.store(kTopicMagic, std::memory_order_release);
  });
  if (!created) {
    header = nullptr;
    return created;
  }
  domain->object_created();
  creator = true;
  return {};
}

Result<void, OpenError> TopicState::attach() {
  const std::string damaged = "topic '" + name + "' is damaged; remove it with `hakobu rm " + name + "`";
  NamedFile::AttachRules rules = NamedFile::rules_for("topic '" + name + "'", name, sizeof(TopicHeader));
  // Everything in the header comes from shared memory: checked, then kept in process memory.
  rules.check_header = [&](const std::byte* base, std::uint64_t file_size) -> Result<std::uint64_t, OpenError> {
    const auto* h = reinterpret_cast<const TopicHeader*>(base);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    if (h->magic.load(std::memory_order_acquire) != kTopicMagic) return {OpenError::Corrupt, damaged};
    if (h->layout_version != kTopicLayoutVersion) {
      return layout_mismatch("topic '" + name + "'", h->layout_version, kTopicLayoutVersion);
    }
    const TopicGeometry shape = TopicGeometry::read(*h);  // read once, then checked
    if (!shape.valid(file_size)) return {OpenError::Corrupt, damaged};
    capacity = shape.capacity;
    mask = shape.capacity - 1;
    slot_bytes = static_cast<std::uint32_t>(shape.slot_bytes);
    inline_capacity = static_cast<std::uint32_t>(shape.inline_capacity);
    max_subscribers = static_cast<std::uint32_t>(shape.max_subscribers);
    history = static_cast<std::uint32_t>(shape.history);
    return shape.file_bytes;
  };
  rules.unlinked = [](const std::byte* base) {
    const auto* h = reinterpret_cast<const TopicHeader*>(base);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    return (h->flags.load(std::memory_order_acquire) & kTopicUnlinked) != 0;
  };
  if (auto attached = named.attach(rules); !attached) return attached;
  use_mapping();
  return {};
}

// --- publishing ----------------------------------------------------------------------

Attempt TopicState::claim_publish(SlotHeader*& out, std::uint64_t& position, std::uint32_t& blocker) noexcept {
  const std::uint32_t me = domain->token();
  // Bounded: positions come from shared memory (as in a queue's claim_write).
  for (std::uint64_t step = 0; step <= 2 * capacity + 64; ++step) {
    const std::uint64_t p = header->publish_pos.load(std::memory_order_relaxed);
    SlotHeader* s = slot(p);
    std::uint64_t c = s->control.load(std::memory_order_acquire);
    const std::int64_t d = position_diff(control_position(c), p);
    if (d == 0) {
      if (control_state(c) == SlotState::Empty) {
        if (s->control.compare_exchange_weak(c, make_control(p, SlotState::Writing, me), std::memory_order_acquire,
                                             std::memory_order_relaxed)) {
          std::uint64_t expected = p;
          header->publish_pos.compare_exchange_strong(expected, p + 1, std::memory_order_relaxed);
          out = s;
          position = p;
          return Attempt::Done;
        }
        continue;
      }
    } else if (d < 0) {
      // The slot still holds an older message: give it back first, moving
      // DROP_OLDEST subscribers past it; a BLOCK one (or a claim) in the way
      // makes the topic full for now.
      const SlotState state = control_state(c);
      if (state == SlotState::Writing) {  // that older message is not even published yet
        blocker = control_token(c);
        return Attempt::Pending;
      }
      const Attempt retired = retire(control_position(c), /*for_room=*/true, blocker);
      if (retired == Attempt::Done) continue;
      return retired == Attempt::Pending ? Attempt::Pending : Attempt::Full;
    }
    // Claimed by another publisher (d == 0, not EMPTY) or past p (d > 0, its
    // claimer may have died before advancing the hint): help the hint along.
    std::uint64_t expected = p;
    header->publish_pos.compare_exchange_strong(expected, p + 1, std::memory_order_relaxed);
  }
  return Attempt::Busy;
}

void TopicState::publish_slot(SlotHeader* s, std::uint64_t position) noexcept {
  s->control.store(make_control(position, SlotState::Full, 0), std::memory_order_release);
  header->publish_count.fetch_add(1, std::memory_order_relaxed);
  notify_subscribers();
  // The message `history` places back has left the history: give it back if
  // every subscriber passed it (with no subscriber and no history, this one).
  std::uint32_t ignored = 0;
  retire(position - history, /*for_room=*/false, ignored);
  // A subscriber that died holds messages back (eagerly given back only when
  // every cursor passed them) without anyone waiting on it: a DROP_OLDEST one
  // is moved on forever, a BLOCK one stalls publishers only once the ring is
  // full. Publishers look for such subscribers now and then.
  const std::int64_t now = platform::monotonic_ns();
  std::int64_t due = next_liveness_check.load(std::memory_order_relaxed);
  if (now >= due && next_liveness_check.compare_exchange_strong(due, now + kStuckCheckNs, std::memory_order_relaxed)) {
    check_lagging_subscribers(position);
  }
}

void TopicState::check_lagging_subscribers(std::uint64_t position) noexcept {
  const std::unique_lock<std::mutex> lock(liveness_mutex, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another thread of this process is at it
  if (cursors_seen.size() != max_subscribers) cursors_seen.assign(max_subscribers, 0);
  // Only a cursor that stood still since the last round and holds a message
  // back may be a dead subscriber's; at most a few system calls per round, the
  // entries taken in turn.
  const std::uint32_t used = entries_in_use();
  std::uint32_t checked = 0;
  const std::uint32_t first = next_to_check;
  for (std::uint32_t n = 0; n < used && checked < kLivenessChecksPerRound; ++n) {
    const std::uint32_t i = (first + n) % used;
    const std::uint64_t cursor = entries[i].cursor.load(std::memory_order_acquire);
    // A cursor first seen here is checked once too (a subscriber that died
    // before this process's first round).
    const bool suspect = cursor == cursors_seen[i] || cursors_seen[i] == 0;
    cursors_seen[i] = cursor;
    if (cursor == 0 || !suspect || position_diff(position, control_position(cursor)) < 0) continue;
    repair(control_token(cursor));
    ++checked;
    next_to_check = (i + 1) % used;
  }
}

bool TopicState::cursors_past(std::uint64_t r, bool push, std::uint32_t& blocker) const noexcept {
  const std::uint32_t used = entries_in_use();
  for (std::uint32_t i = 0; i < used; ++i) {
    SubscriberEntry& e = entries[i];
    std::uint64_t cursor = e.cursor.load(std::memory_order_seq_cst);
    // A DROP_OLDEST cursor moves on (a few tries: its owner moves it too).
    for (int tries = 0; tries < 4 && cursor != 0; ++tries) {
      const std::int64_t behind = position_diff(r, control_position(cursor));  // >= 0: at or before r
      if (behind < 0) {
        cursor = 0;  // past r
        break;
      }
      const bool drop = e.on_full.load(std::memory_order_relaxed) == kOnFullDropOldest;
      if (!push || !drop || cursor_state(cursor) != CursorState::Active) break;
      const std::uint64_t moved = make_cursor(r + 1, CursorState::Active, control_token(cursor));
      if (e.cursor.compare_exchange_strong(cursor, moved, std::memory_order_seq_cst)) {
        e.dropped.fetch_add(static_cast<std::uint64_t>(behind) + 1, std::memory_order_relaxed);
        cursor = 0;
        break;
      }
    }
    if (cursor != 0 && position_diff(r, control_position(cursor)) >= 0) {
      blocker = control_token(cursor);
      return false;
    }
  }
  return true;
}

Attempt TopicState::retire(std::uint64_t r, bool for_room, std::uint32_t& blocker) noexcept {
  SlotHeader* s = slot(r);
  std::uint64_t c = s->control.load(std::memory_order_acquire);
  const std::int64_t d = position_diff(control_position(c), r);
  if (d > 0) return Attempt::Done;  // given back already (and maybe used again)
  if (d < 0 || control_state(c) == SlotState::Empty || control_state(c) == SlotState::Writing) return Attempt::Full;
  if (control_state(c) == kRetiring) {
    blocker = control_token(c);
    return Attempt::Pending;
  }
  if (!for_room) {
    // Kept while in the history (the hint may lag: then it is kept a little longer).
    const std::int64_t age = position_diff(header->publish_pos.load(std::memory_order_relaxed), r);
    if (age <= static_cast<std::int64_t>(history)) return Attempt::Full;
  }
  // A first look, moving DROP_OLDEST cursors on: most tries end here, without a write.
  if (!cursors_past(r, for_room, blocker)) return Attempt::Pending;
  const std::uint32_t me = domain->token();
  if (!s->control.compare_exchange_strong(c, make_control(r, kRetiring, me), std::memory_order_seq_cst)) {
    if (position_diff(control_position(c), r) > 0) return Attempt::Done;
    if (control_state(c) == kRetiring) {  // another retirer: it either gives the slot back or puts it back
      blocker = control_token(c);
      return Attempt::Pending;
    }
    return Attempt::Full;
  }
  kill_point("topic.retiring");
  // The second look, after the slot says RETIRING: a subscriber that moved its
  // cursor here after the first look is seen now, or it sees RETIRING and waits.
  if (!cursors_past(r, false, blocker)) {
    s->control.store(make_control(r, SlotState::Full, 0), std::memory_order_seq_cst);
    return Attempt::Pending;
  }
  const std::uint8_t kind = s->kind;
  const std::uint64_t length = s->length;
  const std::uint64_t block = s->block;  // left in the slot: a repairer may put RETIRING back to FULL
  s->control.store(make_control(r + capacity, SlotState::Empty, 0), std::memory_order_release);
  kill_point("topic.retired");  // a kill here leaks the block: never dropped twice
  if (kind != kTombstone && block != 0 && domain->heap().check_block(block, length)) domain->heap().drop_ref(block);
  notify_publishers();
  return Attempt::Done;
}

void TopicState::retire_behind(std::uint64_t from) noexcept {
  const std::uint64_t head = header->publish_pos.load(std::memory_order_relaxed);
  const std::int64_t span = position_diff(head, from);
  if (span <= static_cast<std::int64_t>(history)) return;
  const std::uint64_t count = std::min<std::uint64_t>(static_cast<std::uint64_t>(span) - history, capacity);
  std::uint32_t ignored = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    if (retire(from + i, false, ignored) != Attempt::Done) break;  // someone else still needs it (and later ones)
  }
}

void TopicState::repair(std::uint32_t blocker) noexcept {
  if (domain->token_alive(blocker)) return;
  const std::uint32_t me = domain->token();
  for (std::uint64_t i = 0; i < capacity; ++i) {
    SlotHeader* s = slot(i);
    std::uint64_t c = s->control.load(std::memory_order_acquire);
    if (control_token(c) != blocker) continue;
    const std::uint64_t p = control_position(c);
    if (control_state(c) == SlotState::Writing) {
      if (claim_as_tombstone(*s, c, me)) {
        s->control.store(make_control(p, SlotState::Full, 0), std::memory_order_release);
        notify_subscribers();
      }
    } else if (control_state(c) == kRetiring) {
      // A dead retirer had not dropped the reference yet: the slot is whole again.
      s->control.compare_exchange_strong(c, make_control(p, SlotState::Full, 0), std::memory_order_seq_cst);
    }
  }
  bool freed = false;
  const std::uint32_t used = entries_in_use();
  for (std::uint32_t i = 0; i < used; ++i) {
    std::uint64_t cursor = entries[i].cursor.load(std::memory_order_acquire);
    // A dead subscriber: the references it took are in its holdings, which
    // the domain's garbage collection drops; its place in the ring goes now.
    if (cursor != 0 && control_token(cursor) == blocker &&
        entries[i].cursor.compare_exchange_strong(cursor, 0, std::memory_order_seq_cst)) {
      retire_behind(control_position(cursor));
      freed = true;
    }
  }
  if (freed) notify_publishers();
}

void TopicState::wake_everyone() const noexcept {
  wake_all_waiters(header->published, header->subscribers_waiting, header->watchers);
  wake_all_waiters(header->room, header->publishers_waiting, nullptr);
}

bool TopicState::mark_unlinked() noexcept {
  const std::uint32_t old = header->flags.fetch_or(kTopicUnlinked, std::memory_order_acq_rel);
  if ((old & kTopicUnlinked) != 0) return false;
  remove_if_same({file, true, "topic '" + name + "'"}, named.fd());  // never a newer topic of the same name
  domain->object_removed();
  wake_everyone();
  return true;
}

void TopicState::drain() noexcept {
  drop_ring_references(domain->heap(), capacity, [this](std::uint64_t i) { return slot(i); });
}

// --- receiving -----------------------------------------------------------------------

bool Subscription::next_is_published() const noexcept {
  const std::uint64_t cursor = my_entry().cursor.load(std::memory_order_acquire);
  const std::uint64_t c = control_position(cursor);
  const std::uint64_t control = topic->slot(c)->control.load(std::memory_order_acquire);
  return control_state(control) == SlotState::Full && position_diff(control_position(control), c) >= 0;
}

void Subscription::move_on(std::uint64_t c, std::uint64_t next) noexcept {
  // A CAS, not a store: if the entry was freed meanwhile (end() of a
  // subscription whose entry shared memory said READING), it stays free.
  std::uint64_t reading = make_cursor(c, CursorState::Reading, token);
  my_entry().cursor.compare_exchange_strong(reading, make_cursor(next, CursorState::Active, token),
                                            std::memory_order_seq_cst);
  if (topic->header->publishers_waiting.load(std::memory_order_seq_cst) != 0) topic->notify_publishers();
  // Another thread of this subscription may have found the cursor READING and
  // gone to sleep: if the next message is there, it must look again.
  if (gets_in_progress.load(std::memory_order_relaxed) > 1 && next_is_published()) topic->notify_subscribers();
  // The last subscriber past a message that left the history gives it back.
  for (std::uint64_t p = c; position_diff(next, p) > 0; ++p) {
    std::uint32_t ignored = 0;
    topic->retire(p, false, ignored);
  }
}

Attempt Subscription::try_take(TopicMessage& message, std::uint32_t& blocker, std::optional<std::uint32_t>& holding) {
  TopicState& t = *topic;
  SubscriberEntry& e = my_entry();
  // Bounded: tombstones and messages retired before this subscription saw them are skipped.
  for (std::uint64_t step = 0; step <= t.capacity + 64; ++step) {
    if (closed.load(std::memory_order_seq_cst)) return Attempt::Closed;
    std::uint64_t cursor = e.cursor.load(std::memory_order_acquire);
    if (cursor == 0 || control_token(cursor) != token) return Attempt::Closed;  // freed by a repairer
    if (cursor_state(cursor) != CursorState::Active) {
      // Another thread of this subscription is taking a message: look again soon.
      blocker = token;
      return Attempt::Busy;
    }
    const std::uint64_t c = control_position(cursor);
    SlotHeader* s = t.slot(c);
    std::uint64_t control = s->control.load(std::memory_order_acquire);
    const std::int64_t d = position_diff(control_position(control), c);
    if (d < 0) return Attempt::Empty;  // the slot still holds an older message: c is not published
    if (d == 0 && control_state(control) == SlotState::Empty) return Attempt::Empty;
    if (d == 0 && control_state(control) == SlotState::Writing) {
      blocker = control_token(control);
      return Attempt::Pending;
    }
    if (d == 0 && !holding) {
      // Reserve a holdings entry before pinning: a message taken must not be
      // lost to a failed allocation.
      auto reserved = t.domain->reserve_holding();
      if (!reserved) return Attempt::OutOfMemory;
      holding = *reserved;
    }
    // Pin: READING(c). From here no one moves c or gives slot c back.
    if (!e.cursor.compare_exchange_strong(cursor, make_cursor(c, CursorState::Reading, token),
                                          std::memory_order_seq_cst)) {
      continue;  // a publisher moved us past overwritten messages: look again
    }
    kill_point("topic.reading");
    control = s->control.load(std::memory_order_seq_cst);
    for (int spins = 0; control_state(control) == kRetiring && position_diff(control_position(control), c) == 0 &&
                        spins < kRetiringSpins;
         ++spins) {
      platform::cpu_relax();  // the retirer sees our cursor and puts the slot back
      control = s->control.load(std::memory_order_seq_cst);
    }
    const std::int64_t now_d = position_diff(control_position(control), c);
    if (now_d == 0 && control_state(control) == kRetiring) {
      std::uint64_t reading = make_cursor(c, CursorState::Reading, token);
      e.cursor.compare_exchange_strong(reading, make_cursor(c, CursorState::Active, token), std::memory_order_seq_cst);
      blocker = control_token(control);
      return Attempt::Pending;  // a retirer that stays there is checked for life
    }
    // Positions skipped since the last take: the messages publishers moved us
    // past (counted in the entry's `dropped`), or history given back before
    // this subscription first looked (not a loss).
    std::uint64_t next = next_sequence.load(std::memory_order_relaxed);
    const std::int64_t gap = position_diff(c, next);
    if (gap > 0) next += static_cast<std::uint64_t>(gap);
    if (now_d != 0 || control_state(control) != SlotState::Full) {
      // Given back before we pinned it (we had just joined): skip it.
      next_sequence.store(next + 1, std::memory_order_relaxed);
      move_on(c, c + 1);
      continue;
    }
    // The descriptor came from shared memory: check it before use.
    const std::uint8_t kind = s->kind;
    const std::uint64_t length = s->length;
    const std::uint64_t block = s->block;
    if (kind == kTombstone) {  // its publisher died before publishing: skip
      next_sequence.store(next + 1, std::memory_order_relaxed);
      move_on(c, c + 1);
      continue;
    }
    const bool kind_ok =
        kind >= static_cast<std::uint8_t>(MessageKind::Bytes) && kind <= static_cast<std::uint8_t>(MessageKind::Object);
    Heap& heap = t.domain->heap();
    // The payload's address is made of the header values checked here, read once.
    std::byte* const payload = block != 0 ? heap.checked_payload(block, length) : nullptr;
    if (!kind_ok || (block == 0 && length > t.inline_capacity) ||
        (block != 0 && (payload == nullptr || !heap.add_ref(block)))) {
      next_sequence.store(next + 1, std::memory_order_relaxed);
      move_on(c, c + 1);  // skip the bad message, keep the topic going
      return Attempt::Corrupt;
    }
    if (block == 0) {
      MessageAccess::fill_inline(message.sample_, TopicState::inline_data(s), length, static_cast<MessageKind>(kind));
    } else {
      t.domain->fill_holding(*holding, block);  // counted (add_ref above), then listed
      kill_point("topic.listed");
      t.domain->fill_sample(message.sample_, block, payload, *holding, length, static_cast<MessageKind>(kind));
      holding.reset();
    }
    const std::uint64_t dropped_now = e.dropped.load(std::memory_order_relaxed);
    message.sequence_ = next;
    message.missed_ = dropped_now - dropped_seen.exchange(dropped_now, std::memory_order_relaxed);
    next_sequence.store(next + 1, std::memory_order_relaxed);
    received.fetch_add(1, std::memory_order_relaxed);
    e.received.fetch_add(1, std::memory_order_relaxed);
    move_on(c, c + 1);
    return Attempt::Done;
  }
  return Attempt::Busy;
}

void Subscription::end() noexcept {
  if (ended_.exchange(true)) return;
  if (!topic || !topic->mapped()) {  // inherited across fork(): the parent's
    closed.store(true, std::memory_order_release);
    return;
  }
  dropped_at_end.store(my_entry().dropped.load(std::memory_order_relaxed), std::memory_order_relaxed);
  // seq_cst, as enter_get's increment: either a starting get sees `closed`,
  // or this sees the get and leaves the entry to it.
  closed.store(true, std::memory_order_seq_cst);
  if (gets_in_progress.load(std::memory_order_seq_cst) == 0) {
    free_entry();
    return;
  }
  // Gets of other threads see `closed` at their next look: wake those asleep.
  topic->wake_everyone();
}

bool Subscription::enter_get() noexcept {
  gets_in_progress.fetch_add(1, std::memory_order_seq_cst);
  if (!closed.load(std::memory_order_seq_cst)) return true;
  leave_get();
  return false;
}

void Subscription::leave_get() noexcept {
  if (gets_in_progress.fetch_sub(1, std::memory_order_seq_cst) == 1 && closed.load(std::memory_order_seq_cst)) {
    free_entry();
  }
}

void Subscription::free_entry() noexcept {
  if (freed_.exchange(true)) return;
  SubscriberEntry& e = my_entry();
  // Bounded: publishers may move the cursor meanwhile (or shared memory be hostile).
  for (int tries = 0; tries < 1000; ++tries) {
    std::uint64_t cursor = e.cursor.load(std::memory_order_acquire);
    if (cursor == 0 || control_token(cursor) != token) return;  // freed already (a repairer)
    if (e.cursor.compare_exchange_strong(cursor, 0, std::memory_order_seq_cst)) {
      topic->retire_behind(control_position(cursor));
      topic->notify_publishers();
      return;
    }
  }
}

}  // namespace detail

using detail::Attempt;

// --- Topic ----------------------------------------------------------------------------

Result<Topic, OpenError> Topic::open(std::string_view name, OpenMode mode, const TopicOptions& options) {
  if (auto why = validate_name(name); !why.empty()) {
    return {OpenError::InvalidName, "invalid topic name '" + std::string(name) + "': " + why};
  }
  if (options.capacity == 0 || options.capacity > kMaxTopicCapacity) {
    return {OpenError::InvalidArgument, "capacity must be between 1 and " + std::to_string(kMaxTopicCapacity) +
                                            " messages, got " + std::to_string(options.capacity)};
  }
  const std::size_t ring = std::bit_ceil(options.capacity);
  if (options.history >= ring) {
    return {OpenError::InvalidArgument, "history (" + std::to_string(options.history) +
                                            ") must be less than the capacity (" + std::to_string(ring) +
                                            " messages): raise capacity"};
  }
  if (options.max_subscribers == 0 || options.max_subscribers > kMaxTopicSubscribers) {
    return {OpenError::InvalidArgument, "max_subscribers must be between 1 and " +
                                            std::to_string(kMaxTopicSubscribers) + ", got " +
                                            std::to_string(options.max_subscribers)};
  }
  if (options.inline_capacity > kMaxInlineBytes) {
    return {OpenError::InvalidArgument, "inline_capacity must be at most " + std::to_string(kMaxInlineBytes)};
  }
  if (options.latency > Latency::Fixed) {
    return {OpenError::InvalidArgument, "latency must be Adaptive, Spin, Sleep or Fixed"};
  }
  if (options.latency == Latency::Fixed && options.spin.count() < 0) {
    return {OpenError::InvalidArgument, "spin must not be negative"};
  }
  auto domain = detail::DomainState::attach(options.domain);
  if (!domain) return std::move(domain).error();

  auto state = std::make_shared<detail::TopicState>();
  state->domain = *domain;
  state->name = std::string(name);
  state->file = state->domain->file_name("t:" + state->name);
  state->spin_ns.store(options.spin.count(), std::memory_order_relaxed);
  state->latency.store(options.latency, std::memory_order_relaxed);

  const detail::DomainFile file{state->file, true, "topic '" + state->name + "'"};
  auto opened = detail::open_by_mode(
      state->named, file, mode, "no topic '" + state->name + "' in domain '" + state->domain->name() + "'",
      [&] { return state->attach(); }, [&] { return state->create(options); });
  if (!opened) return std::move(opened).error();
  Topic topic;
  topic.state_ = std::move(state);
  return topic;
}

Result<void, UnlinkError> Topic::remove(std::string_view name, std::string_view domain) {
  TopicOptions options;
  options.domain.name = std::string(domain);
  auto topic = open(name, OpenMode::AttachOnly, options);
  if (!topic) return detail::remove_unopenable(topic.error(), options.domain, "t:" + std::string(name));
  if (!topic->state_->mark_unlinked()) return {UnlinkError::NotFound, "topic '" + std::string(name) + "' was removed"};
  return {};
}

Topic::Topic(Topic&&) noexcept = default;
Topic& Topic::operator=(Topic&&) noexcept = default;
Topic::~Topic() = default;

void Topic::close() noexcept {
  if (!state_) return;
  state_->closed.store(true, std::memory_order_release);
  if (!state_->mapped()) return;  // inherited across fork(): not mapped here
  state_->wake_everyone();        // this handle's waiting publishers see `closed`; others sleep again
}

Result<void, UnlinkError> Topic::unlink() {
  if (!state_ || !state_->usable()) return {UnlinkError::Closed, detail::kClosedTopic};
  if (!state_->creator) {
    return {UnlinkError::NotCreator, "only the handle that created topic '" + state_->name +
                                         "' may unlink it; use Topic::remove (or `hakobu rm`) to remove it anyway"};
  }
  const bool removed = state_->mark_unlinked();
  close();
  if (!removed) return {UnlinkError::NotFound, "topic '" + state_->name + "' was already removed"};
  return {};
}

const std::string& Topic::name() const noexcept {
  static const std::string empty;
  return state_ ? state_->name : empty;
}

bool Topic::is_open() const noexcept {
  return state_ && state_->usable();
}

bool Topic::is_creator() const noexcept {
  return state_ && state_->creator;
}

TopicStats Topic::stats() const noexcept {
  TopicStats out;
  if (!state_) return out;
  const auto& t = *state_;
  out.capacity = t.capacity;
  out.history = t.history;
  out.max_subscribers = t.max_subscribers;
  out.inline_capacity = t.inline_capacity;
  if (!t.mapped()) return out;
  const std::uint32_t used = t.entries_in_use();
  for (std::uint32_t i = 0; i < used; ++i) {
    if (t.entries[i].cursor.load(std::memory_order_relaxed) != 0) ++out.subscribers;
  }
  out.published = t.header->publish_count.load(std::memory_order_relaxed);
  out.creator_pid = t.header->creator_pid;
  return out;
}

void Topic::set_latency(Latency latency) noexcept {
  if (state_) state_->latency.store(latency, std::memory_order_relaxed);
}

void Topic::set_spin(std::chrono::nanoseconds spin) noexcept {
  if (state_) state_->set_spin(spin);
}

Latency Topic::latency() const noexcept {
  return state_ ? state_->latency.load(std::memory_order_relaxed) : Latency::Adaptive;
}

Domain Topic::domain() const {
  return detail::DomainAccess::wrap(state_ ? state_->domain : nullptr);
}

// --- publishing ----------------------------------------------------------------------

namespace {

Result<void, PutError> publish_failure(Attempt attempt, const std::string& name) {
  switch (attempt) {
    // Short texts for the expected outcomes: no allocation in a polling loop.
    case Attempt::Full: return {PutError::Full, "a subscriber with on_full=block is a whole ring behind"};
    case Attempt::Timeout: return {PutError::Timeout, "publish timed out (a subscriber with on_full=block lags)"};
    case Attempt::Unlinked: return {PutError::Unlinked, "topic '" + name + "' was unlinked by its creator"};
    default: return {PutError::Closed, "the handle of topic '" + name + "' was closed"};
  }
}

}  // namespace

Result<void, PutError> Topic::publish(std::span<const std::byte> bytes, MessageKind kind) {
  return publish(bytes, std::chrono::nanoseconds::max(), kind);
}

Result<void, PutError> Topic::publish(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout,
                                      MessageKind kind, Latency latency) {
  const detail::CallLatency scope(latency);
  return publish(bytes, timeout, kind);
}

Result<void, PutError> Topic::publish(Loan& loan, std::chrono::nanoseconds timeout, Latency latency) {
  const detail::CallLatency scope(latency);
  return publish(loan, timeout);
}

Result<void, PutError> Topic::publish(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout,
                                      MessageKind kind) {
  if (!state_ || !state_->usable()) return {PutError::Closed, detail::kClosedTopic};
  auto& t = *state_;
  if (bytes.size() > t.inline_capacity) {
    // Too large for a slot: copy into a block, then hand the block over.
    auto loan = detail::copy_into_loan(*t.domain, bytes, kind);
    if (!loan) return std::move(loan).error();
    return publish(*loan, timeout);
  }
  const Attempt outcome = detail::wait_until_done(t, t.room_side(), timeout, [&](std::uint32_t& blocker) {
    return t.try_publish(blocker, [&](detail::SlotHeader& s) {
      s.kind = static_cast<std::uint8_t>(kind);
      s.length = bytes.size();
      s.block = 0;
      if (!bytes.empty()) std::memcpy(detail::TopicState::inline_data(&s), bytes.data(), bytes.size());
    });
  });
  if (outcome == Attempt::Done) return {};
  return publish_failure(outcome, t.name);
}

Result<void, PutError> Topic::publish(Loan& loan, std::chrono::nanoseconds timeout) {
  if (!state_ || !state_->usable()) return {PutError::Closed, detail::kClosedTopic};
  auto& t = *state_;
  using detail::MessageAccess;
  if (!loan.valid() || MessageAccess::domain(loan) != t.domain.get() ||
      MessageAccess::fork_epoch(loan) != detail::fork_epoch()) {
    return {PutError::Invalid, "the loan is empty, already sent, or from another domain"};
  }
  if (loan.kind() == MessageKind::Array) {
    // Refuse here what every subscriber would refuse.
    if (auto view = loan.array(); !view) return {PutError::Invalid, view.error().message};
  }
  const Attempt outcome = detail::wait_until_done(t, t.room_side(), timeout, [&](std::uint32_t& blocker) {
    return t.try_publish(blocker, [&](detail::SlotHeader& s) {
      s.kind = static_cast<std::uint8_t>(loan.kind());
      s.length = loan.bytes().size();
      s.block = MessageAccess::block(loan);
      t.domain->clear_holding(MessageAccess::holding(loan));  // the reference moves to the ring: unlisted first
    });
  });
  if (outcome != Attempt::Done) return publish_failure(outcome, t.name);
  MessageAccess::hand_over(loan);
  return {};
}

Result<void, PutError> Topic::publish_array(const void* data, DType dtype, std::span<const std::int64_t> shape,
                                            std::chrono::nanoseconds timeout) {
  if (!state_ || !state_->usable()) return {PutError::Closed, detail::kClosedTopic};
  return detail::send_array(
      *state_->domain, state_->inline_capacity, data, dtype, shape,
      [&](std::span<const std::byte> bytes) { return publish(bytes, timeout, MessageKind::Array); },
      [&](Loan& loan) { return publish(loan, timeout); });
}

Result<Loan, LoanError> Topic::loan(std::size_t size, MessageKind kind, std::size_t attachments,
                                    const void* copy_source) {
  if (!state_ || !state_->usable()) return {LoanError::Closed, detail::kClosedTopic};
  return state_->domain->make_loan(size, kind, attachments, detail::Placement{0, copy_source});
}

Result<Loan, LoanError> Topic::loan_array(DType dtype, std::span<const std::int64_t> shape, Order order,
                                          std::string_view typestr, const void* copy_source) {
  if (!state_ || !state_->usable()) return {LoanError::Closed, detail::kClosedTopic};
  return detail::lend_array(*state_->domain, dtype, shape, order, typestr, copy_source);
}

Result<Loan, LoanError> Topic::loan_array_ref(DType dtype, std::span<const std::int64_t> shape,
                                              std::span<const std::int64_t> strides, std::int64_t byte_offset,
                                              std::string_view typestr) {
  if (!state_ || !state_->usable()) return {LoanError::Closed, detail::kClosedTopic};
  return detail::lend_array_ref(*state_->domain, dtype, shape, strides, byte_offset, typestr);
}

// --- subscribing ---------------------------------------------------------------------

Result<Subscriber, SubscribeError> Topic::subscribe(const SubscribeOptions& options) {
  if (!state_ || !state_->usable()) return {SubscribeError::Closed, detail::kClosedTopic};
  auto& t = *state_;
  if (options.on_full != OnFull::DropOldest && options.on_full != OnFull::Block) {
    return {SubscribeError::InvalidArgument, "on_full must be DropOldest or Block"};
  }
  if (t.unlinked()) return {SubscribeError::Unlinked, "topic '" + t.name + "' was unlinked by its creator"};
  auto sub = std::make_shared<detail::Subscription>();
  sub->topic = state_;
  sub->token = t.domain->token();
  sub->on_full = options.on_full;
  sub->spin_ns.store(t.spin_ns.load(std::memory_order_relaxed), std::memory_order_relaxed);
  sub->latency.store(t.latency.load(std::memory_order_relaxed), std::memory_order_relaxed);
  // Start `asked` messages back (no further than what was published, nor than the history kept).
  const std::uint64_t head = t.header->publish_pos.load(std::memory_order_acquire);
  const auto asked = std::min<std::uint64_t>({options.history, t.history, head});
  const std::uint64_t start = head - asked;
  bool reclaimed = false;  // entries of dead subscribers, freed once when the table looks full
  for (std::uint32_t i = 0; i < t.max_subscribers; ++i) {
    detail::SubscriberEntry& e = t.entries[i];
    std::uint64_t expected = 0;
    if (!e.cursor.compare_exchange_strong(expected,
                                          detail::make_cursor(start, detail::CursorState::Joining, sub->token),
                                          std::memory_order_seq_cst)) {
      if (i + 1 == t.max_subscribers && !reclaimed) {
        // A DROP_OLDEST subscriber that died holds nothing back, so nobody
        // repaired it: its entry is found here, by the one who needs it.
        reclaimed = true;
        for (std::uint32_t j = 0; j < t.max_subscribers; ++j) {
          const std::uint64_t cursor = t.entries[j].cursor.load(std::memory_order_acquire);
          if (cursor != 0) t.repair(detail::control_token(cursor));
        }
        i = UINT32_MAX;  // and look again from the first entry (the loop's ++ makes it 0)
      }
      continue;
    }
    // Scans (entries_in_use) must reach this entry from now on.
    std::uint32_t used = t.header->entries_used.load(std::memory_order_relaxed);
    for (int tries = 0; tries < 64 && used < i + 1; ++tries) {  // bounded: the word is shared memory
      if (t.header->entries_used.compare_exchange_weak(used, i + 1, std::memory_order_seq_cst)) break;
    }
    e.on_full.store(options.on_full == OnFull::Block ? detail::kOnFullBlock : detail::kOnFullDropOldest,
                    std::memory_order_relaxed);
    e.pid.store(platform::process_id(), std::memory_order_relaxed);
    e.dropped.store(0, std::memory_order_relaxed);
    e.received.store(0, std::memory_order_relaxed);
    e.joined_at.store(t.header->publish_count.load(std::memory_order_relaxed), std::memory_order_relaxed);
    e.cursor.store(detail::make_cursor(start, detail::CursorState::Active, sub->token), std::memory_order_seq_cst);
    sub->entry = i;
    sub->next_sequence.store(start, std::memory_order_relaxed);
    Subscriber subscriber;
    subscriber.state_ = std::move(sub);
    return subscriber;
  }
  return {SubscribeError::TooManySubscribers, "topic '" + t.name + "' has " + std::to_string(t.max_subscribers) +
                                                  " subscribers already (max_subscribers): close one, or create "
                                                  "the topic with a larger max_subscribers"};
}

// --- Subscriber ----------------------------------------------------------------------

Subscriber::Subscriber(Subscriber&&) noexcept = default;
Subscriber& Subscriber::operator=(Subscriber&&) noexcept = default;
Subscriber::~Subscriber() = default;

void Subscriber::close() noexcept {
  if (!state_) return;
  state_->end();
}

namespace {

Result<TopicMessage, GetError> get_failure(Attempt attempt, const std::string& name) {
  switch (attempt) {
    case Attempt::Empty: return {GetError::Empty, "no new message"};
    case Attempt::Timeout: return {GetError::Timeout, "get timed out"};
    case Attempt::Unlinked: return {GetError::Unlinked, "topic '" + name + "' was unlinked by its creator"};
    case Attempt::Corrupt:
      return {GetError::Corrupt, "topic '" + name + "': a message failed validation and was skipped"};
    case Attempt::OutOfMemory:
      return {GetError::OutOfMemory, "no memory to record the message as held (shared memory full); nothing was taken"};
    default: return {GetError::Closed, "the subscriber of topic '" + name + "' was closed"};
  }
}

}  // namespace

Result<TopicMessage, GetError> Subscriber::get(std::chrono::nanoseconds timeout) {
  if (!state_ || state_->closed.load(std::memory_order_acquire) || !state_->topic->mapped()) {
    return {GetError::Closed, detail::kClosedSubscriber};
  }
  auto& sub = *state_;
  TopicMessage message;
  std::optional<std::uint32_t> holding;
  // The entry stays this subscription's until the get leaves (see end()).
  if (!sub.enter_get()) return {GetError::Closed, detail::kClosedSubscriber};
  struct Leave {
    detail::Subscription& sub;
    ~Leave() { sub.leave_get(); }
  } leave{sub};
  const Attempt outcome = detail::wait_until_done(sub, sub.topic->publish_side(), timeout, [&](std::uint32_t& blocker) {
    return sub.try_take(message, blocker, holding);
  });
  if (holding) sub.topic->domain->unreserve_holding(*holding);  // reserved but not used
  if (outcome == Attempt::Done) return message;
  return get_failure(outcome, sub.topic->name);
}

Result<TopicMessage, GetError> Subscriber::try_get() {
  return get(std::chrono::nanoseconds(0));
}
Result<TopicMessage, GetError> Subscriber::get() {
  return get(std::chrono::nanoseconds::max());
}
Result<TopicMessage, GetError> Subscriber::get(std::chrono::nanoseconds timeout, Latency latency) {
  const detail::CallLatency scope(latency);
  return get(timeout);
}

Result<void, WatchError> Subscriber::watch(const WakeSocket& socket, std::uint16_t cookie) {
  if (!state_ || state_->closed.load(std::memory_order_acquire) || !state_->topic->mapped()) {
    return {WatchError::Closed, detail::kClosedSubscriber};
  }
  if (socket.fd() < 0) return {WatchError::Closed, "the wake-up socket is closed"};
  auto& h = *state_->topic->header;
  if (detail::add_watcher(h.watchers, h.subscribers_waiting, socket.id(), cookie)) return {};
  return {WatchError::Full, "topic '" + state_->topic->name + "' is watched by " +
                                std::to_string(detail::kWatcherSlots) + " event loops already"};
}

void Subscriber::unwatch(const WakeSocket& socket, std::uint16_t cookie) noexcept {
  if (!state_ || !state_->topic->mapped()) return;
  auto& h = *state_->topic->header;
  detail::remove_watcher(h.watchers, h.subscribers_waiting, socket.id(), cookie);
}

bool Subscriber::spin_until_ready(std::chrono::nanoseconds at_most) noexcept {
  if (!state_ || state_->closed.load(std::memory_order_acquire) || !state_->topic->mapped() || at_most.count() <= 0) {
    return false;
  }
  auto& sub = *state_;
  // Looks only: nothing is taken, so giving up at any point leaves the topic as it was.
  auto look = [&](std::uint32_t& /*blocker*/) { return sub.next_is_published() ? Attempt::Done : Attempt::Empty; };
  return detail::wait_until_done(sub, sub.topic->publish_side(), at_most, look, /*may_sleep=*/false) == Attempt::Done;
}

std::uint64_t Subscriber::dropped() const noexcept {
  if (!state_) return 0;
  const auto& sub = *state_;
  if (sub.closed.load(std::memory_order_acquire) || !sub.topic->mapped()) {
    return sub.dropped_at_end.load(std::memory_order_relaxed);
  }
  return sub.my_entry().dropped.load(std::memory_order_relaxed);  // publishers count it as they move us on
}

std::uint64_t Subscriber::received() const noexcept {
  return state_ ? state_->received.load(std::memory_order_relaxed) : 0;
}

std::size_t Subscriber::lag() const noexcept {
  if (!state_ || state_->closed.load(std::memory_order_acquire) || !state_->topic->mapped()) return 0;
  const auto& t = *state_->topic;
  const std::uint64_t cursor = state_->my_entry().cursor.load(std::memory_order_relaxed);
  if (cursor == 0) return 0;
  const std::int64_t n =
      detail::position_diff(t.header->publish_pos.load(std::memory_order_relaxed), detail::control_position(cursor));
  return n <= 0 ? 0 : std::min<std::size_t>(static_cast<std::size_t>(n), t.capacity);
}

bool Subscriber::is_open() const noexcept {
  return state_ && !state_->closed.load(std::memory_order_acquire) && state_->topic->mapped();
}

OnFull Subscriber::on_full() const noexcept {
  return state_ ? state_->on_full : OnFull::DropOldest;
}

void Subscriber::set_latency(Latency latency) noexcept {
  if (state_) state_->latency.store(latency, std::memory_order_relaxed);
}

// --- TopicMessage ----------------------------------------------------------------------

Result<ArrayView, ArrayError> TopicMessage::array() const noexcept {
  // Sample::array() is not const only because a receiver may write its own
  // sample; the view of a topic message is documented read-only.
  return const_cast<Sample&>(sample_).array();  // NOLINT(cppcoreguidelines-pro-type-const-cast)
}

Result<std::span<const std::byte>, GetError> TopicMessage::attachment(std::size_t index) const {
  auto bytes = sample_.attachment(index);
  if (!bytes) return std::move(bytes).error();
  return std::span<const std::byte>(*bytes);
}

}  // namespace hakobu
