// Multi-process tests: Queue between separately started processes.
//
// Every peer is a separate executable (hakobu_test_peer, see peer.cpp) started
// with posix_spawn; it inherits HAKOBU_DOMAIN, so each test run works in its
// own domain. What is covered:
//   * N producers x M consumers: every message exactly once, per-producer FIFO
//     order at each consumer, inline and block messages mixed; a ping-pong with
//     spinning off, so every hand-off is a futex sleep and wake-up;
//   * messages from 1 byte to 1 GiB and array messages, checked across processes;
//   * a consumer killed holding a sample and a producer killed holding a loan:
//     the others go on, collect_garbage() gives the memory back exactly; slots
//     left claimed by dead processes are repaired around;
//   * timeouts of get and put; unlink waking waiters of other processes; close
//     waking only the closing process's waiters;
//   * names: invalid, missing, taken, unlink by a non-creator, many processes
//     creating-or-attaching one name at once;
//   * corrupted descriptors and queue headers written straight into the queue's
//     file: errors, never crashes, and the queue goes on;
//   * processes that exit without closing lose nothing for the others.
// Every test unlinks what it creates; test_main.cpp checks /dev/shm at the end.
// No test asserts a maximum time: watchdogs (Process::wait, wait_until, get
// timeouts) only turn a deadlock into a failure.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "channel/ring.hpp"
#include "domain/domain_state.hpp"
#include "hakobu/hakobu.hpp"
#include "memory/layout.hpp"
#include "message_stamp.hpp"
#include "test_queues.hpp"
#include "test_support.hpp"

