// Queue: the end of the stream and the byte capacity (ring.hpp, "Senders and
// the end of the stream" and "Bytes queued").
//
// Producers and consumers in other processes are separately started peers
// (hakobu_test_peer's `steps` mode, see peer.cpp), killed with SIGKILL or at
// the library's kill points where a test says so. What is covered:
//   * a producer that puts N and closes: consumers here and in a peer blocked
//     in get before it started receive the N, then Ended; two producers: no
//     end until both closed; Ending::Failed: SendersLost after the drain;
//   * a producer killed mid-stream, or blocked in a put on a full ring or at
//     the byte limit: a receiver blocked in get() without a timeout gets every
//     published message, then SendersLost; a poller (try_get) sees it too;
//   * QueueOptions::sends, a new stream after the end (its failure cleared),
//     an event loop's WakeSocket signalled by the last close, more than
//     kSenderSlots senders (no end while one is open; never, if one died), a
//     handle that puts and gets;
//   * the byte capacity: Full, a put waiting for room across processes, a
//     message larger than the limit in an empty queue, stats().bytes, the
//     automatic and the absent limit, and processes killed at put.claimed,
//     put.filled, get.claimed and get.listed leaving the queue usable;
//   * threads sharing one sending handle while a third closes it (TSan).
// No test asserts a duration: watchdogs (timeouts of 60 s and more) turn a
// hang into a failure. Every test unlinks what it creates.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hakobu/hakobu.hpp"
#include "message_stamp.hpp"
#include "test_queues.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using hakobu::Ending;
using hakobu::GetError;
using hakobu::PutError;
using hakobu::Queue;
using hakobu::QueueOptions;
using hakobu::test::Process;
using hakobu::test::Unlinker;

const std::string kPeer = HAKOBU_TEST_PEER;
constexpr auto kWatchdog = 60s;  // a hang, not a slow machine
constexpr int kKilled = 128 + SIGKILL;
constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kBig = 600 * 1024;  // two do not fit in 1 MiB

// --- helpers ----------------------------------------------------------------------

/// A new queue (this handle creates it and is no sender) with `capacity_bytes`.
Queue make_stream_queue(std::size_t capacity = 8, std::size_t capacity_bytes = hakobu::kAutoCapacityBytes) {
  QueueOptions options;
  options.capacity = capacity;
  options.capacity_bytes = capacity_bytes;
  auto queue = Queue::create(hakobu::test::unique_name("stream"), options);
  EXPECT_TRUE(queue) << queue.error().message;
  return std::move(queue).value();
}

Queue attach(const std::string& name, bool sends = false) {
  QueueOptions options;
  options.sends = sends;
  auto queue = Queue::attach(name, options);
  EXPECT_TRUE(queue) << queue.error().message;
  return std::move(queue).value();
}

/// A directory of this test's ready/go/out files, removed when the test ends.
class Files {
 public:
  Files() : dir_("/tmp/hakobu-stream-" + hakobu::test::unique_name("files")) {
    std::filesystem::create_directories(dir_);
  }
  Files(const Files&) = delete;
  Files& operator=(const Files&) = delete;
  ~Files() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  [[nodiscard]] std::string path(const std::string& name) const { return dir_ + "/" + name; }
  void touch(const std::string& name) const { std::ofstream(path(name)) << "go\n"; }

 private:
  std::string dir_;
};

std::unique_ptr<Process> start_peer(const std::vector<std::string>& args) {
  auto process = std::make_unique<Process>(kPeer, args);
  EXPECT_GT(process->pid(), 0) << "could not start " << kPeer;
  return process;
}

/// `hakobu_test_peer steps QUEUE STEPS...`
std::unique_ptr<Process> start_steps(const std::string& queue, std::vector<std::string> steps) {
  steps.insert(steps.begin(), {"steps", queue});
  return start_peer(steps);
}

