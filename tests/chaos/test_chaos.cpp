// hakobu chaos tests — the supervisor.
//
// Runs producers, forwarders and consumers (hakobu_chaos_worker, started with
// posix_spawn) on small queues, kills them and starts replacements, and then
// checks the crash-safety promises (README, "Crash safety" and "Known limits"):
//   * survivors keep going: every worker left ends, nobody hangs (watchdogs);
//   * nothing corrupt: every content's stamp, length and checksum verify;
//   * nothing delivered twice, across the logs of all consumers;
//   * nothing lost but what a dead process took: messages a producer saw
//     accepted and no consumer logged number at most the consumers and
//     forwarders that died;
//   * once every worker has exited and collect_garbage() has run, the heap
//     holds nothing beyond what a kill may leak, the queues are gone, and when
//     the supervisor lets go no file of the domain is left in /dev/shm.
//
// Tests:
//   Chaos.RandomKills*           SIGKILLs at random moments (HAKOBU_CHAOS_KILLS,
//                                HAKOBU_CHAOS_SECONDS), with and without forwarders;
//   KillPoints/KillPoint.*       one per kill point compiled into the library
//                                (found in src/ at configure time): a worker
//                                started with HAKOBU_KILL_AT=point:N dies there.
// Each test works in its own domain (chaos<pid>.<n>). Environment:
//   HAKOBU_CHAOS_KILLS    random kills per RandomKills test (default 100)
//   HAKOBU_CHAOS_SECONDS  over about how long they are spread (default 10)
//   HAKOBU_CHAOS_MESSAGES messages per producer (default 200)
//   HAKOBU_CHAOS_SEED     the random seed (default: from the clock; printed)
//   HAKOBU_CHAOS_WATCHDOG seconds any phase may take before it counts as a hang (default 300)
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "chaos_message.hpp"
#include "hakobu/hakobu.hpp"
#include "test_support.hpp"

namespace {

using namespace hakobu::chaos;  // NOLINT(google-build-using-namespace): the message format
using namespace std::chrono_literals;
using hakobu::test::Process;
using Clock = std::chrono::steady_clock;

/// The worker program: a private copy of the one built (main() makes it), so
/// that a rebuild during a long run cannot pull it away under a spawn.
std::string& worker_path() {
  static std::string path = HAKOBU_CHAOS_WORKER;
  return path;
}

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* text = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): the supervisor has no threads
  return text != nullptr && *text != '\0' ? std::stoull(text) : fallback;
}

/// The seed of this run: HAKOBU_CHAOS_SEED, or the clock (printed to reproduce).
std::uint64_t run_seed() {
  static const std::uint64_t seed =
      env_number("HAKOBU_CHAOS_SEED", static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()) ^ ::getpid());
  return seed;
}

/// Files of every domain whose name starts with `stem` (/dev/shm and hugetlbfs).
std::vector<std::string> files_with_prefix(const std::string& stem) {
  std::vector<std::string> out;
  std::vector<std::string> directories = hakobu::platform::hugetlbfs_mounts();
  directories.emplace_back("/dev/shm");
  for (const auto& directory : directories) {
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(directory, ignored)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("hakobu:" + stem, 0) == 0) out.push_back(directory + "/" + name);
    }
  }
  return out;
}

std::string describe_exit(int code) {
  switch (code) {
    case -1: return "hung (the watchdog killed it)";
    case kExitOk: return "exited 0";
    case kExitUsage: return "bad usage (1)";
    case kExitOpenFailed: return "could not open its queue (2)";
    case kExitOperationFailed: return "an operation failed (3)";
    case kExitCorrupt: return "received a CORRUPT message (4)";
    case kExitCoreCorrupt: return "get() reported GetError::Corrupt (5)";
    case kExitLogFailed: return "could not write its log (6)";
    case kExitKillPointMissed: return "never reached its kill point (7)";
    case 128 + SIGKILL: return "killed by SIGKILL";
    case 128 + SIGALRM: return "hung (its alarm fired)";
    default: return code > 128 ? "killed by signal " + std::to_string(code - 128) : "exited " + std::to_string(code);
  }
}

enum class Role : std::uint8_t { Producer, Forwarder, Consumer };
const char* role_name(Role role) {
  switch (role) {
    case Role::Producer: return "producer";
    case Role::Forwarder: return "forwarder";
    case Role::Consumer: return "consumer";
  }
  return "?";
}

/// Where an injected kill happens.
enum class Stage : std::uint8_t {
  None,      ///< no injected kill
  Workload,  ///< a producer, forwarder or consumer of the workload
  Reclaim,   ///< a process reclaiming a dead one, before the workload
  Detach,    ///< the last process leaving the domain, after the workload
  Store,     ///< a store's publisher, before the workload; another then checks and removes the store
};

struct Scenario {
  int producers = 3;
  int forwarders = 2;  // 0: producers and consumers share one queue
  int consumers = 3;
  std::uint64_t per_producer = 200;
  std::uint64_t kills = 0;  // random SIGKILLs
  double seconds = 0;       // spread over about this long
  // An injected kill (HAKOBU_KILL_AT=point:n in one worker).
  Stage stage = Stage::None;
  std::string point;
  Role victim = Role::Producer;
  std::uint64_t n = 1;
  std::uint64_t allowed_leak = 0;  // blocks a kill there may leak
  // Random injected kills: this percentage of the workers started while the
  // chaos lasts get HAKOBU_KILL_AT=<one of these points>:<1..40>.
  std::uint64_t inject_percent = 0;
  std::vector<std::string> inject_points;
};

