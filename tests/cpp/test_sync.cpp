// Named locks and events (include/hakobu/sync.hpp, src/sync/).
//
// Sync.*: one process — threads of it (also under TSan), timeouts, names,
// damaged files and hostile values written straight into the lock word.
// SyncMappings.*: two handles of one name in one process (outside the TSan run).
// SyncProcesses.*: separately started programs (hakobu_sync_peer, see
// sync_peer.cpp): a holder SIGKILLed while holding (the next acquirer, awake
// or asleep, gets the lock with OwnerDied), mutual exclusion of two programs
// counting in a shared file, events set and awaited across processes, fork().
// Every test removes what it creates; no test asserts a maximum time
// (watchdogs turn a deadlock into a failure).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "domain/domain_state.hpp"
#include "hakobu/hakobu.hpp"
#include "sync/sync_layout.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using hakobu::Acquired;
using hakobu::AcquireError;
using hakobu::Event;
using hakobu::Lock;
using hakobu::OpenError;
using hakobu::OpenMode;
using hakobu::ReleaseError;
using hakobu::UnlinkError;
using hakobu::test::Process;
using hakobu::test::unique_name;

const std::string kSyncPeer = HAKOBU_SYNC_PEER;

/// Options of every handle the test process opens: a heap reservation small
/// enough for ThreadSanitizer's address space (the default is 1 TiB); the
/// domain keeps the size its first process gave it.
hakobu::SyncOptions options() {
  hakobu::SyncOptions out;
  out.domain.heap_capacity = std::uint64_t{256} << 20;
  return out;
}

std::string sync_file(const std::string& name) {
  return "/dev/shm/hakobu:" + hakobu::test::domain() + ":s:" + name;
}

/// The shared page of sync object `name`, mapped for a test to read and damage.
class RawSync {
 public:
  explicit RawSync(const std::string& name) {
    const int fd = ::open(sync_file(name).c_str(), O_RDWR | O_CLOEXEC);  // NOLINT(cppcoreguidelines-pro-type-vararg)
    if (fd < 0) return;
    void* mapped = ::mmap(nullptr, hakobu::detail::kSyncFileBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (mapped != MAP_FAILED) header_ = static_cast<hakobu::detail::SyncHeader*>(mapped);
  }
  RawSync(const RawSync&) = delete;
  RawSync& operator=(const RawSync&) = delete;
  ~RawSync() {
    if (header_ != nullptr) ::munmap(header_, hakobu::detail::kSyncFileBytes);
  }
  hakobu::detail::SyncHeader* operator->() const { return header_; }
  [[nodiscard]] bool ok() const { return header_ != nullptr; }

 private:
  hakobu::detail::SyncHeader* header_ = nullptr;
};

/// Removes a sync object at the end of a test, whatever happened.
struct Removed {
  std::string name;
  ~Removed() { (void)Lock::remove(name); }
};

std::unique_ptr<Process> start_peer(const std::vector<std::string>& args) {
  auto process = std::make_unique<Process>(kSyncPeer, args);
  EXPECT_GT(process->pid(), 0) << "could not start " << kSyncPeer;
  return process;
}

// --- one process ----------------------------------------------------------------

TEST(Sync, LockAcquireReleaseAndMisuse) {
  const std::string name = unique_name("lock");
  Removed cleanup{name};
  auto lock = Lock::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock) << lock.error().message;
  EXPECT_FALSE(lock->info().held);
  auto got = lock->try_acquire();
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(*got, Acquired::Clean);
  const auto info = lock->info();
  EXPECT_TRUE(info.held);
  EXPECT_TRUE(info.held_by_this_process);
  EXPECT_EQ(info.holder_pid, ::getpid());
  // Held by this process: another try fails, a timed acquire times out.
  auto again = lock->try_acquire();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, AcquireError::WouldBlock);
  auto timed = lock->acquire_for(10ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code, AcquireError::Timeout);
  ASSERT_TRUE(lock->release());
  auto twice = lock->release();
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, ReleaseError::NotHeld);
  EXPECT_FALSE(lock->info().held);
  EXPECT_EQ(lock->info().owner_deaths, 0U);
}