bool wait_until(const std::function<bool()>& done, std::chrono::seconds watchdog = kWatchdog) {
  const auto deadline = std::chrono::steady_clock::now() + watchdog;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

/// Waits for a peer's ready file; fails the test if the peer exits first.
void wait_for_ready(const std::string& path, const Process& process) {
  const bool ready =
      wait_until([&] { return std::filesystem::exists(path) || hakobu::test::has_exited(process.pid()); });
  EXPECT_TRUE(ready && std::filesystem::exists(path))
      << "peer " << process.pid() << " never wrote " << path << (ready ? " (it exited)" : "");
}

using hakobu::test::Stamp;

/// What a receiver got: the stamps, in order, and the error that ended it.
struct Received {
  std::vector<Stamp> stamps;
  std::optional<GetError> end;
  std::string bad;  // a message that failed its check
};

/// Every message of `producer` with seq 0..count-1 exactly once, nothing else.
void expect_each_once(const std::vector<Stamp>& stamps, std::uint32_t producer, std::uint64_t count) {
  std::set<std::uint64_t> seen;
  for (const auto& s : stamps) {
    EXPECT_EQ(s.producer, producer);
    EXPECT_LT(s.seq, count);
    EXPECT_TRUE(seen.insert(s.seq).second) << "message " << s.seq << " received twice";
  }
  EXPECT_EQ(seen.size(), count);
}

/// One get into `out`: true if it brought a message.
bool take(Received& out, hakobu::Result<hakobu::Sample, GetError> got) {
  if (!got) {
    out.end = got.error().code;
    return false;
  }
  std::string why;
  const auto stamp = hakobu::test::read_stamp(got->bytes(), why);
  if (!stamp) {
    out.bad = why;
    out.end = GetError::Corrupt;
    return false;
  }
  out.stamps.push_back(*stamp);
  return true;
}

/// Receives with get() (no timeout) on a handle of its own, on a thread,
/// until an error. finish() waits for that; if the watchdog expires first, it
/// closes the handle (the blocked get returns Closed) so the test fails
/// instead of hanging.
class BlockedReceiver {
 public:
  explicit BlockedReceiver(const std::string& name) : queue_(attach(name)) {
    thread_ = std::thread([this] {
      while (take(received_, queue_.get())) {
      }
      done_.store(true, std::memory_order_release);
    });
  }
  BlockedReceiver(const BlockedReceiver&) = delete;
  BlockedReceiver& operator=(const BlockedReceiver&) = delete;
  ~BlockedReceiver() { (void)finish(); }

  Received finish(std::chrono::seconds watchdog = kWatchdog) {
    if (thread_.joinable()) {
      if (!wait_until([&] { return done_.load(std::memory_order_acquire); }, watchdog)) {
        ADD_FAILURE() << "the blocked get() never returned (watchdog): closing its handle";
        queue_.close();
      }
      thread_.join();
    }
    return received_;
  }

 private:
  Queue queue_;
  Received received_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

/// A drain peer's out-file: "ID SEQ SIZE" lines, then "end ERROR".
Received read_drained(const std::string& path) {
  Received out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string first;
    fields >> first;
    if (first == "end") {
      std::string code;
      fields >> code;
      for (auto e : {GetError::Empty, GetError::Timeout, GetError::Closed, GetError::Unlinked, GetError::Corrupt,
                     GetError::OutOfMemory, GetError::Ended, GetError::SendersLost}) {
        if (hakobu::to_string(e) == code) out.end = e;
      }
      continue;
    }
    Stamp s;
    s.producer = static_cast<std::uint32_t>(std::stoul(first));
    fields >> s.seq;
    out.stamps.push_back(s);
  }
  return out;
}

std::vector<std::byte> stamped(std::uint32_t producer, std::uint64_t seq, std::size_t size) {
  std::vector<std::byte> bytes(size);
  hakobu::test::write_stamp(bytes, producer, seq);
  return bytes;
}

std::string put_step(std::uint64_t count, std::size_t size, std::uint32_t producer) {
  return "put:" + std::to_string(count) + ":" + std::to_string(size) + ":" + std::to_string(producer);
}

// --- end of stream ----------------------------------------------------------------

TEST(QueueStream, ProducerClosesConsumersHereAndInAPeerGetAllThenEnded) {
  auto q = make_stream_queue(8);
  Unlinker cleanup{q};
  Files files;
  constexpr std::uint64_t kCount = 300;
  // Both consumers wait in get before anyone sent: a queue never sent on never ends.
  auto consumer = start_steps(q.name(), {"open", "ready:" + files.path("c.ready"), "drain:" + files.path("c.out")});
  wait_for_ready(files.path("c.ready"), *consumer);
  BlockedReceiver here(q.name());
  EXPECT_EQ(q.try_get().error().code, GetError::Empty);

  EXPECT_EQ(start_steps(q.name(), {"open", put_step(kCount, 0, 1), "close"})->wait(), 0);
  const Received mine = here.finish();
  ASSERT_EQ(consumer->wait(), 0);
  const Received theirs = read_drained(files.path("c.out"));

  EXPECT_EQ(mine.end, GetError::Ended) << mine.bad;
  EXPECT_EQ(theirs.end, GetError::Ended);
  std::vector<Stamp> all = mine.stamps;
  all.insert(all.end(), theirs.stamps.begin(), theirs.stamps.end());
  expect_each_once(all, 1, kCount);
  // The end lasts: every later get says so at once.
  EXPECT_EQ(q.try_get().error().code, GetError::Ended);
  EXPECT_EQ(q.get(kWatchdog).error().code, GetError::Ended);
  const auto stats = q.stats();
  EXPECT_TRUE(stats.ended);
  EXPECT_FALSE(stats.senders_lost);
  EXPECT_EQ(stats.senders, 0U);
  EXPECT_EQ(stats.put_count, kCount);
  EXPECT_EQ(stats.get_count, kCount);
}

TEST(QueueStream, TwoProducersNoEndUntilBothClosed) {
  auto q = make_stream_queue(128);  // room for both producers' messages: nobody gets until both sent
  Unlinker cleanup{q};
  Files files;
  auto second = start_steps(
      q.name(), {"open", put_step(40, 0, 2), "ready:" + files.path("b.ready"), "wait:" + files.path("b.go"), "close"});
  wait_for_ready(files.path("b.ready"), *second);
  EXPECT_EQ(start_steps(q.name(), {"open", put_step(40, 0, 1), "close"})->wait(), 0);

  Received got;
  for (int i = 0; i < 80; ++i) ASSERT_TRUE(take(got, q.get(kWatchdog))) << "message " << i;
  // The first producer closed, the second still may send: empty, not ended.
  EXPECT_EQ(q.try_get().error().code, GetError::Empty);
  EXPECT_FALSE(q.stats().ended);
  EXPECT_EQ(q.stats().senders, 1U);

  files.touch("b.go");
  EXPECT_EQ(second->wait(), 0);
  EXPECT_EQ(q.get(kWatchdog).error().code, GetError::Ended);
  std::vector<Stamp> first;
  std::vector<Stamp> other;
  for (const auto& s : got.stamps) (s.producer == 1 ? first : other).push_back(s);
  expect_each_once(first, 1, 40);
  expect_each_once(other, 2, 40);
}

TEST(QueueStream, FailedProducerGivesSendersLostAfterTheDrain) {
  auto q = make_stream_queue(32);
  Unlinker cleanup{q};
  EXPECT_EQ(start_steps(q.name(), {"open", put_step(25, 0, 1), "close-failed"})->wait(), 0);
  EXPECT_TRUE(q.stats().senders_lost);
  EXPECT_FALSE(q.stats().ended);  // messages are waiting: not the end yet
  Received got;
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(take(got, q.get(kWatchdog))) << "message " << i;
  expect_each_once(got.stamps, 1, 25);
  EXPECT_EQ(q.get(kWatchdog).error().code, GetError::SendersLost);
  EXPECT_EQ(q.try_get().error().code, GetError::SendersLost);  // it lasts
  EXPECT_TRUE(q.stats().ended);
}

TEST(QueueStream, ProducerKilledMidStreamBlockedGetReturnsSendersLost) {
  auto q = make_stream_queue(64);
  Unlinker cleanup{q};
  Files files;
  BlockedReceiver here(q.name());  // waiting before the producer starts
  auto producer = start_steps(q.name(), {"open", put_step(30, 0, 1), "ready:" + files.path("p.ready"), "hold"});
  wait_for_ready(files.path("p.ready"), *producer);
  producer->kill(SIGKILL);
  EXPECT_EQ(producer->wait(), kKilled);
  const Received got = here.finish();
  EXPECT_EQ(got.end, GetError::SendersLost) << got.bad;
  expect_each_once(got.stamps, 1, 30);
  EXPECT_EQ(q.stats().senders, 0U);  // the dead sender's entry was reaped
}

TEST(QueueStream, ProducerKilledBlockedInAPutOnAFullRing) {
  auto q = make_stream_queue(4);
  Unlinker cleanup{q};
  Files files;
  auto producer =
      start_steps(q.name(), {"open", put_step(4, 0, 1), "ready:" + files.path("p.ready"), put_step(1, 0, 1), "hold"});
  wait_for_ready(files.path("p.ready"), *producer);
  ASSERT_EQ(q.size(), 4U);  // the fifth put cannot get in: nobody takes
  producer->kill(SIGKILL);
  EXPECT_EQ(producer->wait(), kKilled);
  BlockedReceiver here(q.name());
  const Received got = here.finish();
  EXPECT_EQ(got.end, GetError::SendersLost) << got.bad;
  expect_each_once(got.stamps, 1, 4);
}

TEST(QueueStream, ProducerKilledBlockedInAPutAtTheByteLimit) {
  auto q = make_stream_queue(8, kMiB);
  Unlinker cleanup{q};
  Files files;
  auto producer = start_steps(
      q.name(), {"open", put_step(1, kBig, 1), "ready:" + files.path("p.ready"), put_step(1, kBig, 1), "hold"});
  wait_for_ready(files.path("p.ready"), *producer);
  ASSERT_EQ(q.size(), 1U);
  producer->kill(SIGKILL);
  EXPECT_EQ(producer->wait(), kKilled);
  BlockedReceiver here(q.name());
  const Received got = here.finish();
  EXPECT_EQ(got.end, GetError::SendersLost) << got.bad;
  expect_each_once(got.stamps, 1, 1);
  EXPECT_EQ(q.stats().bytes, 0U);
}

TEST(QueueStream, PollingTryGetSeesTheEndOfADeadSendersStream) {
  auto q = make_stream_queue(16);
  Unlinker cleanup{q};
  Files files;
  auto producer = start_steps(q.name(), {"open", put_step(10, 0, 1), "ready:" + files.path("p.ready"), "hold"});
  wait_for_ready(files.path("p.ready"), *producer);
  producer->kill(SIGKILL);
  EXPECT_EQ(producer->wait(), kKilled);
  // Pollers check the senders by the clock: poll until something else than Empty.
  Received got;
  const bool ended = wait_until([&] {
    auto sample = q.try_get();
    if (!sample && sample.error().code == GetError::Empty) return false;
    return !take(got, std::move(sample));
  });
  ASSERT_TRUE(ended) << "try_get never reported the end of the dead sender's stream";
  EXPECT_EQ(got.end, GetError::SendersLost) << got.bad;
  expect_each_once(got.stamps, 1, 10);
}

TEST(QueueStream, SendsAtOpenHoldsTheEndBeforeTheFirstPut) {
  auto q = make_stream_queue(8);
  Unlinker cleanup{q};
  Files files;
  {  // a first stream, ended
    auto sender = attach(q.name());
    ASSERT_TRUE(sender.put(stamped(5, 0, 64)));
    sender.close();
  }
  ASSERT_TRUE(q.get(kWatchdog));
  EXPECT_EQ(q.try_get().error().code, GetError::Ended);
  {  // in this process: a handle opened with sends counts before it sends
    auto sender = attach(q.name(), /*sends=*/true);
    EXPECT_EQ(q.try_get().error().code, GetError::Empty);
    EXPECT_EQ(q.stats().senders, 1U);
    EXPECT_FALSE(q.stats().ended);
    sender.close();
    EXPECT_EQ(q.try_get().error().code, GetError::Ended);
  }
  // In another process.
  auto producer = start_steps(q.name(), {"open-sends", "ready:" + files.path("p.ready"), "wait:" + files.path("p.go"),
                                         put_step(3, 0, 7), "close"});
  wait_for_ready(files.path("p.ready"), *producer);
  EXPECT_EQ(q.try_get().error().code, GetError::Empty);  // no end while it has not sent
  BlockedReceiver here(q.name());
  files.touch("p.go");
  EXPECT_EQ(producer->wait(), 0);
  const Received got = here.finish();
  EXPECT_EQ(got.end, GetError::Ended) << got.bad;
  expect_each_once(got.stamps, 7, 3);
}

TEST(QueueStream, ANewSenderAfterTheEndStartsANewStream) {
  auto q = make_stream_queue(8);
  Unlinker cleanup{q};
  Files files;
  EXPECT_EQ(start_steps(q.name(), {"open", put_step(5, 0, 1), "close-failed"})->wait(), 0);
  Received old;
  while (take(old, q.get(kWatchdog))) {
  }
  EXPECT_EQ(old.end, GetError::SendersLost) << old.bad;
  expect_each_once(old.stamps, 1, 5);
  EXPECT_TRUE(q.stats().senders_lost);

  auto producer = start_steps(
      q.name(), {"open", put_step(3, 0, 2), "ready:" + files.path("p.ready"), "wait:" + files.path("p.go"), "close"});
  wait_for_ready(files.path("p.ready"), *producer);
  EXPECT_FALSE(q.stats().senders_lost);  // the new stream does not inherit the failure
  Received fresh;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(take(fresh, q.get(kWatchdog))) << "message " << i;
  expect_each_once(fresh.stamps, 2, 3);
  EXPECT_EQ(q.try_get().error().code, GetError::Empty);  // get waits again
  BlockedReceiver here(q.name());
  files.touch("p.go");
  EXPECT_EQ(producer->wait(), 0);
  const Received rest = here.finish();
  EXPECT_EQ(rest.end, GetError::Ended) << rest.bad;  // not SendersLost: that was the old stream
  EXPECT_TRUE(rest.stamps.empty());
}

TEST(QueueStream, AWatchingEventLoopIsSignalledWhenTheLastSenderCloses) {
  auto q = make_stream_queue(8);
  Unlinker cleanup{q};
  Files files;
  auto socket = hakobu::WakeSocket::open();
  ASSERT_TRUE(socket) << socket.error().message;
  constexpr std::uint16_t kCookie = 41;
  ASSERT_TRUE(q.watch(*socket, hakobu::Readiness::Readable, kCookie));
  auto producer = start_steps(
      q.name(), {"open", put_step(3, 0, 1), "ready:" + files.path("p.ready"), "wait:" + files.path("p.go"), "close"});
  wait_for_ready(files.path("p.ready"), *producer);
  Received got;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(take(got, q.get(kWatchdog)));
  EXPECT_EQ(q.try_get().error().code, GetError::Empty);
  files.touch("p.go");
  // As an event loop: wait on the socket, drain it, try the queue. A late
  // wake-up of a put may come first; only the close can end the stream.
  const auto deadline = std::chrono::steady_clock::now() + kWatchdog;
  std::optional<GetError> end;
  bool cookie_seen = false;
  while (!end && std::chrono::steady_clock::now() < deadline) {
    pollfd ready{socket->fd(), POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (::poll(&ready, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 1))) <= 0) break;
    std::uint16_t cookies[8] = {};
    const std::size_t n = socket->drain(cookies);
    cookie_seen |= std::find(cookies, cookies + n, kCookie) != cookies + n;
    auto sample = q.try_get();
    ASSERT_FALSE(sample) << "no message was left";
    if (sample.error().code != GetError::Empty) end = sample.error().code;
  }
  EXPECT_EQ(end, GetError::Ended) << "the socket was never signalled for the end of the stream";
  EXPECT_TRUE(cookie_seen);
  EXPECT_EQ(producer->wait(), 0);
  q.unwatch(*socket, hakobu::Readiness::Readable, kCookie);
}

