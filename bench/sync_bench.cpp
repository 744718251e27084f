// hakobu_bench_sync: hakobu::Lock beside the process-shared locks a C++
// program has without it, in the same run.
//
//   uncontended   one thread, acquire + release pairs, nothing else running on
//                 the lock: the cost a lock adds to code that seldom contends
//   2 threads     two threads of one process both taking and releasing the same
//                 lock (a counter increment inside): hand-offs and futex sleeps
//   other kinds   uncontended, one thread: each hakobu kind beside what a C++
//                 program has for it in a MAP_SHARED page (a recursive pshared
//                 pthread mutex, a pshared sem_t, a pshared pthread barrier of
//                 one party, a pshared condition's lock + signal + unlock, an
//                 std::atomic fetch_add); the first line of a group is its
//                 baseline
//
// Methods: a robust process-shared pthread mutex in a MAP_SHARED page (the
// baseline: what glibc offers for "robust, between processes"), hakobu::Lock,
// and an open-file-description fcntl lock on a /dev/shm file (a system call per
// operation; what flock-style tools use). Rounds interleave the methods, so
// noise on this shared VM hits each alike; the median of the rounds' figures is
// reported with the ratio to the baseline, the range of rounds, the machine and
// how busy it was with other work.
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "hakobu/sync.hpp"

namespace {

using hakobu_bench::now_ns;

struct Method {
  std::string name;
  std::function<void()> acquire;
  std::function<void()> release;
  int pairs;  // per round and thread
};

/// A robust, process-shared pthread mutex in a shared page.
class RobustMutex {
 public:
  RobustMutex() {
    void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) std::abort();
    mutex_ = static_cast<pthread_mutex_t*>(page);
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(mutex_, &attr);
    pthread_mutexattr_destroy(&attr);
  }
  RobustMutex(const RobustMutex&) = delete;
  RobustMutex& operator=(const RobustMutex&) = delete;
  ~RobustMutex() {
    pthread_mutex_destroy(mutex_);
    ::munmap(mutex_, 4096);
  }
  void lock() {
    if (pthread_mutex_lock(mutex_) == EOWNERDEAD) pthread_mutex_consistent(mutex_);
  }
  void unlock() { pthread_mutex_unlock(mutex_); }

 private:
  pthread_mutex_t* mutex_ = nullptr;
};

/// An OFD lock on byte 0 of a /dev/shm file; one descriptor per thread (OFD
/// locks belong to the open file, so threads sharing one would not exclude).
class OfdLock {
 public:
  explicit OfdLock(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);  // NOLINT(cppcoreguidelines-pro-type-vararg)
    if (fd_ < 0) std::abort();
  }
  OfdLock(const OfdLock&) = delete;
  OfdLock& operator=(const OfdLock&) = delete;
  ~OfdLock() { ::close(fd_); }
  void lock() const { set(F_WRLCK); }
  void unlock() const { set(F_UNLCK); }

 private:
  void set(short type) const {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    while (::fcntl(fd_, F_OFD_SETLKW, &fl) != 0 && errno == EINTR) {  // NOLINT(cppcoreguidelines-pro-type-vararg)
    }
  }
  int fd_ = -1;
};

/// Process-shared POSIX objects of the other kinds' baselines, in one shared page.
class SharedPosix {
 public:
  SharedPosix() {
    void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) std::abort();
    page_ = static_cast<Objects*>(page);
    pthread_mutexattr_t mattr;
    pthread_mutexattr_init(&mattr);
    pthread_mutexattr_setpshared(&mattr, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&page_->mutex, &mattr);
    pthread_mutexattr_settype(&mattr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&page_->recursive, &mattr);
    pthread_mutexattr_destroy(&mattr);
    pthread_condattr_t cattr;
    pthread_condattr_init(&cattr);
    pthread_condattr_setpshared(&cattr, PTHREAD_PROCESS_SHARED);
    pthread_cond_init(&page_->cond, &cattr);
    pthread_condattr_destroy(&cattr);
    pthread_barrierattr_t battr;
    pthread_barrierattr_init(&battr);
    pthread_barrierattr_setpshared(&battr, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(&page_->barrier, &battr, 1);
    pthread_barrierattr_destroy(&battr);
    sem_init(&page_->semaphore, 1, 1);
  }
  SharedPosix(const SharedPosix&) = delete;
  SharedPosix& operator=(const SharedPosix&) = delete;
  ~SharedPosix() {
    pthread_mutex_destroy(&page_->mutex);
    pthread_mutex_destroy(&page_->recursive);
    pthread_cond_destroy(&page_->cond);
    pthread_barrier_destroy(&page_->barrier);
    sem_destroy(&page_->semaphore);
    ::munmap(page_, 4096);
  }
  struct Objects {
    pthread_mutex_t mutex;
    pthread_mutex_t recursive;
    pthread_cond_t cond;
    pthread_barrier_t barrier;
    sem_t semaphore;
    std::atomic<std::int64_t> counter;
  };
  Objects* operator->() const { return page_; }

