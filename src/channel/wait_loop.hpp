// hakobu — the blocking wait every channel uses (queues, topics).
//
// Waiting rules (waiting.hpp says how long to spin):
// 1. Try once. 2. Spin (pause, try; the clock every 64 tries) until the
//    planned spin runs out. 3. Announce in `waiting` (seq_cst), read the futex
//    word, try once more, sleep on the word unless it changed, un-announce; go
//    to 2 (now past the spin, so it spins at most 63 tries before sleeping
//    again).
// A notifier bumps the word and wakes after it published, if it saw an
// announcement (watchers.hpp, notify_waiters); a spinner needs no announcement:
// it looks. `may_sleep` false: step 3 returns Timeout instead.
//
// A waiter blocked behind another process's claim (Attempt::Pending, with the
// claimer's token) wakes every kStuckCheckNs to let the channel repair a dead
// claimer; one whose try gave up after its bounded steps (Busy) looks again
// every kBusyRecheckNs.
//
// The channel (a QueueState, a TopicState) derives from WaitingHandle and
// provides:
//   bool unlinked() const;              the name was removed by its creator
//   void repair(std::uint32_t blocker); the claimer `blocker` may be dead: repair its claims
//   void pass_wake_on(const WaitSide&); a woken sleeper did not take what woke it
// and, if it has senders to watch (WatchesSenders), has_remote_senders() and
// reap_dead_senders(): a receiver of an empty queue wakes every kSenderCheckNs
// while other processes' senders are listed, to reap the dead ones.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>

#include "channel/waiting.hpp"
#include "hakobu/queue.hpp"
#include "platform/os.hpp"

namespace hakobu::detail {

/// Outcome of one try (Done, Empty, Full, Pending, Busy, Corrupt, OutOfMemory) or of a wait.
/// Busy: the try gave up after a bounded number of steps (a damaged file, or
/// very heavy contention); the caller's wait loop tries again within its deadline.
/// Ended, SendersLost: a queue's stream ended (ring.hpp, "Senders").
enum class Attempt : std::uint8_t {
  Done,
  Empty,
  Full,
  Pending,
  Busy,
  Corrupt,
  OutOfMemory,
  Timeout,
  Closed,
  Unlinked,
  Ended,
  SendersLost,
};

/// A try's outcome that ends the wait at once, whatever the deadline.
constexpr bool ends_wait(Attempt attempt) noexcept {
  return attempt == Attempt::Done || attempt == Attempt::Corrupt || attempt == Attempt::OutOfMemory ||
         attempt == Attempt::Ended || attempt == Attempt::SendersLost;
}

// A waiter behind a slot claimed by another process re-checks that the claimer
// is alive this often.
inline constexpr std::int64_t kStuckCheckNs = 20'000'000;
// A receiver waiting on an empty queue whose senders include other processes
// checks this often that they are alive (the end of stream of a dead sender).
inline constexpr std::int64_t kSenderCheckNs = 100'000'000;

/// A channel whose receivers watch its senders (a queue: ring.hpp, "Senders").
template <class Channel>
concept WatchesSenders = requires(Channel& channel) {
  { channel.has_remote_senders() } -> std::same_as<bool>;
  channel.reap_dead_senders();
};
// A try that gave up after its bounded steps (Attempt::Busy) is retried this often.
inline constexpr std::int64_t kBusyRecheckNs = 1'000'000;

/// The latency mode of the call in progress on this thread (Queue::get(timeout,
/// latency) and the like), or -1: the handle's own.
inline thread_local int t_call_latency = -1;

/// Sets this thread's per-call latency for its lifetime.
class CallLatency {
 public:
  explicit CallLatency(Latency latency) noexcept : saved_(t_call_latency) {
    t_call_latency = static_cast<int>(latency);
  }
  ~CallLatency() { t_call_latency = saved_; }
  CallLatency(const CallLatency&) = delete;
  CallLatency& operator=(const CallLatency&) = delete;