// Senders beyond the table's kSenderSlots entries are counted apart until they
// close: no end while one is open; one that dies is never counted down, so
// that queue's streams never end (the design's bound: 64 senders at once).
TEST(QueueStream, MoreSendersThanTheTableHolds) {
  auto q = make_stream_queue(8);
  Unlinker cleanup{q};
  std::vector<Queue> senders;
  for (int i = 0; i < 70; ++i) senders.push_back(attach(q.name(), /*sends=*/true));
  EXPECT_EQ(q.stats().senders, 64U);  // the table is full; the others are untracked
  ASSERT_TRUE(senders.back().put(stamped(1, 0, 64)));
  ASSERT_TRUE(q.get(kWatchdog));
  for (int i = 0; i < 64; ++i) senders[static_cast<std::size_t>(i)].close();
  EXPECT_EQ(q.stats().senders, 0U);
  // Six untracked senders are still open: no end.
  EXPECT_EQ(q.try_get().error().code, GetError::Empty);
  EXPECT_EQ(q.get(20ms).error().code, GetError::Timeout);
  EXPECT_FALSE(q.stats().ended);
  for (int i = 64; i < 70; ++i) senders[static_cast<std::size_t>(i)].close();
  EXPECT_EQ(q.get(kWatchdog).error().code, GetError::Ended);
}

