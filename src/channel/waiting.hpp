// hakobu — how long a blocking call spins before it sleeps (process-local).
//
// Adaptive waiting
// ----------------
// Waking a process asleep on a futex costs this project's VMs 30-300 µs, far
// more than the few microseconds a message takes to arrive when the other side
// answers at once, and more than most Python peers take to answer (10-100 µs).
// Spinning catches such answers; spinning for a message that comes much later
// only burns a core. So each handle learns, per side (get, put), how long its
// waits lasted and spins only while an arrival is likely:
//
// * History: a histogram of wait durations in power-of-two buckets (bucket b:
//   under 2^(b+10) ns, the last bucket: anything longer). Each recorded wait
//   first ages every bucket by 1/8, so the last few dozen waits decide. A wait
//   is recorded from its start to its arrival: for a sleeper, the time its
//   notifier stamped in the queue header before waking it (so the wake-up's
//   own latency, 30-300 µs on a busy VM, does not pass for a slow peer), else
//   its success; a wait that timed out is recorded as its full length.
// * Plan: the spin is twice the smallest bucket bound that covers 90% of the recent
//   waits, else 70%, else 50%, taking the first that is
//   at most kMaxAdaptiveSpinNs (spinning longer than that costs more CPU than
//   a wake-up costs time); if none is, kMinAdaptiveSpinNs, for a message
//   already on its way. A median alone would let every other wait sleep. With
//   too little history, the longest spin (to measure the peer, not the wake-ups).
// * Budget: spins that end in a sleep (nothing arrived) draw on a token bucket
//   that fills at 1/kBudgetShareDivisor of wall time, up to kBudgetBurstNs;
//   a spin that catches a message fills it again (arrivals are what spinning
//   is for, and a ping-pong's rare hiccups must not starve it). While the
//   bucket holds less than the planned spin there is no spin at all: a spin
//   cut short would seldom catch anything and would keep the bucket empty. So
//   while nothing arrives a handle spins at most a quarter of a core,
//   whatever the history says, and an idle receiver stops spinning altogether.
// * Spinning is polite past kPauseSpinNs (long spins only: a yield can cost
//   microseconds): the CPU is yielded between looks, so
//   that on a machine with more runnable threads than cores (this project's
//   2-vCPU VMs, shared) the peer being waited for is not kept off its core by
//   our spin; on an idle machine a yield returns at once.
// * The plan only chooses when to announce oneself and sleep. The announce +
//   try-again + futex protocol (queue.cpp, wait_until_done) is unchanged, so
//   no spin decision can lose or delay a wake-up: a notifier wakes whoever is
//   announced, and a spinner sees the message by looking.
// * Threads of one handle share its history and budget through relaxed
//   atomics; a lost update only blurs an estimate.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>

namespace hakobu::detail {

inline constexpr int kWaitBuckets = 16;
inline constexpr std::int64_t kMaxAdaptiveSpinNs = std::int64_t{1} << 19;  // 524 µs
inline constexpr std::int64_t kMinAdaptiveSpinNs = 8'192;                  // 8 µs
inline constexpr std::int64_t kPauseSpinNs = 65'536;                       // then spin with yields
inline constexpr std::int64_t kBudgetBurstNs = 2'000'000;                  // 2 ms of spinning in reserve
inline constexpr std::int64_t kBudgetShareDivisor = 4;                     // refill: 1/4 of wall time
inline constexpr std::uint32_t kWaitWeight = 1024;                         // a new wait's weight
inline constexpr std::uint32_t kEnoughHistory = 2 * kWaitWeight;           // below: explore

/// The bucket of a wait of `ns` nanoseconds.
constexpr int wait_bucket(std::int64_t ns) noexcept {
  int b = 0;
  while (b < kWaitBuckets - 1 && ns >= (std::int64_t{1} << (b + 10))) ++b;
  return b;
}
/// The upper bound (ns) of bucket `b` (the last has none: INT64_MAX).
constexpr std::int64_t bucket_bound(int b) noexcept {
  return b >= kWaitBuckets - 1 ? INT64_MAX : std::int64_t{1} << (b + 10);
}
static_assert(wait_bucket(0) == 0 && wait_bucket(1023) == 0 && wait_bucket(1024) == 1 &&
                  wait_bucket(INT64_MAX) == kWaitBuckets - 1,
              "wait_bucket: bucket 0 is below 1 us, each next one doubles, the last takes every longer wait");
static_assert(bucket_bound(9) == kMaxAdaptiveSpinNs, "the adaptive spin's limit is the bound of wait bucket 9");

/// The waits of one side of one handle.
class WaitHistory {
 public:
  void record(std::int64_t wait_ns) noexcept {
    const int target = wait_bucket(wait_ns);
    for (int b = 0; b < kWaitBuckets; ++b) {
      std::uint32_t w = weights_[b].load(std::memory_order_relaxed);
      w -= w >> 3U;
      if (b == target) w += kWaitWeight;
      weights_[b].store(w, std::memory_order_relaxed);
    }
  }