 private:
  Objects* page_ = nullptr;
};

/// ns per acquire + release pair: `threads` threads each doing `pairs` pairs.
double measure(const Method& m, int threads, std::uint64_t& counter) {
  const std::int64_t start = now_ns();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = 0; i < m.pairs; ++i) {
        m.acquire();
        counter = counter + 1;
        m.release();
      }
    });
  }
  for (auto& w : workers) w.join();
  return static_cast<double>(now_ns() - start) / (static_cast<double>(m.pairs) * threads);
}

/// The other kinds, uncontended, each group's first method its baseline.
bool other_kinds(int rounds, const hakobu::SyncOptions& options) {
  auto rlock = hakobu::RLock::open("bench-rlock", hakobu::OpenMode::CreateOrAttach, options);
  auto semaphore = hakobu::Semaphore::open("bench-sem", 1, hakobu::OpenMode::CreateOrAttach, options);
  auto bounded = hakobu::BoundedSemaphore::open("bench-bsem", 1, hakobu::OpenMode::CreateOrAttach, options);
  auto barrier = hakobu::Barrier::open("bench-barrier", 1, hakobu::OpenMode::CreateOrAttach, options);
  auto condition = hakobu::Condition::open("bench-cond", hakobu::OpenMode::CreateOrAttach, options);
  auto value = hakobu::SharedArray::open_value("bench-value", hakobu::DType::of<std::int64_t>(), {},
                                               hakobu::OpenMode::CreateOrAttach, options);
  if (!rlock || !semaphore || !bounded || !barrier || !condition || !value) {
    std::fprintf(stderr, "could not open the other kinds\n");  // NOLINT(cppcoreguidelines-pro-type-vararg)
    return false;
  }
  SharedPosix posix;
  const auto nothing = [] {};
  const std::vector<std::pair<std::string, std::vector<Method>>> groups = {
      {"recursive lock: acquire + release (one level)",
       {{"pthread recursive pshared mutex", [&] { pthread_mutex_lock(&posix->recursive); },
         [&] { pthread_mutex_unlock(&posix->recursive); }, 1'000'000},
        {"hakobu::RLock", [&] { (void)rlock->acquire(); }, [&] { (void)rlock->release(); }, 1'000'000}}},
      {"semaphore: acquire + release",
       {{"sem_t pshared (sem_wait + sem_post)", [&] { sem_wait(&posix->semaphore); },
         [&] { sem_post(&posix->semaphore); }, 1'000'000},
        {"hakobu::Semaphore", [&] { (void)semaphore->acquire(); }, [&] { (void)semaphore->release(); }, 1'000'000},
        {"hakobu::BoundedSemaphore", [&] { (void)bounded->acquire(); }, [&] { (void)bounded->release(); }, 1'000'000}}},
      {"barrier of one party: wait",
       {{"pthread_barrier_t pshared", [&] { pthread_barrier_wait(&posix->barrier); }, nothing, 1'000'000},
        {"hakobu::Barrier", [&] { (void)barrier->wait(); }, nothing, 1'000'000}}},
      {"condition: lock + notify (no waiter) + unlock",
       {{"pthread pshared mutex + cond_signal",
         [&] {
           pthread_mutex_lock(&posix->mutex);
           pthread_cond_signal(&posix->cond);
         },
         [&] { pthread_mutex_unlock(&posix->mutex); }, 1'000'000},
        {"hakobu::Condition",
         [&] {
           (void)condition->acquire();
           (void)condition->notify();
         },
         [&] { (void)condition->release(); }, 1'000'000}}},
      {"shared integer: fetch_add(1)",
       {{"std::atomic<int64_t> in a shared page", [&] { posix->counter.fetch_add(1); }, nothing, 5'000'000},
        {"hakobu::SharedArray::fetch_add", [&] { (void)value->fetch_add<std::int64_t>(0, 1); }, nothing, 5'000'000}}},
  };
  std::printf("\nother kinds, uncontended, 1 thread: ns per operation (median of %d rounds)\n",
              rounds);  // NOLINT(cppcoreguidelines-pro-type-vararg)
  for (const auto& [title, methods] : groups) {
    std::vector<std::vector<double>> results(methods.size());
    hakobu_bench::NoiseMeter noise;
    std::uint64_t counter = 0;
    for (int r = 0; r < rounds; ++r) {
      for (std::size_t i = 0; i < methods.size(); ++i) {
        const std::size_t m = (i + static_cast<std::size_t>(r)) % methods.size();  // rotate the order
        results[m].push_back(measure(methods[m], 1, counter));
      }
    }
    std::printf(" %s (other work on the machine %.0f%%)\n", title.c_str(),
                100.0 * noise.other_share());  // NOLINT(cppcoreguidelines-pro-type-vararg)
    const double base = hakobu_bench::median_of(results[0]);
    for (std::size_t i = 0; i < methods.size(); ++i) {
      const auto s = hakobu_bench::summarize(results[i]);
      std::printf("   %-38s %9.1f ns   rounds %7.1f - %7.1f   %.2fx the baseline\n", methods[i].name.c_str(), s.median,
                  s.min, *std::max_element(results[i].begin(), results[i].end()),
                  s.median / base);  // NOLINT(cppcoreguidelines-pro-type-vararg)
    }
  }
  const std::int64_t total = value->load<std::int64_t>(0).value();
  const bool counted = total == posix->counter.load();
  if (!counted) std::printf("   SHARED VALUE WRONG: %lld\n", static_cast<long long>(total));  // NOLINT
  for (const char* name : {"bench-rlock", "bench-sem", "bench-bsem", "bench-barrier", "bench-cond", "bench-value"}) {
    (void)hakobu::Lock::remove(name, options.domain.name);
  }
  return counted;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 11;  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  const std::string domain = "bsync" + std::to_string(::getpid());
  hakobu::SyncOptions options;
  options.domain.name = domain;
  auto lock = hakobu::Lock::open("bench", hakobu::OpenMode::CreateOrAttach, options);
  if (!lock) {
    std::fprintf(stderr, "%s\n", lock.error().message.c_str());  // NOLINT(cppcoreguidelines-pro-type-vararg)
    return 1;
  }
  RobustMutex robust;
  const std::string ofd_path = "/dev/shm/hakobu-bench-sync-" + std::to_string(::getpid());
  OfdLock ofd_a(ofd_path);
  OfdLock ofd_b(ofd_path);
  thread_local int which_ofd = 0;  // the second worker thread uses the second descriptor
  std::atomic<int> next_ofd{0};

  const hakobu_bench::Machine machine = hakobu_bench::describe_machine();
  std::printf("hakobu_bench_sync: %d rounds, methods interleaved; machine: %s, %d CPUs online (allowed %s), %s\n",
              rounds, machine.cpu_model.c_str(), machine.online_cpus, machine.allowed_cpus.c_str(),
              machine.kernel.c_str());  // NOLINT(cppcoreguidelines-pro-type-vararg)
  std::printf("load average at start: %s\n",
              machine.load_average.c_str());  // NOLINT(cppcoreguidelines-pro-type-vararg)

  for (const int threads : {1, 2}) {
    std::vector<Method> methods = {
        {"pthread robust pshared mutex", [&] { robust.lock(); }, [&] { robust.unlock(); }, 1'000'000},
        {"hakobu::Lock", [&] { (void)lock->acquire(); }, [&] { (void)lock->release(); }, 1'000'000},
        {"fcntl OFD lock (/dev/shm file)", [&] { (which_ofd == 0 ? ofd_a : ofd_b).lock(); },
         [&] { (which_ofd == 0 ? ofd_a : ofd_b).unlock(); }, 50'000},
    };
    if (threads == 2) {
      // Each worker of the OFD method needs its own descriptor.
      methods[2].acquire = [&] {
        if (which_ofd == 0) which_ofd = 1 + next_ofd.fetch_add(1) % 2;
        (which_ofd == 1 ? ofd_a : ofd_b).lock();
      };
      methods[2].release = [&] { (which_ofd == 1 ? ofd_a : ofd_b).unlock(); };
    }
    std::vector<std::vector<double>> results(methods.size());
    hakobu_bench::NoiseMeter noise;
    std::uint64_t counter = 0;
    for (int r = 0; r < rounds; ++r) {
      for (std::size_t i = 0; i < methods.size(); ++i) {
        const std::size_t m = (i + static_cast<std::size_t>(r)) % methods.size();  // rotate the order
        results[m].push_back(measure(methods[m], threads, counter));
      }
    }
    const std::uint64_t expected = [&] {
      std::uint64_t total = 0;
      for (const auto& m : methods) total += static_cast<std::uint64_t>(m.pairs) * threads * rounds;
      return total;
    }();
    std::printf("\n%s: ns per acquire+release pair (median of %d rounds), other work on the machine %.0f%%%s\n",
                threads == 1 ? "uncontended, 1 thread" : "2 threads contending", rounds, 100.0 * noise.other_share(),
                counter == expected ? "" : "  COUNTER WRONG: a lock did not exclude");  // NOLINT
    const double base = hakobu_bench::median_of(results[0]);
    for (std::size_t i = 0; i < methods.size(); ++i) {
      const auto s = hakobu_bench::summarize(results[i]);
      std::printf("   %-32s %9.1f ns   rounds %7.1f - %7.1f   %.2fx the baseline\n", methods[i].name.c_str(), s.median,
                  s.min, *std::max_element(results[i].begin(), results[i].end()),
                  s.median / base);  // NOLINT(cppcoreguidelines-pro-type-vararg)
    }
  }
  if (!other_kinds(rounds, options)) return 1;
  ::unlink(ofd_path.c_str());
  (void)hakobu::Lock::remove("bench", domain);
  return 0;
}