TEST(QueueStream, AnUntrackedSenderThatDiesMeansNoEndIsEverReported) {
  auto q = make_stream_queue(8);
  Unlinker cleanup{q};
  Files files;
  std::vector<Queue> senders;
  for (int i = 0; i < 64; ++i) senders.push_back(attach(q.name(), /*sends=*/true));
  auto untracked = start_steps(q.name(), {"open-sends", put_step(2, 0, 1), "ready:" + files.path("p.ready"), "hold"});
  wait_for_ready(files.path("p.ready"), *untracked);
  untracked->kill(SIGKILL);
  EXPECT_EQ(untracked->wait(), kKilled);
  for (auto& s : senders) s.close();
  Received got;
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(take(got, q.get(kWatchdog)));
  expect_each_once(got.stamps, 1, 2);
  EXPECT_EQ(q.try_get().error().code, GetError::Empty);
  EXPECT_EQ(q.get(300ms).error().code, GetError::Timeout);  // past several checks of the senders: no end
  EXPECT_FALSE(q.stats().ended);
}

TEST(QueueStream, AHandleThatPutsAndGetsNeverEndsItsOwnStream) {
  auto q = make_stream_queue(8);
  Unlinker cleanup{q};
  auto both = attach(q.name());
  ASSERT_TRUE(both.put(stamped(1, 0, 64)));
  ASSERT_TRUE(both.get(kWatchdog));
  EXPECT_EQ(both.try_get().error().code, GetError::Empty);  // it may send again
  EXPECT_EQ(both.get(20ms).error().code, GetError::Timeout);
  EXPECT_FALSE(both.stats().ended);
  both.close();
  EXPECT_EQ(q.try_get().error().code, GetError::Ended);
}