 private:
  int saved_;
};

/// The absolute deadline of a wait of `timeout` from `now` (-1: none).
inline std::int64_t deadline_after(std::chrono::nanoseconds timeout, std::int64_t now) noexcept {
  if (timeout == std::chrono::nanoseconds::max()) return -1;
  const std::int64_t t = std::max<std::int64_t>(timeout.count(), 0);
  return t > INT64_MAX - now ? -1 : now + t;
}

/// One side of a channel that callers wait on: its futex word, its waiter
/// count (sleepers | watchers, ring.hpp) and the notifier's time stamp.
struct WaitSide {
  std::atomic<std::uint32_t>& word;
  std::atomic<std::uint32_t>& waiting;
  std::atomic<std::int64_t>& stamp;
  bool is_get;  ///< receiving (else sending): which history and which rules apply
};

/// What a handle keeps, process-local, for its blocking calls.
class WaitingHandle {
 public:
  std::atomic<bool> closed{false};
  std::atomic<std::int64_t> spin_ns{0};
  std::atomic<Latency> latency{Latency::Adaptive};
  std::atomic<std::uint32_t> pending_polls{0};     // non-blocking tries that found a claimed slot
  std::atomic<std::int64_t> next_sender_check{0};  // when a poller next checks the senders (queues)
  WaitHistory get_history;                         // how long this handle's gets waited (waiting.hpp)
  WaitHistory put_history;
  SpinBudget budget;  // spinning left for this handle while nothing arrives

