// hakobu benchmark — the hakobu side of each measurement.
//
// The leader creates the queues (in the run's private domain, named by
// $HAKOBU_DOMAIN) and starts the peer, which attaches to them by name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <hakobu/queue.hpp>
#include <map>
#include <string>
#include <vector>

#include "bench_support.hpp"

namespace hakobu_bench::hk {

/// How both sides wait for a message (or for room).
enum class WaitMode : std::uint8_t {
  TryLoop,  ///< busy loop over try_put / try_get
  Spin,     ///< put / get with set_spin(60 s): the library's own spin loop
  Block,    ///< put / get with set_spin(0): straight to the futex
  Default,  ///< put / get with the default QueueOptions::spin (adaptive)
};
const char* to_string(WaitMode mode) noexcept;
WaitMode wait_mode_from(const std::string& text);

/// Two queues, one each way. The leader creates them and unlinks them.
struct PingPong {
  hakobu::Queue ping;  ///< leader -> peer
  hakobu::Queue pong;  ///< peer -> leader
  static PingPong create(const std::string& prefix, std::size_t capacity);
  void unlink();
};

/// One-way latencies (round trip / 2) of `count` round trips of a message of
/// `message_bytes` (put copies it in, the peer echoes it with put), after `warmup`.
std::vector<double> latency(PingPong& queues, WaitMode mode, std::size_t message_bytes, std::size_t warmup,
                            std::size_t count);

/// Hand-off of loaned messages: for every size, round trips where each side
/// receives, checks the markers, releases the sample, loans a message of the
/// same size (its block comes back from the heap's free list), writes the
/// markers and puts it. Returns the one-way times per size. The sizes take
/// turns in bursts until each has `max_count` round trips or `budget_ns` per
/// size has passed.
std::map<std::size_t, std::vector<double>> handoff(PingPong& queues, WaitMode mode,
                                                   const std::vector<std::size_t>& sizes, std::size_t max_count,
                                                   std::int64_t budget_ns);

/// Streams `count` messages of `message_bytes` (after `warmup`) with
/// put(bytes) from a private buffer; the peer get()s each and copies it out
/// into its private buffer. Returns GB/s (1e9 bytes/s).
double stream(hakobu::Queue& data, hakobu::Queue& acks, WaitMode mode, const PrivateBuffer& source,
              std::size_t message_bytes, std::size_t warmup, std::size_t count);

/// Durations (ns) of `count` put(bytes) calls of `message_bytes` in one
/// process (each message is taken back out untimed), after one untimed put
/// (the first of a size carves a fresh block).
std::vector<double> put_copy_times(hakobu::Queue& queue, const PrivateBuffer& source, std::size_t message_bytes,
                                   std::size_t count);

/// One copy in and one copy out, timed apart (ns).
struct CopyRound {
  double put = 0;       ///< put(bytes) of the source: one copy into a (recycled) block
  double copy_out = 0;  ///< memcpy of the received sample into the receiver's buffer
};
/// put(bytes) of `bytes` at `source`, then try_get and a memcpy of the sample
/// into `receiver` (one process); the sample is released untimed.
CopyRound put_and_copy_out(hakobu::Queue& queue, const std::byte* source, std::size_t bytes, std::byte* receiver);

// Peer roles.
int echo_peer(const PeerArgs& args);
int handoff_peer(const PeerArgs& args);
int sink_peer(const PeerArgs& args);

}  // namespace hakobu_bench::hk