// --- byte capacity ---------------------------------------------------------------------

TEST(QueueStream, ByteCapacityRefusesTheSecondLargeMessage) {
  auto q = make_stream_queue(8, kMiB);
  Unlinker cleanup{q};
  EXPECT_EQ(q.capacity_bytes(), kMiB);
  EXPECT_EQ(q.stats().capacity_bytes, kMiB);
  EXPECT_EQ(attach(q.name()).capacity_bytes(), kMiB);  // attaching keeps the creator's limit
  ASSERT_TRUE(q.try_put(stamped(1, 0, kBig)));
  auto second = q.try_put(stamped(1, 1, kBig));
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, PutError::Full);
  auto loan = q.loan(kBig);
  ASSERT_TRUE(loan);
  auto by_loan = q.try_put(*loan);
  ASSERT_FALSE(by_loan);
  EXPECT_EQ(by_loan.error().code, PutError::Full);
  EXPECT_TRUE(loan->valid());  // kept on failure
  EXPECT_EQ(q.put(stamped(1, 1, kBig), 10ms).error().code, PutError::Timeout);
  // Inline messages are bounded by the ring, not counted.
  EXPECT_TRUE(q.try_put(stamped(1, 2, 100)));
  EXPECT_EQ(q.stats().bytes, kBig);
  ASSERT_TRUE(q.get(kWatchdog));
  EXPECT_TRUE(q.try_put(*loan));
  EXPECT_EQ(q.stats().bytes, kBig);
}

