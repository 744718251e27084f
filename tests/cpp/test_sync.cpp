// Named sync objects (include/hakobu/sync.hpp, src/sync/): locks, recursive
// locks, events, semaphores, barriers, conditions, shared values and arrays.
//
// Sync.*: one process — threads of it (also under TSan), timeouts, names,
// damaged files and hostile values written straight into each kind's words
// and tables (dead holders and parties are forged there as tokens of slots no
// process of the test has).
// SyncMappings.*: two handles of one name in one process (outside the TSan run).
// SyncProcesses.*: separately started programs (hakobu_sync_peer, see
// sync_peer.cpp): a holder SIGKILLed while holding (the next acquirer, awake
// or asleep, gets the lock with OwnerDied; a semaphore's counts come back; a
// barrier breaks for the other parties), mutual exclusion of two programs
// counting in a shared file or value, events and conditions across processes,
// fork().
// Every test removes what it creates; no test asserts a maximum time
// (watchdogs turn a deadlock into a failure).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
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
using hakobu::Barrier;
using hakobu::BarrierError;
using hakobu::BoundedSemaphore;
using hakobu::Condition;
using hakobu::ConditionError;
using hakobu::DType;
using hakobu::Event;
using hakobu::Lock;
using hakobu::OpenError;
using hakobu::OpenMode;
using hakobu::ReleaseError;
using hakobu::RLock;
using hakobu::Semaphore;
using hakobu::SemaphoreReleaseError;
using hakobu::SharedArray;
using hakobu::UnlinkError;
using hakobu::ValueError;
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

/// The shared file of sync object `name` (all of it), mapped for a test to
/// read and damage.
class RawSync {
 public:
  explicit RawSync(const std::string& name) {
    const int fd = ::open(sync_file(name).c_str(), O_RDWR | O_CLOEXEC);  // NOLINT(cppcoreguidelines-pro-type-vararg)
    if (fd < 0) return;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size >= static_cast<off_t>(hakobu::detail::kSyncFileBytes)) {
      bytes_ = static_cast<std::size_t>(st.st_size);
      void* mapped = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (mapped != MAP_FAILED) header_ = static_cast<hakobu::detail::SyncHeader*>(mapped);
    }
    ::close(fd);
  }
  RawSync(const RawSync&) = delete;
  RawSync& operator=(const RawSync&) = delete;
  ~RawSync() {
    if (header_ != nullptr) ::munmap(header_, bytes_);
  }
  hakobu::detail::SyncHeader* operator->() const { return header_; }
  [[nodiscard]] bool ok() const { return header_ != nullptr; }
  template <class Body>
  [[nodiscard]] Body& body() const {
    return *reinterpret_cast<Body*>(reinterpret_cast<std::byte*>(header_) + hakobu::detail::kSyncBodyOffset);  // NOLINT
  }
  /// Entry `slot` of the per-process table (semaphores, barriers).
  [[nodiscard]] std::atomic<std::uint64_t>& entry(std::uint32_t slot) const {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(reinterpret_cast<std::byte*>(header_) +   // NOLINT
                                                         hakobu::detail::kSyncTableOffset)[slot];  // NOLINT
  }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }

 private:
  hakobu::detail::SyncHeader* header_ = nullptr;
  std::size_t bytes_ = 0;
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

// --- recursive locks ----------------------------------------------------------------

TEST(Sync, RLockRecursesInItsOwnerThreadOnly) {
  const std::string name = unique_name("rlock");
  Removed cleanup{name};
  auto lock = RLock::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock) << lock.error().message;
  ASSERT_TRUE(lock->acquire());
  auto again = lock->try_acquire();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, Acquired::Clean);
  EXPECT_EQ(lock->depth(), 2U);
  // Another thread of the owner process: it waits, and may not release.
  int tried = -1;
  int released = -1;
  std::uint32_t depth_there = 99;
  std::thread other([&] {
    auto t = lock->try_acquire();
    tried = t ? -2 : static_cast<int>(t.error().code);
    auto r = lock->release();
    released = r ? -2 : static_cast<int>(r.error().code);
    depth_there = lock->depth();
  });
  other.join();
  EXPECT_EQ(tried, static_cast<int>(AcquireError::WouldBlock));
  EXPECT_EQ(released, static_cast<int>(ReleaseError::NotOwnerThread));
  EXPECT_EQ(depth_there, 0U);
  ASSERT_TRUE(lock->release());
  EXPECT_TRUE(lock->info().held);  // one level left
  ASSERT_TRUE(lock->release());
  EXPECT_FALSE(lock->info().held);
  auto extra = lock->release();
  ASSERT_FALSE(extra);
  EXPECT_EQ(extra.error().code, ReleaseError::NotHeld);
  // A dead owner process (forged): taken over with OwnerDied, at depth 1,
  // whatever its thread and depth words said.
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  raw->word.store(hakobu::detail::kLockHeld | hakobu::detail::kLockTokenMask);
  raw.body<hakobu::detail::RLockBody>().owner_thread.store(12'345);
  raw.body<hakobu::detail::RLockBody>().depth.store(7);
  auto heir = lock->try_acquire();
  ASSERT_TRUE(heir) << heir.error().message;
  EXPECT_EQ(*heir, Acquired::OwnerDied);
  EXPECT_EQ(lock->depth(), 1U);
  ASSERT_TRUE(lock->release());
  EXPECT_FALSE(lock->info().held);
  // A hostile depth at its limit: the next level is refused, never wrapped.
  ASSERT_TRUE(lock->acquire());
  raw.body<hakobu::detail::RLockBody>().depth.store(UINT32_MAX);
  auto deep = lock->try_acquire();
  ASSERT_FALSE(deep);
  EXPECT_EQ(deep.error().code, AcquireError::TooDeep);
  raw.body<hakobu::detail::RLockBody>().depth.store(1);
  ASSERT_TRUE(lock->release());
  EXPECT_FALSE(lock->info().held);
}