  /// The spin the history asks for, before the budget.
  [[nodiscard]] std::int64_t planned_spin() const noexcept {
    std::array<std::uint32_t, kWaitBuckets> w{};
    std::uint64_t total = 0;
    for (int b = 0; b < kWaitBuckets; ++b) {
      w[b] = weights_[b].load(std::memory_order_relaxed);
      total += w[b];
    }
    if (total < kEnoughHistory) return kMaxAdaptiveSpinNs;
    // The highest of these shares of the recent waits that a spin of at most
    // kMaxAdaptiveSpinNs covers (in tenths): 9/10, else 7/10, else 1/2.
    for (const std::uint64_t tenths : {9U, 7U, 5U}) {
      std::uint64_t covered = 0;
      for (int b = 0; b < kWaitBuckets && bucket_bound(b) <= kMaxAdaptiveSpinNs; ++b) {
        covered += w[b];
        if (10 * covered >= tenths * total) {
          // Twice the bound: waits jitter, and one just past the spin costs a whole wake-up.
          return std::clamp(2 * bucket_bound(b), kMinAdaptiveSpinNs, kMaxAdaptiveSpinNs);
        }
      }
    }
    return kMinAdaptiveSpinNs;
  }

 private:
  std::array<std::atomic<std::uint32_t>, kWaitBuckets> weights_{};
};

/// The spinning a handle may still do while nothing arrives (a token bucket).
class SpinBudget {
 public:
  /// What may be spent now (ns), after refilling for the time since the last call.
  std::int64_t available(std::int64_t now) noexcept {
    std::int64_t last = refilled_at_.exchange(now, std::memory_order_relaxed);
    if (last == 0 || now < last) last = now;
    const std::int64_t gained = (now - last) / kBudgetShareDivisor;
    std::int64_t tokens = tokens_.load(std::memory_order_relaxed);
    tokens = std::min(kBudgetBurstNs, tokens + gained);
    tokens_.store(tokens, std::memory_order_relaxed);
    return std::max<std::int64_t>(tokens, 0);
  }
  /// A spin caught a message: spinning pays, the window starts again (full bucket).
  void caught() noexcept { tokens_.store(kBudgetBurstNs, std::memory_order_relaxed); }
  /// A spin of `ns` that caught nothing.
  void spend(std::int64_t ns) noexcept {
    // Never below zero: a debt would stop spinning long after the waits changed.
    std::int64_t tokens = tokens_.load(std::memory_order_relaxed);
    tokens_.store(std::max<std::int64_t>(tokens - ns, 0), std::memory_order_relaxed);
  }

 private:
  std::atomic<std::int64_t> tokens_{kBudgetBurstNs};
  std::atomic<std::int64_t> refilled_at_{0};
};

}  // namespace hakobu::detail
