// hakobu benchmark — the hakobu side of each measurement (see hakobu_runs.hpp).
#include "hakobu_runs.hpp"

#include <chrono>
#include <cstring>
#include <span>
#include <utility>

namespace hakobu_bench::hk {
namespace {

using hakobu::Loan;
using hakobu::Queue;
using hakobu::Sample;

template <class T, class Code>
T take(hakobu::Result<T, Code>&& result, const std::string& what) {
  if (!result) {
    fail(what + ": " + std::string(hakobu::to_string(result.error().code)) + ": " + result.error().message);
  }
  return std::move(result).value();
}

template <class Code>
void check(const hakobu::Result<void, Code>& result, const std::string& what) {
  if (!result) {
    fail(what + ": " + std::string(hakobu::to_string(result.error().code)) + ": " + result.error().message);
  }
}

void apply_wait_mode(Queue& queue, WaitMode mode) {
  switch (mode) {
    case WaitMode::Spin: queue.set_spin(std::chrono::seconds(60)); break;
    case WaitMode::Block: queue.set_spin(std::chrono::nanoseconds(0)); break;
    case WaitMode::TryLoop:
    case WaitMode::Default: queue.set_spin(hakobu::QueueOptions{}.spin); break;
  }
}

void send_copy(Queue& queue, std::span<const std::byte> bytes, WaitMode mode) {
  if (mode != WaitMode::TryLoop) {
    check(queue.put(bytes), "put on " + queue.name());
    return;
  }
  for (;;) {
    auto sent = queue.try_put(bytes);
    if (sent) return;
    if (sent.error().code != hakobu::PutError::Full) check(sent, "try_put on " + queue.name());
    cpu_relax();
  }
}

void send_loan(Queue& queue, Loan& loan, WaitMode mode) {
  if (mode != WaitMode::TryLoop) {
    check(queue.put(loan), "put(loan) on " + queue.name());
    return;
  }
  for (;;) {
    auto sent = queue.try_put(loan);
    if (sent) return;
    if (sent.error().code != hakobu::PutError::Full) check(sent, "try_put(loan) on " + queue.name());
    cpu_relax();
  }
}

Sample receive(Queue& queue, WaitMode mode) {
  if (mode != WaitMode::TryLoop) return take(queue.get(), "get on " + queue.name());
  for (;;) {
    auto got = queue.try_get();
    if (got) return std::move(got).value();
    if (got.error().code != hakobu::GetError::Empty) take(std::move(got), "try_get on " + queue.name());
    cpu_relax();
  }
}

// Messages carry their sequence number in the first 8 bytes and its low byte
// in the last byte: the receiver checks both ends of the buffer.
void write_markers(std::span<std::byte> message, std::uint64_t sequence) {
  std::memcpy(message.data(), &sequence, sizeof sequence);
  message.back() = static_cast<std::byte>(sequence & 0xFFU);
}

std::uint64_t read_sequence(std::span<const std::byte> message) {
  std::uint64_t sequence = 0;
  if (message.size() >= sizeof sequence) std::memcpy(&sequence, message.data(), sizeof sequence);
  return sequence;
}

std::uint64_t check_markers(const Sample& sample, std::size_t expected_size) {
  const auto bytes = sample.bytes();
  if (bytes.size() != expected_size || bytes.size() < sizeof(std::uint64_t)) {
    fail("expected a message of " + std::to_string(expected_size) + " bytes, got " + std::to_string(bytes.size()));
  }
  const std::uint64_t sequence = read_sequence(bytes);
  if (bytes.back() != static_cast<std::byte>(sequence & 0xFFU)) {
    fail("the last byte of message " + std::to_string(sequence) + " is wrong");
  }
  return sequence;
}

Queue attach(const PeerArgs& args, const std::string& key, WaitMode mode) {
  auto queue = take(Queue::attach(args.text(key)), "attach " + args.text(key));
  apply_wait_mode(queue, mode);
  return queue;
}

}  // namespace

const char* to_string(WaitMode mode) noexcept {
  switch (mode) {
    case WaitMode::TryLoop: return "try";
    case WaitMode::Spin: return "spin";
    case WaitMode::Block: return "block";
    case WaitMode::Default: return "default";
  }
  return "?";
}

WaitMode wait_mode_from(const std::string& text) {
  for (const auto mode : {WaitMode::TryLoop, WaitMode::Spin, WaitMode::Block, WaitMode::Default}) {
    if (text == to_string(mode)) return mode;
  }
  fail("unknown wait mode '" + text + "'");
}

PingPong PingPong::create(const std::string& prefix, std::size_t capacity) {
  hakobu::QueueOptions options;
  options.capacity = capacity;
  PingPong queues;
  queues.ping = take(Queue::create(prefix + "-ping", options), "create " + prefix + "-ping");
  queues.pong = take(Queue::create(prefix + "-pong", options), "create " + prefix + "-pong");
  return queues;
}

void PingPong::unlink() {
  check(ping.unlink(), "unlink " + ping.name());
  check(pong.unlink(), "unlink " + pong.name());
}

// --- latency ----------------------------------------------------------------------------

std::vector<double> latency(PingPong& queues, WaitMode mode, std::size_t message_bytes, std::size_t warmup,
                            std::size_t count) {
  apply_wait_mode(queues.ping, mode);
  apply_wait_mode(queues.pong, mode);
  Peer peer = Peer::start("hakobu-echo", {"ping=" + queues.ping.name(), "pong=" + queues.pong.name(),
                                          "mode=" + std::string(to_string(mode))});
  std::vector<std::byte> message(message_bytes);
  std::vector<double> one_way;
  one_way.reserve(count);
  for (std::uint64_t sequence = 1; sequence <= warmup + count; ++sequence) {
    write_markers(message, sequence);
    const std::int64_t start = now_ns();
    send_copy(queues.ping, message, mode);
    const Sample echo = receive(queues.pong, mode);
    const std::int64_t end = now_ns();
    if (check_markers(echo, message_bytes) != sequence) fail("the echo carries the wrong sequence number");
    if (sequence > warmup) one_way.push_back(static_cast<double>(end - start) / 2.0);
  }
  write_markers(message, kStopSequence);
  send_copy(queues.ping, message, mode);
  peer.wait();
  return one_way;
}

int echo_peer(const PeerArgs& args) {
  const WaitMode mode = wait_mode_from(args.text("mode"));
  Queue ping = attach(args, "ping", mode);
  Queue pong = attach(args, "pong", mode);
  for (;;) {
    Sample message = receive(ping, mode);
    if (read_sequence(message.bytes()) == kStopSequence) return 0;
    send_copy(pong, message.bytes(), mode);
  }
}

// --- hand-off of loans ---------------------------------------------------------------------

std::map<std::size_t, std::vector<double>> handoff(PingPong& queues, WaitMode mode,
                                                   const std::vector<std::size_t>& sizes, std::size_t max_count,
                                                   std::int64_t budget_ns) {
  apply_wait_mode(queues.ping, mode);
  apply_wait_mode(queues.pong, mode);
  Peer peer = Peer::start("hakobu-handoff", {"ping=" + queues.ping.name(), "pong=" + queues.pong.name(),
                                             "mode=" + std::string(to_string(mode))});
  std::map<std::size_t, std::vector<double>> one_way;
  std::uint64_t sequence = 0;
  const auto round_trip = [&](std::size_t bytes) {
    ++sequence;
    const std::int64_t start = now_ns();
    Loan loan = take(queues.ping.loan(bytes), "loan " + size_label(bytes));
    write_markers(loan.bytes(), sequence);
    send_loan(queues.ping, loan, mode);
    Sample reply = receive(queues.pong, mode);
    if (check_markers(reply, bytes) != sequence) fail("the hand-off reply carries the wrong sequence number");
    if (!reply.in_shared_memory()) fail("a loaned message of " + size_label(bytes) + " arrived as an inline copy");
    reply.reset();  // its block goes back to the free list for the next loan
    return static_cast<double>(now_ns() - start) / 2.0;
  };
  // Warm-up: the first loan of a size carves and faults a fresh block (the
  // one-time cost the heap exists to avoid); the next ones reuse it.
  for (const std::size_t bytes : sizes) {
    for (int i = 0; i < 5; ++i) round_trip(bytes);
  }
  // Then the sizes take turns in short bursts, so that a change in the
  // machine (this VM's vCPUs move between host cores) hits every size alike
  // and "flat in size" compares like with like.
  constexpr std::size_t kBurst = 50;
  constexpr std::size_t kMinSamples = 20;
  const std::int64_t stop_at = now_ns() + budget_ns * static_cast<std::int64_t>(sizes.size());
  for (bool more = true; more;) {
    more = false;
    bool enough = now_ns() >= stop_at;
    for (const std::size_t bytes : sizes) {
      auto& samples = one_way[bytes];
      enough = enough && samples.size() >= kMinSamples;
      for (std::size_t i = 0; i < kBurst && samples.size() < max_count; ++i) samples.push_back(round_trip(bytes));
      more = more || samples.size() < max_count;
    }
    if (enough) break;
  }
  Loan stop = take(queues.ping.loan(sizeof(std::uint64_t)), "loan");
  write_markers(stop.bytes(), kStopSequence);
  send_loan(queues.ping, stop, mode);
  peer.wait();
  return one_way;
}

int handoff_peer(const PeerArgs& args) {
  const WaitMode mode = wait_mode_from(args.text("mode"));
  Queue ping = attach(args, "ping", mode);
  Queue pong = attach(args, "pong", mode);
  for (;;) {
    Sample message = receive(ping, mode);
    const std::size_t bytes = message.size();
    const std::uint64_t sequence = check_markers(message, bytes);
    if (!message.in_shared_memory()) fail("a loaned message of " + size_label(bytes) + " arrived as an inline copy");
    message.reset();  // released before the loan below, which then reuses its block
    if (sequence == kStopSequence) return 0;
    Loan reply = take(pong.loan(bytes), "loan " + size_label(bytes));
    write_markers(reply.bytes(), sequence);
    send_loan(pong, reply, mode);
  }
}

// --- streaming with copies --------------------------------------------------------------------

double stream(Queue& data, Queue& acks, WaitMode mode, const PrivateBuffer& source, std::size_t message_bytes,
              std::size_t warmup, std::size_t count) {
  apply_wait_mode(data, mode);
  apply_wait_mode(acks, mode);
  Peer peer =
      Peer::start("hakobu-sink", {"data=" + data.name(), "acks=" + acks.name(), "mode=" + std::string(to_string(mode)),
                                  "bytes=" + std::to_string(message_bytes), "warmup=" + std::to_string(warmup),
                                  "count=" + std::to_string(count)});
  const auto send = [&](std::uint64_t index) {
    std::memcpy(source.data(), &index, sizeof index);  // the consumer checks the order
    send_copy(data, source.first(message_bytes), mode);
  };
  for (std::uint64_t index = 0; index < warmup; ++index) send(index);
  receive(acks, WaitMode::Block);  // the consumer has drained the warm-up

  const std::int64_t start = now_ns();
  for (std::uint64_t index = warmup; index < warmup + count; ++index) send(index);
  const Sample done = receive(acks, WaitMode::Block);
  const auto finished = static_cast<std::int64_t>(read_sequence(done.bytes()));
  peer.wait();
  return static_cast<double>(message_bytes) * static_cast<double>(count) / static_cast<double>(finished - start);
}

int sink_peer(const PeerArgs& args) {
  const WaitMode mode = wait_mode_from(args.text("mode"));
  Queue data = attach(args, "data", mode);
  Queue acks = attach(args, "acks", mode);
  const std::size_t bytes = args.number("bytes");
  const std::size_t warmup = args.number("warmup");
  const std::size_t count = args.number("count");
  const PrivateBuffer destination(bytes);
  const auto acknowledge = [&] {
    const auto stamp = static_cast<std::uint64_t>(now_ns());
    check(acks.put(std::as_bytes(std::span(&stamp, 1))), "put on " + acks.name());
  };
  for (std::uint64_t index = 0; index < warmup + count; ++index) {
    Sample message = receive(data, mode);
    if (message.size() != bytes)
      fail("expected " + std::to_string(bytes) + " bytes, got " + std::to_string(message.size()));
    std::memcpy(destination.data(), message.bytes().data(), bytes);  // the copy out
    message.reset();
    if (read_sequence(destination.first(bytes)) != index) {
      fail("hakobu stream: expected message " + std::to_string(index) + ", got " +
           std::to_string(read_sequence(destination.first(bytes))));
    }
    if (index + 1 == warmup) acknowledge();
  }
  acknowledge();
  return 0;
}

// --- put of an ordinary buffer ------------------------------------------------------------------

std::vector<double> put_copy_times(Queue& queue, const PrivateBuffer& source, std::size_t message_bytes,
                                   std::size_t count) {
  std::vector<double> times;
  times.reserve(count);
  for (std::size_t i = 0; i <= count; ++i) {
    const std::int64_t start = now_ns();
    check(queue.put(source.first(message_bytes)), "put on " + queue.name());
    const std::int64_t end = now_ns();
    take(queue.try_get(), "try_get on " + queue.name()).reset();   // back to the free list, untimed
    if (i > 0) times.push_back(static_cast<double>(end - start));  // the first put carves a fresh block
  }
  return times;
}

CopyRound put_and_copy_out(Queue& queue, const std::byte* source, std::size_t bytes, std::byte* receiver) {
  CopyRound round;
  std::int64_t start = now_ns();
  check(queue.put(std::span<const std::byte>(source, bytes)), "put on " + queue.name());
  round.put = static_cast<double>(now_ns() - start);
  Sample sample = take(queue.try_get(), "try_get on " + queue.name());
  start = now_ns();
  std::memcpy(receiver, sample.bytes().data(), bytes);
  asm volatile("" : : "r"(receiver) : "memory");  // the copy must happen before the clock is read
  round.copy_out = static_cast<double>(now_ns() - start);
  return round;
}

}  // namespace hakobu_bench::hk