namespace {

using namespace hakobu::test;  // NOLINT(google-build-using-namespace): the test helpers

using namespace std::chrono_literals;
using hakobu::Domain;
using hakobu::GetError;
using hakobu::OpenError;
using hakobu::PutError;
using hakobu::Queue;
using hakobu::QueueOptions;
using hakobu::test::Process;
using hakobu::test::unique_name;

const std::string kPeer = HAKOBU_TEST_PEER;

// --- helpers ----------------------------------------------------------------------

std::unique_ptr<Process> start_peer(const std::vector<std::string>& args) {
  auto process = std::make_unique<Process>(kPeer, args);
  EXPECT_GT(process->pid(), 0) << "could not start " << kPeer;
  return process;
}

/// Runs a peer to its end; its exit code (-1 if the watchdog fired).
int run_peer(const std::vector<std::string>& args, std::chrono::seconds watchdog = 60s) {
  return start_peer(args)->wait(watchdog);
}

/// Polls `done` until it holds; false if the watchdog expires first (a deadlock).
bool wait_until(const std::function<bool()>& done, std::chrono::seconds watchdog = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + watchdog;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

/// Waits for a peer's ready file and returns its first line; fails at once if
/// the peer exited instead.
std::string wait_for_ready(const std::string& path, const Process& process) {
  const bool ready =
      wait_until([&] { return std::filesystem::exists(path) || hakobu::test::has_exited(process.pid()); });
  if (!ready || !std::filesystem::exists(path)) {
    ADD_FAILURE() << "peer " << process.pid() << " never wrote " << path << (ready ? " (it exited)" : "");
    return {};
  }
  const auto lines = read_lines(path);
  return lines.empty() ? std::string() : lines.front();
}

/// Counters of the shared heap that must come back after a test's messages are gone.
struct HeapUse {
  std::uint64_t blocks = 0;
  std::uint64_t bytes = 0;
  friend bool operator==(const HeapUse&, const HeapUse&) = default;
  friend std::ostream& operator<<(std::ostream& out, const HeapUse& use) {
    return out << use.blocks << " blocks / " << use.bytes << " bytes";
  }
};

HeapUse heap_use(const Domain& domain) {
  const auto stats = domain.stats();
  return {stats.live_blocks, stats.live_bytes};
}

const hakobu::ProcessInfo* find_process(const hakobu::DomainStats& stats, pid_t pid) {
  for (const auto& info : stats.processes) {
    if (info.pid == pid) return &info;
  }
  return nullptr;
}

Domain open_domain() {
  auto domain = Domain::open();
  EXPECT_TRUE(domain) << domain.error().message;
  return std::move(domain).value();
}

/// The heap use a test must return to. First makes sure this process's own
/// bookkeeping block (its holdings table) exists, so the baseline does not
/// move when the test first holds a message, and that no dead process is left
/// for a peer's attach to reclaim in the middle of the test.
HeapUse settled_heap_use(Domain& domain, Queue& queue) {
  {
    auto loan = queue.loan(1);
    EXPECT_TRUE(loan) << loan.error().message;
  }
  domain.collect_garbage();
  return heap_use(domain);
}

/// The queue's file mapped directly, to watch waiters and to corrupt it.
class QueueFile {
 public:
  explicit QueueFile(const std::string& queue) : path_("/dev/shm/hakobu:" + hakobu::test::domain() + ":q:" + queue) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    struct stat info {};
    if (fd_ < 0 || ::fstat(fd_, &info) != 0) {
      ADD_FAILURE() << "cannot open " << path_;
      return;
    }
    size_ = static_cast<std::size_t>(info.st_size);
    void* mapped = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (mapped == MAP_FAILED) {
      ADD_FAILURE() << "cannot map " << path_;
      return;
    }
    base_ = static_cast<std::byte*>(mapped);
    capacity_ = header().capacity;
    slot_bytes_ = header().slot_bytes;
  }
  QueueFile(const QueueFile&) = delete;
  QueueFile& operator=(const QueueFile&) = delete;
  ~QueueFile() {
    if (base_ != nullptr) ::munmap(base_, size_);
    if (fd_ >= 0) ::close(fd_);
  }

  [[nodiscard]] bool valid() const { return base_ != nullptr; }

  /// Leaves the claim a dead process would: a producer's claim of the next
  /// position to write (Writing) or a consumer's claim of the next message
  /// (Reading), the position hint moved past it or not. Returns the position.
  std::uint64_t plant_dead_claim(hakobu::detail::SlotState state, bool hint_moved) {
    namespace d = hakobu::detail;
    const std::uint32_t dead = d::make_token(d::kMaxProcesses - 1, 1);  // a slot no live process holds
    auto& hint = state == d::SlotState::Writing ? header().enqueue_pos : header().dequeue_pos;
    const std::uint64_t p = hint.load();
    slot(p).control.store(d::make_control(p, state, dead));
    if (hint_moved) hint.store(p + 1);
    return p;
  }
  hakobu::detail::QueueHeader& header() { return *reinterpret_cast<hakobu::detail::QueueHeader*>(base_); }
  /// The slot of `position` (the layout the queue was created with).
  hakobu::detail::SlotHeader& slot(std::uint64_t position) {
    const std::size_t index = static_cast<std::size_t>(position % capacity_);
    return *reinterpret_cast<hakobu::detail::SlotHeader*>(base_ + sizeof(hakobu::detail::QueueHeader) +
                                                          index * slot_bytes_);
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t capacity_ = 1;
  std::size_t slot_bytes_ = 0;
};

class MultiProcess : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = std::filesystem::temp_directory_path() /
           ("hakobu-mp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  /// A path in this test's scratch directory (not in /dev/shm).
  [[nodiscard]] std::string file(const std::string& name) const { return (dir_ / name).string(); }

 private:
  std::filesystem::path dir_;
};

// --- 1. many producers, many consumers ------------------------------------------------

TEST_F(MultiProcess, ManyProducersManyConsumersDeliverEachMessageOnceInOrder) {
  constexpr std::uint32_t kProducers = 3;
  constexpr std::uint32_t kConsumers = 3;
  constexpr std::uint64_t kPerProducer = 1500;
  auto queue = make_queue(16);  // small: producers wait for room, slots wrap many times
  Unlinker cleanup{queue};
  // This process sends the sentinels after the producers finish: a sender from
  // the start, so that the consumers do not see the end of the stream in between.
  QueueOptions sending;
  sending.sends = true;
  auto sentinels = Queue::attach(queue.name(), sending);
  ASSERT_TRUE(sentinels) << sentinels.error().message;

  std::vector<std::unique_ptr<Process>> consumers;
  for (std::uint32_t c = 0; c < kConsumers; ++c) {
    consumers.push_back(start_peer({"consume", queue.name(), file("consumer" + std::to_string(c)), "0"}));
  }
  std::vector<std::unique_ptr<Process>> producers;
  for (std::uint32_t p = 1; p <= kProducers; ++p) {
    producers.push_back(start_peer({"produce", queue.name(), std::to_string(p), std::to_string(kPerProducer)}));
  }
  for (auto& producer : producers) ASSERT_EQ(producer->wait(), 0) << "a producer failed";
  // Every message is queued before these: each consumer stops at one sentinel
  // only after the messages ahead of it were taken.
  for (std::uint32_t c = 0; c < kConsumers; ++c) {
    ASSERT_TRUE(sentinels->put(stamped(kSentinelProducer, c, kStampBytes)));
  }
  for (auto& consumer : consumers) ASSERT_EQ(consumer->wait(), 0) << "a consumer failed (see its stderr)";

  std::map<std::pair<std::uint32_t, std::uint64_t>, int> times_received;
  for (std::uint32_t c = 0; c < kConsumers; ++c) {
    std::map<std::uint32_t, std::int64_t> last_seq;  // per producer, at this consumer
    for (const auto& line : read_lines(file("consumer" + std::to_string(c)))) {
      std::istringstream fields(line);
      std::uint32_t producer = 0;
      std::uint64_t seq = 0;
      std::size_t size = 0;
      ASSERT_TRUE(fields >> producer >> seq >> size) << line;
      ASSERT_TRUE(producer >= 1 && producer <= kProducers && seq < kPerProducer) << line;
      EXPECT_EQ(size, stamped_size(producer, seq));
      const auto previous = last_seq.try_emplace(producer, -1).first->second;
      EXPECT_GT(static_cast<std::int64_t>(seq), previous)
          << "consumer " << c << " received producer " << producer << "'s message " << seq << " after " << previous;
      last_seq[producer] = static_cast<std::int64_t>(seq);
      ++times_received[{producer, seq}];
    }
  }
  EXPECT_EQ(times_received.size(), kProducers * kPerProducer) << "messages were lost";
  for (const auto& [id, times] : times_received) {
    EXPECT_EQ(times, 1) << "producer " << id.first << "'s message " << id.second << " received " << times << " times";
  }
  const auto stats = queue.stats();
  EXPECT_EQ(stats.put_count, kProducers * kPerProducer + kConsumers);
  EXPECT_EQ(stats.get_count, kProducers * kPerProducer + kConsumers);
  EXPECT_EQ(queue.size(), 0U);
}

TEST_F(MultiProcess, PingPongWithoutSpinningLosesNoWakeUp) {
  // Capacity 1 and no spinning: every hand-off goes through the futex sleep
  // and wake-up between two processes; a lost wake-up hangs (the watchdog).
  constexpr std::uint64_t kRounds = 3000;
  auto ping = make_queue(1);
  auto pong = make_queue(1);
  Unlinker cleanup_ping{ping};
  Unlinker cleanup_pong{pong};
  ping.set_spin(0ns);
  pong.set_spin(0ns);
  auto echo = start_peer({"echo", ping.name(), pong.name(), std::to_string(kRounds), "--spin=0"});
  for (std::uint64_t round = 0; round < kRounds; ++round) {
    const auto message = stamped(10, round, stamped_size(10, round));
    ASSERT_TRUE(ping.put(message));
    auto reply = pong.get(60s);  // a watchdog against a lost wake-up
    ASSERT_TRUE(reply) << "round " << round << ": " << reply.error().message;
    ASSERT_TRUE(std::ranges::equal(reply->bytes(), message)) << "round " << round;
  }
  EXPECT_EQ(echo->wait(), 0);
}

// --- 2. sizes from 1 byte to 1 GiB, and arrays --------------------------------------

TEST_F(MultiProcess, MessagesFromOneByteToOneGibKeepTheirChecksums) {
  auto domain = open_domain();
  auto queue = make_queue(4);
  Unlinker cleanup{queue};
  const HeapUse before = settled_heap_use(domain, queue);

  // ":loan" messages are built in place; the others are copied in by put.
  const std::vector<std::string> sizes = {
      "1", "224", "225", "4096:loan", "1048576", "67108864:loan", "1073741824:loan"};
  auto consumer = start_peer({"consume-sizes", queue.name(), file("received"), std::to_string(sizes.size())});
  std::vector<std::string> producer_args = {"produce-sizes", queue.name(), file("sent")};
  producer_args.insert(producer_args.end(), sizes.begin(), sizes.end());
  auto producer = start_peer(producer_args);
  ASSERT_EQ(producer->wait(300s), 0);
  ASSERT_EQ(consumer->wait(300s), 0);

  const auto sent = read_lines(file("sent"));
  const auto received = read_lines(file("received"));
  ASSERT_EQ(sent.size(), sizes.size());
  ASSERT_EQ(received.size(), sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::istringstream sent_fields(sent[i]);
    std::istringstream received_fields(received[i]);
    std::uint64_t sent_size = 0;
    std::uint64_t sent_hash = 0;
    std::uint64_t received_size = 0;
    std::uint64_t received_hash = 0;
    int in_shared_memory = -1;
    ASSERT_TRUE(sent_fields >> sent_size >> sent_hash) << sent[i];
    ASSERT_TRUE(received_fields >> received_size >> received_hash >> in_shared_memory) << received[i];
    EXPECT_EQ(received_size, sent_size) << "message " << i;
    EXPECT_EQ(received_hash, sent_hash) << "message " << i << " of " << sent_size << " bytes arrived changed";
    EXPECT_EQ(in_shared_memory == 1, sent_size > hakobu::kMaxInlineBytes) << "message " << i;
  }
  // Every block went back to the heap once the consumer let go.
  EXPECT_EQ(heap_use(domain), before);
}

TEST_F(MultiProcess, ArrayMessagesKeepDtypeShapeStridesAndValues) {
  auto queue = make_queue(8);
  Unlinker cleanup{queue};
  auto consumer = start_peer({"consume-arrays", queue.name(), file("arrays")});
  ASSERT_EQ(run_peer({"produce-arrays", queue.name()}), 0);
  ASSERT_EQ(consumer->wait(), 0) << "the consumer found wrong values (see its stderr)";

  // dtype = DLPack code/bits/lanes; strides in bytes, as NumPy has them.
  const std::vector<std::string> expected = {
      "dtype=2/32/1 shape=3,4,5 strides=80,20,4 typestr= c=1 f=0 shm=1 values=60",
      "dtype=0/16/1 shape=7,3 strides=2,14 typestr= c=0 f=1 shm=1 values=21",
      "dtype=2/64/1 shape=2,3 strides=24,8 typestr= c=1 f=0 shm=0 values=6",  // inline
      "dtype=1/8/1 shape= strides= typestr= c=1 f=1 shm=1 values=1",          // 0-d
      "dtype=2/64/1 shape=256,512 strides=4096,8 typestr= c=1 f=0 shm=1 values=131072",
      "dtype=0/64/1 shape=4 strides=8 typestr=<M8[ns] c=1 f=1 shm=1 values=4",
      "dtype=1/16/1 shape=5,0,3 strides=6,6,2 typestr= c=1 f=1 shm=1 values=0",  // empty
  };
  auto received = read_lines(file("arrays"));
  EXPECT_EQ(received, expected);
}

// --- 3, 4. processes killed while holding memory ----------------------------------------

TEST_F(MultiProcess, KilledConsumerHoldingASampleIsReclaimed) {
  constexpr std::size_t kBig = std::size_t{64} << 20;
  auto domain = open_domain();
  auto queue = make_queue(8);
  Unlinker cleanup{queue};
  const HeapUse before = settled_heap_use(domain, queue);

  auto victim = start_peer({"hold-sample", queue.name(), file("victim-ready")});
  {
    auto loan = queue.loan(kBig);
    ASSERT_TRUE(loan) << loan.error().message;
    write_stamp(loan->bytes(), 1, 0);
    ASSERT_TRUE(queue.put(*loan));
  }
  ASSERT_EQ(wait_for_ready(file("victim-ready"), *victim), "1 0 " + std::to_string(kBig) + " 1");
  {
    const auto stats = domain.stats();
    EXPECT_GE(stats.live_bytes, before.bytes + kBig) << "the victim's sample is not counted";
    const auto* info = find_process(stats, victim->pid());
    ASSERT_NE(info, nullptr) << "the victim is not in the process table";
    EXPECT_TRUE(info->alive);
    EXPECT_GE(info->held_blocks, 1U);
  }

  // Another consumer goes on while the victim holds its message, and after it died.
  auto other = start_peer({"consume", queue.name(), file("other"), "4"});
  for (std::uint64_t seq = 1; seq <= 2; ++seq) ASSERT_TRUE(queue.put(stamped(1, seq, stamped_size(1, seq))));
  // Once it has received both, its attach (which reclaims dead processes
  // itself) is over: the reclaim below is the test's own.
  ASSERT_TRUE(wait_until([&] { return queue.stats().get_count >= 3 || hakobu::test::has_exited(other->pid()); }));
  ASSERT_EQ(queue.stats().get_count, 3U) << "the other consumer did not receive while the victim held its message";

  victim->kill(SIGKILL);
  ASSERT_EQ(victim->wait(), 128 + SIGKILL);
  {
    const auto stats = domain.stats();
    const auto* info = find_process(stats, victim->pid());
    ASSERT_NE(info, nullptr) << "the dead victim's slot vanished before collect_garbage";
    EXPECT_FALSE(info->alive);
  }
  EXPECT_EQ(domain.collect_garbage(), 1U) << "exactly the victim is dead and unreclaimed";
  EXPECT_EQ(find_process(domain.stats(), victim->pid()), nullptr);

  for (std::uint64_t seq = 3; seq <= 4; ++seq) ASSERT_TRUE(queue.put(stamped(1, seq, stamped_size(1, seq))));
  ASSERT_EQ(other->wait(), 0);
  std::vector<std::string> expected;
  for (std::uint64_t seq = 1; seq <= 4; ++seq) {
    expected.push_back("1 " + std::to_string(seq) + " " + std::to_string(stamped_size(1, seq)));
  }
  EXPECT_EQ(read_lines(file("other")), expected);

  // The victim's sample (and anything else it held) is back; the other consumer
  // exited normally and let go of its own.
  EXPECT_EQ(heap_use(domain), before);
}

TEST_F(MultiProcess, KilledProducerHoldingALoanIsReclaimed) {
  constexpr std::size_t kBig = std::size_t{64} << 20;
  auto domain = open_domain();
  auto queue = make_queue(8);
  Unlinker cleanup{queue};
  const HeapUse before = settled_heap_use(domain, queue);

  auto holder = start_peer({"hold-loan", queue.name(), std::to_string(kBig), file("holder-ready")});
  ASSERT_EQ(wait_for_ready(file("holder-ready"), *holder), std::to_string(kBig));
  EXPECT_GE(heap_use(domain).bytes, before.bytes + kBig) << "the loan is not counted";

  holder->kill(SIGKILL);
  ASSERT_EQ(holder->wait(), 128 + SIGKILL);
  EXPECT_EQ(domain.collect_garbage(), 1U);
  EXPECT_EQ(heap_use(domain), before) << "the dead producer's loan was not reclaimed";
  EXPECT_EQ(queue.size(), 0U) << "an unsent loan must never reach the queue";

  // The queue still works for others, big messages included.
  auto consumer = start_peer({"consume-sizes", queue.name(), file("received"), "3"});
  ASSERT_EQ(run_peer({"produce-sizes", queue.name(), file("sent"), "100", "5000", std::to_string(kBig) + ":loan"}), 0);
  ASSERT_EQ(consumer->wait(), 0);
  const auto sent = read_lines(file("sent"));
  const auto received = read_lines(file("received"));
  ASSERT_EQ(sent.size(), 3U);
  ASSERT_EQ(received.size(), 3U);
  for (std::size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(received[i].substr(0, received[i].rfind(' ')), sent[i]) << "message " << i;
  }
  EXPECT_EQ(heap_use(domain), before);
}

// --- 5. timeouts --------------------------------------------------------------------

TEST_F(MultiProcess, GetOnAnEmptyQueueTimesOut) {
  auto queue = make_queue(4);
  Unlinker cleanup{queue};
  // The peer also checks that it waited at least the timeout.
  EXPECT_EQ(run_peer({"get-expect", queue.name(), "Timeout", "200"}), 0);
  EXPECT_EQ(run_peer({"get-expect", queue.name(), "Empty", "0"}), 0);
  // The queue is unharmed: a message put now is received by a peer.
  ASSERT_TRUE(queue.put(stamped(2, 0, 100)));
  EXPECT_EQ(run_peer({"get-expect", queue.name(), "ok", "10000"}), 0);
}

TEST_F(MultiProcess, PutOnAFullQueueTimesOut) {
  auto domain = open_domain();
  auto queue = make_queue(2);
  Unlinker cleanup{queue};
  const HeapUse before = settled_heap_use(domain, queue);
  ASSERT_TRUE(queue.put(stamped(3, 0, 100)));   // inline
  ASSERT_TRUE(queue.put(stamped(3, 1, 5000)));  // a block
  const HeapUse full = heap_use(domain);

  EXPECT_EQ(run_peer({"put-expect", queue.name(), "16", "Timeout", "200"}), 0);
  EXPECT_EQ(run_peer({"put-expect", queue.name(), "5000", "Timeout", "200"}), 0);  // its block must be freed
  EXPECT_EQ(run_peer({"put-expect", queue.name(), "16", "Full", "0"}), 0);
  EXPECT_EQ(heap_use(domain), full) << "a timed-out put left memory behind";

  // Nothing was added or lost: the two original messages, in order.
  ASSERT_EQ(queue.size(), 2U);
  for (std::uint64_t seq = 0; seq < 2; ++seq) {
    auto sample = queue.try_get();
    ASSERT_TRUE(sample) << sample.error().message;
    const auto expected = stamped(3, seq, seq == 0 ? 100 : 5000);
    EXPECT_TRUE(std::ranges::equal(sample->bytes(), expected)) << "message " << seq;
  }
  auto extra = queue.try_get();
  ASSERT_FALSE(extra);
  EXPECT_EQ(extra.error().code, GetError::Empty);
  EXPECT_EQ(heap_use(domain), before);
}

// --- 6. wake-ups: unlink across processes, close within one -------------------------------

TEST_F(MultiProcess, UnlinkWakesPeersBlockedInGet) {
  auto queue = make_queue(4);
  const std::string name = queue.name();
  Unlinker cleanup{queue};
  QueueFile queue_file(name);
  ASSERT_TRUE(queue_file.valid());

  auto first = start_peer({"get-expect", name, "Unlinked", "-1"});
  auto second = start_peer({"get-expect", name, "Unlinked", "-1"});
  // Both are asleep in get() (or about to re-check before sleeping).
  ASSERT_TRUE(wait_until([&] {
    return queue_file.header().consumers_waiting.load() >= 2 || hakobu::test::has_exited(first->pid()) ||
           hakobu::test::has_exited(second->pid());
  }));
  ASSERT_FALSE(hakobu::test::has_exited(first->pid()) || hakobu::test::has_exited(second->pid()))
      << "a peer ended instead of waiting";
  ASSERT_TRUE(queue.unlink());
  EXPECT_EQ(first->wait(), 0);
  EXPECT_EQ(second->wait(), 0);
  EXPECT_EQ(run_peer({"open", name, "attach", "NotFound"}), 0) << "an unlinked name must be gone";
}

TEST_F(MultiProcess, UnlinkWakesAPeerBlockedInPut) {
  auto domain = open_domain();
  auto queue = make_queue(1);
  const std::string name = queue.name();
  Unlinker cleanup{queue};
  const HeapUse before = settled_heap_use(domain, queue);
  QueueFile queue_file(name);
  ASSERT_TRUE(queue_file.valid());
  ASSERT_TRUE(queue.put(stamped(4, 0, 1000)));  // full now, with a block in it

  auto blocked = start_peer({"put-expect", name, "16", "Unlinked", "-1"});
  ASSERT_TRUE(wait_until(
      [&] { return queue_file.header().producers_waiting.load() >= 1 || hakobu::test::has_exited(blocked->pid()); }));
  ASSERT_FALSE(hakobu::test::has_exited(blocked->pid())) << "the peer ended instead of waiting: " << blocked->wait();
  ASSERT_TRUE(queue.unlink());
  EXPECT_EQ(blocked->wait(), 0);

  // The message still queued is freed when the last process lets go.
  queue = Queue();
  EXPECT_EQ(heap_use(domain), before) << "the unlinked queue's message was not freed";
}

TEST_F(MultiProcess, CloseWakesOnlyTheClosingProcessesWaiters) {
  auto creator = make_queue(4);
  const std::string name = creator.name();
  Unlinker cleanup{creator};
  QueueFile queue_file(name);
  ASSERT_TRUE(queue_file.valid());

  // A peer waits for a message on the same queue; our close must not wake it.
  auto peer = start_peer({"get-expect", name, "ok", "-1"});
  ASSERT_TRUE(wait_until(
      [&] { return queue_file.header().consumers_waiting.load() >= 1 || hakobu::test::has_exited(peer->pid()); }));
  ASSERT_FALSE(hakobu::test::has_exited(peer->pid())) << "the peer ended instead of waiting: " << peer->wait();

  auto handle = Queue::attach(name);
  ASSERT_TRUE(handle) << handle.error().message;
  std::atomic<bool> done{false};
  std::optional<GetError> outcome;
  std::thread waiter([&] {
    auto sample = handle->get();
    if (!sample) outcome = sample.error().code;
    done = true;
  });
  const bool waiting = wait_until([&] { return queue_file.header().consumers_waiting.load() >= 2; });
  handle->close();
  const bool woken = wait_until([&] { return done.load(); });
  if (!woken) {
    (void)creator.put(stamped(5, 99, 100));  // unstick the thread so the test can end
  }
  waiter.join();
  EXPECT_TRUE(waiting) << "the thread never waited";
  ASSERT_TRUE(woken) << "close() did not wake the thread blocked in get()";
  ASSERT_TRUE(outcome.has_value()) << "the closed handle received a message";
  EXPECT_EQ(*outcome, GetError::Closed);

  // The peer is still waiting, and receives the next message.
  ASSERT_TRUE(creator.put(stamped(5, 0, 100)));
  EXPECT_EQ(peer->wait(), 0) << "the peer was woken by another process's close()";
  EXPECT_EQ(creator.size(), 0U);
}

// --- 7. names ---------------------------------------------------------------------

TEST_F(MultiProcess, InvalidNamesAreRejected) {
  const std::vector<std::string> bad = {"", "a/b", "..", ".hidden", std::string(65, 'q'), "-dash", "a b", "x..y"};
  for (const auto& name : bad) {
    auto queue = Queue::open(name);
    ASSERT_FALSE(queue) << "'" << name << "' was accepted";
    EXPECT_EQ(queue.error().code, OpenError::InvalidName) << "'" << name << "'";
    EXPECT_FALSE(queue.error().message.empty());
    EXPECT_EQ(run_peer({"open", name, "either", "InvalidName"}), 0) << "'" << name << "'";
  }
  // The longest valid name works.
  std::string longest = unique_name("long");
  longest.resize(64, 'x');
  auto queue = Queue::create(longest);
  ASSERT_TRUE(queue) << queue.error().message;
  EXPECT_EQ(run_peer({"open", longest, "attach", "ok"}), 0);
  EXPECT_TRUE(queue->unlink());
}

TEST_F(MultiProcess, ConcurrentCreateOrAttachOpensOneQueue) {
  // Several processes open a fresh name at the same moment: exactly one
  // creates it, every other attaches — none sees a half-built queue.
  constexpr int kRounds = 15;
  constexpr int kRacers = 4;
  auto domain = open_domain();  // the race is about the queue, not the domain
  for (int round = 0; round < kRounds; ++round) {
    const std::string name = unique_name("race");
    const std::string go = file("go" + std::to_string(round));
    std::vector<std::unique_ptr<Process>> racers;
    for (int r = 0; r < kRacers; ++r) {
      racers.push_back(
          start_peer({"race-open", name, go, file("r" + std::to_string(round) + "-" + std::to_string(r))}));
    }
    std::this_thread::sleep_for(20ms);  // let them all reach the starting line (no assertion rests on it)
    std::ofstream(go).put('\n');
    int created = 0;
    for (int r = 0; r < kRacers; ++r) {
      EXPECT_EQ(racers[static_cast<std::size_t>(r)]->wait(), 0) << "round " << round;
      const auto lines = read_lines(file("r" + std::to_string(round) + "-" + std::to_string(r)));
      const std::string outcome = lines.empty() ? "(nothing)" : lines.front();
      EXPECT_TRUE(outcome == "created" || outcome == "attached") << "round " << round << ": " << outcome;
      created += outcome == "created" ? 1 : 0;
    }
    EXPECT_EQ(created, 1) << "round " << round;
    EXPECT_TRUE(Queue::remove(name)) << "round " << round;  // its creator has gone: the administrative remove
  }
}

TEST_F(MultiProcess, AttachToAMissingNameIsNotFound) {
  EXPECT_EQ(run_peer({"open", unique_name("missing"), "attach", "NotFound"}), 0);
}

TEST_F(MultiProcess, CreateExclusiveOfATakenNameIsAlreadyExists) {
  auto queue = make_queue(4);
  Unlinker cleanup{queue};
  EXPECT_EQ(run_peer({"open", queue.name(), "exclusive", "AlreadyExists"}), 0);
  EXPECT_EQ(run_peer({"open", queue.name(), "attach", "ok"}), 0);
}

TEST_F(MultiProcess, OnlyTheCreatorUnlinks) {
  auto queue = make_queue(4);
  const std::string name = queue.name();
  Unlinker cleanup{queue};
  EXPECT_EQ(run_peer({"unlink", name, "NotCreator"}), 0);
  {
    auto attached = Queue::attach(name);  // a second handle of this process is no creator either
    ASSERT_TRUE(attached) << attached.error().message;
    auto removed = attached->unlink();
    ASSERT_FALSE(removed);
    EXPECT_EQ(removed.error().code, hakobu::UnlinkError::NotCreator);
  }
  // The name survived the attempts and the queue works.
  ASSERT_TRUE(queue.put(stamped(6, 0, 300)));
  EXPECT_EQ(run_peer({"get-expect", name, "ok", "10000"}), 0);
  EXPECT_TRUE(queue.unlink());
  EXPECT_EQ(run_peer({"open", name, "attach", "NotFound"}), 0);
}

// --- 8. corrupted shared memory --------------------------------------------------------

TEST_F(MultiProcess, CorruptedDescriptorsAreDroppedAndTheQueueGoesOn) {
  namespace d = hakobu::detail;
  auto domain = open_domain();
  auto queue = make_queue(16);
  Unlinker cleanup{queue};
  const HeapUse before = settled_heap_use(domain, queue);
  QueueFile queue_file(queue.name());
  ASSERT_TRUE(queue_file.valid());

  // A real block this process keeps: corrupted descriptors point at or into it.
  const auto held_content = stamped(0, 100, 1000);
  ASSERT_TRUE(queue.put(held_content));
  auto held = queue.try_get();
  ASSERT_TRUE(held && held->in_shared_memory());
  const std::uint64_t block = held->block_offset();
  std::memset(held->bytes().data(), 0, 64);  // what lies at block + 64: no block header

  struct Message {
    std::size_t size;
    std::function<void(d::SlotHeader&)> corrupt;  // empty: a good message
  };
  const std::vector<Message> messages = {
      {100, [](d::SlotHeader& s) { s.block = std::uint64_t{1} << 41; }},  // beyond the heap's capacity
      {100, {}},
      {100, [](d::SlotHeader& s) { s.length = std::uint64_t{1} << 40; }},  // inline, huge length
      {1000, {}},
      {100, [](d::SlotHeader& s) { s.length = hakobu::kMaxInlineBytes + 1; }},  // inline, one too long
      {100, [&](d::SlotHeader& s) { s.block = block + 8; }},                    // misaligned
      {100, [](d::SlotHeader& s) { s.kind = 9; }},                              // no such kind
      {24, {}},
      {100, [](d::SlotHeader& s) { s.block = std::uint64_t{1} << 38; }},  // past the end of the heap file
      {100, [](d::SlotHeader& s) { s.block = ~std::uint64_t{63}; }},      // offset + size would overflow
      {100,
       [&](d::SlotHeader& s) {  // a real block, a length beyond it
         s.block = block;
         s.length = std::uint64_t{1} << 30;
       }},
      {100, [&](d::SlotHeader& s) { s.block = block + 64; }},  // aligned, in the file, not a block
      {5000, {}},
      {224, {}},
  };
  std::vector<std::string> expected;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto content = stamped(7, i, messages[i].size);
    const std::uint64_t position = queue_file.header().enqueue_pos.load();
    ASSERT_TRUE(queue.put(content));
    d::SlotHeader& slot = queue_file.slot(position);
    const std::uint64_t control = slot.control.load();
    ASSERT_EQ(d::control_state(control), d::SlotState::Full);
    ASSERT_EQ(d::control_position(control), position);
    if (messages[i].corrupt) {
      messages[i].corrupt(slot);
      expected.push_back("err Corrupt");
    } else {
      expected.push_back("ok " + std::to_string(content.size()) + " " + std::to_string(hash_bytes(content)));
    }
  }

  ASSERT_EQ(run_peer({"get-report", queue.name(), std::to_string(messages.size()), file("report")}), 0)
      << "the consumer crashed or failed";
  EXPECT_EQ(read_lines(file("report")), expected);
  EXPECT_EQ(queue.size(), 0U);

  // No corrupted descriptor touched the block it pointed at.
  EXPECT_TRUE(std::ranges::equal(held->bytes().subspan(64), std::span(held_content).subspan(64)));
  held->reset();
  EXPECT_EQ(heap_use(domain), before);
}

TEST_F(MultiProcess, CorruptedQueueHeaderFailsAttach) {
  auto queue = make_queue(8);
  const std::string name = queue.name();
  Unlinker cleanup{queue};
  QueueFile queue_file(name);
  ASSERT_TRUE(queue_file.valid());
  auto& header = queue_file.header();
  const auto original_magic = header.magic.load();
  const auto original_version = header.layout_version;
  const auto original_capacity = header.capacity;
  const auto original_slot_bytes = header.slot_bytes;
  const auto original_file_bytes = header.file_bytes;
  const auto original_inline = header.inline_capacity;
  const auto restore = [&] {
    header.magic.store(original_magic);
    header.layout_version = original_version;
    header.capacity = original_capacity;
    header.slot_bytes = original_slot_bytes;
    header.file_bytes = original_file_bytes;
    header.inline_capacity = original_inline;
  };

  struct Damage {
    const char* what;
    std::function<void()> apply;
    const char* expect;
  };
  const std::vector<Damage> damages = {
      {"bad magic", [&] { header.magic.store(0x1234); }, "Corrupt"},
      {"another layout version", [&] { header.layout_version = 99; }, "Incompatible"},
      {"capacity doubled", [&] { header.capacity = original_capacity * 2; }, "Corrupt"},
      {"capacity and size doubled beyond the file",
       [&] {
         header.capacity = original_capacity * 2;
         header.file_bytes = sizeof(hakobu::detail::QueueHeader) + header.capacity * original_slot_bytes;
       },
       "Corrupt"},
      {"capacity not a power of two", [&] { header.capacity = 3; }, "Corrupt"},
      {"capacity zero", [&] { header.capacity = 0; }, "Corrupt"},
      {"capacity huge", [&] { header.capacity = std::uint64_t{1} << 40; }, "Corrupt"},
      {"slot size not a multiple of 64", [&] { header.slot_bytes = original_slot_bytes + 8; }, "Corrupt"},
      {"slot size below a slot header", [&] { header.slot_bytes = 16; }, "Corrupt"},
      {"inline capacity beyond the slot", [&] { header.inline_capacity = 1000; }, "Corrupt"},
      {"file size off by a line", [&] { header.file_bytes = original_file_bytes + 64; }, "Corrupt"},
  };
  ASSERT_EQ(run_peer({"open", name, "attach", "ok"}), 0) << "the undamaged queue must open";
  for (const auto& damage : damages) {
    damage.apply();
    EXPECT_EQ(run_peer({"open", name, "attach", damage.expect}), 0) << damage.what;
    EXPECT_EQ(run_peer({"open", name, "either", damage.expect}), 0) << damage.what << " (create-or-attach)";
    restore();
  }
  // Repaired, it opens again and works.
  ASSERT_EQ(run_peer({"open", name, "attach", "ok"}), 0);
  ASSERT_TRUE(queue.put(stamped(8, 0, 64)));
  EXPECT_EQ(run_peer({"get-expect", name, "ok", "10000"}), 0);
}

TEST_F(MultiProcess, DamagedQueueFileFailsAttachAndCanBeRemoved) {
  // Files as a creator that died half-way would leave them: too short for a
  // header, and header-sized but never initialized (magic 0).
  auto domain = open_domain();  // keeps the domain's files while the fake queues exist
  for (const std::size_t bytes : {std::size_t{10}, sizeof(hakobu::detail::QueueHeader) + 4096}) {
    const std::string name = unique_name("damaged");
    const std::string path = "/dev/shm/hakobu:" + hakobu::test::domain() + ":q:" + name;
    {
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      ASSERT_GE(fd, 0) << path;
      EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);
      ::close(fd);
    }
    EXPECT_EQ(run_peer({"open", name, "attach", "Corrupt"}), 0) << bytes << " bytes";
    EXPECT_EQ(run_peer({"open", name, "either", "Corrupt"}), 0) << bytes << " bytes";
    EXPECT_TRUE(Queue::remove(name)) << "the administrative remove must clear a damaged queue";
    EXPECT_FALSE(std::filesystem::exists(path));
    EXPECT_EQ(run_peer({"open", name, "attach", "NotFound"}), 0);
  }
}

