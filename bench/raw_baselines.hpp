// hakobu benchmark — the raw baselines hakobu is measured beside.
//
// Each is the simplest honest way to do the same job by hand, between the
// same two pinned processes, over a POSIX shared-memory object:
//   * spin ping-pong: two 64-bit words on their own cache lines; each side
//     spins (with a pause instruction) until the other's word changes;
//   * futex ping-pong: two 32-bit words; each side sleeps in FUTEX_WAIT until
//     the other stores and calls FUTEX_WAKE (no spinning at all);
//   * two-copy ring: a single-producer single-consumer ring of a few slots;
//     memcpy into a slot, memcpy out of it; spin-then-yield waits;
//   * memcpy: one process copying between two private buffers.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bench_support.hpp"

namespace hakobu_bench::raw {

/// The ping-pong words; each on its own cache line so the two sides do not
/// invalidate each other's line except to pass the ball.
struct PingPongWords {
  alignas(64) std::atomic<std::uint64_t> spin_ping;
  alignas(64) std::atomic<std::uint64_t> spin_pong;
  alignas(64) std::atomic<std::uint32_t> futex_ping;
  alignas(64) std::atomic<std::uint32_t> futex_pong;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free,
              "the words are shared between processes: they must be lock-free atomics");
inline constexpr std::size_t kPingPongRegionBytes = 4096;

/// One-way latencies (round trip / 2) of `count` spin round trips after `warmup`.
std::vector<double> spin_latency(const SharedRegion& region, std::size_t warmup, std::size_t count);
/// One-way latencies of `count` futex round trips after `warmup`.
std::vector<double> futex_latency(const SharedRegion& region, std::size_t warmup, std::size_t count);

/// The ring's counters, each on its own cache line; slots follow at kRingSlotsOffset.
struct RingControl {
  alignas(64) std::atomic<std::uint64_t> published;    ///< messages the producer has written
  alignas(64) std::atomic<std::uint64_t> consumed;     ///< messages the consumer has copied out
  alignas(64) std::atomic<std::int64_t> warmed_up_ns;  ///< consumer: when the warm-up was drained
  std::atomic<std::int64_t> finished_ns;               ///< consumer: when the last message was copied out
};
inline constexpr std::size_t kRingSlotsOffset = 4096;

/// Streams `count` messages of `message_bytes` (after `warmup`) through a ring
/// of `slots` slots of `slot_stride` bytes; returns GB/s (1e9 bytes/s) of
/// payload delivered into the consumer's private buffer.
double ring_throughput(const SharedRegion& region, const PrivateBuffer& source, std::size_t message_bytes,
                       std::size_t slots, std::size_t slot_stride, std::size_t warmup, std::size_t count);

/// GB/s of `count` memcpy calls of `bytes` between two private buffers.
double memcpy_throughput(const PrivateBuffer& source, const PrivateBuffer& destination, std::size_t bytes,
                         std::size_t count);
/// Durations (ns) of `count` single memcpy calls of `bytes`, after one untimed call.
std::vector<double> memcpy_times(const PrivateBuffer& source, const PrivateBuffer& destination, std::size_t bytes,
                                 std::size_t count);

/// Duration (ns) of one memcpy of `bytes` from `source` to `destination`.
double memcpy_once(std::byte* destination, const std::byte* source, std::size_t bytes);

// Peer roles.
int spin_echo_peer(const PeerArgs& args);
int futex_echo_peer(const PeerArgs& args);
int ring_consumer_peer(const PeerArgs& args);

}  // namespace hakobu_bench::raw