TEST(QueueStream, ABlockedPutCompletesWhenAGetFreesRoom) {
  auto q = make_stream_queue(8, kMiB);
  Unlinker cleanup{q};
  Files files;
  // A producer peer blocked at the byte limit; this process gets.
  ASSERT_TRUE(q.put(stamped(1, 0, kBig)));
  auto producer = start_steps(q.name(), {"open", "ready:" + files.path("p.ready"), put_step(1, kBig, 2), "close"});
  wait_for_ready(files.path("p.ready"), *producer);
  EXPECT_EQ(q.size(), 1U);  // its put cannot get in before a get
  Received got;
  ASSERT_TRUE(take(got, q.get(kWatchdog)));
  EXPECT_EQ(producer->wait(), 0);
  ASSERT_TRUE(take(got, q.get(kWatchdog)));
  EXPECT_EQ(got.stamps.at(1).producer, 2U);

  // This process blocked at the limit; a consumer peer gets.
  ASSERT_TRUE(q.put(stamped(1, 1, kBig)));
  std::atomic<bool> put_done{false};
  hakobu::Result<void, PutError> second;
  std::thread putter([&] {
    second = q.put(stamped(1, 2, kBig), std::chrono::nanoseconds(kWatchdog));
    put_done.store(true);
  });
  EXPECT_FALSE(put_done.load());  // 1.2 MiB do not fit: only a get lets it in
  auto consumer = start_steps(q.name(), {"open", "get:2"});
  putter.join();
  EXPECT_TRUE(second) << second.error().message;
  EXPECT_EQ(consumer->wait(), 0);
  EXPECT_EQ(q.stats().bytes, 0U);
}

TEST(QueueStream, AMessageLargerThanTheLimitGetsIntoAnEmptyQueue) {
  auto q = make_stream_queue(8, kMiB);
  Unlinker cleanup{q};
  ASSERT_TRUE(q.try_put(stamped(1, 0, 2 * kMiB)));
  EXPECT_EQ(q.stats().bytes, 2 * kMiB);
  EXPECT_EQ(q.try_put(stamped(1, 1, 1000)).error().code, PutError::Full);
  auto got = q.get(kWatchdog);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->size(), 2 * kMiB);
  EXPECT_EQ(q.stats().bytes, 0U);
  ASSERT_TRUE(q.try_put(stamped(1, 1, 1000)));
}