TEST_F(MultiProcess, SlotsClaimedByDeadProcessesAreRepairedAround) {
  // A kill cannot be timed to land between a claim and its publication, so the
  // claim a dead process would leave is written into the slot directly. Its
  // token names a process-table slot no live process holds.
  namespace d = hakobu::detail;
  {
    // A producer died after claiming slot p: consumers must skip it.
    auto queue = make_queue(4);
    Unlinker cleanup{queue};
    QueueFile queue_file(queue.name());
    ASSERT_TRUE(queue_file.valid());
    queue_file.plant_dead_claim(d::SlotState::Writing, true);
    const auto after = stamped(9, 1, 100);
    ASSERT_TRUE(queue.put(after));
    ASSERT_EQ(run_peer({"get-report", queue.name(), "1", file("after-writer")}), 0);
    EXPECT_EQ(read_lines(file("after-writer")),
              std::vector<std::string>{"ok 100 " + std::to_string(hash_bytes(after))});
    EXPECT_EQ(queue.size(), 0U);
  }
  {
    // A consumer died after claiming slot p: the message behind it is received,
    // and a producer waiting for that slot gets it back.
    auto queue = make_queue(2);
    Unlinker cleanup{queue};
    QueueFile queue_file(queue.name());
    ASSERT_TRUE(queue_file.valid());
    ASSERT_TRUE(queue.put(stamped(9, 2, 100)));  // the message the dead consumer took
    const auto behind = stamped(9, 3, 100);
    ASSERT_TRUE(queue.put(behind));
    queue_file.plant_dead_claim(d::SlotState::Reading, true);
    ASSERT_EQ(run_peer({"get-report", queue.name(), "1", file("after-reader")}), 0);
    EXPECT_EQ(read_lines(file("after-reader")),
              std::vector<std::string>{"ok 100 " + std::to_string(hash_bytes(behind))});
    // The only free-to-be slot is the dead consumer's: the put must repair it.
    EXPECT_EQ(run_peer({"put-expect", queue.name(), "100", "ok", "-1"}), 0);
    auto sample = queue.try_get();
    ASSERT_TRUE(sample) << sample.error().message;
    EXPECT_EQ(sample->size(), 100U);
    EXPECT_EQ(queue.size(), 0U);
  }
}