// A message of this workload holds at most one attachment, so "one message's
// blocks" (README, "Known limits") is at most two here.
constexpr std::uint64_t kMessageBlocks = 2;

/// Which worker is killed at a point, at which passes, and what it may leak.
struct PointPlan {
  Stage stage;
  Role victim;
  std::uint64_t max_n;         // N is drawn from 1..max_n
  std::uint64_t allowed_leak;  // blocks left after every process exited and collect_garbage ran
};

PointPlan plan_for(const std::string& point) {
  // allowed_leak: where the window holds a reference nobody else lists, the
  // README's "a kill can leak a block" — the block of the message in flight
  // (with its attachment), the fresh loan, the counted attachment.
  const std::map<std::string, PointPlan> plans = {
      {"put.claimed", {Stage::Workload, Role::Producer, 100, 0}},
      {"put.filled", {Stage::Workload, Role::Producer, 100, kMessageBlocks}},
      {"get.claimed", {Stage::Workload, Role::Consumer, 60, kMessageBlocks}},
      {"get.listed", {Stage::Workload, Role::Consumer, 30, 0}},
      {"loan.allocated", {Stage::Workload, Role::Producer, 60, 1}},
      {"attach.counted", {Stage::Workload, Role::Forwarder, 30, 1}},
      {"release.unlisted", {Stage::Workload, Role::Consumer, 30, kMessageBlocks}},
      {"free.detached", {Stage::Workload, Role::Consumer, 30, kMessageBlocks}},
      {"carve.reserved", {Stage::Workload, Role::Producer, 3, 0}},
      // A dead holder of 4 loans is reclaimed by a process killed at its Nth entry.
      {"reclaim.dropped", {Stage::Reclaim, Role::Producer, 4, 1}},
      {"detach.heap_removed", {Stage::Detach, Role::Producer, 1, 0}},
      // A store's publisher (40 rounds over 4 keys): the new record, the
      // displaced one, or a reader's reference may leak; a claim leaks nothing.
      {"store.claimed", {Stage::Store, Role::Producer, 4, 0}},
      {"store.put.unlisted", {Stage::Store, Role::Producer, 40, 1}},
      {"store.put.swapped", {Stage::Store, Role::Producer, 40, 1}},
      {"store.get.counted", {Stage::Store, Role::Producer, 40, 1}},
      {"store.erase.swapped", {Stage::Store, Role::Producer, 13, 1}},
  };
  const auto found = plans.find(point);
  // A point added later: a producer at its first pass, and the general promise.
  return found != plans.end() ? found->second : PointPlan{Stage::Workload, Role::Producer, 1, 1};
}

struct Figures {
  std::uint64_t kills = 0;
  std::map<std::string, std::uint64_t> kills_by_role;
  std::uint64_t injected = 0;  // workers that died at their kill point
  std::map<std::string, std::uint64_t> injected_by_point;
  std::uint64_t started = 0;
  std::uint64_t sent = 0;        // puts producers saw accepted
  std::uint64_t received = 0;    // messages consumers logged
  std::uint64_t duplicates = 0;  // messages logged more than once
  std::uint64_t corrupt = 0;
  std::uint64_t lost = 0;       // accepted, never logged
  std::uint64_t in_flight = 0;  // logged, sent by a producer killed before it logged the put
  std::uint64_t phantom = 0;    // logged, never sent (no such producer or sequence number)
  std::uint64_t out_of_order = 0;
  std::uint64_t undrained = 0;  // messages left in a queue at the end
  std::uint64_t hangs = 0;
  std::uint64_t double_handed = 0;  // overlapping loans in the audit after the chaos
  std::uint64_t unexpected_exits = 0;
  std::uint64_t receiver_deaths = 0;  // consumers and forwarders that died
  std::uint64_t leaked_blocks = 0;
  std::uint64_t leaked_bytes = 0;
  std::uint64_t heap_used = 0;
  std::uint64_t files_left = 0;
  std::map<std::string, std::uint64_t> mix;  // how the received messages travelled

  [[nodiscard]] std::string summary() const {
    std::ostringstream out;
    out << "kills=" << kills;
    for (const auto& [role, count] : kills_by_role) out << " " << role << ":" << count;
    out << " injected=" << injected;
    for (const auto& [point, count] : injected_by_point) out << " " << point << ":" << count;
    out << " workers=" << started << " sent=" << sent << " received=" << received << " duplicates=" << duplicates
        << " corrupt=" << corrupt << " lost=" << lost << " in_flight=" << in_flight << " phantom=" << phantom
        << " out_of_order=" << out_of_order << " undrained=" << undrained << " hangs=" << hangs
        << " double_handed=" << double_handed << " unexpected_exits=" << unexpected_exits
        << " leaked_blocks=" << leaked_blocks << " leaked_bytes=" << leaked_bytes << " heap_used=" << heap_used
        << " files_left=" << files_left << " mix:";
    for (const auto& [way, count] : mix) out << " " << way << "=" << count;
    return out.str();
  }
};

