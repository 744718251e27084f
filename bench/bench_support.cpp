// hakobu benchmark — clock, statistics, machine, pinning, buffers, peer, watchdog.
#include "bench_support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <utility>

extern char** environ;  // NOLINT(readability-redundant-declaration): posix_spawn passes it on

namespace hakobu_bench {
namespace {

// The leader's view of its one running peer, shared with the watchdog thread
// and with fail(); atomics because fail() may run on either thread.
std::atomic<pid_t> g_watched_peer{-1};
std::atomic<std::int64_t> g_peer_deadline_ns{0};
std::atomic<bool> g_failing{false};
bool g_is_peer_process = false;
int g_peer_cpu = -1;
std::string g_executable;
RunNames g_run_names;

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
  return "stopped";
}

std::string cpu_list(const std::vector<int>& cpus) {
  std::string out;
  for (std::size_t i = 0; i < cpus.size();) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) out += '-' + std::to_string(cpus[j]);
    i = j + 1;
  }
  return out;
}

bool is_run_file(const std::string& name) {
  const std::string hakobu_prefix = "hakobu:" + g_run_names.domain + ":";
  return (!g_run_names.domain.empty() && name.rfind(hakobu_prefix, 0) == 0) ||
         (!g_run_names.raw_prefix.empty() && name.rfind(g_run_names.raw_prefix, 0) == 0);
}

}  // namespace

std::int64_t now_ns() noexcept {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

void Backoff::pause() noexcept {
  if (spins_ < kSpinsBeforeYield) {
    ++spins_;
    cpu_relax();
  } else {
    sched_yield();
  }
}

// --- statistics -------------------------------------------------------------------

Summary summarize(std::vector<double> samples) {
  Summary out;
  if (samples.empty()) return out;
  std::sort(samples.begin(), samples.end());
  const auto rank = [&](double fraction) {
    const auto index = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(samples.size())));
    return samples[std::clamp<std::size_t>(index, 1, samples.size()) - 1];
  };
  out.count = samples.size();
  out.min = samples.front();
  // The middle value, or the mean of the two middle values of an even count
  // (ratios over 10 or 20 rounds: the lower of the two would bias them down).
  const std::size_t middle = samples.size() / 2;
  out.median = samples.size() % 2 == 1 ? samples[middle] : (samples[middle - 1] + samples[middle]) / 2;
  out.p99 = rank(0.99);
  double sum = 0;
  for (const double s : samples) sum += s;
  out.mean = sum / static_cast<double>(samples.size());
  return out;
}

double median_of(std::vector<double> values) {
  return summarize(std::move(values)).median;
}

// --- the machine --------------------------------------------------------------------

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string load_average() {
  const std::string line = read_first_line("/proc/loadavg");
  // "0.35 0.12 0.04 1/123 4567": the three averages are what matter.
  std::size_t end = 0;
  for (int field = 0; field < 3 && end != std::string::npos; ++field) end = line.find(' ', end + (field > 0 ? 1 : 0));
  return line.substr(0, end);
}

NoiseMeter::Sample NoiseMeter::take() noexcept {
  Sample out;
  out.wall_s = static_cast<double>(now_ns()) / 1e9;
  // "cpu  user nice system idle iowait irq softirq steal ..." in clock ticks.
  std::ifstream stat("/proc/stat");
  std::string label;
  std::array<unsigned long long, 8> ticks{};  // NOLINT(google-runtime-int): the kernel's unit
  stat >> label;
  for (auto& field : ticks) stat >> field;
  if (stat && label == "cpu") {
    enum : std::size_t { kUser, kNice, kSystem, kIdle, kIowait, kIrq, kSoftirq, kSteal };
    const auto per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
    out.machine_busy_s =
        static_cast<double>(ticks[kUser] + ticks[kNice] + ticks[kSystem] + ticks[kIrq] + ticks[kSoftirq]) / per_second;
    out.steal_s = static_cast<double>(ticks[kSteal]) / per_second;
  }
  const auto seconds = [](const rusage& usage) {
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  };
  rusage self{};
  rusage children{};
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_CHILDREN, &children);
  out.ours_s = seconds(self) + seconds(children);
  return out;
}