TEST_F(MultiProcess, ClaimersThatDiedBeforeAdvancingThePositionDoNotWedgeTheQueue) {
  // As above, but the dead process claimed the slot and died before it moved
  // the position hint on: whoever comes next must help the hint past it.
  namespace d = hakobu::detail;
  {
    auto queue = make_queue(4);
    Unlinker cleanup{queue};
    QueueFile queue_file(queue.name());
    ASSERT_TRUE(queue_file.valid());
    queue_file.plant_dead_claim(d::SlotState::Writing, false);
    // A consumer repairs the claim into a tombstone; producers must then move on.
    EXPECT_EQ(run_peer({"get-expect", queue.name(), "Timeout", "200"}), 0);
    const auto after = stamped(9, 4, 100);
    ASSERT_TRUE(queue.put(after, std::chrono::seconds(5)));
    ASSERT_EQ(run_peer({"get-report", queue.name(), "1", file("after-stuck-writer")}), 0);
    EXPECT_EQ(read_lines(file("after-stuck-writer")),
              std::vector<std::string>{"ok 100 " + std::to_string(hash_bytes(after))});
  }
  {
    auto queue = make_queue(2);
    Unlinker cleanup{queue};
    QueueFile queue_file(queue.name());
    ASSERT_TRUE(queue_file.valid());
    ASSERT_TRUE(queue.put(stamped(9, 5, 100)));
    queue_file.plant_dead_claim(d::SlotState::Reading, false);
    ASSERT_TRUE(queue.put(stamped(9, 6, 100)));
    // A producer repairs the dead read; consumers must then move on.
    EXPECT_EQ(run_peer({"put-expect", queue.name(), "100", "ok", "-1"}), 0);
    auto first = queue.get(std::chrono::seconds(5));
    ASSERT_TRUE(first) << first.error().message;
    EXPECT_EQ(first->size(), 100U);
  }
}