struct Worker {
  Role role = Role::Producer;
  std::uint32_t id = 0;
  std::unique_ptr<Process> process;
  bool victim = false;  // the scenario's injected kill
  std::string kill_at;  // HAKOBU_KILL_AT it was started with
  bool killed = false;  // by the supervisor
};

struct ProducerInfo {
  std::string log;
  bool died = false;
};

/// Sets an environment variable for the lifetime of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);  // NOLINT(concurrency-mt-unsafe)
    if (old != nullptr) old_ = old;
    ::setenv(name, value.c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
    } else {
      ::unsetenv(name_);  // NOLINT(concurrency-mt-unsafe)
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

class ChaosRun {
 public:
  ChaosRun(Scenario scenario, std::uint64_t seed, const std::string& domain)
      : s_(std::move(scenario)), rng_(seed), domain_(domain), env_("HAKOBU_DOMAIN", domain) {
    static int counter = 0;
    dir_ = std::filesystem::temp_directory_path() /
           ("hakobu-chaos-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(dir_);
    watchdog_ = std::chrono::seconds(env_number("HAKOBU_CHAOS_WATCHDOG", 300));
  }
  ChaosRun(const ChaosRun&) = delete;
  ChaosRun& operator=(const ChaosRun&) = delete;
  ~ChaosRun() {
    kill_all();
    // After a failure part-way: remove what the run made, whatever state it is in.
    for (hakobu::Queue* queue : {&a_, &b_}) {
      if (queue->is_open()) (void)queue->unlink();
      *queue = hakobu::Queue();
    }
    domain_handle_.reset();
    const auto left = hakobu::test::files_of_domain(domain_);
    for (const auto& path : left) std::filesystem::remove(path);
    EXPECT_TRUE(left.empty()) << "files of domain " << domain_
                              << " were left (removed now): " << ::testing::PrintToString(left);
    std::error_code ignored;
    if (::testing::Test::HasFailure()) {
      std::cout << "[chaos] the workers' logs are kept in " << dir_.string() << "\n";
    } else {
      std::filesystem::remove_all(dir_, ignored);
    }
  }

  Figures figures;

  void run() {
    auto domain = hakobu::Domain::open();
    ASSERT_TRUE(domain) << domain.error().message;
    domain_handle_.emplace(std::move(domain).value());
    hakobu::QueueOptions options;
    options.capacity = 8;
    // This process sends the stop markers: a sender from the start, so that the
    // receivers never see the end of the stream while workers die and come back.
    options.sends = true;
    auto a = hakobu::Queue::create("a", options);
    ASSERT_TRUE(a) << a.error().message;
    a_ = std::move(a).value();
    if (s_.forwarders > 0) {
      auto b = hakobu::Queue::create("b", options);
      ASSERT_TRUE(b) << b.error().message;
      b_ = std::move(b).value();
    }
    if (s_.stage == Stage::Reclaim) reclaim_victim();
    if (s_.stage == Stage::Store) store_victim();
    if (::testing::Test::HasFatalFailure()) return;

    workload();
    if (::testing::Test::HasFatalFailure()) return;
    check_logs();
    leftovers();
    audit_heap(*domain_handle_);

    // Every worker has exited. Remove the queues; with the domain still held
    // (letting go would remove its files), reclaim and count what is left.
    EXPECT_TRUE(a_.unlink());
    a_ = hakobu::Queue();
    if (b_.is_open()) {
      EXPECT_TRUE(b_.unlink());
      b_ = hakobu::Queue();
    }
    check_heap(*domain_handle_);
    domain_handle_.reset();
    check_files("after the supervisor let go");

    if (s_.stage == Stage::Detach) detach_victim();
  }

 private:
  // --- workers ------------------------------------------------------------------------

  [[nodiscard]] hakobu::Queue& receive_queue() { return s_.forwarders > 0 ? b_ : a_; }
  [[nodiscard]] std::string receive_queue_name() const { return s_.forwarders > 0 ? "b" : "a"; }
  [[nodiscard]] std::string file(const std::string& name) const { return (dir_ / name).string(); }

  /// Starts a worker; `kill_at` sets HAKOBU_KILL_AT for it alone. Null (and a
  /// failure) if it cannot be started.
  std::unique_ptr<Process> spawn(const std::vector<std::string>& args, const std::string& kill_at = {}) {
    std::optional<ScopedEnv> env;
    if (!kill_at.empty()) env.emplace("HAKOBU_KILL_AT", kill_at);
    auto process = std::make_unique<Process>(worker_path(), args);
    if (process->pid() <= 0) {
      ADD_FAILURE() << "could not start " << worker_path();
      return nullptr;
    }
    ++figures.started;
    return process;
  }

  void start(Role role, bool victim = false) {
    Worker w;
    w.role = role;
    w.id = next_id_++;
    w.victim = victim;
    const std::string id = "--id=" + std::to_string(w.id);
    std::vector<std::string> args;
    switch (role) {
      case Role::Producer: {
        const std::string log = file("producer-" + std::to_string(w.id));
        producers_[w.id] = ProducerInfo{log, false};
        args = {"producer", "--queue=a", id, "--count=" + std::to_string(s_.per_producer), "--log=" + log};
        break;
      }
      case Role::Forwarder: args = {"forwarder", "--in=a", "--out=b", id}; break;
      case Role::Consumer: {
        const std::string log = file("consumer-" + std::to_string(w.id));
        consumer_logs_.push_back(log);
        args = {"consumer", "--queue=" + receive_queue_name(), id, "--log=" + log};
        break;
      }
    }
    if (victim) {
      w.kill_at = s_.point + ":" + std::to_string(s_.n);
      args.emplace_back("--report-missed=1");
    } else if (phase_ == Phase::Chaos && !s_.inject_points.empty() && rng_() % 100 < s_.inject_percent) {
      w.kill_at = s_.inject_points[rng_() % s_.inject_points.size()] + ":" + std::to_string(1 + rng_() % 40);
    }
    w.process = spawn(args, w.kill_at);
    if (w.process) workers_.push_back(std::move(w));
  }

  [[nodiscard]] std::size_t live(Role role) const {
    return static_cast<std::size_t>(
        std::count_if(workers_.begin(), workers_.end(), [&](const Worker& w) { return w.role == role; }));
  }

  void kill_all() {
    for (auto& w : workers_) {
      w.process->kill(SIGKILL);
      (void)w.process->wait();
    }
    workers_.clear();
  }

  enum class Phase : std::uint8_t { Chaos, Producers, Forwarders, Consumers, Done };

  void put_stop_marker(hakobu::Queue& queue) {
    std::vector<std::byte> marker(kStampBytes);
    write_content(marker, kStopProducer, markers_++);
    auto sent = queue.put(marker, watchdog_);
    if (!sent) {
      ++figures.hangs;
      ADD_FAILURE() << "putting a stop marker failed (a hang?): " << sent.error().message;
    }
  }

  void on_exit(Worker& w, int code) {
    const std::string who =
        std::string(role_name(w.role)) + " " + std::to_string(w.id) + " (pid " + std::to_string(w.process->pid()) + ")";
    const bool died = code == 128 + SIGKILL;
    if (!w.victim && !w.kill_at.empty() && code == kExitKillPointMissed) code = kExitOk;  // a random one, missed
    if (w.killed) {
      // Counted by random_kill.
    } else if (!w.kill_at.empty() && died) {
      ++figures.injected;
      const std::string point = w.kill_at.substr(0, w.kill_at.find(':'));
      ++figures.injected_by_point[point];
      injected_leak_allowed_ += plan_for(point).allowed_leak;
      if (w.victim) {
        victim_resolved_ = true;
        std::cout << "[chaos] " << who << " died at " << w.kill_at << "\n";
      }
    } else if (w.victim && code == kExitKillPointMissed) {
      victim_resolved_ = true;
      ADD_FAILURE() << who << " finished without reaching " << s_.point << ":" << s_.n
                    << " (choose a smaller N or another scenario for this point)";
    } else if (code == kExitOk) {
      const bool expected = w.role == Role::Producer || (w.role == Role::Forwarder && phase_ == Phase::Forwarders) ||
                            (w.role == Role::Consumer && phase_ == Phase::Consumers);
      if (!expected) {
        ++figures.unexpected_exits;
        ADD_FAILURE() << who << " exited 0 before it was told to stop";
      }
    } else {
      if (code == -1 || code == 128 + SIGALRM) ++figures.hangs;
      if (code == kExitCorrupt || code == kExitCoreCorrupt) ++figures.corrupt;
      ++figures.unexpected_exits;
      ADD_FAILURE() << who << " " << describe_exit(code) << " (its stderr is above)";
    }
    if (w.role == Role::Producer) producers_[w.id].died = died;
    if (w.role != Role::Producer && died) ++figures.receiver_deaths;

    // Replacements: receivers that died are replaced whenever; producers only
    // while the chaos lasts (a finished one too, so the traffic goes on).
    if (w.role == Role::Producer) {
      if (phase_ == Phase::Chaos) start(Role::Producer);
    } else if (died) {
      start(w.role);
      if ((w.role == Role::Forwarder && phase_ == Phase::Forwarders)) put_stop_marker(a_);
      if ((w.role == Role::Consumer && phase_ == Phase::Consumers)) put_stop_marker(receive_queue());
    }
  }

  void random_kill() {
    if (workers_.empty()) return;
    std::uniform_int_distribution<std::size_t> pick(0, workers_.size() - 1);
    const std::size_t i = pick(rng_);
    Worker w = std::move(workers_[i]);
    workers_.erase(workers_.begin() + static_cast<std::ptrdiff_t>(i));
    w.process->kill(SIGKILL);
    const int code = w.process->wait();
    // It may have exited on its own just before: then it was not killed.
    w.killed = code == 128 + SIGKILL;
    if (w.killed) {
      ++figures.kills;
      ++figures.kills_by_role[role_name(w.role)];
    }
    on_exit(w, code);
  }

  /// Reaps exited workers, starts replacements, kills at random while the chaos lasts.
  void pump() {
    for (std::size_t i = 0; i < workers_.size();) {
      if (!hakobu::test::has_exited(workers_[i].process->pid())) {
        ++i;
        continue;
      }
      Worker w = std::move(workers_[i]);
      workers_.erase(workers_.begin() + static_cast<std::ptrdiff_t>(i));
      const int code = w.process->wait();
      on_exit(w, code);
    }
    if (phase_ == Phase::Chaos && figures.kills < s_.kills && Clock::now() >= next_kill_) {
      random_kill();
      schedule_kill();
    }
  }

  void schedule_kill() {
    const double mean_ms = s_.kills > 0 ? s_.seconds * 1000.0 / static_cast<double>(s_.kills) : 0.0;
    std::uniform_real_distribution<double> gap(0.0, 2.0 * mean_ms);
    next_kill_ = Clock::now() + std::chrono::microseconds(static_cast<std::int64_t>(gap(rng_) * 1000.0));
  }

  /// Pumps until `done`; a watchdog turns a hang into a failure.
  bool pump_until(const std::function<bool()>& done, const std::string& what,
                  std::chrono::seconds planned = std::chrono::seconds(0)) {
    const auto deadline = Clock::now() + planned + watchdog_;
    while (!done()) {
      pump();
      if (Clock::now() > deadline) {
        ++figures.hangs;
        ADD_FAILURE() << what << " did not happen within " << watchdog_.count() << " s beyond its plan: a hang; "
                      << workers_.size() << " workers still running";
        kill_all();
        return false;
      }
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }

  void workload() {
    for (int i = 0; i < s_.consumers; ++i)
      start(Role::Consumer, s_.stage == Stage::Workload && s_.victim == Role::Consumer && i == 0);
    for (int i = 0; i < s_.forwarders; ++i)
      start(Role::Forwarder, s_.stage == Stage::Workload && s_.victim == Role::Forwarder && i == 0);
    for (int i = 0; i < s_.producers; ++i)
      start(Role::Producer, s_.stage == Stage::Workload && s_.victim == Role::Producer && i == 0);
    victim_resolved_ = s_.stage != Stage::Workload;
    schedule_kill();

    phase_ = Phase::Chaos;
    const std::chrono::seconds planned(static_cast<std::int64_t>(s_.seconds) + 1);
    if (!pump_until([&] { return figures.kills >= s_.kills && victim_resolved_; }, "the chaos phase", planned)) return;
    phase_ = Phase::Producers;
    if (!pump_until([&] { return live(Role::Producer) == 0; }, "every producer finishing")) return;
    if (s_.forwarders > 0) {
      phase_ = Phase::Forwarders;
      for (std::size_t i = live(Role::Forwarder); i > 0; --i) put_stop_marker(a_);
      if (!pump_until([&] { return live(Role::Forwarder) == 0; }, "every forwarder stopping")) return;
    }
    phase_ = Phase::Consumers;
    for (std::size_t i = live(Role::Consumer); i > 0; --i) put_stop_marker(receive_queue());
    if (!pump_until([&] { return live(Role::Consumer) == 0; }, "every consumer draining and stopping")) return;
    phase_ = Phase::Done;
  }

  // --- checks ------------------------------------------------------------------------

  /// Messages still queued: stop markers a dead receiver did not take are fine.
  void leftovers() {
    for (hakobu::Queue* queue : {&a_, &b_}) {
      if (!queue->is_open()) continue;
      for (;;) {
        auto sample = queue->try_get();
        if (!sample) {
          // Empty (this process still sends on it), or the end of a stream whose
          // other senders were killed: nothing is left either way.
          const auto code = sample.error().code;
          EXPECT_TRUE(code == hakobu::GetError::Empty || code == hakobu::GetError::SendersLost ||
                      code == hakobu::GetError::Ended)
              << sample.error().message;
          break;
        }
        std::string why;
        const auto stamp = sample->attachment_count() == 0 ? read_content(sample->bytes(), why) : std::nullopt;
        if (!stamp || stamp->producer != kStopProducer) ++figures.undrained;
      }
    }
    EXPECT_EQ(figures.undrained, 0U) << "messages were left in a queue after every consumer stopped";
  }

  void check_logs() {
    // What producers saw accepted.
    std::map<std::uint32_t, std::uint64_t> acked;
    for (const auto& [id, info] : producers_) {
      std::ifstream in(info.log, std::ios::binary);
      std::uint64_t seq = 0;
      std::uint64_t count = 0;
      while (
          in.read(reinterpret_cast<char*>(&seq), sizeof seq)) {  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
        EXPECT_EQ(seq, count) << "producer " << id << "'s log";
        ++count;
      }
      acked[id] = count;
      figures.sent += count;
    }
    // What consumers received.
    std::map<std::pair<std::uint32_t, std::uint64_t>, int> times;
    for (const auto& log : consumer_logs_) {
      std::ifstream in(log, std::ios::binary);
      Record r;
      std::map<std::uint32_t, std::uint64_t> next;              // per producer, at this consumer
      while (in.read(reinterpret_cast<char*>(&r), sizeof r)) {  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
        if (r.magic != kRecordMagic) {
          ADD_FAILURE() << log << ": a torn record";
          continue;
        }
        if ((r.flags & (kCorrupt | kCoreCorrupt)) != 0) {
          ++figures.corrupt;  // counted again if the worker's exit said so: both are failures
          ADD_FAILURE() << log << ": a corrupt message was received (record flags " << r.flags << ")";
          continue;
        }
        ++figures.received;
        ++figures.mix[(r.flags & kInShared) != 0 ? "shared" : "inline"];
        if ((r.flags & kArray) != 0) ++figures.mix["array"];
        if ((r.flags & kAttached) != 0) ++figures.mix["attached"];
        if ((r.flags & kForwarded) != 0) ++figures.mix["forwarded"];
        const auto found = acked.find(r.producer);
        if (found == acked.end() || r.seq >= s_.per_producer) {
          ++figures.phantom;
          ADD_FAILURE() << log << ": message " << r.producer << "/" << r.seq << " was never sent";
          continue;
        }
        if (r.seq >= found->second) {
          // Accepted but not logged by its producer: allowed once, for a producer killed right after the put.
          if (!producers_[r.producer].died || r.seq != found->second) {
            ++figures.phantom;
            ADD_FAILURE() << log << ": message " << r.producer << "/" << r.seq << " was received but its producer "
                          << "logged only " << found->second << " puts";
          } else {
            ++figures.in_flight;
          }
        }
        if (s_.forwarders == 0) {  // one hop: each consumer sees each producer's messages in order
          auto& expected = next[r.producer];
          if (r.seq < expected) ++figures.out_of_order;
          expected = r.seq + 1;
        }
        if (++times[{r.producer, r.seq}] == 2) {
          ++figures.duplicates;
          ADD_FAILURE() << "message " << r.producer << "/" << r.seq << " was delivered twice";
        }
      }
    }
    for (const auto& [id, count] : acked) {
      for (std::uint64_t seq = 0; seq < count; ++seq) figures.lost += times.count({id, seq}) == 0 ? 1 : 0;
    }
    EXPECT_EQ(figures.duplicates, 0U);
    EXPECT_EQ(figures.corrupt, 0U);
    EXPECT_EQ(figures.phantom, 0U);
    EXPECT_EQ(figures.out_of_order, 0U);
    // A consumer or forwarder holds at most one message at a time.
    EXPECT_LE(figures.lost, figures.receiver_deaths)
        << "messages accepted by the queue were lost beyond what dead consumers and forwarders held";
  }

  /// After the chaos, the heap hands out no block twice: a block freed twice
  /// sits twice in its free list and comes out twice. Many loans of every size
  /// class the workload used, checked for overlap, then released.
  void audit_heap(hakobu::Domain& domain) {
    std::vector<hakobu::Loan> loans;
    std::vector<std::pair<const std::byte*, const std::byte*>> ranges;
    for (std::size_t size = 256; size <= (std::size_t{4} << 20); size += size / 4) {
      const int count = size <= (std::size_t{64} << 10) ? 96 : 4;
      for (int i = 0; i < count; ++i) {
        auto loan = domain.loan(size);
        if (!loan) {
          ADD_FAILURE() << "a loan of " << size << " bytes failed after the chaos: " << loan.error().message;
          return;
        }
        ranges.emplace_back(loan->bytes().data(), loan->bytes().data() + loan->bytes().size());
        loans.push_back(std::move(loan).value());
      }
    }
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].first < ranges[i - 1].second) {
        ++figures.double_handed;
        ADD_FAILURE() << "the heap handed out overlapping blocks (a block freed twice?)";
      }
    }
  }

  void check_heap(hakobu::Domain& domain) {
    domain.collect_garbage();
    const auto stats = domain.stats();
    figures.leaked_blocks = stats.live_blocks;
    figures.leaked_bytes = stats.live_bytes;
    figures.heap_used = stats.heap_used;
    EXPECT_EQ(stats.named_objects, 0U) << "the queues were not removed";
    EXPECT_EQ(stats.processes.size(), 1U) << "processes other than the supervisor are still in the table";
    // A kill may leak one block (README, "Known limits"); nothing else may be left.
    // Random kills: one message's blocks each at most; injected ones what their point allows.
    const std::uint64_t allowed =
        s_.stage != Stage::None ? s_.allowed_leak : kMessageBlocks * figures.kills + injected_leak_allowed_;
    EXPECT_LE(stats.live_blocks, allowed) << "blocks left after every process exited and collect_garbage ran";
    if (stats.live_blocks == 0) {
      EXPECT_EQ(stats.live_bytes, 0U);
    }
  }

  void check_files(const std::string& when) {
    const auto left = hakobu::test::files_of_domain(domain_);
    figures.files_left += left.size();
    EXPECT_TRUE(left.empty()) << "files of domain " << domain_ << " left " << when << ": "
                              << ::testing::PrintToString(left);
    for (const auto& path : left) std::filesystem::remove(path);  // clean up for the next test
  }

  // --- injected kills outside the workload ---------------------------------------------------

  /// A holder dies with four loans; a process reclaiming it is killed at the
  /// point (reclaim.dropped:n). Collecting later must still leave at most the
  /// documented leak.
  void reclaim_victim() {
    const std::string ready = file("holder-ready");
    auto holder = spawn({"holder", "--queue=a", "--count=4", "--ready=" + ready});
    ASSERT_TRUE(holder);
    const auto deadline = Clock::now() + watchdog_;
    while (!std::filesystem::exists(ready) && !hakobu::test::has_exited(holder->pid()) && Clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_TRUE(std::filesystem::exists(ready)) << "the holder " << describe_exit(holder->wait());
    holder->kill(SIGKILL);
    ASSERT_EQ(holder->wait(), 128 + SIGKILL);
    auto gc = spawn({"gc"}, s_.point + ":" + std::to_string(s_.n));
    ASSERT_TRUE(gc);
    const int code = gc->wait(watchdog_);
    ASSERT_EQ(code, 128 + SIGKILL) << "the reclaiming process " << describe_exit(code);
    ++figures.injected;
    ++figures.injected_by_point[s_.point];
    std::cout << "[chaos] a process reclaiming a dead holder of 4 loans died at " << s_.point << ":" << s_.n << "\n";
  }

  /// A store's publisher dies at the point; a second publisher then finds
  /// every value whole, publishes over them and removes the store.
  void store_victim() {
    auto victim = spawn({"store", "--rounds=40", "--report-missed=1"}, s_.point + ":" + std::to_string(s_.n));
    ASSERT_TRUE(victim);
    const int code = victim->wait(watchdog_);
    ASSERT_EQ(code, 128 + SIGKILL) << "the store's publisher " << describe_exit(code);
    ++figures.injected;
    ++figures.injected_by_point[s_.point];
    std::cout << "[chaos] a store's publisher died at " << s_.point << ":" << s_.n << "\n";
    auto after = spawn({"store", "--rounds=12", "--unlink=1"});
    ASSERT_TRUE(after);
    const int after_code = after->wait(watchdog_);
    ASSERT_EQ(after_code, kExitOk) << "the store after the kill: " << describe_exit(after_code);
  }

  /// The last process out is killed between removing the heap and the
  /// registry: the domain must open again, and go away cleanly after.
  void detach_victim() {
    auto touch = spawn({"touch"}, s_.point + ":" + std::to_string(s_.n));
    ASSERT_TRUE(touch);
    const int code = touch->wait(watchdog_);
    ASSERT_EQ(code, 128 + SIGKILL) << "the last process " << describe_exit(code);
    ++figures.injected;
    ++figures.injected_by_point[s_.point];
    std::cout << "[chaos] the last process out died at " << s_.point << ":" << s_.n
              << "; left: " << ::testing::PrintToString(hakobu::test::files_of_domain(domain_)) << "\n";
    {
      auto domain = hakobu::Domain::open();
      EXPECT_TRUE(domain) << "the domain is bricked after a kill at " << s_.point << ": "
                          << hakobu::to_string(domain.error().code) << ": " << domain.error().message;
      if (domain) {
        domain->collect_garbage();
        const auto stats = domain->stats();
        EXPECT_EQ(stats.live_blocks, 0U);
        EXPECT_EQ(stats.processes.size(), 1U);
        // It works: a queue round trip.
        auto queue = hakobu::Queue::create("after", {});
        EXPECT_TRUE(queue) << queue.error().message;
        if (queue) {
          std::vector<std::byte> bytes(5000);
          write_content(bytes, 1, 0);
          EXPECT_TRUE(queue->put(bytes));
          auto sample = queue->try_get();
          EXPECT_TRUE(sample && std::ranges::equal(sample->bytes(), bytes));
          EXPECT_TRUE(queue->unlink());
        }
      }
    }
    check_files("after the domain was reopened and let go");
  }

  Scenario s_;
  std::mt19937_64 rng_;
  std::string domain_;
  ScopedEnv env_;
  std::filesystem::path dir_;
  std::chrono::seconds watchdog_{300};
  std::optional<hakobu::Domain> domain_handle_;
  hakobu::Queue a_;
  hakobu::Queue b_;
  std::vector<Worker> workers_;
  std::map<std::uint32_t, ProducerInfo> producers_;
  std::vector<std::string> consumer_logs_;
  std::uint32_t next_id_ = 1;
  std::uint64_t markers_ = 0;
  Phase phase_ = Phase::Chaos;
  bool victim_resolved_ = true;
  std::uint64_t injected_leak_allowed_ = 0;
  Clock::time_point next_kill_{};
};

/// A fresh domain name per test: chaos<pid>.<n>.
std::string fresh_domain() {
  static int counter = 0;
  return "chaos" + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

std::uint64_t test_seed() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name = std::string(info->test_suite_name()) + "." + info->name();
  return run_seed() ^ std::hash<std::string>{}(name);
}

void report(const Figures& figures, std::uint64_t seed) {
  std::cout << "[chaos] HAKOBU_CHAOS_SEED=" << run_seed() << " (test seed " << seed << ") " << figures.summary()
            << "\n";
  static int runs = 0;
  ::testing::Test::RecordProperty("chaos" + std::to_string(runs++), figures.summary());
}

Figures run_scenario(const Scenario& scenario) {
  const std::uint64_t seed = test_seed();
  ChaosRun run(scenario, seed, fresh_domain());
  run.run();
  report(run.figures, seed);
  return run.figures;
}

// --- random kills -------------------------------------------------------------------------

std::vector<std::string> kill_points();

Scenario random_kills(int forwarders, bool inject) {
  Scenario s;
  s.forwarders = forwarders;
  s.kills = env_number("HAKOBU_CHAOS_KILLS", 100);
  s.seconds = static_cast<double>(env_number("HAKOBU_CHAOS_SECONDS", 10));
  s.per_producer = env_number("HAKOBU_CHAOS_MESSAGES", 200);
  if (inject) {
    s.inject_percent = env_number("HAKOBU_CHAOS_INJECT", 25);
    for (const auto& point : kill_points()) {
      if (point != "detach.heap_removed") s.inject_points.push_back(point);  // never passed: the supervisor stays
    }
  }
  return s;
}

TEST(Chaos, RandomKillsProducersConsumers) {
  const Figures figures = run_scenario(random_kills(0, false));
  EXPECT_GT(figures.received, 0U);
}

TEST(Chaos, RandomKillsProducersForwardersConsumers) {
  const Figures figures = run_scenario(random_kills(2, false));
  EXPECT_GT(figures.received, 0U);
}

// The same, and a quarter of the workers also die at a random kill point: kills
// inside the critical windows while other processes repair and reclaim.
TEST(Chaos, RandomKillsAndKillPoints) {
  if (!HAKOBU_CHAOS_KILL_POINTS_ON) GTEST_SKIP() << "the library was built without HAKOBU_KILL_POINTS";
  const Figures figures = run_scenario(random_kills(2, true));
  EXPECT_GT(figures.received, 0U);
  EXPECT_GT(figures.injected, 0U);
}

// --- injected kills: one test per kill point in src/ ------------------------------------------

/// The passes N to kill at: HAKOBU_CHAOS_KILL_N alone if set, else
/// HAKOBU_CHAOS_SWEEP (default 4) distinct values of 1..max_n (all if fewer).
std::vector<std::uint64_t> passes(const PointPlan& plan, std::mt19937_64& rng) {
  if (const std::uint64_t forced = env_number("HAKOBU_CHAOS_KILL_N", 0); forced > 0) return {forced};
  const std::uint64_t sweep = std::max<std::uint64_t>(1, env_number("HAKOBU_CHAOS_SWEEP", 4));
  std::vector<std::uint64_t> all(plan.max_n);
  for (std::uint64_t n = 0; n < plan.max_n; ++n) all[n] = n + 1;
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(std::min<std::uint64_t>(sweep, plan.max_n));
  std::sort(all.begin(), all.end());
  return all;
}

std::vector<std::string> kill_points() {
  std::vector<std::string> out;
  std::istringstream in(HAKOBU_CHAOS_KILL_POINTS);
  for (std::string point; std::getline(in, point, ',');) {
    if (!point.empty()) out.push_back(point);
  }
  return out;
}

class KillPoint : public ::testing::TestWithParam<std::string> {};

TEST_P(KillPoint, WorkerKilledThereLeavesTheOthersWhole) {
  if (!HAKOBU_CHAOS_KILL_POINTS_ON) GTEST_SKIP() << "the library was built without HAKOBU_KILL_POINTS";
  std::mt19937_64 rng(test_seed());
  const std::string& point = GetParam();
  const PointPlan plan = plan_for(point);
  for (const std::uint64_t n : passes(plan, rng)) {
    SCOPED_TRACE(point + ":" + std::to_string(n));
    Scenario s;
    s.producers = 2;
    s.forwarders = 1;
    s.consumers = 2;
    s.per_producer = 100;
    s.stage = plan.stage;
    s.point = point;
    s.victim = plan.victim;
    s.n = n;
    s.allowed_leak = plan.allowed_leak;
    std::cout << "[chaos] " << point << ":" << n << ": the "
              << (s.stage == Stage::Reclaim  ? "reclaiming process"
                  : s.stage == Stage::Detach ? "last process out"
                  : s.stage == Stage::Store  ? "store's publisher"
                                             : role_name(s.victim))
              << " dies there (HAKOBU_CHAOS_KILL_N=" << n << " to run this one alone)\n";
    const Figures figures = run_scenario(s);
    EXPECT_EQ(figures.injected, 1U) << "the worker did not die at " << point << ":" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(KillPoints, KillPoint, ::testing::ValuesIn(kill_points()),
                         [](const ::testing::TestParamInfo<std::string>& point) {
                           std::string name = point.param;
                           std::replace(name.begin(), name.end(), '.', '_');
                           return name;
                         });

class LeftoverCheck : public ::testing::Environment {
 public:
  void TearDown() override {
    const auto left = files_with_prefix("chaos" + std::to_string(::getpid()) + ".");
    EXPECT_TRUE(left.empty()) << "files left in /dev/shm: " << ::testing::PrintToString(left);
  }
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new LeftoverCheck);  // NOLINT(cppcoreguidelines-owning-memory): gtest owns it
  const std::filesystem::path copy =
      std::filesystem::temp_directory_path() / ("hakobu-chaos-worker-" + std::to_string(::getpid()));
  std::error_code error;
  std::filesystem::copy_file(worker_path(), copy, std::filesystem::copy_options::overwrite_existing, error);
  if (!error) worker_path() = copy.string();
  const int code = RUN_ALL_TESTS();
  if (!error) std::filesystem::remove(copy, error);
  return code;
}
