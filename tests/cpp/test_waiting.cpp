// Unit tests: how blocking calls wait (latency modes, the adaptive spin's
// history and budget) and event-loop wake-ups (WakeSocket, Queue::watch).
// The ThreadSanitizer run of .ci/run includes suite "Waiting".
// No test asserts a duration: CPU time is compared with wall time as a
// behavioural bound, and every wait has a generous timeout as a watchdog.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "channel/ring.hpp"
#include "channel/waiting.hpp"
#include "hakobu/hakobu.hpp"
#include "platform/os.hpp"
#include "test_queues.hpp"
#include "test_support.hpp"

namespace {

using hakobu::test::make_queue;
using hakobu::test::Unlinker;
using namespace std::chrono_literals;
using hakobu::GetError;
using hakobu::Latency;
using hakobu::Queue;
using hakobu::Readiness;
using hakobu::WakeSocket;
using hakobu::WatchError;

constexpr auto kWatchdog = 30s;  // no wait in these tests should come near it

std::span<const std::byte> bytes_of(const auto& value) {
  return std::as_bytes(std::span(&value, 1));
}

double thread_cpu_seconds() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

/// True if `fd` is readable within the watchdog's time.
bool readable_soon(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kWatchdog).count())) == 1;
}
/// True if `fd` is readable right now.
bool readable_now(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

std::vector<std::uint16_t> drain(WakeSocket& socket) {
  std::uint16_t cookies[64];
  const std::size_t n = socket.drain(cookies);
  return {cookies, cookies + n};
}

// --- the adaptive plan --------------------------------------------------------------------

TEST(Waiting, WaitHistoryPlansSpinsThatCoverRecentWaits) {
  using namespace hakobu::detail;
  WaitHistory fresh;
  EXPECT_EQ(fresh.planned_spin(), kMaxAdaptiveSpinNs) << "without history it explores with the longest spin";

  WaitHistory quick;
  for (int i = 0; i < 64; ++i) quick.record(3'000);  // 3 µs answers
  EXPECT_EQ(quick.planned_spin(), kMinAdaptiveSpinNs);

  WaitHistory python_peer;
  for (int i = 0; i < 64; ++i) python_peer.record(40'000);  // 40 µs answers
  EXPECT_GE(python_peer.planned_spin(), 40'000);
  EXPECT_LE(python_peer.planned_spin(), kMaxAdaptiveSpinNs);

  WaitHistory idle;
  for (int i = 0; i < 64; ++i) idle.record(50'000'000);  // 50 ms: nothing arrives
  EXPECT_EQ(idle.planned_spin(), kMinAdaptiveSpinNs);

  // The history follows the peer: after idle spells, quick answers again.
  for (int i = 0; i < 64; ++i) idle.record(40'000);
  EXPECT_GE(idle.planned_spin(), 40'000);

  // Mostly quick answers with every fourth wait long: the quick ones are still caught.
  WaitHistory mixed;
  for (int i = 0; i < 64; ++i) mixed.record(i % 4 == 0 ? 1'000'000'000 : 20'000);
  EXPECT_GE(mixed.planned_spin(), 20'000);
  EXPECT_LE(mixed.planned_spin(), kMaxAdaptiveSpinNs);
}

TEST(Waiting, SpinBudgetRefillsAtAShareOfWallTime) {
  using namespace hakobu::detail;
  SpinBudget budget;
  const std::int64_t t0 = 1'000'000'000;
  EXPECT_EQ(budget.available(t0), kBudgetBurstNs);
  budget.spend(kBudgetBurstNs);
  EXPECT_EQ(budget.available(t0), 0);
  // After 4 ms of wall time, a share of it may be spun.
  static_assert(4'000'000 / kBudgetShareDivisor < kBudgetBurstNs,
                "the refill after 4 ms must stay below the burst, or the next check cannot see the share");
  EXPECT_EQ(budget.available(t0 + 4'000'000), 4'000'000 / kBudgetShareDivisor);
  // A spin that caught a message starts the window again.
  budget.spend(kBudgetBurstNs);
  budget.caught();
  EXPECT_EQ(budget.available(t0 + 4'000'000), kBudgetBurstNs);
  // Never more than the burst, however long it was idle.
  EXPECT_EQ(budget.available(t0 + 1'000'000'000'000), kBudgetBurstNs);
}

// --- modes ----------------------------------------------------------------------------------

TEST(Waiting, LatencyModesAreValidatedAndSettable) {
  hakobu::QueueOptions bad;
  bad.latency = static_cast<Latency>(9);
  auto refused = Queue::create(hakobu::test::unique_name("w"), bad);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, hakobu::OpenError::InvalidArgument);

  hakobu::QueueOptions negative;
  negative.latency = Latency::Fixed;
  negative.spin = -1ns;
  auto refused_spin = Queue::create(hakobu::test::unique_name("w"), negative);
  ASSERT_FALSE(refused_spin);
  EXPECT_EQ(refused_spin.error().code, hakobu::OpenError::InvalidArgument);

  auto q = make_queue();
  Unlinker cleanup{q};
  EXPECT_EQ(q.latency(), Latency::Adaptive);
  q.set_spin(0ns);
  EXPECT_EQ(q.latency(), Latency::Sleep);
  EXPECT_EQ(q.planned_spin_ns(), 0);
  q.set_spin(1ms);
  EXPECT_EQ(q.latency(), Latency::Fixed);
  EXPECT_EQ(q.planned_spin_ns(), 1'000'000);
  q.set_latency(Latency::Spin);
  EXPECT_EQ(q.planned_spin_ns(), INT64_MAX);
  q.set_latency(Latency::Adaptive);
  EXPECT_GT(q.planned_spin_ns(), 0);
}

TEST(Waiting, IdleReceiverUsesLittleCpuAfterItsSpinBudget) {
  // A receiver blocked with no sender: spinning is bounded by the budget, so
  // its CPU time is far below the wall time (a behavioural bound, not a speed).
  for (const Latency mode : {Latency::Adaptive, Latency::Sleep}) {
    auto q = make_queue(8, mode);
    Unlinker cleanup{q};
    const double cpu = thread_cpu_seconds();
    const auto wall = std::chrono::steady_clock::now();
    auto got = q.get(1100ms);
    ASSERT_FALSE(got);
    EXPECT_EQ(got.error().code, GetError::Timeout);
    // Many short waits (as Python's 50 ms slices and polling loops make): each
    // would start a spin; the budget caps them.
    while (std::chrono::steady_clock::now() - wall < 1600ms) (void)q.get(1ms);
    const double wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
    EXPECT_LT(thread_cpu_seconds() - cpu, 0.5 * wall_seconds) << "mode " << static_cast<int>(mode);
  }
}

TEST(Waiting, PingPongInEveryModeLosesNothing) {
  for (const Latency mode : {Latency::Adaptive, Latency::Spin, Latency::Sleep, Latency::Fixed}) {
    auto ping = make_queue(4, mode);
    Unlinker cleanup_ping{ping};
    auto pong = make_queue(4, mode);
    Unlinker cleanup_pong{pong};
    constexpr int kTrips = 2000;
    std::thread echo([&] {
      auto in = Queue::attach(ping.name());
      auto out = Queue::attach(pong.name());
      ASSERT_TRUE(in && out);
      in->set_latency(mode);
      out->set_latency(mode);
      for (int i = 0; i < kTrips; ++i) {
        auto got = in->get(kWatchdog);
        ASSERT_TRUE(got) << got.error().message;
        ASSERT_TRUE(out->put(got->bytes(), kWatchdog, hakobu::MessageKind::Bytes));
      }
    });
    for (int i = 0; i < kTrips; ++i) {
      ASSERT_TRUE(ping.put(bytes_of(i), kWatchdog, hakobu::MessageKind::Bytes));
      auto back = pong.get(kWatchdog);
      ASSERT_TRUE(back) << "mode " << static_cast<int>(mode) << ": " << back.error().message;
      int value = -1;
      std::memcpy(&value, back->bytes().data(), sizeof value);
      ASSERT_EQ(value, i);
    }
    echo.join();
  }
}

TEST(Waiting, PerCallLatencyLeavesTheHandlesMode) {
  auto q = make_queue();
  Unlinker cleanup{q};
  q.set_latency(Latency::Spin);
  const int x = 5;
  ASSERT_TRUE(q.put(bytes_of(x), 1s, hakobu::MessageKind::Bytes, Latency::Sleep));
  auto got = q.get(1s, Latency::Sleep);
  ASSERT_TRUE(got);
  auto none = q.get(10ms, Latency::Sleep);  // would spin without sleeping in the handle's mode
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, GetError::Timeout);
  EXPECT_EQ(q.latency(), Latency::Spin);
}

TEST(Waiting, SpinUntilReadyTakesNothing) {
  auto q = make_queue(2);
  Unlinker cleanup{q};
  EXPECT_FALSE(q.spin_until_ready(Readiness::Readable, 100us));
  EXPECT_TRUE(q.spin_until_ready(Readiness::Writable, 100us));
  const int x = 1;
  ASSERT_TRUE(q.try_put(bytes_of(x)));
  EXPECT_TRUE(q.spin_until_ready(Readiness::Readable, 100us));
  EXPECT_EQ(q.size(), 1U);
  ASSERT_TRUE(q.try_put(bytes_of(x)));
  EXPECT_FALSE(q.spin_until_ready(Readiness::Writable, 100us));
  EXPECT_EQ(q.size(), 2U);
}

// --- event-loop wake-ups ----------------------------------------------------------------------

TEST(Waiting, WatchedPutSignalsTheWakeSocket) {
  auto q = make_queue();
  Unlinker cleanup{q};
  auto socket = WakeSocket::open();
  ASSERT_TRUE(socket) << socket.error().message;
  ASSERT_TRUE(q.watch(*socket, Readiness::Readable, 7));
  const int x = 1;
  ASSERT_TRUE(q.try_put(bytes_of(x)));
  ASSERT_TRUE(readable_soon(socket->fd()));
  EXPECT_EQ(drain(*socket), std::vector<std::uint16_t>{7});
  q.unwatch(*socket, Readiness::Readable, 7);
  ASSERT_TRUE(q.try_put(bytes_of(x)));
  EXPECT_FALSE(readable_now(socket->fd())) << "a put after unwatch sends nothing (sendto completes before put returns)";
}

TEST(Waiting, WatchedGetSignalsRoomToPutters) {
  auto q = make_queue(2);
  Unlinker cleanup{q};
  const int x = 1;
  ASSERT_TRUE(q.try_put(bytes_of(x)));
  ASSERT_TRUE(q.try_put(bytes_of(x)));
  auto socket = WakeSocket::open();
  ASSERT_TRUE(socket);
  ASSERT_TRUE(q.watch(*socket, Readiness::Writable, 3));
  ASSERT_TRUE(q.try_get());
  ASSERT_TRUE(readable_soon(socket->fd()));
  EXPECT_EQ(drain(*socket), std::vector<std::uint16_t>{3});
  q.unwatch(*socket, Readiness::Writable, 3);
}

TEST(Waiting, WatcherTableIsBoundedAndForgetsClosedSockets) {
  auto q = make_queue();
  Unlinker cleanup{q};
  std::vector<WakeSocket> sockets;
  for (std::size_t i = 0; i < Queue::kMaxWatchers; ++i) {
    auto s = WakeSocket::open();
    ASSERT_TRUE(s);
    ASSERT_TRUE(q.watch(*s, Readiness::Readable, 1));
    sockets.push_back(std::move(*s));
  }
  auto extra = WakeSocket::open();
  ASSERT_TRUE(extra);
  auto full = q.watch(*extra, Readiness::Readable, 1);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, WatchError::Full);
  // A socket closed without unwatch (as a process that died): the next put
  // finds nobody under its name and empties the entry.
  sockets.front().close();
  const int x = 1;
  ASSERT_TRUE(q.try_put(bytes_of(x)));
  EXPECT_TRUE(q.watch(*extra, Readiness::Readable, 2)) << "the dead socket's entry was freed";
  for (std::size_t i = 1; i < sockets.size(); ++i) q.unwatch(sockets[i], Readiness::Readable, 1);
  q.unwatch(*extra, Readiness::Readable, 2);
}

TEST(Waiting, UnlinkAndCloseSignalWatchers) {
  auto q = make_queue();
  auto socket = WakeSocket::open();
  ASSERT_TRUE(socket);
  auto other = Queue::attach(q.name());
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->watch(*socket, Readiness::Readable, 11));
  ASSERT_TRUE(other->watch(*socket, Readiness::Writable, 12));
  q.close();  // this process's handle: its waiters must learn of it too
  ASSERT_TRUE(readable_soon(socket->fd()));
  (void)drain(*socket);
  auto removed = Queue::remove(other->name(), hakobu::test::domain());
  ASSERT_TRUE(removed) << removed.error().message;
  ASSERT_TRUE(readable_soon(socket->fd()));
  auto cookies = drain(*socket);
  std::sort(cookies.begin(), cookies.end());
  EXPECT_EQ(cookies, (std::vector<std::uint16_t>{11, 12}));
  other->unwatch(*socket, Readiness::Readable, 11);
  other->unwatch(*socket, Readiness::Writable, 12);
}

TEST(Waiting, ForeignDatagramsAreDropped) {
  auto socket = WakeSocket::open();
  ASSERT_TRUE(socket);
  auto sender = hakobu::platform::datagram_socket();
  ASSERT_TRUE(sender);
  char name[64];
  (void)std::snprintf(name, sizeof name, "hakobu-wake.%u.%012llx", static_cast<unsigned>(hakobu::platform::user_id()),
                      static_cast<unsigned long long>(socket->id()));
  const std::uint64_t wrong_id = ((socket->id() ^ 1U) << 16U) | 5U;
  const char short_one[3] = {1, 2, 3};
  ASSERT_TRUE(hakobu::platform::send_datagram(*sender, name, &wrong_id, sizeof wrong_id));
  ASSERT_TRUE(hakobu::platform::send_datagram(*sender, name, short_one, sizeof short_one));
  const std::uint64_t right = (socket->id() << 16U) | 9U;
  ASSERT_TRUE(hakobu::platform::send_datagram(*sender, name, &right, sizeof right));
  EXPECT_EQ(drain(*socket), std::vector<std::uint16_t>{9});
  hakobu::platform::close_fd(*sender);
}

// The watcher table is shared memory: forged entries and counts must cost at
// most spurious wake-ups of this user's own sockets, and entries naming no
// socket are emptied by the first put that finds them.
TEST(Waiting, ForgedWatcherEntriesCostOnlySpuriousWakeUps) {
  auto q = make_queue(4);
  Unlinker cleanup{q};
  auto socket = WakeSocket::open();
  ASSERT_TRUE(socket);
  const std::string path = "/dev/shm/hakobu:" + q.domain().name() + ":q:" + q.name();
  auto file = hakobu::platform::open_path(path, O_RDWR, 0600);
  ASSERT_TRUE(file);
  auto mapped = hakobu::platform::map_shared(*file, sizeof(hakobu::detail::QueueHeader));
  ASSERT_TRUE(mapped);
  auto* header = static_cast<hakobu::detail::QueueHeader*>(*mapped);
  for (std::size_t i = 0; i < hakobu::detail::kWatcherSlots; ++i) {
    header->get_watchers[i].store(hakobu::platform::random_u64() | 1U);  // names nobody (almost surely)
  }
  header->get_watchers[3].store(socket->id() << 16U | 99U);                    // names our own socket
  header->consumers_waiting.fetch_add(0xFFFU * hakobu::detail::kWatcherUnit);  // a forged count
  header->not_empty_at.store(INT64_MAX);                                       // a forged stamp
  const int x = 1;
  ASSERT_TRUE(q.try_put(bytes_of(x)));
  ASSERT_TRUE(readable_soon(socket->fd()));
  EXPECT_EQ(drain(*socket), std::vector<std::uint16_t>{99}) << "only a spurious wake-up of our own socket";
  for (std::size_t i = 0; i < hakobu::detail::kWatcherSlots; ++i) {
    if (i != 3) {
      EXPECT_EQ(header->get_watchers[i].load(), 0U) << "entry " << i << " named no socket";
    }
  }
  auto got = q.get(kWatchdog);
  ASSERT_TRUE(got);
  hakobu::platform::unmap(*mapped, sizeof(hakobu::detail::QueueHeader));
  hakobu::platform::close_fd(*file);
}

}  // namespace
