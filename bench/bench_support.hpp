// hakobu benchmark — what every measurement needs: a clock, statistics, the
// machine's description, CPU pinning, private and shared buffers, the peer
// process and the watchdog that cleans up when a run goes wrong.
//
// Nothing here knows about hakobu; the raw baselines use it too.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace hakobu_bench {

inline constexpr std::uint64_t kKiB = 1024;
inline constexpr std::uint64_t kMiB = 1024 * kKiB;
inline constexpr std::uint64_t kGiB = 1024 * kMiB;

/// The value a ping-pong leader sends to tell its peer to exit.
inline constexpr std::uint64_t kStopSequence = ~std::uint64_t{0};

// --- time ---------------------------------------------------------------------
/// CLOCK_MONOTONIC in nanoseconds: one clock for both processes, so a time
/// stamped by the peer can be compared with one stamped by the leader.
std::int64_t now_ns() noexcept;

/// One round of a spin loop: the pause instruction that the library's own spin
/// loops use (src/platform/os.hpp), so that hakobu and the raw baselines spin
/// alike. The bench uses only the public headers, hence this copy.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

/// Waiting in a loop that polls shared memory: spin a little, then yield the
/// CPU on every further round (the raw ring's "spin/yield" wait).
class Backoff {
 public:
  void pause() noexcept;

 private:
  static constexpr unsigned kSpinsBeforeYield = 1024;
  unsigned spins_ = 0;
};

// --- statistics ---------------------------------------------------------------
struct Summary {
  std::size_t count = 0;
  double min = 0;
  double median = 0;
  double p99 = 0;
  double mean = 0;
};
/// Order statistics of `samples`: the usual median (mean of the middle two of an
/// even count), nearest-rank p99.
Summary summarize(std::vector<double> samples);
/// The median of a few values (e.g. the throughput of each round).
double median_of(std::vector<double> values);

// --- the machine --------------------------------------------------------------
struct Machine {
  std::string cpu_model;
  int online_cpus = 0;
  std::string allowed_cpus;  ///< the CPUs this process may run on, e.g. "0-1"
  std::string kernel;
  std::string clocksource;
  std::string thp_shmem;  ///< /sys/kernel/mm/transparent_hugepage/shmem_enabled
  std::uint64_t memory_total = 0;
  std::uint64_t shm_total = 0;
  std::uint64_t shm_free = 0;
  std::string load_average;            ///< /proc/loadavg when the run started
  std::uint64_t huge_pages_total = 0;  ///< reserved huge pages (HugePages_Total)
  std::uint64_t huge_pages_free = 0;
  std::uint64_t huge_page_bytes = 0;
};
Machine describe_machine();
/// The first line of a file, or "" if it cannot be read.
std::string read_first_line(const std::string& path);
std::string load_average();

/// How busy the machine was with work other than this run: a 2-CPU VM shared
/// with builds and tests shows it in every figure, so each section says so.
class NoiseMeter {
 public:
  NoiseMeter() noexcept { restart(); }
  void restart() noexcept;
  /// Share of all CPUs' time since restart() spent by other processes (0..1).
  [[nodiscard]] double other_share() const noexcept;
  /// Share of all CPUs' time since restart() the hypervisor took away (steal).
  [[nodiscard]] double steal_share() const noexcept;

 private:
  struct Sample {
    double machine_busy_s = 0;  // every CPU, every process, in the guest
    double steal_s = 0;
    double ours_s = 0;  // this process and its reaped children (the peers)
    double wall_s = 0;
  };
  static Sample take() noexcept;
  Sample start_;
};

// --- pinning ------------------------------------------------------------------
/// The CPUs this process may run on (sched_getaffinity), in order.
std::vector<int> allowed_cpus();
/// Pins the calling thread (and the threads it starts later) to `cpu`.
bool pin_to_cpu(int cpu) noexcept;