/// Threads incrementing a plain counter under the lock, through one handle or
/// two (two handles of one name are two mappings of its page).
void count_with_threads(bool two_handles) {
  const std::string name = unique_name("lock");
  Removed cleanup{name};
  auto first = Lock::open(name, OpenMode::CreateOrAttach, options());
  auto second = Lock::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(first && second);
  constexpr int kThreads = 4;
  constexpr int kRounds = 20'000;
  std::uint64_t counter = 0;  // guarded by the lock only (TSan checks that it is)
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Lock& lock = two_handles && t % 2 == 1 ? *second : *first;
      for (int i = 0; i < kRounds; ++i) {
        if (!lock.acquire()) {
          failures.fetch_add(1);
          return;
        }
        ++counter;
        if (!lock.release()) failures.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(counter, std::uint64_t{kThreads} * kRounds);
  EXPECT_FALSE(first->info().held);
}

TEST(Sync, ThreadsExcludeEachOther) {
  count_with_threads(false);
}

// Not in the TSan run: TSan tracks atomics by virtual address, and cannot see
// that two mappings of one page are one lock word.
TEST(SyncMappings, ThreadsExcludeEachOtherThroughTwoHandles) {
  count_with_threads(true);
}

TEST(Sync, SleepingWaiterIsWokenByRelease) {
  const std::string name = unique_name("lock");
  Removed cleanup{name};
  auto lock = Lock::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock);
  ASSERT_TRUE(lock->acquire());
  std::atomic<int> outcome{-1};
  std::thread waiter([&] {
    auto got = lock->acquire_for(60s);  // watchdog only
    outcome.store(got ? static_cast<int>(*got) : 100 + static_cast<int>(got.error().code));
    if (got) (void)lock->release();
  });
  // Released once the waiter has announced itself (it then sleeps on the word).
  while (!lock->info().waiters) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(lock->release());
  waiter.join();
  EXPECT_EQ(outcome.load(), static_cast<int>(Acquired::Clean));
}

TEST(Sync, LockOfADeadTokenIsTakenOverWithOwnerDied) {
  const std::string name = unique_name("lock");
  Removed cleanup{name};
  auto lock = Lock::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock);
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  // Tokens no living process has: my slot with another generation, the
  // highest slot with the highest generation (no such process here), and the
  // all-ones word (waiters bit too).
  const std::uint32_t my_token = raw->creator_token;  // this process created the lock
  const std::uint32_t my_slot = my_token & ((1U << hakobu::detail::kTokenSlotBits) - 1);
  const std::uint32_t stale_mine =
      hakobu::detail::make_token(my_slot, (my_token >> hakobu::detail::kTokenSlotBits) + 7);
  const std::vector<std::uint32_t> words = {hakobu::detail::kLockHeld | stale_mine,
                                            hakobu::detail::kLockHeld | hakobu::detail::kLockTokenMask, 0xFFFF'FFFFU};
  std::uint32_t deaths = 0;
  for (const std::uint32_t word : words) {
    raw->word.store(word);
    auto got = lock->try_acquire();
    ASSERT_TRUE(got) << std::hex << word << ": " << got.error().message;
    EXPECT_EQ(*got, Acquired::OwnerDied) << std::hex << word;
    EXPECT_EQ(lock->info().owner_deaths, ++deaths);
    EXPECT_TRUE(lock->info().held_by_this_process);
    ASSERT_TRUE(lock->release());
    EXPECT_EQ(raw->word.load(), 0U);
  }
}