void NoiseMeter::restart() noexcept {
  start_ = take();
}

double NoiseMeter::other_share() const noexcept {
  const Sample now = take();
  const double capacity = (now.wall_s - start_.wall_s) * static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN));
  if (capacity <= 0) return 0;
  const double other = (now.machine_busy_s - start_.machine_busy_s) - (now.ours_s - start_.ours_s);
  return std::clamp(other / capacity, 0.0, 1.0);
}

double NoiseMeter::steal_share() const noexcept {
  const Sample now = take();
  const double capacity = (now.wall_s - start_.wall_s) * static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN));
  return capacity <= 0 ? 0 : std::clamp((now.steal_s - start_.steal_s) / capacity, 0.0, 1.0);
}

Machine describe_machine() {
  Machine m;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) m.cpu_model = line.substr(line.find_first_not_of(' ', colon + 1));
      break;
    }
  }
  m.online_cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  m.allowed_cpus = cpu_list(allowed_cpus());
  utsname names{};
  if (uname(&names) == 0) m.kernel = std::string(names.sysname) + " " + names.release + " " + names.machine;
  m.clocksource = read_first_line("/sys/devices/system/clocksource/clocksource0/current_clocksource");
  const std::string thp = read_first_line("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  const auto open = thp.find('[');
  const auto close = thp.find(']');
  m.thp_shmem = open != std::string::npos && close > open ? thp.substr(open + 1, close - open - 1) : thp;
  m.memory_total =
      static_cast<std::uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  struct statvfs shm {};
  if (statvfs("/dev/shm", &shm) == 0) {
    m.shm_total = static_cast<std::uint64_t>(shm.f_blocks) * shm.f_frsize;
    m.shm_free = static_cast<std::uint64_t>(shm.f_bavail) * shm.f_frsize;
  }
  m.load_average = load_average();
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    std::uint64_t value = 0;
    meminfo >> value;
    if (key == "HugePages_Total:") m.huge_pages_total = value;
    if (key == "HugePages_Free:") m.huge_pages_free = value;
    if (key == "Hugepagesize:") m.huge_page_bytes = value * kKiB;
    std::getline(meminfo, key);
  }
  return m;
}

// --- pinning ------------------------------------------------------------------------

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

bool pin_to_cpu(int cpu) noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0;
}

// --- memory -------------------------------------------------------------------------

PrivateBuffer::PrivateBuffer(std::size_t bytes) : size_(bytes) {
  // MAP_POPULATE: the kernel faults every page in now, not during a measurement.
  void* address = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (address == MAP_FAILED) fail("cannot allocate " + size_label(bytes) + " of private memory: " + strerror(errno));
  data_ = static_cast<std::byte*>(address);
  std::memset(data_, 0x5A, bytes);
}

PrivateBuffer::PrivateBuffer(PrivateBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

PrivateBuffer& PrivateBuffer::operator=(PrivateBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

PrivateBuffer::~PrivateBuffer() {
  if (data_ != nullptr) munmap(data_, size_);
}

SharedRegion SharedRegion::create(const std::string& name, std::size_t bytes) {
  const std::string path = "/" + name;
  const int fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) fail("shm_open " + path + ": " + strerror(errno));
  SharedRegion region;
  region.name_ = name;
  region.creator_ = true;
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    close(fd);
    fail("ftruncate " + path + ": " + strerror(errno));
  }
  void* address = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (address == MAP_FAILED) fail("mmap " + path + ": " + strerror(errno));
  region.data_ = static_cast<std::byte*>(address);
  region.size_ = bytes;
  // Touch every page now: first touches of shared memory cost far more than
  // the copies measured later.
  std::memset(region.data_, 0, bytes);
  return region;
}