  /// This call's latency mode: a per-call override (CallLatency), else the handle's.
  [[nodiscard]] Latency current_latency() const noexcept {
    return t_call_latency >= 0 ? static_cast<Latency>(t_call_latency) : latency.load(std::memory_order_relaxed);
  }
  /// How long (ns) a wait starting `now` spins before it sleeps (INT64_MAX: until its deadline).
  std::int64_t plan_spin(bool is_get, std::int64_t now) noexcept {
    switch (current_latency()) {
      case Latency::Spin: return INT64_MAX;
      case Latency::Sleep: return 0;
      case Latency::Fixed: return std::max<std::int64_t>(spin_ns.load(std::memory_order_relaxed), 0);
      case Latency::Adaptive: break;
    }
    const std::int64_t planned = (is_get ? get_history : put_history).planned_spin();
    const std::int64_t tokens = budget.available(now);
    // A spin cut short by the budget would rarely catch what the plan expects,
    // yet cost its length (and keep the budget empty): while the budget cannot
    // pay for the planned spin, do not spin, and let the budget fill up.
    return tokens >= planned ? planned : 0;
  }
  /// The spin (ns) the handle's mode would use for its next blocking get, before the budget.
  [[nodiscard]] std::int64_t planned_get_spin() const noexcept {
    switch (latency.load(std::memory_order_relaxed)) {
      case Latency::Spin: return INT64_MAX;
      case Latency::Sleep: return 0;
      case Latency::Fixed: return std::max<std::int64_t>(spin_ns.load(std::memory_order_relaxed), 0);
      case Latency::Adaptive: break;
    }
    return get_history.planned_spin();
  }
  /// Sets a fixed spin: 0 is Latency::Sleep, anything else Latency::Fixed.
  void set_spin(std::chrono::nanoseconds spin) noexcept {
    spin_ns.store(spin.count(), std::memory_order_relaxed);
    latency.store(spin.count() <= 0 ? Latency::Sleep : Latency::Fixed, std::memory_order_relaxed);
  }
};

/// Calls `try_once(blocker)` until it is Done or fails, spinning and then
/// sleeping on `side.word` between tries, for at most `timeout` (0: one try).
template <class Channel, class TryOnce>
Attempt wait_until_done(Channel& channel, const WaitSide& side, std::chrono::nanoseconds timeout, TryOnce&& try_once,
                        bool may_sleep = true) {
  const bool is_get = side.is_get;
  if (channel.closed.load(std::memory_order_acquire)) return Attempt::Closed;
  if (!is_get && channel.unlinked()) return Attempt::Unlinked;  // a message sent now would never be read
  std::uint32_t blocker = 0;
  Attempt attempt = try_once(blocker);
  if (ends_wait(attempt)) return attempt;
  if (is_get && attempt == Attempt::Empty && channel.unlinked()) return Attempt::Unlinked;
  // A receiver of an empty channel whose senders could die unnoticed checks them now and then.
  auto senders_to_watch = [&] {
    if constexpr (WatchesSenders<Channel>) {
      return is_get && attempt == Attempt::Empty && channel.has_remote_senders();
    } else {
      return false;
    }
  };
  // Reaps dead senders if this handle's check is due (claimed by one caller every
  // kSenderCheckNs, whatever its waits: Python cuts blocking calls into short slices).
  auto reap_senders_if_due = [&](std::int64_t now) {
    if constexpr (WatchesSenders<Channel>) {
      std::int64_t due = channel.next_sender_check.load(std::memory_order_relaxed);
      if (now < due || !channel.next_sender_check.compare_exchange_strong(due, now + kSenderCheckNs)) return false;
      channel.reap_dead_senders();
      return true;
    } else {
      return false;
    }
  };
  if (timeout.count() == 0) {  // the non-blocking form: one try, no clock
    if (attempt == Attempt::Busy) return is_get ? Attempt::Empty : Attempt::Full;
    // Pollers (event loops among them) check the senders too, at the waiters' pace:
    // a system call per sender, so by the clock, not per poll.
    if (attempt == Attempt::Empty && senders_to_watch() && reap_senders_if_due(platform::monotonic_ns())) {
      attempt = try_once(blocker);
      if (ends_wait(attempt)) return attempt;
    }
    if (attempt != Attempt::Pending) return attempt;
    // Blocked behind another process's claim. Pollers must also repair a dead
    // claimer (nobody else may ever wait), but checking is a system call: now and then.
    if (channel.pending_polls.fetch_add(1, std::memory_order_relaxed) % 256 == 255) channel.repair(blocker);
    return is_get ? Attempt::Empty : Attempt::Full;
  }

  const std::int64_t start = platform::monotonic_ns();
  const std::int64_t deadline = deadline_after(timeout, start);
  const bool adaptive = channel.current_latency() == Latency::Adaptive;
  const std::int64_t spin = channel.plan_spin(is_get, start);
  const std::int64_t spin_until = spin > INT64_MAX - start ? INT64_MAX : start + spin;
  WaitHistory& history = is_get ? channel.get_history : channel.put_history;
  bool slept = false;
  bool spin_over = false;  // the planned spin ran out (and was charged to the budget)
  std::int64_t next_repair = start + kStuckCheckNs;
  // A sleeper woken for something it then does not take passes the wake-up on.
  auto leave = [&](Attempt outcome) {
    if (slept) channel.pass_wake_on(side);
    return outcome;
  };
  std::int64_t arrived = -1;  // when a notifier woke us, if it did during this wait
  auto done = [&] {
    if (adaptive && !spin_over) channel.budget.caught();
    history.record((arrived >= 0 ? arrived : platform::monotonic_ns()) - start);
    return Attempt::Done;
  };
  // Adaptive spins past kPauseSpinNs yield the CPU between looks: on a machine
  // with more runnable threads than cores the peer we wait for may need this
  // very core, and a pause-only spin would delay it.
  bool yielding = false;
  for (std::uint32_t tries = 1;; ++tries) {
    bool look_at_clock = true;
    if (yielding && !spin_over) {
      platform::yield_cpu();  // and the clock every time: it costs little next to the yield
    } else if (tries % 64 != 0 && spin_until > start) {
      // Spinning: look at the channel after every pause, at the clock now and then.
      platform::cpu_relax();
      look_at_clock = false;
    }
    if (look_at_clock) {
      const std::int64_t now = platform::monotonic_ns();
      if (adaptive && now - start >= kPauseSpinNs) yielding = true;
      if (deadline >= 0 && now >= deadline) {
        // Nothing came in the whole wait: a long wait, as far as the history goes.
        history.record(now - start);
        if (adaptive && !spin_over) channel.budget.spend(std::min(now - start, spin));
        return leave(Attempt::Timeout);
      }
      if (attempt == Attempt::Pending && now >= next_repair) {
        // Blocked behind another process's claim while spinning (Latency::Spin never sleeps).
        channel.repair(blocker);
        next_repair = now + kStuckCheckNs;
      }
      if (senders_to_watch()) reap_senders_if_due(now);
      if (now >= spin_until && !spin_over) {
        spin_over = true;
        // A spin that caught nothing. Charged at most its plan: time this thread
        // was descheduled (a busy machine) is not CPU it spent.
        if (adaptive) channel.budget.spend(std::min(now - start, spin));
        if (!may_sleep) {
          // Longer than the spin, by how much unknown: recorded as twice the spin.
          history.record(2 * (now - start));
          return Attempt::Timeout;
        }
      }
      if (now >= spin_until) {
        // Announce ourselves, then try once more: a notifier that missed the
        // announcement published before it, and this try sees what it published.
        // (A sender found dead just before is seen by that try as the end.)
        if (senders_to_watch()) reap_senders_if_due(now);
        side.waiting.fetch_add(1, std::memory_order_seq_cst);
        const std::uint32_t seen = side.word.load(std::memory_order_seq_cst);
        attempt = try_once(blocker);
        if (ends_wait(attempt)) {
          side.waiting.fetch_sub(1, std::memory_order_relaxed);
          return attempt == Attempt::Done ? done() : leave(attempt);
        }
        std::int64_t wake_at = deadline;
        if (attempt == Attempt::Pending || attempt == Attempt::Busy || senders_to_watch()) {
          // Blocked behind another process's claim: wake up now and then to check it
          // is alive. Busy: nobody may wake us for what is already there; look again soon.
          // Waiting on other processes' senders: wake to check they live (the loop reaps).
          const std::int64_t recheck =
              attempt == Attempt::Pending ? kStuckCheckNs
              : attempt == Attempt::Busy
                  ? kBusyRecheckNs
                  : std::clamp<std::int64_t>(channel.next_sender_check.load(std::memory_order_relaxed) - now,
                                             kBusyRecheckNs, kSenderCheckNs);
          wake_at = deadline < 0 ? now + recheck : std::min(deadline, now + recheck);
        }
        if (!channel.closed.load(std::memory_order_acquire) && !channel.unlinked()) {
          platform::futex_wait(&side.word, seen, wake_at);
        }
        side.waiting.fetch_sub(1, std::memory_order_relaxed);
        slept = true;
        // The notifier's stamp (shared memory: used only if it falls inside this wait).
        const std::int64_t stamp = side.stamp.load(std::memory_order_relaxed);
        if (stamp >= start && stamp <= platform::monotonic_ns()) arrived = stamp;
        if (attempt == Attempt::Pending) channel.repair(blocker);
      }
    }
    if (channel.closed.load(std::memory_order_acquire)) return leave(Attempt::Closed);
    if (!is_get && channel.unlinked()) return Attempt::Unlinked;
    attempt = try_once(blocker);
    if (attempt == Attempt::Done) return done();
    // A failed take leaves the message (OutOfMemory) or others behind it (Corrupt
    // dropped one): a wake-up meant for us goes on to another waiter. So does an end.
    if (ends_wait(attempt)) return leave(attempt);
    if (is_get && attempt == Attempt::Empty && channel.unlinked()) return leave(Attempt::Unlinked);
  }
}

}  // namespace hakobu::detail