TEST(Sync, HostileLockWordsNeverCrashOrOutwaitTheDeadline) {
  const std::string name = unique_name("lock");
  Removed cleanup{name};
  auto lock = Lock::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock);
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  // Not held (no release leaves these): taken as free.
  for (const std::uint32_t word : {hakobu::detail::kLockWaiters, 0x3FFF'FFFFU, 0x1234U}) {
    raw->word.store(word);
    auto got = lock->acquire_for(60s);
    ASSERT_TRUE(got) << std::hex << word;
    EXPECT_EQ(*got, Acquired::Clean);
    ASSERT_TRUE(lock->release());
  }
  // Held by this very process as another handle would hold it: alive, so it waits and times out.
  raw->word.store(hakobu::detail::kLockHeld | (raw->creator_token & hakobu::detail::kLockTokenMask));
  auto blocked = lock->acquire_for(30ms);
  ASSERT_FALSE(blocked);
  EXPECT_EQ(blocked.error().code, AcquireError::Timeout);
  // A release by another process (a forged token of a living process is ours here, so use a dead one).
  raw->word.store(hakobu::detail::kLockHeld | hakobu::detail::kLockTokenMask);
  auto foreign = lock->release();
  ASSERT_FALSE(foreign);
  EXPECT_EQ(foreign.error().code, ReleaseError::NotOwner);
  // A writer that keeps flipping the word: every call still returns by its deadline.
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    std::uint32_t v = 0x9E37'79B9U;
    while (!stop.load(std::memory_order_relaxed)) {
      v = v * 1'664'525U + 1'013'904'223U;
      raw->word.store(v | hakobu::detail::kLockHeld);  // always held by someone
    }
  });
  for (int i = 0; i < 20; ++i) {
    auto got = lock->acquire_for(5ms);
    if (got) (void)lock->release();  // a dead-looking holder was taken over: fine
    auto tried = lock->try_acquire();
    if (tried) (void)lock->release();
  }
  stop.store(true);
  flipper.join();
  raw->word.store(0);
  ASSERT_TRUE(lock->try_acquire());
  ASSERT_TRUE(lock->release());
}

TEST(Sync, EventSetClearWait) {
  const std::string name = unique_name("event");
  Removed cleanup{name};
  auto event = Event::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(event);
  EXPECT_FALSE(event->is_set());
  EXPECT_FALSE(event->wait_for(10ms));
  event->set();
  EXPECT_TRUE(event->is_set());
  EXPECT_TRUE(event->wait_for(0ms));
  event->wait();
  event->clear();
  EXPECT_FALSE(event->is_set());
  // A sleeping waiter of another thread is woken by set().
  std::atomic<bool> woke{false};
  std::thread waiter([&] { woke.store(event->wait_for(60s)); });
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  while ((raw->word.load() & hakobu::detail::kEventWaiters) == 0) std::this_thread::sleep_for(1ms);
  event->set();
  waiter.join();
  EXPECT_TRUE(woke.load());
  // Hostile bits beside the flag: only bit 0 means "set".
  raw->word.store(0xFFFF'FFF0U);
  EXPECT_FALSE(event->is_set());
  EXPECT_FALSE(event->wait_for(5ms));
  event->set();
  EXPECT_EQ(raw->word.load(), hakobu::detail::kEventSet);
}

TEST(Sync, NamesKindsAndRemoval) {
  auto bad = Lock::open("no/slash", OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, OpenError::InvalidName);
  const std::string name = unique_name("sync");
  auto missing = Event::open(name, OpenMode::AttachOnly, options());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, OpenError::NotFound);
  {
    Removed cleanup{name};
    auto lock = Lock::open(name, OpenMode::CreateExclusive, options());
    ASSERT_TRUE(lock) << lock.error().message;
    auto taken = Lock::open(name, OpenMode::CreateExclusive, options());
    ASSERT_FALSE(taken);
    EXPECT_EQ(taken.error().code, OpenError::AlreadyExists);
    auto other_kind = Event::open(name, OpenMode::CreateOrAttach, options());
    ASSERT_FALSE(other_kind);
    EXPECT_EQ(other_kind.error().code, OpenError::Incompatible);
    EXPECT_NE(other_kind.error().message.find("a lock"), std::string::npos) << other_kind.error().message;
    auto attached = Lock::open(name, OpenMode::AttachOnly, options());
    ASSERT_TRUE(attached);
    ASSERT_TRUE(lock->acquire());
    EXPECT_TRUE(attached->info().held);  // one object under the name
    // Removed while held: handles go on, the name is free for a new object.
    ASSERT_TRUE(Lock::remove(name));
    EXPECT_FALSE(std::filesystem::exists(sync_file(name)));
    ASSERT_TRUE(lock->release());
    auto fresh = Lock::open(name, OpenMode::AttachOnly, options());
    ASSERT_FALSE(fresh);
    EXPECT_EQ(fresh.error().code, OpenError::NotFound);
  }
  auto gone = Event::remove(name);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, UnlinkError::NotFound);
}