SharedRegion SharedRegion::open(const std::string& name, std::size_t bytes) {
  const std::string path = "/" + name;
  const int fd = shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) fail("shm_open " + path + ": " + strerror(errno));
  // MAP_POPULATE fills this process's page tables with the creator's pages.
  void* address = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  close(fd);
  if (address == MAP_FAILED) fail("mmap " + path + ": " + strerror(errno));
  SharedRegion region;
  region.name_ = name;
  region.data_ = static_cast<std::byte*>(address);
  region.size_ = bytes;
  return region;
}

SharedRegion::SharedRegion(SharedRegion&& other) noexcept
    : name_(std::move(other.name_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      creator_(std::exchange(other.creator_, false)) {}

SharedRegion& SharedRegion::operator=(SharedRegion&& other) noexcept {
  if (this != &other) {
    reset();
    name_ = std::move(other.name_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    creator_ = std::exchange(other.creator_, false);
  }
  return *this;
}

SharedRegion::~SharedRegion() {
  reset();
}

void SharedRegion::reset() noexcept {
  if (data_ != nullptr) munmap(data_, size_);
  if (creator_) shm_unlink(("/" + name_).c_str());
  data_ = nullptr;
  size_ = 0;
  creator_ = false;
}

// --- futex ----------------------------------------------------------------------------

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
                "the futex word must be a plain 32-bit integer: std::atomic<uint32_t> carries extra state here");
  syscall(SYS_futex, &word, FUTEX_WAIT, expected, nullptr, nullptr, 0);
}

void futex_wake_one(std::atomic<std::uint32_t>& word) noexcept {
  syscall(SYS_futex, &word, FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

// --- run names and failure --------------------------------------------------------------

void set_run_names(RunNames names) {
  g_run_names = std::move(names);
}
const RunNames& run_names() noexcept {
  return g_run_names;
}

std::vector<std::string> leftover_files() {
  std::vector<std::string> directories = {"/dev/shm"};
  std::ifstream mounts("/proc/mounts");
  for (std::string device, mount_point, type, rest; mounts >> device >> mount_point >> type;) {
    std::getline(mounts, rest);
    if (type == "hugetlbfs") directories.push_back(mount_point);
  }
  std::vector<std::string> paths;
  for (const auto& directory : directories) {
    DIR* dir = opendir(directory.c_str());
    if (dir == nullptr) continue;
    while (const dirent* entry = readdir(dir)) {
      const std::string name = entry->d_name;
      if (is_run_file(name)) paths.push_back(directory + "/" + name);
    }
    closedir(dir);
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

void remove_leftovers() noexcept {
  try {
    for (const auto& path : leftover_files()) unlink(path.c_str());
  } catch (...) {  // NOLINT(bugprone-empty-catch): best effort on the way out
  }
}

void fail(const std::string& why) {
  if (g_is_peer_process) {
    std::fprintf(stderr, "hakobu_bench_queue peer (pid %d): %s\n", static_cast<int>(getpid()), why.c_str());
    std::_Exit(1);
  }
  if (g_failing.exchange(true)) {
    for (;;) pause();  // the first failure is already cleaning up and exiting
  }
  const pid_t peer = g_watched_peer.exchange(-1);
  if (peer > 0) {
    kill(peer, SIGKILL);
    waitpid(peer, nullptr, 0);
  }
  remove_leftovers();
  std::fflush(stdout);  // what was measured so far, then why it stopped
  std::fprintf(stderr, "hakobu_bench_queue: %s\n", why.c_str());
  std::_Exit(1);  // no destructors: the shared-memory files are gone already
}

// --- the peer process ----------------------------------------------------------------------

void configure_peers(int peer_cpu, std::string executable) {
  g_peer_cpu = peer_cpu;
  g_executable = std::move(executable);
}

void start_watchdog() {
  std::thread([] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      const pid_t peer = g_watched_peer.load();
      if (peer <= 0) continue;
      siginfo_t info{};
      // WNOWAIT: look without reaping; Peer::wait() reaps.
      if (waitid(P_PID, static_cast<id_t>(peer), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == peer &&
          !(info.si_code == CLD_EXITED && info.si_status == 0)) {
        fail("the peer process " + std::to_string(peer) + " died (" +
             (info.si_code == CLD_EXITED ? "status " + std::to_string(info.si_status)
                                         : std::string("signal ") + strsignal(info.si_status)) +
             ")");
      }
      if (g_watched_peer.load() == peer && now_ns() > g_peer_deadline_ns.load()) {
        fail("a measurement exceeded its deadline (peer pid " + std::to_string(peer) + "): a hang");
      }
    }
  }).detach();
}

Peer Peer::start(const std::string& role, const std::vector<std::string>& settings, int deadline_seconds) {
  std::vector<std::string> words = {"hakobu_bench_queue", "--peer", role, "cpu=" + std::to_string(g_peer_cpu)};
  words.insert(words.end(), settings.begin(), settings.end());
  std::vector<char*> argv;
  for (auto& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);
  Peer peer;
  const int rc = posix_spawn(&peer.pid_, g_executable.c_str(), nullptr, nullptr, argv.data(), environ);
  if (rc != 0) fail("posix_spawn " + g_executable + ": " + strerror(rc));
  g_peer_deadline_ns.store(now_ns() + std::int64_t{deadline_seconds} * 1'000'000'000);
  g_watched_peer.store(peer.pid_);
  return peer;
}

Peer::Peer(Peer&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}

Peer& Peer::operator=(Peer&& other) noexcept {
  if (this != &other) {
    this->~Peer();
    pid_ = std::exchange(other.pid_, -1);
  }
  return *this;
}

Peer::~Peer() {
  if (pid_ <= 0) return;
  g_watched_peer.store(-1);
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void Peer::wait() {
  if (pid_ <= 0) return;
  // Wait without reaping first, so the watchdog keeps its deadline on a peer
  // that never exits.
  siginfo_t info{};
  while (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) != 0) {
    if (errno != EINTR) fail(std::string("waitid on the peer: ") + strerror(errno));
  }
  g_watched_peer.store(-1);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  const pid_t pid = std::exchange(pid_, -1);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fail("the peer process " + std::to_string(pid) + " " + describe_exit(status));
  }
}

std::uint64_t PeerArgs::number(const std::string& key) const {
  const auto it = values.find(key);
  if (it == values.end()) fail("peer role " + role + " needs " + key + "=N");
  return std::stoull(it->second);
}

std::string PeerArgs::text(const std::string& key) const {
  const auto it = values.find(key);
  if (it == values.end()) fail("peer role " + role + " needs " + key + "=...");
  return it->second;
}

PeerArgs parse_peer_args(int argc, char** argv) {
  PeerArgs args;
  if (argc > 2) args.role = argv[2];
  for (int i = 3; i < argc; ++i) {
    const std::string word = argv[i];
    const auto eq = word.find('=');
    if (eq != std::string::npos) args.values[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return args;
}

void enter_peer(const PeerArgs& args) {
  g_is_peer_process = true;
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the leader
  if (getppid() == 1) std::_Exit(1);
  const auto cpu = args.values.find("cpu");
  if (cpu != args.values.end() && std::stoi(cpu->second) >= 0) pin_to_cpu(std::stoi(cpu->second));
}

// --- formatting -------------------------------------------------------------------------------

std::string size_label(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  std::size_t unit = 0;
  double value = static_cast<double>(bytes);
  while (value >= 1024.0 && unit + 1 < std::size(units)) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  if (value == std::floor(value)) {
    std::snprintf(text, sizeof text, "%.0f %s", value, units[unit]);
  } else {
    std::snprintf(text, sizeof text, "%.1f %s", value, units[unit]);
  }
  return text;
}

std::string time_label(double ns) {
  char text[32];
  if (ns < 10'000.0) {
    std::snprintf(text, sizeof text, "%.3f us", ns / 1e3);
  } else if (ns < 1'000'000.0) {
    std::snprintf(text, sizeof text, "%.1f us", ns / 1e3);
  } else {
    std::snprintf(text, sizeof text, "%.2f ms", ns / 1e6);
  }
  return text;
}

}  // namespace hakobu_bench
