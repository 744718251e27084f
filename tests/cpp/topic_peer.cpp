// hakobu tests — the peer program of the topic tests (test_topic.cpp, and the
// Python tests, which check the C++ side against theirs).
//
// `hakobu_topic_peer COMMAND ARGS...` is started as a separate program, uses
// the public API only and takes its domain from $HAKOBU_DOMAIN (and
// HAKOBU_KILL_AT, for the kill-point tests). Messages are in the cross-language
// format of topic_wire.hpp. Each command prints `ok <count>` on success (exit 0)
// or a reason on stderr (exit 1).
//
//   publish NAME N SIZE            create or attach NAME, wait (60 s at most) for a
//                                  subscriber, publish bytes messages 0..N-1 of SIZE bytes
//   publish-arrays NAME N ROWS COLS  the same with (ROWS, COLS) float64 array messages
//   subscribe NAME N               attach (waiting 60 s at most for NAME to exist),
//                                  subscribe (OnFull::Block), print `subscribed`, receive N
//                                  messages (bytes or arrays), each checked, consecutive
//   publish-from NAME FIRST N      attach, publish messages FIRST..FIRST+N-1 at once (no
//                                  waiting for subscribers): sizes cycle through inline and
//                                  heap ones, by copy, by loan and as arrays
//   hold NAME K READYFILE [drop-oldest]  attach, subscribe (OnFull::Block, or DropOldest),
//                                  receive K messages and keep them, create READYFILE, then
//                                  sleep until killed
//   exercise NAME FIRST N          attach, subscribe twice (Block with history 1, read after
//                                  every publish; DropOldest, read only at the end), publish
//                                  as publish-from does, close both subscriptions: every
//                                  path of topic.cpp in one process (the kill-point tests)
//
// alarm() ends a forgotten peer after 5 minutes.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "hakobu/topic.hpp"
#include "topic_wire.hpp"

namespace {

using namespace std::chrono_literals;
using hakobu::test::check_wire_array;
using hakobu::test::check_wire_bytes;

int fail(const std::string& why) {
  std::fprintf(stderr, "topic peer: %s\n", why.c_str());
  return 1;
}

int ok(std::uint64_t count) {
  std::printf("ok %llu\n", static_cast<unsigned long long>(count));
  std::fflush(stdout);
  return 0;
}

/// Attaches `name`, waiting (60 s at most) for it to be created.
hakobu::Result<hakobu::Topic, hakobu::OpenError> attach_waiting(const std::string& name) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    auto topic = hakobu::Topic::attach(name);
    if (topic || topic.error().code != hakobu::OpenError::NotFound || std::chrono::steady_clock::now() > deadline) {
      return topic;
    }
    std::this_thread::sleep_for(2ms);
  }
}

bool wait_for_subscriber(const hakobu::Topic& topic) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (topic.stats().subscribers == 0) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

/// Checks a received message; its seq, or nothing with the reason in `why`.
std::optional<std::uint64_t> check(const hakobu::TopicMessage& message, std::string& why) {
  if (message.kind() == hakobu::MessageKind::Array) {
    auto view = message.array();
    if (!view) {
      why = "array(): " + view.error().message;
      return std::nullopt;
    }
    return check_wire_array(*view, why);
  }
  return check_wire_bytes(message.bytes(), why);
}

/// Publishes message `seq` the way publish-from does: sizes and paths cycle.
hakobu::Result<void, hakobu::PutError> publish_mixed(hakobu::Topic& topic, std::uint64_t seq) {
  constexpr std::size_t kSizes[] = {16, 100, 224, 225, 5000, 70000};
  const std::size_t size = kSizes[seq % std::size(kSizes)];
  switch ((seq / std::size(kSizes)) % 3) {
    case 0: return topic.publish(hakobu::test::wire_bytes(seq, size));
    case 1: {
      auto loan = topic.loan(size);
      if (!loan) return hakobu::Error<hakobu::PutError>{hakobu::PutError::OutOfMemory, loan.error().message};
      hakobu::test::write_wire_bytes(loan->bytes(), seq);
      return topic.publish(*loan);
    }
    default: {
      const std::int64_t rows = 1 + static_cast<std::int64_t>(seq % 7);
      const std::int64_t cols = 3 + static_cast<std::int64_t>(size / 64);
      const std::vector<double> elements = hakobu::test::wire_array(seq, rows, cols);
      const std::int64_t shape[] = {rows, cols};
      return topic.publish_array(elements.data(), hakobu::DType::of<double>(), shape);
    }
  }
}

int publish(const std::vector<std::string>& args, bool arrays) {
  auto topic = hakobu::Topic::open(args[1]);
  if (!topic) return fail("open: " + topic.error().message);
  if (!wait_for_subscriber(*topic)) return fail("no subscriber came within 60 s");
  const std::uint64_t n = std::stoull(args[2]);
  const std::int64_t rows = arrays ? std::stoll(args[3]) : 0;
  const std::int64_t cols = arrays ? std::stoll(args[4]) : 0;
  const std::size_t size = arrays ? 0 : std::stoull(args[3]);
  if (!arrays && size < hakobu::test::kWireHeaderBytes) return fail("SIZE must be at least 16");
  for (std::uint64_t seq = 0; seq < n; ++seq) {
    hakobu::Result<void, hakobu::PutError> published = [&]() -> hakobu::Result<void, hakobu::PutError> {
      if (!arrays) return topic->publish(hakobu::test::wire_bytes(seq, size));
      const std::vector<double> elements = hakobu::test::wire_array(seq, rows, cols);
      const std::int64_t shape[] = {rows, cols};
      return topic->publish_array(elements.data(), hakobu::DType::of<double>(), shape);
    }();
    if (!published) return fail("publish " + std::to_string(seq) + ": " + published.error().message);
  }
  return ok(n);
}