TEST(QueueStream, StatsBytesFollowPutsAndGets) {
  auto q = make_stream_queue(8, kMiB);
  Unlinker cleanup{q};
  std::uint64_t expected = 0;
  const std::vector<std::size_t> sizes = {1000, 100, 5000, hakobu::kMaxInlineBytes, hakobu::kMaxInlineBytes + 1};
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_TRUE(q.try_put(stamped(1, i, sizes[i])));
    if (sizes[i] > hakobu::kMaxInlineBytes) expected += sizes[i];
    EXPECT_EQ(q.stats().bytes, expected) << "after put " << i;
  }
  {
    auto loan = q.loan(3000);
    ASSERT_TRUE(loan);
    hakobu::test::write_stamp(loan->bytes(), 1, sizes.size());
    ASSERT_TRUE(q.try_put(*loan));
    expected += 3000;
    EXPECT_EQ(q.stats().bytes, expected);
  }
  for (std::size_t i = 0; i <= sizes.size(); ++i) {
    auto got = q.try_get();
    ASSERT_TRUE(got);
    if (got->size() > hakobu::kMaxInlineBytes) expected -= got->size();
    EXPECT_EQ(q.stats().bytes, expected) << "after get " << i;
  }
  EXPECT_EQ(q.stats().bytes, 0U);
}

TEST(QueueStream, BytesHeldByReferenceCountAgainstTheLimit) {
  // A message that carries a block by reference (an array sent without a copy) keeps that
  // block alive: the queue counts it, or a producer of such messages would fill /dev/shm.
  auto q = make_stream_queue(8, kMiB);
  Unlinker cleanup{q};
  auto by_reference = [&] {
    auto data = q.loan(kBig);
    EXPECT_TRUE(data) << data.error().message;
    auto message = q.loan(16, hakobu::MessageKind::Bytes, 1);
    EXPECT_TRUE(message) << message.error().message;
    EXPECT_TRUE(message->attach(*data));
    return std::move(*message);
  };
  auto first = by_reference();
  ASSERT_TRUE(q.try_put(first));
  EXPECT_EQ(q.stats().bytes, 16 + kBig);
  auto second = by_reference();
  auto refused = q.try_put(second);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, PutError::Full);
  EXPECT_TRUE(second.valid());  // kept on failure, its attachment with it
  {
    auto got = q.try_get();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->attachment_count(), 1U);
    EXPECT_EQ(q.stats().bytes, 0U);  // taken: the receiver holds the block now
  }
  ASSERT_TRUE(q.try_put(second));
  EXPECT_EQ(q.stats().bytes, 16 + kBig);
  ASSERT_TRUE(q.try_get());
  EXPECT_EQ(q.stats().bytes, 0U);
}

TEST(QueueStream, ABlockAttachedTwiceToOneMessageCountsOnce) {
  auto q = make_stream_queue(8, kMiB);
  Unlinker cleanup{q};
  auto data = q.loan(kBig);
  ASSERT_TRUE(data) << data.error().message;
  auto message = q.loan(16, hakobu::MessageKind::Bytes, 2);
  ASSERT_TRUE(message) << message.error().message;
  ASSERT_TRUE(message->attach(*data));
  ASSERT_TRUE(message->attach(*data));
  ASSERT_TRUE(q.try_put(*message));
  EXPECT_EQ(q.stats().bytes, 16 + kBig);  // one block kept alive, not two
  ASSERT_TRUE(q.try_get());
  EXPECT_EQ(q.stats().bytes, 0U);
}

TEST(QueueStream, AnEmptyLoanLeavesNoBytesCounted) {
  auto q = make_stream_queue(8, kMiB);
  Unlinker cleanup{q};
  for (int i = 0; i < 3; ++i) {
    auto loan = q.loan(0);
    ASSERT_TRUE(loan) << loan.error().message;
    ASSERT_TRUE(q.try_put(*loan));
    auto got = q.try_get();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->size(), 0U);
  }
  EXPECT_EQ(q.stats().bytes, 0U);
}

TEST(QueueStream, AutoCapacityBytesIsHalfOfSharedMemoryAndZeroIsNoLimit) {
  struct statvfs vfs {};
  ASSERT_EQ(::statvfs("/dev/shm", &vfs), 0);
  auto automatic = make_stream_queue(8);
  Unlinker cleanup_auto{automatic};
  EXPECT_EQ(automatic.capacity_bytes(), static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize / 2);

  auto unlimited = make_stream_queue(8, 0);
  Unlinker cleanup_unlimited{unlimited};
  EXPECT_EQ(unlimited.capacity_bytes(), 0U);
  EXPECT_EQ(unlimited.stats().capacity_bytes, 0U);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(unlimited.try_put(stamped(1, i, kBig))) << "put " << i;
  EXPECT_EQ(unlimited.stats().bytes, 4 * kBig);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(unlimited.try_get());
  EXPECT_EQ(unlimited.stats().bytes, 0U);
}

// A process killed at a kill point of put or get leaves the queue usable: puts
// still get in (an empty ring admits whatever the count says) and the count
// is settled by whoever repairs the dead claim. After put.claimed the slot
// names no block yet: the reservation shown in the dead sender's entry is given
// back only when a receiver reaps that entry, so until then the count may be
// one message too high (ring.hpp, "Bytes queued").
class QueueStreamKillPoint : public ::testing::TestWithParam<const char*> {};