TEST_F(MultiProcess, PollersAloneRepairADeadClaim) {
  // Nobody blocks: only non-blocking calls must still get past a dead claim.
  namespace d = hakobu::detail;
  auto queue = make_queue(4);
  Unlinker cleanup{queue};
  QueueFile queue_file(queue.name());
  ASSERT_TRUE(queue_file.valid());
  queue_file.plant_dead_claim(d::SlotState::Writing, true);
  ASSERT_TRUE(queue.try_put(stamped(9, 7, 100)));
  bool received = false;
  for (int i = 0; i < 10'000 && !received; ++i) received = queue.try_get().has_value();
  EXPECT_TRUE(received) << "polling alone never got past the dead claim";
}

// --- 9. processes that exit without closing ------------------------------------------------

TEST_F(MultiProcess, ProcessesExitingWithoutClosingLoseNothing) {
  constexpr std::uint64_t kCount = 30;
  auto domain = open_domain();
  auto queue = make_queue(64);
  Unlinker cleanup{queue};
  const HeapUse before = settled_heap_use(domain, queue);

  // An onlooker that only attaches, and two producers; none of them closes:
  // std::exit() leaves the handles open, _exit() skips every destructor.
  EXPECT_EQ(run_peer({"open", queue.name(), "attach", "ok", "--exit=_exit"}), 0);
  auto first = start_peer({"produce", queue.name(), "1", std::to_string(kCount), "--exit=exit"});
  auto second = start_peer({"produce", queue.name(), "2", std::to_string(kCount), "--exit=_exit"});
  ASSERT_EQ(first->wait(), 0);
  ASSERT_EQ(second->wait(), 0);
  EXPECT_EQ(queue.size(), 2 * kCount);

  ASSERT_EQ(run_peer({"consume", queue.name(), file("received"), std::to_string(2 * kCount)}), 0);
  std::map<std::uint32_t, std::uint64_t> next_seq;
  for (const auto& line : read_lines(file("received"))) {
    std::istringstream fields(line);
    std::uint32_t producer = 0;
    std::uint64_t seq = 0;
    ASSERT_TRUE(fields >> producer >> seq) << line;
    EXPECT_EQ(seq, next_seq[producer]++) << "producer " << producer << "'s messages out of order or missing";
  }
  EXPECT_EQ(next_seq[1], kCount);
  EXPECT_EQ(next_seq[2], kCount);
  // The producers exited without closing their handles: to the queue they died,
  // so once it is drained the stream ends as one whose senders were lost.
  auto extra = queue.try_get();
  ASSERT_FALSE(extra);
  EXPECT_EQ(extra.error().code, GetError::SendersLost);

  // Whatever the vanished processes held is reclaimed (by the consumer's
  // attach or here); only this process is left in the table.
  domain.collect_garbage();
  EXPECT_EQ(heap_use(domain), before);
  const auto stats = domain.stats();
  ASSERT_EQ(stats.processes.size(), 1U);
  EXPECT_EQ(stats.processes.front().pid, ::getpid());
}

}  // namespace