// --- memory -------------------------------------------------------------------
/// Private anonymous memory, faulted in before use so that no measurement
/// pays for first touches.
class PrivateBuffer {
 public:
  PrivateBuffer() = default;
  explicit PrivateBuffer(std::size_t bytes);
  PrivateBuffer(PrivateBuffer&& other) noexcept;
  PrivateBuffer& operator=(PrivateBuffer&& other) noexcept;
  PrivateBuffer(const PrivateBuffer&) = delete;
  PrivateBuffer& operator=(const PrivateBuffer&) = delete;
  ~PrivateBuffer();

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::span<const std::byte> first(std::size_t bytes) const noexcept { return {data_, bytes}; }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

/// A POSIX shared-memory object mapped MAP_SHARED: the raw baselines' medium.
/// The leader creates it (and faults it in); the peer opens it by name. The
/// creator removes the name when it is destroyed.
class SharedRegion {
 public:
  static SharedRegion create(const std::string& name, std::size_t bytes);
  static SharedRegion open(const std::string& name, std::size_t bytes);
  SharedRegion() = default;
  SharedRegion(SharedRegion&& other) noexcept;
  SharedRegion& operator=(SharedRegion&& other) noexcept;
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  ~SharedRegion();

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  template <class T>
  [[nodiscard]] T* as(std::size_t offset = 0) const noexcept {
    return reinterpret_cast<T*>(data_ + offset);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
  }

 private:
  void reset() noexcept;
  std::string name_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  bool creator_ = false;
};

// --- futex on shared words ------------------------------------------------------
/// Sleeps while `*word == expected` (a shared, not private, futex).
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept;
void futex_wake_one(std::atomic<std::uint32_t>& word) noexcept;

// --- this run's names and failure -------------------------------------------------
/// The names this run puts in /dev/shm: the hakobu domain `bench<pid>` and the
/// raw regions. Set once by the leader before anything is created.
struct RunNames {
  std::string domain;      ///< hakobu domain: files "hakobu-<domain>-*"
  std::string raw_prefix;  ///< raw regions: "<raw_prefix><what>"
};
void set_run_names(RunNames names);
const RunNames& run_names() noexcept;
/// Paths of this run's files still in /dev/shm or in a hugetlbfs mount (where
/// a domain keeps its huge-page heap).
std::vector<std::string> leftover_files();
/// Removes this run's files (after a failure).
void remove_leftovers() noexcept;

/// Stops the run: kills the peer, removes this run's shared-memory files,
/// says why and exits with status 1. In the peer: says why and exits.
[[noreturn]] void fail(const std::string& why);

// --- the peer process --------------------------------------------------------------
/// The second process of a measurement: this same executable started with
/// `--peer ROLE key=value...`, pinned to the peer CPU. A watchdog thread in
/// the leader fails the run if the peer dies abnormally or a measurement
/// exceeds its deadline, so a hang or a crash never leaves files behind.
class Peer {
 public:
  /// Starts the peer with `role` and `settings` ("key=value").
  static Peer start(const std::string& role, const std::vector<std::string>& settings, int deadline_seconds = 300);
  Peer() = default;
  Peer(Peer&& other) noexcept;
  Peer& operator=(Peer&& other) noexcept;
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  ~Peer();
  /// Waits for the peer to exit; fails the run unless it exited with status 0.
  void wait();

 private:
  pid_t pid_ = -1;
};

/// Called once by the leader: where the peer runs (-1: not pinned) and the
/// path of this executable.
void configure_peers(int peer_cpu, std::string executable);
/// Starts the leader's watchdog thread.
void start_watchdog();

/// What a peer was started with.
struct PeerArgs {
  std::string role;
  std::map<std::string, std::string> values;
  [[nodiscard]] std::uint64_t number(const std::string& key) const;
  [[nodiscard]] std::string text(const std::string& key) const;
};
/// Parses `--peer ROLE key=value...` (argv[1] is "--peer").
PeerArgs parse_peer_args(int argc, char** argv);
/// Peer start-up: pins to the CPU given as cpu=N, dies with its leader.
void enter_peer(const PeerArgs& args);

// --- formatting ----------------------------------------------------------------------
/// "1 KiB", "64 MiB", "1 GiB", "1.5 GiB".
std::string size_label(std::uint64_t bytes);
/// Nanoseconds as "0.123 µs", "45.6 µs", "12.3 ms".
std::string time_label(double ns);

}  // namespace hakobu_bench