TEST(Sync, DamagedFilesAreErrorsNotCrashes) {
  const std::string name = unique_name("sync");
  Removed cleanup{name};
  ASSERT_TRUE(Lock::open(name, OpenMode::CreateOrAttach, options()));
  {
    RawSync raw(name);
    ASSERT_TRUE(raw.ok());
    raw->kind = 77;
  }
  auto unknown = Lock::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, OpenError::Incompatible);
  {
    RawSync raw(name);
    raw->magic.store(0);
  }
  auto damaged = Lock::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(damaged);
  EXPECT_EQ(damaged.error().code, OpenError::Corrupt);
  ASSERT_EQ(::truncate(sync_file(name).c_str(), 100), 0);
  auto truncated = Event::open(name, OpenMode::AttachOnly, options());
  ASSERT_FALSE(truncated);
  EXPECT_EQ(truncated.error().code, OpenError::Corrupt);
}

// --- separately started processes -------------------------------------------------

TEST(SyncProcesses, HolderKilledWhileHoldingNextAcquirerGetsOwnerDied) {
  const std::string name = unique_name("lock");
  const std::string ready_name = unique_name("ready");
  Removed cleanup{name};
  Removed cleanup_ready{ready_name};
  auto lock = Lock::open(name, OpenMode::CreateOrAttach, options());
  auto ready = Event::open(ready_name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock && ready);
  auto holder = start_peer({"hold", name, ready_name});
  ASSERT_TRUE(ready->wait_for(60s)) << "the holder never took the lock";  // watchdog
  // Alive: the lock stays held, by it.
  auto busy = lock->try_acquire();
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, AcquireError::WouldBlock);
  EXPECT_EQ(lock->info().holder_pid, holder->pid());
  EXPECT_FALSE(lock->info().held_by_this_process);
  holder->kill(SIGKILL);
  EXPECT_EQ(holder->wait(), 128 + SIGKILL);
  auto got = lock->acquire_for(60s);  // watchdog
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(*got, Acquired::OwnerDied);
  EXPECT_EQ(lock->info().owner_deaths, 1U);
  ASSERT_TRUE(lock->release());
  auto next = lock->try_acquire();
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, Acquired::Clean);
  ASSERT_TRUE(lock->release());
}

TEST(SyncProcesses, SleepingWaiterInAnotherProcessInheritsFromAKilledHolder) {
  const std::string name = unique_name("lock");
  const std::string ready_name = unique_name("ready");
  Removed cleanup{name};
  Removed cleanup_ready{ready_name};
  auto lock = Lock::open(name, OpenMode::CreateOrAttach, options());
  auto ready = Event::open(ready_name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock && ready);
  auto holder = start_peer({"hold", name, ready_name});
  ASSERT_TRUE(ready->wait_for(60s));
  auto waiter = start_peer({"acquire", name});
  // The waiter has announced itself (it sleeps on the word) before the kill.
  while (!lock->info().waiters) std::this_thread::sleep_for(1ms);
  holder->kill(SIGKILL);
  EXPECT_EQ(holder->wait(), 128 + SIGKILL);
  EXPECT_EQ(waiter->wait(std::chrono::seconds(60)), 3) << "the waiter did not get the lock with OwnerDied";
  EXPECT_EQ(lock->info().owner_deaths, 1U);
  EXPECT_FALSE(lock->info().held);
}