TEST(Sync, RLockThreadsExcludeEachOther) {
  const std::string name = unique_name("rlock");
  Removed cleanup{name};
  auto lock = RLock::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock);
  constexpr int kThreads = 4;
  constexpr int kRounds = 10'000;
  std::uint64_t counter = 0;  // guarded by the lock only
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kRounds; ++i) {
        if (!lock->acquire() || !lock->acquire()) {
          failures.fetch_add(1);
          return;
        }
        ++counter;
        if (!lock->release() || !lock->release()) failures.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(counter, std::uint64_t{kThreads} * kRounds);
  EXPECT_FALSE(lock->info().held);
}

// --- semaphores ---------------------------------------------------------------------

/// A semaphore table entry: `held` counts of the process with `generation`.
std::uint64_t held_entry(std::uint32_t generation, std::uint32_t held) {
  return (std::uint64_t{generation & hakobu::detail::kTokenGenerationMask} << 32U) | held;
}

constexpr std::uint32_t kDeadSlot = hakobu::detail::kMaxProcesses - 1;  // no process of a test has it
constexpr std::uint32_t kDeadGeneration = hakobu::detail::kTokenGenerationMask;

TEST(Sync, SemaphoreCountsAndRecordsItsHolders) {
  const std::string name = unique_name("sem");
  Removed cleanup{name};
  auto sem = Semaphore::open(name, 2, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(sem) << sem.error().message;
  EXPECT_EQ(sem->info().value, 2U);
  ASSERT_TRUE(sem->try_acquire());
  ASSERT_TRUE(sem->acquire());
  auto none = sem->try_acquire();
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, AcquireError::WouldBlock);
  auto timed = sem->acquire_for(10ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code, AcquireError::Timeout);
  auto info = sem->info();
  EXPECT_EQ(info.value, 0U);
  EXPECT_EQ(info.held_by_this_process, 2U);
  EXPECT_EQ(info.holders, 1U);
  ASSERT_TRUE(sem->release(2));
  info = sem->info();
  EXPECT_EQ(info.value, 2U);
  EXPECT_EQ(info.held_by_this_process, 0U);
  EXPECT_EQ(info.holders, 0U);
  auto zero = sem->release(0);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code, SemaphoreReleaseError::InvalidArgument);
  auto huge = sem->release(hakobu::detail::kSemCountMask);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, SemaphoreReleaseError::InvalidArgument);
  EXPECT_EQ(sem->info().value, 2U);
  // Unbounded: a release without an acquire adds a count (signalling).
  ASSERT_TRUE(sem->release());
  EXPECT_EQ(sem->info().value, 3U);
  // The value given when attaching is ignored.
  auto attached = Semaphore::open(name, 9, OpenMode::AttachOnly, options());
  ASSERT_TRUE(attached);
  EXPECT_EQ(attached->info().value, 3U);
  // A sleeping waiter of another thread is woken by a release.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(sem->try_acquire());
  std::atomic<int> outcome{-1};
  std::thread waiter([&] {
    auto got = sem->acquire_for(60s);  // watchdog only
    outcome.store(got ? 0 : 100 + static_cast<int>(got.error().code));
  });
  while (!sem->info().waiters) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(sem->release());
  waiter.join();
  EXPECT_EQ(outcome.load(), 0);
  // Held per process, not per thread: 3, one given back by this thread, one taken by the waiter.
  EXPECT_EQ(sem->info().held_by_this_process, 3U);
  ASSERT_TRUE(sem->release(3));
  EXPECT_EQ(sem->info().held_by_this_process, 0U);
}

