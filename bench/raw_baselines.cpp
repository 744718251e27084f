// hakobu benchmark — the raw baselines (see raw_baselines.hpp).
#include "raw_baselines.hpp"

#include <cstring>
#include <string>

namespace hakobu_bench::raw {
namespace {

constexpr std::uint32_t kStopWord = ~std::uint32_t{0};

// Keeps the compiler from dropping a memcpy whose result nobody reads.
inline void clobber_memory() noexcept {
  asm volatile("" ::: "memory");
}

std::uint64_t read_sequence(const std::byte* message) noexcept {
  std::uint64_t sequence = 0;
  std::memcpy(&sequence, message, sizeof sequence);
  return sequence;
}

}  // namespace

// --- spin ping-pong ----------------------------------------------------------------

std::vector<double> spin_latency(const SharedRegion& region, std::size_t warmup, std::size_t count) {
  auto& words = *region.as<PingPongWords>();
  words.spin_ping.store(0);
  words.spin_pong.store(0);
  Peer peer = Peer::start("raw-spin-echo", {"region=" + region.name()});
  std::vector<double> one_way;
  one_way.reserve(count);
  for (std::uint64_t sequence = 1; sequence <= warmup + count; ++sequence) {
    const std::int64_t start = now_ns();
    words.spin_ping.store(sequence, std::memory_order_release);
    while (words.spin_pong.load(std::memory_order_acquire) != sequence) cpu_relax();
    const std::int64_t end = now_ns();
    if (sequence > warmup) one_way.push_back(static_cast<double>(end - start) / 2.0);
  }
  words.spin_ping.store(kStopSequence, std::memory_order_release);
  peer.wait();
  return one_way;
}

int spin_echo_peer(const PeerArgs& args) {
  const auto region = SharedRegion::open(args.text("region"), kPingPongRegionBytes);
  auto& words = *region.as<PingPongWords>();
  for (std::uint64_t expected = 1;; ++expected) {
    std::uint64_t seen = 0;
    while ((seen = words.spin_ping.load(std::memory_order_acquire)) != expected && seen != kStopSequence) {
      cpu_relax();
    }
    if (seen == kStopSequence) return 0;
    words.spin_pong.store(seen, std::memory_order_release);
  }
}

// --- futex ping-pong ------------------------------------------------------------------

std::vector<double> futex_latency(const SharedRegion& region, std::size_t warmup, std::size_t count) {
  auto& words = *region.as<PingPongWords>();
  words.futex_ping.store(0);
  words.futex_pong.store(0);
  Peer peer = Peer::start("raw-futex-echo", {"region=" + region.name()});
  std::vector<double> one_way;
  one_way.reserve(count);
  for (std::uint32_t sequence = 1; sequence <= warmup + count; ++sequence) {
    const std::int64_t start = now_ns();
    words.futex_ping.store(sequence, std::memory_order_release);
    futex_wake_one(words.futex_ping);
    for (std::uint32_t seen = 0; (seen = words.futex_pong.load(std::memory_order_acquire)) != sequence;) {
      futex_wait(words.futex_pong, seen);
    }
    const std::int64_t end = now_ns();
    if (sequence > warmup) one_way.push_back(static_cast<double>(end - start) / 2.0);
  }
  words.futex_ping.store(kStopWord, std::memory_order_release);
  futex_wake_one(words.futex_ping);
  peer.wait();
  return one_way;
}

int futex_echo_peer(const PeerArgs& args) {
  const auto region = SharedRegion::open(args.text("region"), kPingPongRegionBytes);
  auto& words = *region.as<PingPongWords>();
  for (std::uint32_t expected = 1;; ++expected) {
    std::uint32_t seen = 0;
    while ((seen = words.futex_ping.load(std::memory_order_acquire)) != expected && seen != kStopWord) {
      futex_wait(words.futex_ping, seen);
    }
    if (seen == kStopWord) return 0;
    words.futex_pong.store(seen, std::memory_order_release);
    futex_wake_one(words.futex_pong);
  }
}

// --- two-copy ring ----------------------------------------------------------------------

double ring_throughput(const SharedRegion& region, const PrivateBuffer& source, std::size_t message_bytes,
                       std::size_t slots, std::size_t slot_stride, std::size_t warmup, std::size_t count) {
  auto& control = *region.as<RingControl>();
  control.published.store(0);
  control.consumed.store(0);
  control.warmed_up_ns.store(0);
  control.finished_ns.store(0);
  Peer peer =
      Peer::start("raw-ring-consumer", {"region=" + region.name(), "region_bytes=" + std::to_string(region.size()),
                                        "bytes=" + std::to_string(message_bytes), "slots=" + std::to_string(slots),
                                        "stride=" + std::to_string(slot_stride), "warmup=" + std::to_string(warmup),
                                        "count=" + std::to_string(count)});
  const auto send = [&](std::uint64_t index) {
    Backoff backoff;
    while (index - control.consumed.load(std::memory_order_acquire) >= slots) backoff.pause();
    std::memcpy(source.data(), &index, sizeof index);  // the consumer checks the order
    std::memcpy(region.data() + kRingSlotsOffset + (index % slots) * slot_stride, source.data(), message_bytes);
    control.published.store(index + 1, std::memory_order_release);
  };
  for (std::uint64_t index = 0; index < warmup; ++index) send(index);
  Backoff until_warm;
  while (control.warmed_up_ns.load(std::memory_order_acquire) == 0) until_warm.pause();

  const std::int64_t start = now_ns();
  for (std::uint64_t index = warmup; index < warmup + count; ++index) send(index);
  Backoff until_done;
  while (control.finished_ns.load(std::memory_order_acquire) == 0) until_done.pause();
  const std::int64_t finished = control.finished_ns.load();
  peer.wait();
  return static_cast<double>(message_bytes) * static_cast<double>(count) / static_cast<double>(finished - start);
}

int ring_consumer_peer(const PeerArgs& args) {
  const auto region = SharedRegion::open(args.text("region"), args.number("region_bytes"));
  const std::size_t bytes = args.number("bytes");
  const std::size_t slots = args.number("slots");
  const std::size_t stride = args.number("stride");
  const std::size_t warmup = args.number("warmup");
  const std::size_t count = args.number("count");
  auto& control = *region.as<RingControl>();
  const PrivateBuffer destination(bytes);
  for (std::uint64_t index = 0; index < warmup + count; ++index) {
    Backoff backoff;
    while (control.published.load(std::memory_order_acquire) <= index) backoff.pause();
    std::memcpy(destination.data(), region.data() + kRingSlotsOffset + (index % slots) * stride, bytes);
    if (read_sequence(destination.data()) != index) {
      fail("raw ring: expected message " + std::to_string(index) + ", got " +
           std::to_string(read_sequence(destination.data())));
    }
    control.consumed.store(index + 1, std::memory_order_release);
    if (index + 1 == warmup) control.warmed_up_ns.store(now_ns(), std::memory_order_release);
  }
  control.finished_ns.store(now_ns(), std::memory_order_release);
  return 0;
}

// --- memcpy ------------------------------------------------------------------------------

double memcpy_throughput(const PrivateBuffer& source, const PrivateBuffer& destination, std::size_t bytes,
                         std::size_t count) {
  std::memcpy(destination.data(), source.data(), bytes);
  clobber_memory();
  const std::int64_t start = now_ns();
  for (std::size_t i = 0; i < count; ++i) {
    std::memcpy(destination.data(), source.data(), bytes);
    clobber_memory();
  }
  const std::int64_t end = now_ns();
  return static_cast<double>(bytes) * static_cast<double>(count) / static_cast<double>(end - start);
}

std::vector<double> memcpy_times(const PrivateBuffer& source, const PrivateBuffer& destination, std::size_t bytes,
                                 std::size_t count) {
  std::memcpy(destination.data(), source.data(), bytes);
  clobber_memory();
  std::vector<double> times;
  times.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const std::int64_t start = now_ns();
    std::memcpy(destination.data(), source.data(), bytes);
    clobber_memory();
    times.push_back(static_cast<double>(now_ns() - start));
  }
  return times;
}

double memcpy_once(std::byte* destination, const std::byte* source, std::size_t bytes) {
  const std::int64_t start = now_ns();
  std::memcpy(destination, source, bytes);
  clobber_memory();
  return static_cast<double>(now_ns() - start);
}

}  // namespace hakobu_bench::raw