TEST_P(QueueStreamKillPoint, LeavesTheByteCountUsable) {
  if (!HAKOBU_QUEUE_KILL_POINTS_ON) {
    GTEST_SKIP() << "the library was built without HAKOBU_KILL_POINTS";
  }
  const std::string point = GetParam();
  auto q = make_stream_queue(2, kMiB);
  Unlinker cleanup{q};
  const bool producer_dies = point.starts_with("put.");
  if (!producer_dies) {
    ASSERT_TRUE(q.put(stamped(1, 0, kBig)));  // for the victim to take
  }
  auto victim = start_steps(q.name(), {"kill-at:" + point + ":1", "open",
                                       producer_dies ? put_step(1, kBig, 2) : std::string("get:1"), "exit"});
  ASSERT_EQ(victim->wait(), kKilled) << "the peer did not die at " << point;

  // Puts from a thread, gets here: each side repairs the dead claim it meets.
  constexpr int kRounds = 6;  // three laps of the ring
  std::atomic<int> puts{0};
  std::thread putter([&] {
    for (int i = 0; i < kRounds; ++i) {
      auto r = q.put(stamped(3, static_cast<std::uint64_t>(i), kBig), std::chrono::nanoseconds(kWatchdog));
      if (!r) {
        ADD_FAILURE() << "put " << i << ": " << r.error().message;
        return;
      }
      puts.fetch_add(1);
    }
  });
  Received got;
  for (int i = 0; i < kRounds; ++i) {
    if (!take(got, q.get(kWatchdog))) {
      ADD_FAILURE() << "get " << i << ": " << (got.end ? hakobu::to_string(*got.end) : "") << " " << got.bad;
      break;
    }
  }
  putter.join();
  EXPECT_EQ(puts.load(), kRounds);
  expect_each_once(got.stamps, 3, kRounds);
  EXPECT_EQ(q.size(), 0U);
  if (point == "put.claimed") {
    EXPECT_LE(q.stats().bytes, kBig);
  } else {
    EXPECT_EQ(q.stats().bytes, 0U);
  }
  ASSERT_TRUE(q.try_put(stamped(3, kRounds, kBig)));  // an empty ring admits
  ASSERT_TRUE(q.try_get());
}

INSTANTIATE_TEST_SUITE_P(Points, QueueStreamKillPoint,
                         ::testing::Values("put.claimed", "put.filled", "get.claimed", "get.listed"),
                         [](const auto& point) {
                           std::string name = point.param;
                           std::replace(name.begin(), name.end(), '.', '_');
                           return name;
                         });

// --- threads of one process ---------------------------------------------------------

// Two threads put on one handle while a third closes it: every put that
// succeeded is received, then the end (a put racing the close either gets in
// before the end is seen, or fails with Closed).
TEST(QueueStream, ThreadsSharingAHandlePutWhileAThirdCloses) {
  for (int round = 0; round < 10; ++round) {
    auto q = make_stream_queue(64);
    Unlinker cleanup{q};
    auto shared = attach(q.name());
    auto receiver = attach(q.name());
    std::atomic<std::uint64_t> accepted{0};
    auto put_loop = [&](std::uint32_t producer) {
      for (std::uint64_t seq = 0; seq < 5000; ++seq) {
        auto r = shared.put(stamped(producer, seq, seq % 3 == 0 ? 400 : 40), std::chrono::nanoseconds(kWatchdog));
        if (!r) {
          EXPECT_EQ(r.error().code, PutError::Closed) << r.error().message;
          return;
        }
        accepted.fetch_add(1);
      }
    };
    Received got;
    std::thread receiving([&] {
      while (take(got, receiver.get(kWatchdog))) {
      }
    });
    std::thread a(put_loop, 1);
    std::thread b(put_loop, 2);
    std::thread closer([&] {
      while (accepted.load() < 200U * static_cast<unsigned>(round + 1)) std::this_thread::yield();
      shared.close();
    });
    a.join();
    b.join();
    closer.join();
    receiving.join();
    EXPECT_EQ(got.end, GetError::Ended) << got.bad;
    EXPECT_EQ(got.stamps.size(), accepted.load()) << "round " << round;
    EXPECT_EQ(receiver.size(), 0U) << "a message arrived after the end, round " << round;
    std::set<std::pair<std::uint32_t, std::uint64_t>> seen;
    for (const auto& s : got.stamps) EXPECT_TRUE(seen.emplace(s.producer, s.seq).second);
  }
}

}  // namespace