TEST(Sync, BoundedSemaphoreRefusesReleasesPastItsValue) {
  const std::string name = unique_name("bsem");
  Removed cleanup{name};
  auto sem = BoundedSemaphore::open(name, 1, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(sem) << sem.error().message;
  EXPECT_EQ(sem->info().bound, 1U);
  auto over = sem->release();
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, SemaphoreReleaseError::TooMany);
  ASSERT_TRUE(sem->acquire());
  ASSERT_TRUE(sem->release());
  EXPECT_EQ(sem->info().value, 1U);
  EXPECT_EQ(sem->release().error().code, SemaphoreReleaseError::TooMany);
  auto other_bound = BoundedSemaphore::open(name, 2, OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(other_bound);
  EXPECT_EQ(other_bound.error().code, OpenError::Incompatible);
  auto unbounded = Semaphore::open(name, 1, OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(unbounded);
  EXPECT_EQ(unbounded.error().code, OpenError::Incompatible);
  EXPECT_NE(unbounded.error().message.find("bounded semaphore"), std::string::npos) << unbounded.error().message;
  // A bound of 0 is a semaphore no one can take or give.
  const std::string empty_name = unique_name("bsem");
  Removed cleanup_empty{empty_name};
  auto empty = BoundedSemaphore::open(empty_name, 0, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->try_acquire());
  EXPECT_EQ(empty->release().error().code, SemaphoreReleaseError::TooMany);
}

TEST(Sync, SemaphoreReturnsCountsOfDeadHoldersOnce) {
  const std::string name = unique_name("sem");
  Removed cleanup{name};
  auto sem = Semaphore::open(name, 0, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(sem);
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  // A dead process recorded as holding 3: the first caller that finds no count returns them.
  raw.entry(kDeadSlot).store(held_entry(kDeadGeneration, 3));
  ASSERT_TRUE(sem->try_acquire());
  EXPECT_EQ(raw.entry(kDeadSlot).load(), 0U);
  auto info = sem->info();
  EXPECT_EQ(info.value, 2U);
  EXPECT_EQ(info.returned, 3U);
  EXPECT_EQ(info.held_by_this_process, 1U);
  // Exactly once: two more, then none.
  ASSERT_TRUE(sem->try_acquire());
  ASSERT_TRUE(sem->try_acquire());
  EXPECT_FALSE(sem->try_acquire());
  EXPECT_EQ(sem->info().returned, 3U);
  // A dead process caught between its two steps: counted as maybe leaked, no count made.
  raw.entry(kDeadSlot).store(hakobu::detail::kHeldBusy | held_entry(kDeadGeneration, 0));
  EXPECT_FALSE(sem->try_acquire());
  EXPECT_EQ(sem->info().maybe_leaked, 1U);
  EXPECT_EQ(sem->info().value, 0U);
  EXPECT_EQ(raw.entry(kDeadSlot).load(), 0U);
  // This process's own slot holding an older generation's counts (a dead
  // process that had the slot): returned by this process's next operation.
  ASSERT_TRUE(sem->release(3));
  const std::uint32_t my_token = raw->creator_token;
  const std::uint32_t my_slot = my_token & ((1U << hakobu::detail::kTokenSlotBits) - 1);
  const std::uint32_t my_generation = my_token >> hakobu::detail::kTokenSlotBits;
  raw.entry(my_slot).store(held_entry(my_generation + 1, 4));
  ASSERT_TRUE(sem->try_acquire());
  info = sem->info();
  EXPECT_EQ(info.value, 6U);
  EXPECT_EQ(info.returned, 7U);
  EXPECT_EQ(info.held_by_this_process, 1U);
  ASSERT_TRUE(sem->release());
}

TEST(Sync, BoundedSemaphoreNeverPassesItsBoundWhenReturningCounts) {
  const std::string name = unique_name("bsem");
  Removed cleanup{name};
  auto sem = BoundedSemaphore::open(name, 2, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(sem);
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  ASSERT_TRUE(sem->acquire());
  ASSERT_TRUE(sem->acquire());
  raw.entry(kDeadSlot).store(held_entry(kDeadGeneration, 1000));  // hostile
  ASSERT_TRUE(sem->try_acquire());
  EXPECT_EQ(sem->info().value, 1U);
  ASSERT_TRUE(sem->release());
  EXPECT_EQ(sem->info().value, 2U);
  EXPECT_EQ(sem->release().error().code, SemaphoreReleaseError::TooMany);
}

TEST(Sync, HostileSemaphoreWordsAndTablesNeverCrashOrOutwaitTheDeadline) {
  const std::string name = unique_name("sem");
  Removed cleanup{name};
  auto sem = Semaphore::open(name, 1, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(sem);
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  raw->word.store(0xFFFF'FFFFU);  // the largest count, waiters bit
  ASSERT_TRUE(sem->try_acquire());
  ASSERT_TRUE(sem->release());
  EXPECT_EQ(sem->release().error().code, SemaphoreReleaseError::InvalidArgument);  // past 2^31 - 1
  // Every entry garbage, no count: calls return by their deadline.
  std::uint64_t v = 0x9E37'79B9'7F4A'7C15ULL;
  for (std::uint32_t slot = 0; slot < hakobu::detail::kMaxProcesses; ++slot) {
    v = v * 6'364'136'223'846'793'005ULL + 1'442'695'040'888'963'407ULL;
    raw.entry(slot).store(v);
  }
  raw->word.store(hakobu::detail::kSemWaiters);
  for (int i = 0; i < 5; ++i) {
    (void)sem->acquire_for(5ms);
    (void)sem->try_acquire();
  }
  // A writer that keeps flipping the count word.
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    std::uint32_t w = 0x1234'5678U;
    while (!stop.load(std::memory_order_relaxed)) {
      w = w * 1'664'525U + 1'013'904'223U;
      raw->word.store(w & hakobu::detail::kSemWaiters);  // never a count
    }
  });
  for (int i = 0; i < 20; ++i) {
    (void)sem->acquire_for(2ms);
    (void)sem->release();
  }
  stop.store(true);
  flipper.join();
  for (std::uint32_t slot = 0; slot < hakobu::detail::kMaxProcesses; ++slot) raw.entry(slot).store(0);
  raw->word.store(1);
  ASSERT_TRUE(sem->try_acquire());
  ASSERT_TRUE(sem->release());
}

TEST(Sync, SemaphoreAsAMutexForThreads) {
  const std::string name = unique_name("sem");
  Removed cleanup{name};
  auto sem = Semaphore::open(name, 1, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(sem);
  constexpr int kThreads = 4;
  constexpr int kRounds = 5'000;
  std::uint64_t counter = 0;  // guarded by the semaphore only
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kRounds; ++i) {
        if (!sem->acquire()) {
          failures.fetch_add(1);
          return;
        }
        ++counter;
        if (!sem->release()) failures.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(counter, std::uint64_t{kThreads} * kRounds);
  EXPECT_EQ(sem->info().value, 1U);
  EXPECT_EQ(sem->info().held_by_this_process, 0U);
}

// --- barriers ------------------------------------------------------------------------

TEST(Sync, BarrierReleasesItsPartiesWithTheirArrivalIndices) {
  const std::string name = unique_name("barrier");
  Removed cleanup{name};
  constexpr std::uint32_t kParties = 3;
  constexpr int kRounds = 50;
  auto barrier = Barrier::open(name, kParties, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(barrier) << barrier.error().message;
  EXPECT_EQ(barrier->parties(), kParties);
  std::vector<std::vector<std::atomic<int>>> seen(kRounds);
  for (auto& round : seen) round = std::vector<std::atomic<int>>(kParties);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (std::uint32_t t = 0; t < kParties; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kRounds; ++i) {
        auto index = barrier->wait_for(60s);  // watchdog
        if (!index || *index >= kParties) {
          failures.fetch_add(1);
          return;
        }
        seen[i][*index].fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_EQ(failures.load(), 0);
  for (int i = 0; i < kRounds; ++i) {
    for (std::uint32_t k = 0; k < kParties; ++k) EXPECT_EQ(seen[i][k].load(), 1) << "round " << i << " index " << k;
  }
  EXPECT_FALSE(barrier->broken());
  auto other = Barrier::open(name, 4, OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, OpenError::Incompatible);
  auto none = Barrier::open(unique_name("barrier"), 0, OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, OpenError::InvalidArgument);
}

TEST(Sync, BarrierAbortResetAndTimeout) {
  const std::string name = unique_name("barrier");
  Removed cleanup{name};
  auto barrier = Barrier::open(name, 2, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(barrier);
  // A timeout breaks it (like threading), for everyone, until reset.
  auto alone = barrier->wait_for(10ms);
  ASSERT_FALSE(alone);
  EXPECT_EQ(alone.error().code, BarrierError::Timeout);
  EXPECT_TRUE(barrier->broken());
  EXPECT_EQ(barrier->wait_for(0ms).error().code, BarrierError::Broken);
  barrier->reset();
  EXPECT_FALSE(barrier->broken());
  EXPECT_EQ(barrier->n_waiting(), 0U);
  // abort() and reset() each turn a sleeping waiter away with Broken.
  for (const bool abort : {true, false}) {
    std::atomic<int> outcome{-1};
    std::thread waiter([&] {
      auto got = barrier->wait_for(60s);  // watchdog
      outcome.store(got ? 0 : 100 + static_cast<int>(got.error().code));
    });
    while (barrier->n_waiting() == 0) std::this_thread::sleep_for(1ms);
    if (abort) {
      barrier->abort();
    } else {
      barrier->reset();
    }
    waiter.join();
    EXPECT_EQ(outcome.load(), 100 + static_cast<int>(BarrierError::Broken)) << (abort ? "abort" : "reset");
    EXPECT_EQ(barrier->broken(), abort);
    barrier->reset();
  }
  // After all that it still trips.
  std::atomic<int> index{-1};
  std::thread other([&] {
    auto got = barrier->wait_for(60s);
    index.store(got ? static_cast<int>(*got) : -2);
  });
  auto mine = barrier->wait_for(60s);
  other.join();
  ASSERT_TRUE(mine);
  EXPECT_EQ(static_cast<int>(*mine) + index.load(), 1);  // indices 0 and 1
}

/// An arrival entry as a party of barrier generation `g` in a process of
/// slot generation `generation` would record it.
std::uint64_t arrival(std::uint32_t g, std::uint32_t generation, std::uint32_t count) {
  return hakobu::detail::kArrivalValid | (std::uint64_t{g} << 36U) | (std::uint64_t{generation} << 16U) | count;
}

TEST(Sync, BarrierPartyThatArrivedAndDiedBreaksIt) {
  const std::string name = unique_name("barrier");
  Removed cleanup{name};
  auto barrier = Barrier::open(name, 3, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(barrier);
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  // A dead process's party arrived (recorded and counted) in generation 0.
  raw.entry(kDeadSlot).store(arrival(0, kDeadGeneration, 1));
  raw->word.store(1);
  auto got = barrier->wait_for(60s);  // watchdog: the dead party is noticed at the first liveness check
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, BarrierError::Broken);
  EXPECT_TRUE(barrier->broken());
  // Recorded but not counted (killed between the two steps): breaks it too.
  barrier->reset();
  const std::uint32_t g = (raw->word.load() >> hakobu::detail::kBarrierGenShift) & hakobu::detail::kBarrierGenMask;
  raw.entry(kDeadSlot).store(arrival(g, kDeadGeneration, 1));
  EXPECT_EQ(barrier->wait_for(60s).error().code, BarrierError::Broken);
  // A dead party of another generation does not break the current one (and is cleared).
  barrier->reset();
  raw.entry(kDeadSlot).store(arrival((g + 5) & hakobu::detail::kBarrierGenMask, kDeadGeneration, 1));
  EXPECT_EQ(barrier->wait_for(50ms).error().code, BarrierError::Timeout);
  EXPECT_EQ(raw.entry(kDeadSlot).load(), 0U);
}

TEST(Sync, HostileBarrierWordsNeverCrashOrOutwaitTheDeadline) {
  const std::string name = unique_name("barrier");
  Removed cleanup{name};
  auto barrier = Barrier::open(name, 2, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(barrier);
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  raw->word.store(0xFFFF'FFFFU);
  EXPECT_EQ(barrier->wait_for(5ms).error().code, BarrierError::Broken);
  // A count at or past the parties: the next arrival trips it.
  raw->word.store(hakobu::detail::kBarrierCountMask);
  auto tripped = barrier->wait_for(5ms);
  ASSERT_TRUE(tripped);
  EXPECT_EQ(*tripped, 1U);
  // Garbage in every arrival entry.
  std::uint64_t v = 0x9E37'79B9'7F4A'7C15ULL;
  for (std::uint32_t slot = 0; slot < hakobu::detail::kMaxProcesses; ++slot) {
    v = v * 6'364'136'223'846'793'005ULL + 1'442'695'040'888'963'407ULL;
    raw.entry(slot).store(v);
  }
  raw->word.store(0);
  (void)barrier->wait_for(30ms);
  // A writer that keeps flipping the word.
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    std::uint32_t w = 0x1234'5678U;
    while (!stop.load(std::memory_order_relaxed)) {
      w = w * 1'664'525U + 1'013'904'223U;
      raw->word.store(w);
    }
  });
  for (int i = 0; i < 20; ++i) (void)barrier->wait_for(2ms);
  stop.store(true);
  flipper.join();
  barrier->reset();
  EXPECT_FALSE(barrier->broken());
}

// --- conditions ----------------------------------------------------------------------

TEST(Sync, ConditionWaitAndNotify) {
  const std::string name = unique_name("cond");
  Removed cleanup{name};
  auto cond = Condition::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(cond) << cond.error().message;
  EXPECT_EQ(cond->notify().error().code, ConditionError::NotHeld);
  EXPECT_EQ(cond->wait_for(1ms).error().code, ConditionError::NotHeld);
  ASSERT_TRUE(cond->acquire());
  auto timed = cond->wait_for(10ms);
  ASSERT_TRUE(timed) << timed.error().message;
  EXPECT_FALSE(timed->notified);
  EXPECT_EQ(timed->lock, Acquired::Clean);
  ASSERT_TRUE(cond->release());  // held again after the wait
  // Consumers waiting for a flag set under the lock.
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  constexpr int kWaiters = 3;
  int flag = 0;  // guarded by the condition's lock
  std::atomic<int> notified{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&, i] {
      if (!cond->acquire()) return;
      // One waits without a limit (nanoseconds::max() must not overflow into "now"); 60 s: a watchdog.
      const std::chrono::nanoseconds limit = i == 0 ? std::chrono::nanoseconds::max() : std::chrono::nanoseconds(60s);
      auto woke = cond->wait_until([&] { return flag != 0; }, limit);
      if (woke && woke->notified) notified.fetch_add(1);
      (void)cond->release();
    });
  }
  while ((raw.body<hakobu::detail::ConditionBody>().seq.load() & hakobu::detail::kCondWaiters) == 0) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(cond->acquire());
  flag = 1;
  ASSERT_TRUE(cond->notify_all());
  ASSERT_TRUE(cond->release());
  for (auto& waiter : waiters) waiter.join();
  EXPECT_EQ(notified.load(), kWaiters);
}

TEST(Sync, ConditionWaitReportsALockTakenOverFromADeadHolder) {
  const std::string name = unique_name("cond");
  Removed cleanup{name};
  auto cond = Condition::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(cond);
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  std::atomic<int> outcome{-1};
  std::thread waiter([&] {
    if (!cond->acquire()) return;
    auto woke = cond->wait_for(60s);  // watchdog
    outcome.store(!woke            ? 100 + static_cast<int>(woke.error().code)
                  : woke->notified ? static_cast<int>(woke->lock)
                                   : 50);
    if (woke) (void)cond->release();
  });
  while ((raw.body<hakobu::detail::ConditionBody>().seq.load() & hakobu::detail::kCondWaiters) == 0) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(cond->acquire());
  ASSERT_TRUE(cond->notify());
  // The notifier "dies" holding the lock: its word names a dead process.
  raw->word.store(hakobu::detail::kLockHeld | hakobu::detail::kLockTokenMask);
  waiter.join();
  EXPECT_EQ(outcome.load(), static_cast<int>(Acquired::OwnerDied));
}

TEST(Sync, ConditionBoundToANamedLock) {
  const std::string name = unique_name("cond");
  const std::string lock_name = unique_name("lock");
  const std::string other_name = unique_name("lock");
  Removed cleanup{name};
  Removed cleanup_lock{lock_name};
  Removed cleanup_other{other_name};
  auto lock = Lock::open(lock_name, OpenMode::CreateOrAttach, options());
  auto other = Lock::open(other_name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock && other);
  auto cond = Condition::open(name, *lock, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(cond) << cond.error().message;
  ASSERT_TRUE(lock->acquire());
  auto woke = cond->wait_for(5ms);
  ASSERT_TRUE(woke);
  EXPECT_TRUE(lock->info().held_by_this_process);  // the named lock, taken again
  ASSERT_TRUE(cond->notify());
  ASSERT_TRUE(lock->release());
  EXPECT_EQ(cond->notify().error().code, ConditionError::NotHeld);
  auto own = Condition::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(own);
  EXPECT_EQ(own.error().code, OpenError::Incompatible);
  auto wrong = Condition::open(name, *other, OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, OpenError::Incompatible);
  auto same = Condition::open(name, *lock, OpenMode::AttachOnly, options());
  ASSERT_TRUE(same);
}

TEST(Sync, HostileConditionWordsNeverCrashOrOutwaitTheDeadline) {
  const std::string name = unique_name("cond");
  Removed cleanup{name};
  auto cond = Condition::open(name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(cond);
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    std::uint32_t w = 0x1234'5678U;
    while (!stop.load(std::memory_order_relaxed)) {
      w = w * 1'664'525U + 1'013'904'223U;
      raw.body<hakobu::detail::ConditionBody>().seq.store(w);
    }
  });
  ASSERT_TRUE(cond->acquire());
  for (int i = 0; i < 20; ++i) {
    auto woke = cond->wait_for(2ms);
    ASSERT_TRUE(woke) << woke.error().message;  // the lock is ours again each time
    ASSERT_TRUE(cond->notify());
  }
  stop.store(true);
  flipper.join();
  // The condition's lock held by a dead process: the wait takes it over and says so.
  raw->word.store(hakobu::detail::kLockHeld | hakobu::detail::kLockTokenMask);
  ASSERT_TRUE(cond->acquire_for(60s));
  ASSERT_TRUE(cond->release());
}

// --- shared values and arrays ------------------------------------------------------

TEST(Sync, SharedArrayAtomicsFromThreads) {
  const std::string name = unique_name("array");
  Removed cleanup{name};
  const std::vector<std::int64_t> shape{3};
  auto array = SharedArray::open(name, DType::of<std::int64_t>(), shape, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(array) << array.error().message;
  EXPECT_EQ(array->size(), 3U);
  EXPECT_EQ(array->bytes().size(), 24U);
  constexpr int kThreads = 4;
  constexpr int kRounds = 20'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kRounds; ++i) (void)array->fetch_add<std::int64_t>(1, 1);
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(array->load<std::int64_t>(1).value(), std::int64_t{kThreads} * kRounds);
  EXPECT_EQ(array->load<std::int64_t>(0).value(), 0);
  std::int64_t expected = 5;
  EXPECT_FALSE(array->compare_exchange<std::int64_t>(2, expected, 9).value());
  EXPECT_EQ(expected, 0);
  EXPECT_TRUE(array->compare_exchange<std::int64_t>(2, expected, 9).value());
  EXPECT_EQ(array->load<std::int64_t>(2).value(), 9);
  ASSERT_TRUE(array->store<std::int64_t>(0, -4));
  EXPECT_EQ(array->fetch_add<std::int64_t>(0, 1).value(), -4);
  EXPECT_EQ(array->load<std::int32_t>(0).error().code, ValueError::TypeMismatch);
  EXPECT_EQ(array->load<std::uint64_t>(0).error().code, ValueError::TypeMismatch);
  EXPECT_EQ(array->load<std::int64_t>(3).error().code, ValueError::OutOfRange);
  // Small integers wrap like NumPy's.
  const std::string small_name = unique_name("array");
  Removed cleanup_small{small_name};
  const std::vector<std::int64_t> two{2};
  auto small = SharedArray::open(small_name, DType::of<std::uint8_t>(), two, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(small);
  ASSERT_TRUE(small->store<std::uint8_t>(1, 255));
  EXPECT_EQ(small->fetch_add<std::uint8_t>(1, 1).value(), 255);
  EXPECT_EQ(small->load<std::uint8_t>(1).value(), 0);
  EXPECT_EQ(small->load<std::uint8_t>(0).value(), 0);
}

TEST(Sync, SharedArrayShapesDtypesAndAttach) {
  const std::string name = unique_name("value");
  Removed cleanup{name};
  const std::int32_t initial = 42;
  auto value = SharedArray::open_value(name, DType::of<std::int32_t>(), std::as_bytes(std::span(&initial, 1)),
                                       OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(value) << value.error().message;
  EXPECT_EQ(value->load<std::int32_t>(0).value(), 42);
  EXPECT_TRUE(value->shape().empty());
  EXPECT_EQ(value->size(), 1U);
  const std::int32_t other_initial = 7;
  auto attached = SharedArray::open_value(name, DType::of<std::int32_t>(), std::as_bytes(std::span(&other_initial, 1)),
                                          OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(attached);
  EXPECT_EQ(attached->load<std::int32_t>(0).value(), 42);  // created once, attached as it is
  auto wrong_type = SharedArray::open_value(name, DType::of<std::int64_t>(), {}, OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(wrong_type);
  EXPECT_EQ(wrong_type.error().code, OpenError::Incompatible);
  const std::vector<std::int64_t> two{2};
  auto wrong_shape = SharedArray::open(name, DType::of<std::int32_t>(), two, OpenMode::CreateOrAttach, options());
  ASSERT_FALSE(wrong_shape);
  EXPECT_EQ(wrong_shape.error().code, OpenError::Incompatible);
  // Floats: plain bytes under the lock.
  const std::string matrix_name = unique_name("array");
  Removed cleanup_matrix{matrix_name};
  const std::vector<std::int64_t> shape{2, 3};
  auto matrix = SharedArray::open(matrix_name, DType::of<double>(), shape, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(matrix);
  EXPECT_EQ(matrix->size(), 6U);
  ASSERT_EQ(matrix->bytes().size(), 48U);
  EXPECT_EQ(matrix->fetch_add<std::int64_t>(0, 1).error().code, ValueError::TypeMismatch);
  ASSERT_TRUE(matrix->acquire());
  const double x = 2.5;
  std::memcpy(matrix->bytes().data() + 8, &x, sizeof x);
  ASSERT_TRUE(matrix->release());
  auto again = SharedArray::open(matrix_name, DType::of<double>(), shape, OpenMode::AttachOnly, options());
  ASSERT_TRUE(again);
  double y = 0;
  std::memcpy(&y, again->bytes().data() + 8, sizeof y);
  EXPECT_EQ(y, 2.5);
  // Zero elements are allowed; nonsense is not.
  const std::string empty_name = unique_name("array");
  Removed cleanup_empty{empty_name};
  const std::vector<std::int64_t> none{0, 4};
  auto empty = SharedArray::open(empty_name, DType::of<float>(), none, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->size(), 0U);
  EXPECT_TRUE(empty->bytes().empty());
  const std::vector<std::int64_t> negative{-1};
  EXPECT_EQ(SharedArray::open(unique_name("array"), DType::of<float>(), negative, OpenMode::CreateOrAttach, options())
                .error()
                .code,
            OpenError::InvalidArgument);
  EXPECT_EQ(SharedArray::open(unique_name("array"), DType{hakobu::DTypeCode::Float, 12, 1}, two,
                              OpenMode::CreateOrAttach, options())
                .error()
                .code,
            OpenError::InvalidArgument);
  const std::vector<std::int64_t> huge{std::int64_t{1} << 40, 2};
  EXPECT_EQ(
      SharedArray::open(unique_name("array"), DType::of<std::uint8_t>(), huge, OpenMode::CreateOrAttach, options())
          .error()
          .code,
      OpenError::InvalidArgument);
  const std::int64_t too_big = 1;
  EXPECT_EQ(SharedArray::open_value(unique_name("value"), DType::of<std::int32_t>(),
                                    std::as_bytes(std::span(&too_big, 1)), OpenMode::CreateOrAttach, options())
                .error()
                .code,
            OpenError::InvalidArgument);
}

TEST(Sync, DamagedFilesOfTheNewKindsAreErrorsNotCrashes) {
  // A shared array whose body no longer matches its size.
  const std::string name = unique_name("array");
  Removed cleanup{name};
  const std::vector<std::int64_t> shape{8};
  ASSERT_TRUE(SharedArray::open(name, DType::of<std::int32_t>(), shape, OpenMode::CreateOrAttach, options()));
  {
    RawSync raw(name);
    ASSERT_TRUE(raw.ok());
    raw.body<hakobu::detail::ArrayBody>().shape[0] = 1'000'000;  // past the file
  }
  const std::vector<std::int64_t> big{1'000'000};
  auto grown = SharedArray::open(name, DType::of<std::int32_t>(), big, OpenMode::AttachOnly, options());
  ASSERT_FALSE(grown);
  EXPECT_EQ(grown.error().code, OpenError::Corrupt);
  {
    RawSync raw(name);
    raw.body<hakobu::detail::ArrayBody>().shape[0] = 8;
    raw.body<hakobu::detail::ArrayBody>().ndim = 1000;
  }
  EXPECT_EQ(SharedArray::open(name, DType::of<std::int32_t>(), shape, OpenMode::AttachOnly, options()).error().code,
            OpenError::Corrupt);
  // A semaphore cut to its first page (its table gone), a barrier of 0 parties.
  const std::string sem_name = unique_name("sem");
  Removed cleanup_sem{sem_name};
  ASSERT_TRUE(Semaphore::open(sem_name, 1, OpenMode::CreateOrAttach, options()));
  ASSERT_EQ(::truncate(sync_file(sem_name).c_str(), 4096), 0);
  EXPECT_EQ(Semaphore::open(sem_name, 1, OpenMode::AttachOnly, options()).error().code, OpenError::Corrupt);
  const std::string barrier_name = unique_name("barrier");
  Removed cleanup_barrier{barrier_name};
  ASSERT_TRUE(Barrier::open(barrier_name, 2, OpenMode::CreateOrAttach, options()));
  {
    RawSync raw(barrier_name);
    raw.body<hakobu::detail::BarrierBody>().parties = 0;
  }
  EXPECT_EQ(Barrier::open(barrier_name, 2, OpenMode::AttachOnly, options()).error().code, OpenError::Corrupt);
  // A condition whose lock name is longer than its field.
  const std::string cond_name = unique_name("cond");
  Removed cleanup_cond{cond_name};
  ASSERT_TRUE(Condition::open(cond_name, OpenMode::CreateOrAttach, options()));
  {
    RawSync raw(cond_name);
    raw.body<hakobu::detail::ConditionBody>().lock_name_bytes = 0xFFFF'FFFFU;
  }
  EXPECT_EQ(Condition::open(cond_name, OpenMode::AttachOnly, options()).error().code, OpenError::Corrupt);
  // Each kind refuses the others' names.
  EXPECT_EQ(RLock::open(cond_name, OpenMode::AttachOnly, options()).error().code, OpenError::Incompatible);
  EXPECT_EQ(Lock::open(sem_name, OpenMode::AttachOnly, options()).error().code, OpenError::Incompatible);
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

TEST(SyncProcesses, RLockOwnerKilledNextAcquirerGetsOwnerDied) {
  const std::string name = unique_name("rlock");
  const std::string ready_name = unique_name("ready");
  Removed cleanup{name};
  Removed cleanup_ready{ready_name};
  auto lock = RLock::open(name, OpenMode::CreateOrAttach, options());
  auto ready = Event::open(ready_name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(lock && ready);
  auto holder = start_peer({"rhold", name, ready_name});
  ASSERT_TRUE(ready->wait_for(60s)) << "the holder never took the lock";  // watchdog
  auto busy = lock->try_acquire();
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, AcquireError::WouldBlock);
  EXPECT_EQ(lock->release().error().code, ReleaseError::NotOwner);
  auto waiter = start_peer({"racquire", name});
  while (!lock->info().waiters) std::this_thread::sleep_for(1ms);
  holder->kill(SIGKILL);
  EXPECT_EQ(holder->wait(), 128 + SIGKILL);
  EXPECT_EQ(waiter->wait(), 3) << "the waiter did not get the lock with OwnerDied";
  auto got = lock->try_acquire();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, Acquired::Clean);
  EXPECT_EQ(lock->depth(), 1U);
  ASSERT_TRUE(lock->release());
}

TEST(SyncProcesses, SemaphoreCountsOfAKilledHolderReturn) {
  const std::string name = unique_name("sem");
  const std::string ready_name = unique_name("ready");
  Removed cleanup{name};
  Removed cleanup_ready{ready_name};
  auto sem = Semaphore::open(name, 2, OpenMode::CreateOrAttach, options());
  auto ready = Event::open(ready_name, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(sem && ready);
  auto holder = start_peer({"shold", name, "2", ready_name});
  ASSERT_TRUE(ready->wait_for(60s)) << "the holder never took its counts";  // watchdog
  EXPECT_EQ(sem->info().value, 0U);
  EXPECT_EQ(sem->info().holders, 1U);
  // Alive: its counts stay taken.
  EXPECT_EQ(start_peer({"sacquire", name, "30"})->wait(), 1);
  // A waiter in another process sleeps; the holder is killed; the waiter gets a returned count.
  auto waiter = start_peer({"sacquire", name, "60000"});  // watchdog
  while (!sem->info().waiters) std::this_thread::sleep_for(1ms);
  holder->kill(SIGKILL);
  EXPECT_EQ(holder->wait(), 128 + SIGKILL);
  EXPECT_EQ(waiter->wait(), 0);
  // Both counts came back exactly once: the waiter took one (and exited, so it
  // comes back too when next looked for); at most 2 are ever free.
  ASSERT_TRUE(sem->acquire_for(60s));
  ASSERT_TRUE(sem->acquire_for(60s));
  EXPECT_FALSE(sem->try_acquire());
  const auto info = sem->info();
  EXPECT_EQ(info.returned, 3U);  // 2 of the holder, 1 of the waiter that exited holding it
  EXPECT_EQ(info.maybe_leaked, 0U);
  ASSERT_TRUE(sem->release(2));
  EXPECT_EQ(sem->info().value, 2U);
}

TEST(SyncProcesses, SemaphoreUserKilledAnywhereNeverCreatesACount) {
  // A program acquiring and releasing in a loop is killed at a random
  // instruction: its counts come back, at most one is lost (and then counted
  // as maybe leaked), none is ever made.
  for (int run = 0; run < 8; ++run) {
    const std::string name = unique_name("sem");
    const std::string ready_name = unique_name("ready");
    Removed cleanup{name};
    Removed cleanup_ready{ready_name};
    auto sem = Semaphore::open(name, 2, OpenMode::CreateOrAttach, options());
    auto ready = Event::open(ready_name, OpenMode::CreateOrAttach, options());
    ASSERT_TRUE(sem && ready);
    auto churn = start_peer({"schurn", name, ready_name});
    ASSERT_TRUE(ready->wait_for(60s)) << "the peer never went round";  // watchdog
    std::this_thread::sleep_for(std::chrono::milliseconds(run));       // a different moment each run
    churn->kill(SIGKILL);
    EXPECT_EQ(churn->wait(), 128 + SIGKILL);
    std::uint32_t taken = 0;
    while (taken < 3 && sem->try_acquire()) ++taken;
    const auto info = sem->info();
    EXPECT_LE(taken, 2U) << "run " << run << ": a count was created";
    EXPECT_GE(taken, 1U) << "run " << run;
    if (taken < 2) {
      EXPECT_GE(info.maybe_leaked, 1U) << "run " << run << ": a count was lost unnoticed";
    }
    if (taken > 0) {
      ASSERT_TRUE(sem->release(taken));
    }
  }
}

TEST(SyncProcesses, BarrierAcrossProgramsGivesEachItsIndex) {
  const std::string name = unique_name("barrier");
  Removed cleanup{name};
  ASSERT_TRUE(Barrier::open(name, 3, OpenMode::CreateOrAttach, options()));
  std::vector<std::unique_ptr<Process>> parties;
  for (int i = 0; i < 3; ++i) parties.push_back(start_peer({"barrier", name, "3", "60000"}));
  std::vector<int> codes;
  for (auto& party : parties) codes.push_back(party->wait());
  std::sort(codes.begin(), codes.end());
  EXPECT_EQ(codes, (std::vector<int>{10, 11, 12}));
}

TEST(SyncProcesses, BarrierPartyKilledWhileWaitingBreaksItForTheOthers) {
  const std::string name = unique_name("barrier");
  Removed cleanup{name};
  auto barrier = Barrier::open(name, 3, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(barrier);
  auto doomed = start_peer({"barrier", name, "3", "60000"});
  while (barrier->n_waiting() < 1) std::this_thread::sleep_for(1ms);
  auto survivor = start_peer({"barrier", name, "3", "60000"});
  while (barrier->n_waiting() < 2) std::this_thread::sleep_for(1ms);
  doomed->kill(SIGKILL);
  EXPECT_EQ(doomed->wait(), 128 + SIGKILL);
  EXPECT_EQ(survivor->wait(), 4) << "the surviving party did not get Broken";
  auto mine = barrier->wait_for(60s);  // watchdog
  ASSERT_FALSE(mine);
  EXPECT_EQ(mine.error().code, BarrierError::Broken);
  barrier->reset();
  EXPECT_FALSE(barrier->broken());
}

TEST(SyncProcesses, ConditionNotifiedAcrossPrograms) {
  const std::string name = unique_name("cond");
  const std::string flag_name = unique_name("flag");
  Removed cleanup{name};
  Removed cleanup_flag{flag_name};
  auto cond = Condition::open(name, OpenMode::CreateOrAttach, options());
  auto flag = SharedArray::open_value(flag_name, DType::of<std::int64_t>(), {}, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(cond && flag);
  auto waiter = start_peer({"cwait", name, flag_name});
  RawSync raw(name);
  ASSERT_TRUE(raw.ok());
  while ((raw.body<hakobu::detail::ConditionBody>().seq.load() & hakobu::detail::kCondWaiters) == 0) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(cond->acquire());
  ASSERT_TRUE(flag->store<std::int64_t>(0, 1));
  ASSERT_TRUE(cond->notify());
  ASSERT_TRUE(cond->release());
  EXPECT_EQ(waiter->wait(), 0);
}

TEST(SyncProcesses, TwoProgramsAddToASharedValue) {
  const std::string name = unique_name("value");
  Removed cleanup{name};
  auto value = SharedArray::open_value(name, DType::of<std::int64_t>(), {}, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(value);
  constexpr int kRounds = 200'000;
  for (const char* mode : {"vadd", "vlock"}) {
    ASSERT_TRUE(value->store<std::int64_t>(0, 0));
    auto a = start_peer({mode, name, std::to_string(kRounds)});
    auto b = start_peer({mode, name, std::to_string(kRounds)});
    EXPECT_EQ(a->wait(), 0);
    EXPECT_EQ(b->wait(), 0);
    EXPECT_EQ(value->load<std::int64_t>(0).value(), std::int64_t{2} * kRounds) << mode;
  }
}

TEST(SyncProcesses, ForkedChildCannotUseItsParentsSemaphoreOrBarrier) {
  const std::string sem_name = unique_name("sem");
  const std::string barrier_name = unique_name("barrier");
  Removed cleanup_sem{sem_name};
  Removed cleanup_barrier{barrier_name};
  auto sem = Semaphore::open(sem_name, 1, OpenMode::CreateOrAttach, options());
  auto barrier = Barrier::open(barrier_name, 1, OpenMode::CreateOrAttach, options());
  ASSERT_TRUE(sem && barrier);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto tried = sem->try_acquire();
    auto released = sem->release();
    auto waited = barrier->wait_for(0ms);
    const bool refused = !tried && tried.error().code == AcquireError::Forked && !released &&
                         released.error().code == SemaphoreReleaseError::Forked && !waited &&
                         waited.error().code == BarrierError::Forked;
    ::_exit(refused ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(sem->info().value, 1U);
}

}  // namespace