TEST(SyncProcesses, TwoProgramsCountUnderTheLock) {
  const std::string name = unique_name("lock");
  Removed cleanup{name};
  ASSERT_TRUE(Lock::open(name, OpenMode::CreateOrAttach, options()));
  std::string path = "/tmp/hakobu-sync-counter-XXXXXX";
  const int fd = ::mkstemp(path.data());
  ASSERT_GE(fd, 0);
  const std::uint64_t zero = 0;
  ASSERT_EQ(::write(fd, &zero, sizeof zero), static_cast<ssize_t>(sizeof zero));
  constexpr int kRounds = 20'000;
  auto a = start_peer({"count", name, path, std::to_string(kRounds)});
  auto b = start_peer({"count", name, path, std::to_string(kRounds)});
  EXPECT_EQ(a->wait(), 0);
  EXPECT_EQ(b->wait(), 0);
  std::uint64_t total = 0;
  ASSERT_EQ(::pread(fd, &total, sizeof total, 0), static_cast<ssize_t>(sizeof total));
  ::close(fd);
  ::unlink(path.c_str());
  EXPECT_EQ(total, std::uint64_t{2} * kRounds);
}

TEST(SyncProcesses, EventsAcrossPrograms) {
  const std::string name = unique_name("event");
  Removed cleanup{name};
  auto event = Event::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(event);
  EXPECT_EQ(start_peer({"wait", name, "20"})->wait(), 1);  // never set: times out
  auto waiter = start_peer({"wait", name, "60000"});       // watchdog
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  while ((raw->word.load() & hakobu::detail::kEventWaiters) == 0) std::this_thread::sleep_for(1ms);
  event->set();
  EXPECT_EQ(waiter->wait(), 0);
  event->clear();
  EXPECT_EQ(start_peer({"set", name})->wait(), 0);
  EXPECT_TRUE(event->is_set());
}

TEST(SyncProcesses, ASyncObjectKeepsItsDomainAfterTheLastProcessLeaves) {
  // A domain of its own, so that this test process is not attached to it.
  const std::string domain = hakobu::test::domain() + "x";
  const std::string name = unique_name("lock");
  EXPECT_EQ(start_peer({"create", name, domain})->wait(), 0);
  // The creator left and was the last one out: the registry stays with the lock
  // (a new registry would restart the generations its tokens rely on).
  const auto left = hakobu::test::files_of_domain(domain);
  EXPECT_TRUE(std::find(left.begin(), left.end(), "/dev/shm/hakobu:" + domain + ":registry") != left.end())
      << ::testing::PrintToString(left);
  EXPECT_TRUE(std::find(left.begin(), left.end(), "/dev/shm/hakobu:" + domain + ":s:" + name) != left.end());
  // Removing the lock (attaching to remove it, then leaving) removes the domain.
  ASSERT_TRUE(Lock::remove(name, domain));
  EXPECT_TRUE(hakobu::test::files_of_domain(domain).empty())
      << ::testing::PrintToString(hakobu::test::files_of_domain(domain));
}

TEST(SyncProcesses, ForkedChildCannotUseItsParentsLock) {
  const std::string name = unique_name("lock");
  Removed cleanup{name};
  auto lock = Lock::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock);
  ASSERT_TRUE(lock->acquire());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto tried = lock->try_acquire();
    auto released = lock->release();
    const bool refused = !tried && tried.error().code == AcquireError::Forked && !released &&
                         released.error().code == ReleaseError::Forked;
    ::_exit(refused ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(lock->info().held_by_this_process);
  ASSERT_TRUE(lock->release());
}

}  // namespace