int subscribe(const std::vector<std::string>& args) {
  auto topic = attach_waiting(args[1]);
  if (!topic) return fail("attach: " + topic.error().message);
  auto subscriber = topic->subscribe({.on_full = hakobu::OnFull::Block, .history = 0});
  if (!subscriber) return fail("subscribe: " + subscriber.error().message);
  std::printf("subscribed\n");
  std::fflush(stdout);
  const std::uint64_t n = std::stoull(args[2]);
  std::uint64_t first_seq = 0;
  std::uint64_t first_sequence = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    auto message = subscriber->get(60s);
    if (!message) return fail("get " + std::to_string(i) + ": " + message.error().message);
    std::string why;
    const auto seq = check(*message, why);
    if (!seq) return fail(why);
    if (i == 0) {
      first_seq = *seq;
      first_sequence = message->sequence();
    }
    if (*seq != first_seq + i || message->sequence() != first_sequence + i || message->missed() != 0) {
      return fail("message " + std::to_string(i) + " received is seq " + std::to_string(*seq) + " at sequence " +
                  std::to_string(message->sequence()) + " (missed " + std::to_string(message->missed()) +
                  "): not consecutive");
    }
  }
  if (subscriber->dropped() != 0) return fail("a blocking subscriber was dropped past messages");
  return ok(n);
}

int publish_from(const std::vector<std::string>& args) {
  auto topic = hakobu::Topic::attach(args[1]);
  if (!topic) return fail("attach: " + topic.error().message);
  const std::uint64_t first = std::stoull(args[2]);
  const std::uint64_t n = std::stoull(args[3]);
  for (std::uint64_t seq = first; seq < first + n; ++seq) {
    auto published = publish_mixed(*topic, seq);
    if (!published) return fail("publish " + std::to_string(seq) + ": " + published.error().message);
  }
  return ok(n);
}

int hold(const std::vector<std::string>& args) {
  auto topic = attach_waiting(args[1]);
  if (!topic) return fail("attach: " + topic.error().message);
  const bool drop = args.size() == 5 && args[4] == "drop-oldest";
  auto subscriber = topic->subscribe({.on_full = drop ? hakobu::OnFull::DropOldest : hakobu::OnFull::Block});
  if (!subscriber) return fail("subscribe: " + subscriber.error().message);
  const std::uint64_t k = std::stoull(args[2]);
  std::vector<hakobu::TopicMessage> held;
  for (std::uint64_t i = 0; i < k; ++i) {
    auto message = subscriber->get(60s);
    if (!message) return fail("get: " + message.error().message);
    held.push_back(std::move(message).value());
  }
  { std::ofstream(args[3] + ".tmp") << "held " << k << "\n"; }
  std::filesystem::rename(args[3] + ".tmp", args[3]);
  for (;;) ::pause();  // until killed (or the alarm)
}

int exercise(const std::vector<std::string>& args) {
  auto topic = hakobu::Topic::attach(args[1]);
  if (!topic) return fail("attach: " + topic.error().message);
  auto reader = topic->subscribe({.on_full = hakobu::OnFull::Block, .history = 1});
  if (!reader) return fail("subscribe: " + reader.error().message);
  auto laggard = topic->subscribe({.on_full = hakobu::OnFull::DropOldest, .history = 0});
  if (!laggard) return fail("subscribe: " + laggard.error().message);
  const std::uint64_t first = std::stoull(args[2]);
  const std::uint64_t n = std::stoull(args[3]);
  std::uint64_t last = 0;
  const auto receive = [&](hakobu::Subscriber& subscriber, bool wait) -> int {
    auto message = wait ? subscriber.get(60s) : subscriber.try_get();
    if (!message) {
      if (!wait && message.error().code == hakobu::GetError::Empty) return -1;
      return fail("get: " + message.error().message);
    }
    std::string why;
    const auto seq = check(*message, why);
    if (!seq) return fail(why);
    last = *seq;
    return 0;
  };
  for (std::uint64_t seq = first; seq < first + n; ++seq) {
    auto published = publish_mixed(*topic, seq);
    if (!published) return fail("publish " + std::to_string(seq) + ": " + published.error().message);
    // The reader receives what the topic holds, in order, up to this message
    // (from the history, or others' messages published meanwhile).
    do {
      if (receive(*reader, true) > 0) return 1;
    } while (last != seq);
  }
  for (int got = 0; got == 0;) {
    got = receive(*laggard, false);
    if (got > 0) return 1;
  }
  reader->close();
  laggard->close();
  topic->close();
  return ok(n);
}

int run(const std::vector<std::string>& args) {
  if (args.empty()) return fail("usage: see the comment at the top of topic_peer.cpp");
  const std::string& command = args[0];
  if (command == "publish" && args.size() == 4) return publish(args, false);
  if (command == "publish-arrays" && args.size() == 5) return publish(args, true);
  if (command == "subscribe" && args.size() == 3) return subscribe(args);
  if (command == "publish-from" && args.size() == 4) return publish_from(args);
  if (command == "hold" && (args.size() == 4 || args.size() == 5)) return hold(args);
  if (command == "exercise" && args.size() == 4) return exercise(args);
  return fail("unknown command or wrong arguments: " + command);
}

}  // namespace

int main(int argc, char** argv) {
  ::alarm(300);
  const std::vector<std::string> args(argv + 1,
                                      argv + argc);  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  try {
    return run(args);
  } catch (const std::exception& e) {  // std::stoull on a bad number
    return fail(std::string("bad argument: ") + e.what());
  }
}
