// hakobu tests — Store: named, immutable values by key (include/hakobu/store.hpp,
// src/store/store_file.hpp). One process for the protocol, separately started
// peers (store_peer.cpp) for readers in other processes and killed publishers,
// and the store file mapped directly for hostile contents.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "domain/domain_state.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/queue.hpp"
#include "hakobu/store.hpp"
#include "platform/os.hpp"
#include "store/store_file.hpp"
#include "store_churn.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using hakobu::Domain;
using hakobu::MessageKind;
using hakobu::OpenError;
using hakobu::Store;
using hakobu::StoreEraseError;
using hakobu::StoreGetError;
using hakobu::StorePutError;
using hakobu::StoreWaitError;
using hakobu::test::churn_value;
using hakobu::test::churn_value_ok;
using hakobu::test::Process;
using hakobu::test::unique_name;

const std::string kPeer = HAKOBU_STORE_PEER;

std::vector<std::byte> filled(std::size_t size, int value) {
  return std::vector<std::byte>(size, static_cast<std::byte>(value));
}

bool all_equal(std::span<const std::byte> bytes, int value) {
  for (const std::byte b : bytes) {
    if (std::to_integer<int>(b) != value) return false;
  }
  return true;
}

/// Options of every handle the test process opens: a heap reservation small
/// enough for ThreadSanitizer's address space (the default is 1 TiB); the
/// domain keeps the size its first process gave it.
hakobu::StoreOptions store_options(std::size_t capacity = 1024) {
  hakobu::StoreOptions options;
  options.capacity = capacity;
  options.domain.heap_capacity = std::uint64_t{256} << 20;
  return options;
}

Store open_store(const std::string& name, std::size_t capacity = 1024) {
  const hakobu::StoreOptions options = store_options(capacity);
  auto store = Store::create(name, options);
  EXPECT_TRUE(store) << store.error().message;
  return std::move(store).value();
}

struct HeapUse {
  std::uint64_t blocks = 0;
  std::uint64_t bytes = 0;
  friend bool operator==(const HeapUse&, const HeapUse&) = default;
  friend std::ostream& operator<<(std::ostream& out, const HeapUse& use) {
    return out << use.blocks << " blocks / " << use.bytes << " bytes";
  }
};

/// The heap use a test returns to; first makes sure this process's holdings
/// table exists and no dead process is left to reclaim mid-test.
HeapUse settled_heap_use(Store& store) {
  {
    auto loan = store.loan(1);
    EXPECT_TRUE(loan) << loan.error().message;
  }
  auto domain = Domain::open(store_options().domain);
  EXPECT_TRUE(domain) << domain.error().message;
  domain->collect_garbage();
  const auto stats = domain->stats();
  return {stats.live_blocks, stats.live_bytes};
}

HeapUse heap_use() {
  auto domain = Domain::open(store_options().domain);
  EXPECT_TRUE(domain) << domain.error().message;
  const auto stats = domain->stats();
  return {stats.live_blocks, stats.live_bytes};
}

int run_peer(const std::vector<std::string>& args, const char* kill_at = nullptr) {
  if (kill_at != nullptr) ::setenv("HAKOBU_KILL_AT", kill_at, 1);  // NOLINT(concurrency-mt-unsafe): no threads
  Process peer(kPeer, args);
  if (kill_at != nullptr) ::unsetenv("HAKOBU_KILL_AT");  // NOLINT(concurrency-mt-unsafe)
  EXPECT_GT(peer.pid(), 0) << "could not start " << kPeer;
  return peer.wait(std::chrono::seconds(60));
}

bool wait_until(const std::function<bool()>& done, std::chrono::seconds watchdog = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + watchdog;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

std::string temp_file(const std::string& stem) {
  return (std::filesystem::temp_directory_path() / unique_name("hakobu-store-" + stem)).string();
}

/// The store's file mapped directly, to damage it.
class StoreFile {
 public:
  explicit StoreFile(const std::string& store, const std::string& domain = hakobu::test::domain())
      : path_("/dev/shm/hakobu:" + domain + ":st:" + store) {
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
  }
  StoreFile(const StoreFile&) = delete;
  StoreFile& operator=(const StoreFile&) = delete;
  ~StoreFile() {
    if (base_ != nullptr) ::munmap(base_, size_);
    if (fd_ >= 0) ::close(fd_);
  }
  hakobu::detail::StoreHeader& header() { return *reinterpret_cast<hakobu::detail::StoreHeader*>(base_); }  // NOLINT
  hakobu::detail::StoreEntry& entry(std::size_t i) {
    return reinterpret_cast<hakobu::detail::StoreEntry*>(base_ + sizeof(hakobu::detail::StoreHeader))[i];  // NOLINT
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
};

// --- one process ------------------------------------------------------------------

TEST(Store, PublishReadReplaceErase) {
  Store store = open_store(unique_name("basic"));
  EXPECT_EQ(store.get("x").error().code, StoreGetError::NotFound);
  auto v1 = store.put("x", filled(1000, 1));
  ASSERT_TRUE(v1) << v1.error().message;
  auto first = store.get("x");
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->size(), 1000U);
  EXPECT_EQ(first->version(), *v1);
  EXPECT_EQ(first->kind(), MessageKind::Bytes);
  EXPECT_TRUE(all_equal(first->bytes(), 1));

  auto v2 = store.put("x", filled(50, 2), MessageKind::Object);
  ASSERT_TRUE(v2) << v2.error().message;
  EXPECT_GT(*v2, *v1);
  auto second = store.get("x");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->version(), *v2);
  EXPECT_EQ(second->kind(), MessageKind::Object);
  EXPECT_EQ(second->size(), 50U);
  EXPECT_TRUE(all_equal(second->bytes(), 2));
  // The holder of the old version keeps it, unchanged.
  EXPECT_EQ(first->size(), 1000U);
  EXPECT_TRUE(all_equal(first->bytes(), 1));

  auto empty = store.put("empty", std::span<const std::byte>{});
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_EQ(store.get("empty")->size(), 0U);

  auto keys = store.keys();
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"empty", "x"}));
  ASSERT_TRUE(store.erase("x"));
  EXPECT_EQ(store.get("x").error().code, StoreGetError::NotFound);
  EXPECT_EQ(store.erase("x").error().code, StoreEraseError::NotFound);
  EXPECT_EQ(store.keys(), std::vector<std::string>{"empty"});
  EXPECT_TRUE(all_equal(second->bytes(), 2));
  // An erased key is published again in its entry.
  ASSERT_TRUE(store.put("x", filled(3, 3)));
  EXPECT_TRUE(all_equal(store.get("x")->bytes(), 3));
  ASSERT_TRUE(store.unlink());
}

TEST(Store, LoanIsPublishedWithoutACopy) {
  Store store = open_store(unique_name("loan"));
  const std::int64_t shape[] = {100, 3};
  const std::size_t meta = hakobu::array_meta_size(2, 0);
  auto loan = store.loan(meta + 300 * sizeof(double), MessageKind::Array);
  ASSERT_TRUE(loan) << loan.error().message;
  hakobu::write_array_meta(loan->bytes().first(meta), hakobu::DType::of<double>(), shape, {}, 0, {});
  auto view = loan->array();
  ASSERT_TRUE(view) << view.error().message;
  auto* elements = reinterpret_cast<double*>(view->data);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
  for (int i = 0; i < 300; ++i) elements[i] = i * 0.5;     // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  const std::byte* written = loan->bytes().data();
  auto put = store.put("a", std::move(*loan));
  ASSERT_TRUE(put) << put.error().message;
  EXPECT_FALSE(loan->valid()) << "the store took the loan";

  auto value = store.get("a");
  ASSERT_TRUE(value) << value.error().message;
  EXPECT_EQ(value->bytes().data(), written) << "a reader sees the loan's own memory, not a copy";
  auto array = value->array();
  ASSERT_TRUE(array) << array.error().message;
  EXPECT_EQ(array->dtype, hakobu::DType::of<double>());
  ASSERT_EQ(array->shape.size(), 2U);
  EXPECT_EQ(array->shape[0], 100);
  EXPECT_EQ(array->shape[1], 3);
  EXPECT_EQ(reinterpret_cast<const double*>(array->data)[299], 149.5);  // NOLINT
  ASSERT_TRUE(store.unlink());
}

TEST(Store, MemoryReturnsWhenReplacedOrErasedAndLastHandleGoes) {
  Store store = open_store(unique_name("memory"));
  const HeapUse before = settled_heap_use(store);
  ASSERT_TRUE(store.put("big", filled(1 << 20, 7)));
  const HeapUse one = heap_use();
  EXPECT_GT(one.bytes, before.bytes + (1U << 20));
  {
    auto held = store.get("big");
    ASSERT_TRUE(held);
    ASSERT_TRUE(store.put("big", filled(1 << 20, 8)));
    EXPECT_GT(heap_use().bytes, one.bytes + (1U << 19)) << "the old version stays while held";
    EXPECT_TRUE(all_equal(held->bytes(), 7));
  }
  EXPECT_EQ(heap_use(), one) << "the old version went when its last handle did";
  ASSERT_TRUE(store.erase("big"));
  EXPECT_EQ(heap_use(), before);
  {
    auto loan = store.loan(2 << 20);
    ASSERT_TRUE(loan);
    ASSERT_TRUE(store.put("loaned", std::move(*loan)));
  }
  EXPECT_GT(heap_use().bytes, before.bytes + (2U << 20));
  ASSERT_TRUE(store.unlink());
  EXPECT_EQ(heap_use(), before) << "the last handle out of an unlinked store drops its values";
}

TEST(Store, KeysNamesAndLimits) {
  EXPECT_EQ(Store::open("bad/name").error().code, OpenError::InvalidName);
  hakobu::StoreOptions zero = store_options();
  zero.capacity = 0;
  EXPECT_EQ(Store::open(unique_name("zero"), hakobu::OpenMode::CreateOrAttach, zero).error().code,
            OpenError::InvalidArgument);
  EXPECT_EQ(Store::attach(unique_name("missing"), store_options()).error().code, OpenError::NotFound);

  Store store = open_store(unique_name("limits"), 2);
  EXPECT_EQ(store.capacity(), 2U);
  EXPECT_EQ(store.put("", filled(1, 1)).error().code, StorePutError::InvalidKey);
  EXPECT_EQ(store.put(std::string(hakobu::kMaxStoreKeyBytes + 1, 'k'), filled(1, 1)).error().code,
            StorePutError::InvalidKey);
  EXPECT_EQ(store.get("").error().code, StoreGetError::InvalidKey);
  EXPECT_EQ(store.erase("").error().code, StoreEraseError::InvalidKey);
  const std::string longest(hakobu::kMaxStoreKeyBytes, 'k');
  ASSERT_TRUE(store.put(longest, filled(1, 1)));
  ASSERT_TRUE(store.put(std::string("\0bin", 4), filled(1, 2)));
  EXPECT_EQ(store.put("third", filled(1, 3)).error().code, StorePutError::Full);
  EXPECT_EQ(store.put(longest, filled(1, 4), MessageKind::Bytes, false).error().code, StorePutError::AlreadyExists);
  EXPECT_TRUE(all_equal(store.get(longest)->bytes(), 1)) << "a refused put leaves the value";
  ASSERT_TRUE(store.erase(longest));
  EXPECT_TRUE(store.put(longest, filled(1, 5), MessageKind::Bytes, false));

  auto other = Store::attach(store.name(), store_options());
  ASSERT_TRUE(other);
  EXPECT_EQ(other->capacity(), 2U);
  EXPECT_TRUE(all_equal(other->get(longest)->bytes(), 5));
  EXPECT_EQ(Store::create(store.name(), store_options()).error().code, OpenError::AlreadyExists);
  ASSERT_TRUE(store.unlink());
  EXPECT_EQ(store.put("x", filled(1, 1)).error().code, StorePutError::Closed);
  EXPECT_EQ(Store::attach(other->name(), store_options()).error().code, OpenError::NotFound);
}

TEST(Store, ConcurrentWritersAndReadersSeeWholeValues) {
  Store store = open_store(unique_name("threads"));
  const HeapUse before = settled_heap_use(store);
  ASSERT_TRUE(store.put("k", filled(4096, 0)));
  std::atomic<bool> stop{false};
  std::atomic<int> torn{0};
  std::vector<std::thread> threads;
  for (int w = 1; w <= 2; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 2000; ++i) (void)store.put("k", filled(4096, (w * 100 + i) % 256));
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        auto value = store.get("k");
        if (value && !all_equal(value->bytes(), std::to_integer<int>(value->bytes()[0]))) ++torn;
      }
    });
  }
  threads[0].join();
  threads[1].join();
  stop = true;
  threads[2].join();
  threads[3].join();
  EXPECT_EQ(torn.load(), 0);
  ASSERT_TRUE(store.erase("k"));
  EXPECT_EQ(heap_use(), before) << "every displaced version went back to the heap";
  ASSERT_TRUE(store.unlink());
}

// --- separately started processes -------------------------------------------------

TEST(Store, ReaderInAnotherProcessKeepsTheOldVersion) {
  Store store = open_store(unique_name("reader"));
  const HeapUse before = settled_heap_use(store);
  ASSERT_TRUE(store.put("X", filled(1 << 20, 11)));
  const std::string ready = temp_file("ready");
  const std::string go = temp_file("go");
  auto reader = std::make_unique<Process>(kPeer, std::vector<std::string>{"hold", store.name(), "X", ready, go});
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(ready) || hakobu::test::has_exited(reader->pid()); }));
  ASSERT_TRUE(std::filesystem::exists(ready)) << "the reader exited: " << reader->wait();
  std::string line;
  std::getline(std::ifstream(ready), line);
  EXPECT_NE(line.find(" 1048576 11"), std::string::npos) << line;

  // A new version and an erase while the reader holds the old one.
  ASSERT_TRUE(store.put("X", filled(1 << 20, 12)));
  EXPECT_EQ(run_peer({"expect", store.name(), "X", "1048576", "12"}), 0) << "new lookups see the new version";
  ASSERT_TRUE(store.erase("X"));
  EXPECT_EQ(run_peer({"expect", store.name(), "X", "-1", "0"}), 0);
  EXPECT_GT(heap_use().bytes, before.bytes + (1U << 20)) << "the held version is still in the heap";
  std::ofstream(go).put('\n');
  EXPECT_EQ(reader->wait(), 0) << "the reader's view stayed whole";
  EXPECT_EQ(heap_use(), before) << "the reader's release returned the block";
  std::filesystem::remove(ready);
  std::filesystem::remove(go);
  ASSERT_TRUE(store.unlink());
}

TEST(Store, OutlivesItsCreator) {
  const std::string name = unique_name("outlives");
  {
    Store store = open_store(name);
    ASSERT_TRUE(store.put("kept", filled(10000, 9)));
  }  // the creator's handle is gone; the store is not
  EXPECT_EQ(run_peer({"expect", name, "kept", "10000", "9"}), 0);
  EXPECT_EQ(run_peer({"put", name, "from-peer", "300", "4"}), 0);
  auto store = Store::attach(name, store_options());
  ASSERT_TRUE(store) << store.error().message;
  EXPECT_TRUE(all_equal(store->get("from-peer")->bytes(), 4));
  ASSERT_TRUE(store->unlink());
}

TEST(Store, PublisherKilledMidPublishLeavesOldOrNew) {
  Store store = open_store(unique_name("killed"));
  ASSERT_TRUE(store.put("v", filled(5000, 1)));
  // Killed before the swap: the old value, whole.
  EXPECT_EQ(run_peer({"put", store.name(), "v", "5000", "2"}, "store.put.unlisted:1"), 128 + SIGKILL);
  EXPECT_EQ(run_peer({"expect", store.name(), "v", "5000", "1"}), 0);
  // Killed right after the swap: the new value, whole.
  EXPECT_EQ(run_peer({"put", store.name(), "v", "5000", "3"}, "store.put.swapped:1"), 128 + SIGKILL);
  EXPECT_EQ(run_peer({"expect", store.name(), "v", "5000", "3"}), 0);
  // Killed while claiming an entry for a new key: the entry is taken over.
  EXPECT_EQ(run_peer({"put", store.name(), "w", "10", "4"}, "store.claimed:1"), 128 + SIGKILL);
  EXPECT_EQ(run_peer({"expect", store.name(), "w", "-1", "0"}), 0);
  EXPECT_EQ(run_peer({"put", store.name(), "w", "10", "5"}), 0);
  EXPECT_EQ(run_peer({"expect", store.name(), "w", "10", "5"}), 0);
  // The store goes on: a publish and an erase work as before.
  ASSERT_TRUE(store.put("v", filled(5000, 6)));
  EXPECT_TRUE(all_equal(store.get("v")->bytes(), 6));
  ASSERT_TRUE(store.unlink());
}

// --- keys that come back (entries reused: store_file.hpp) --------------------------

TEST(Store, ChurnOfDistinctKeysReusesErasedEntries) {
  Store store = open_store(unique_name("churn"), 8);
  const HeapUse before = settled_heap_use(store);
  constexpr int kLive = 6;
  for (int i = 0; i < 80; ++i) {  // 10 x capacity distinct keys
    const std::string key = "key-" + std::to_string(i);
    auto put = store.put(key, churn_value(key, i));
    ASSERT_TRUE(put) << key << ": " << put.error().message;
    auto value = store.get(key);
    ASSERT_TRUE(value) << key << ": " << value.error().message;
    EXPECT_TRUE(churn_value_ok(key, value->bytes())) << key;
    if (i >= kLive) {
      ASSERT_TRUE(store.erase("key-" + std::to_string(i - kLive)));
    }
  }
  auto keys = store.keys();
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"key-74", "key-75", "key-76", "key-77", "key-78", "key-79"}));
  for (int i = 0; i < 74; ++i) {
    EXPECT_EQ(store.get("key-" + std::to_string(i)).error().code, StoreGetError::NotFound) << i;
  }
  // Full still means a value in every entry, and an erase makes room again.
  ASSERT_TRUE(store.put("a", filled(8, 1)));
  ASSERT_TRUE(store.put("b", filled(8, 2)));
  EXPECT_EQ(store.put("c", filled(8, 3)).error().code, StorePutError::Full);
  ASSERT_TRUE(store.erase("key-74"));
  ASSERT_TRUE(store.put("c", filled(8, 3)));
  EXPECT_TRUE(all_equal(store.get("a")->bytes(), 1));
  EXPECT_TRUE(all_equal(store.get("c")->bytes(), 3));
  EXPECT_EQ(store.get("key-74").error().code, StoreGetError::NotFound);
  for (const auto& key : store.keys()) ASSERT_TRUE(store.erase(key));
  EXPECT_EQ(heap_use(), before) << "every erased value went back to the heap";
  ASSERT_TRUE(store.unlink());
}

TEST(Store, EntriesLeftByAKilledInserterAreReused) {
  Store store = open_store(unique_name("orphans"), 4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(store.put("k" + std::to_string(i), filled(8, i)));
  StoreFile file(store.name());
  // An inserter killed while it held the insert lock: between retiring an
  // entry's key and claiming the entry, and in the middle of a claim.
  ASSERT_TRUE(store.erase("k0"));
  ASSERT_TRUE(store.erase("k1"));
  std::size_t retired = 4;
  std::size_t claimed = 4;
  for (std::size_t i = 0; i < 4; ++i) {
    if (!hakobu::detail::has_value(file.entry(i).current.load())) (retired == 4 ? retired : claimed) = i;
  }
  ASSERT_LT(claimed, 4U);
  // A token of a process slot no process has (slot 1000): a dead holder.
  constexpr std::uint32_t kDeadToken = 1000U | (7U << 10U);
  file.entry(retired).current.store(hakobu::detail::kValueRetired);
  file.entry(claimed).state.store(hakobu::detail::claiming_state(kDeadToken));
  hakobu::detail::insert_lock(file.header()).store(hakobu::detail::kInsertLockHeld | kDeadToken);
  EXPECT_EQ(store.get("k0").error().code, StoreGetError::NotFound);
  EXPECT_EQ(store.get("k1").error().code, StoreGetError::NotFound);
  EXPECT_EQ(store.keys().size(), 2U);
  // The dead holder's lock is taken over and both entries take new keys.
  ASSERT_TRUE(store.put("new0", filled(8, 10)));
  ASSERT_TRUE(store.put("new1", filled(8, 11)));
  EXPECT_EQ(hakobu::detail::insert_lock(file.header()).load(), 0U) << "the lock was given back";
  EXPECT_EQ(store.put("new2", filled(8, 12)).error().code, StorePutError::Full);
  EXPECT_TRUE(all_equal(store.get("new0")->bytes(), 10));
  EXPECT_TRUE(all_equal(store.get("new1")->bytes(), 11));
  EXPECT_TRUE(all_equal(store.get("k2")->bytes(), 2));
  EXPECT_TRUE(all_equal(store.get("k3")->bytes(), 3));
  // The lock naming this process while no thread of it holds one: a leftover, taken.
  hakobu::detail::insert_lock(file.header()).store(hakobu::detail::kInsertLockHeld | file.header().creator_token);
  ASSERT_TRUE(store.erase("new0"));
  EXPECT_TRUE(store.put("new0", filled(8, 10)));
  // A live holder (another process) is waited for, then reported (Busy), never taken over.
  const std::string ready = temp_file("ready");
  const std::string go = temp_file("go");
  auto holder = std::make_unique<Process>(kPeer, std::vector<std::string>{"hold", store.name(), "k2", ready, go});
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(ready) || hakobu::test::has_exited(holder->pid()); }));
  auto domain = hakobu::detail::DomainState::attach(store_options().domain);
  ASSERT_TRUE(domain);
  std::uint32_t token = 0;
  for (std::uint32_t slot = 0; slot < hakobu::detail::kMaxProcesses; ++slot) {
    const auto& process =
        (*domain)->registry()->processes[slot];  // NOLINT(cppcoreguidelines-pro-bounds-constant-array-index)
    if (process.pid.load() == holder->pid()) token = hakobu::detail::make_token(slot, process.generation.load());
  }
  ASSERT_NE(token, 0U) << "the holder's process slot";
  hakobu::detail::insert_lock(file.header()).store(hakobu::detail::kInsertLockHeld | token);
  ASSERT_TRUE(store.erase("new0"));
  EXPECT_EQ(store.put("new3", filled(8, 13)).error().code, StorePutError::Busy);
  EXPECT_TRUE(store.put("k2", filled(8, 22))) << "republishing a key takes no lock";
  std::ofstream(go).put('\n');
  EXPECT_EQ(holder->wait(), 0);
  std::filesystem::remove(ready);
  std::filesystem::remove(go);
  hakobu::detail::insert_lock(file.header()).store(0);
  EXPECT_TRUE(store.put("new3", filled(8, 13)));
  ASSERT_TRUE(store.unlink());
}

/// Churns keys like the store peer's churn role (at most `live` of them with a
/// value), until `rounds` rounds are done or `go_on` says stop; counts
/// outcomes that break the rules.
void churn(
    Store& store, const std::string& prefix, int rounds, int live, std::atomic<int>& wrong,
    const std::function<bool()>& go_on = [] { return true; }) {
  int i = 0;
  for (; i < rounds && go_on(); ++i) {
    const std::string key = hakobu::test::churn_key(prefix, static_cast<std::uint64_t>(i));
    auto put = store.put(key, churn_value(key, static_cast<std::uint64_t>(i)));
    if (!put) {
      ADD_FAILURE() << key << ": " << put.error().message;
      ++wrong;
      return;
    }
    if (i >= live && !store.erase(hakobu::test::churn_key(prefix, static_cast<std::uint64_t>(i - live)))) ++wrong;
  }
  for (int j = std::max(i - live, 0); j < i; ++j) {
    if (!store.erase(hakobu::test::churn_key(prefix, static_cast<std::uint64_t>(j)))) ++wrong;
  }
}

TEST(Store, ReadersRacingEraseAndReuseNeverSeeAnotherKeysValue) {
  Store store = open_store(unique_name("reuse"), 8);
  const HeapUse before = settled_heap_use(store);
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  std::atomic<int> found{0};
  std::atomic<int> reading{0};
  std::vector<std::thread> readers;
  for (const char* prefix : {"a", "b"}) {
    readers.emplace_back([&, prefix] {
      ++reading;
      for (std::uint64_t i = 0; !stop.load(); ++i) {
        const std::string key = hakobu::test::churn_key(prefix, i);
        auto value = store.get(key);
        if (value) {
          ++found;
          if (!churn_value_ok(key, value->bytes())) ++wrong;
        } else if (value.error().code != StoreGetError::NotFound) {
          ++wrong;
        }
      }
    });
  }
  ASSERT_TRUE(wait_until([&] { return reading.load() == 2; }));
  // Two writers, 16 names and three values each at most: entries are retired
  // and reused again and again while the readers look.
  std::vector<std::thread> writers;
  for (const char* prefix : {"a", "b"}) writers.emplace_back([&, prefix] { churn(store, prefix, 20000, 3, wrong); });
  for (auto& t : writers) t.join();
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(found.load(), 0) << "the readers found values while keys moved";
  EXPECT_TRUE(store.keys().empty());
  EXPECT_EQ(heap_use(), before) << "every erased value went back to the heap";
  ASSERT_TRUE(store.unlink());
}

TEST(Store, ReaderInAnotherProcessRacingReuseNeverSeesAnotherKeysValue) {
  Store store = open_store(unique_name("reuse-peers"), 8);
  const HeapUse before = settled_heap_use(store);
  const std::string stop = temp_file("stop");
  // A churner and a reader of its keys, each a separate process, and a second
  // churner here for as long as the peer churns.
  auto reader = std::make_unique<Process>(kPeer, std::vector<std::string>{"read", store.name(), "p", stop});
  auto writer = std::make_unique<Process>(kPeer, std::vector<std::string>{"churn", store.name(), "p", "20000", "3"});
  std::atomic<int> wrong{0};
  const auto deadline = std::chrono::steady_clock::now() + 120s;  // watchdog
  churn(store, "t", INT32_MAX, 3, wrong,
        [&] { return !hakobu::test::has_exited(writer->pid()) && std::chrono::steady_clock::now() < deadline; });
  EXPECT_EQ(writer->wait(), 0) << "the peer's puts, gets and erases all succeeded, with its own values";
  std::ofstream(stop).put('\n');
  EXPECT_EQ(reader->wait(), 0) << "the reader never read another key's value";
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_TRUE(store.keys().empty());
  EXPECT_EQ(heap_use(), before);
  std::filesystem::remove(stop);
  ASSERT_TRUE(store.unlink());
}

TEST(Store, LookupOfAFreedRecordNeverTouchesAReturnedHugePage) {
  const auto pool = hakobu::platform::huge_page_info();
  if (pool.free_pages < 8 || hakobu::platform::hugetlbfs_mounts().empty()) {
    GTEST_SKIP() << "needs reserved huge pages and a hugetlbfs mount (CI sets them up)";
  }
  hakobu::StoreOptions options = store_options(4);
  options.domain.name = hakobu::test::domain() + "-huge";
  options.domain.huge_pages = hakobu::HugePages::Require;
  options.domain.cache_limit = 1;  // a freed large block gives its pages back at once
  const std::string name = unique_name("huge");
  {
    auto store = Store::create(name, options);
    ASSERT_TRUE(store) << store.error().message;
    auto domain = hakobu::detail::DomainState::attach(options.domain);
    ASSERT_TRUE(domain) << domain.error().message;
    hakobu::detail::Heap& heap = (*domain)->heap();
    ASSERT_TRUE(heap.has_huge_pages());
    // Checked in a function of its own: the store is removed whatever it finds.
    const auto check = [&] {
      ASSERT_TRUE(store->put("big", filled(4 << 20, 1)));  // bytes: one copy in
      StoreFile file(name, options.domain.name);
      std::size_t index = 4;
      for (std::size_t i = 0; i < 4; ++i) {
        if (hakobu::detail::has_value(file.entry(i).current.load())) index = i;
      }
      ASSERT_LT(index, 4U);
      const std::uint64_t stale = file.entry(index).current.load();
      const std::uint64_t record = hakobu::detail::value_record(stale);
      // The value is on huge pages; the record a lookup touches before it holds
      // a reference is not (a freed huge-page block gives back its header page).
      EXPECT_FALSE(heap.on_huge_pages(record));
      const auto table = heap.attachments(record);
      ASSERT_EQ(table.size(), 1U);
      EXPECT_TRUE(heap.on_huge_pages(table[0].load()));
      {
        auto value = store->get("big");
        ASSERT_TRUE(value);
        EXPECT_EQ(value->size(), 4U << 20);
        EXPECT_TRUE(all_equal(value->bytes(), 1));
      }
      // Replaced: the old record and its value are freed (the value's pages given
      // back whole). A lookup that read the old `current` just before: its
      // record's header is still there to be read, and refused as free.
      ASSERT_TRUE(store->put("big", filled(4 << 20, 2)));
      const std::uint64_t fresh = file.entry(index).current.load();
      file.entry(index).current.store(stale);
      EXPECT_EQ(store->get("big").error().code, StoreGetError::Corrupt);
      file.entry(index).current.store(fresh);
      EXPECT_TRUE(all_equal(store->get("big")->bytes(), 2));
    };
    check();
    EXPECT_TRUE(store->unlink());
  }
  EXPECT_TRUE(hakobu::test::files_of_domain(options.domain.name).empty());
}

// --- hostile contents ---------------------------------------------------------------

TEST(Store, DamagedFileIsBoundsChecked) {
  Store store = open_store(unique_name("hostile"), 4);
  ASSERT_TRUE(store.put("k", filled(100, 1)));
  StoreFile file(store.name());
  std::size_t index = 4;
  for (std::size_t i = 0; i < 4; ++i) {
    if (hakobu::detail::is_ready(file.entry(i).state.load())) index = i;
  }
  ASSERT_LT(index, 4U);
  hakobu::detail::StoreEntry& entry = file.entry(index);
  const std::uint64_t good = entry.current.load();

  // A record offset outside the heap, and one that is no block.
  entry.current.store(hakobu::detail::pack_value(std::uint64_t{1} << 45, 1));
  EXPECT_EQ(store.get("k").error().code, StoreGetError::Corrupt);
  entry.current.store(hakobu::detail::pack_value(4096 + 64, 1));
  EXPECT_EQ(store.get("k").error().code, StoreGetError::Corrupt);
  // The right block with another version's bits.
  entry.current.store(good ^ (std::uint64_t{1} << 40));
  EXPECT_EQ(store.get("k").error().code, StoreGetError::Corrupt);
  entry.current.store(good);
  EXPECT_TRUE(all_equal(store.get("k")->bytes(), 1));

  // An entry naming a block that is free: refused, never revived.
  ASSERT_TRUE(store.put("freed", filled(100, 5)));
  std::size_t freed_index = 4;
  for (std::size_t i = 0; i < 4; ++i) {
    if (i != index && hakobu::detail::is_ready(file.entry(i).state.load())) freed_index = i;
  }
  ASSERT_LT(freed_index, 4U);
  const std::uint64_t stale = file.entry(freed_index).current.load();
  ASSERT_TRUE(store.erase("freed"));  // its record goes back to the heap
  file.entry(freed_index).current.store(stale);
  EXPECT_EQ(store.get("freed").error().code, StoreGetError::Corrupt);
  file.entry(freed_index).current.store(0);

  // A key length past the entry: never a match, never listed.
  const std::uint32_t length = entry.key_bytes;
  entry.key_bytes = 100000;
  EXPECT_EQ(store.get("k").error().code, StoreGetError::NotFound);
  EXPECT_TRUE(store.keys().empty());
  entry.key_bytes = length;

  // Every entry in a state no writer makes: lookups end, puts take them over.
  for (std::size_t i = 0; i < 4; ++i) {
    if (i != index) file.entry(i).state.store(0xFFFF'FFFFU);
  }
  EXPECT_EQ(store.get("absent").error().code, StoreGetError::NotFound);
  EXPECT_TRUE(store.put("other", filled(1, 2)));

  // A header that lies about its size: attaching fails, nothing is read past the file.
  const std::uint64_t capacity = file.header().capacity;
  file.header().capacity = std::uint64_t{1} << 19;
  EXPECT_EQ(Store::attach(store.name(), store_options()).error().code, OpenError::Corrupt);
  file.header().capacity = 3;
  EXPECT_EQ(Store::attach(store.name(), store_options()).error().code, OpenError::Corrupt);
  file.header().capacity = capacity;
  file.header().magic.store(1);
  EXPECT_EQ(Store::attach(store.name(), store_options()).error().code, OpenError::Corrupt);
  file.header().magic.store(hakobu::detail::kStoreMagic);
  EXPECT_TRUE(Store::attach(store.name(), store_options()));
  ASSERT_TRUE(store.unlink());
}

// --- waiting for a key ------------------------------------------------------------

TEST(StoreWait, ReturnsAtOnceOrTimesOut) {
  Store store = open_store(unique_name("wait-timeout"));
  ASSERT_TRUE(store.put("here", filled(10, 6)));
  auto now = store.wait_for("here", 0s);
  ASSERT_TRUE(now) << now.error().message;
  EXPECT_TRUE(all_equal(now->bytes(), 6));
  EXPECT_EQ(store.wait_for("absent", 0s).error().code, StoreWaitError::Timeout) << "0: one lookup";
  EXPECT_EQ(store.wait_for("absent", 30ms).error().code, StoreWaitError::Timeout);
  EXPECT_EQ(store.wait_for("absent", -5s).error().code, StoreWaitError::Timeout) << "negative: as 0";
  EXPECT_EQ(store.wait_for("", 1s).error().code, StoreWaitError::InvalidKey);
  EXPECT_EQ(store.wait_for(std::string(hakobu::kMaxStoreKeyBytes + 1, 'k'), 1s).error().code,
            StoreWaitError::InvalidKey);
  ASSERT_TRUE(store.erase("here"));
  EXPECT_EQ(store.wait_for("here", 0s).error().code, StoreWaitError::Timeout) << "an erased key has no value";
  ASSERT_TRUE(store.unlink());
  EXPECT_EQ(store.wait_for("here", 1s).error().code, StoreWaitError::Closed);
}

TEST(StoreWait, WakesForAPublishInAnotherProcess) {
  Store store = open_store(unique_name("wait-peer"));
  StoreFile file(store.name());
  // The waiter sleeps (announced in the header) before the peer publishes, so
  // the wake-up path is what returns it; the 60 s bound is a watchdog only.
  auto waiter = std::async(std::launch::async, [&] { return store.wait_for("late", 60s); });
  ASSERT_TRUE(wait_until([&] { return file.header().waiters.load() != 0; }));
  EXPECT_EQ(run_peer({"put", store.name(), "late", "3000", "9"}), 0);
  ASSERT_EQ(waiter.wait_for(60s), std::future_status::ready);
  auto value = waiter.get();
  ASSERT_TRUE(value) << value.error().message;
  EXPECT_EQ(value->size(), 3000U);
  EXPECT_TRUE(all_equal(value->bytes(), 9));
  EXPECT_EQ(file.header().waiters.load(), 0U) << "the waiter took its announcement back";
  ASSERT_TRUE(store.unlink());
}

TEST(StoreWait, APeerWaitsForThisProcess) {
  Store store = open_store(unique_name("wait-here"));
  StoreFile file(store.name());
  Process peer(kPeer, {"wait", store.name(), "from-here", "500", "3"});
  ASSERT_GT(peer.pid(), 0);
  ASSERT_TRUE(wait_until([&] { return file.header().waiters.load() != 0 || hakobu::test::has_exited(peer.pid()); }));
  ASSERT_TRUE(store.put("other-key", filled(5, 1))) << "a publish of another key wakes it: it sleeps again";
  ASSERT_TRUE(store.put("from-here", filled(500, 3)));
  EXPECT_EQ(peer.wait(60s), 0);
  ASSERT_TRUE(store.unlink());
}

TEST(StoreWait, EndsWhenTheStoreIsUnlinked) {
  Store store = open_store(unique_name("wait-unlink"));
  StoreFile file(store.name());
  auto waiter = std::async(std::launch::async, [&] { return store.wait("never"); });
  ASSERT_TRUE(wait_until([&] { return file.header().waiters.load() != 0; }));
  auto other = Store::attach(store.name(), store_options());
  ASSERT_TRUE(other) << other.error().message;
  ASSERT_TRUE(other->unlink());
  ASSERT_EQ(waiter.wait_for(60s), std::future_status::ready) << "the waiter looks at the store every poll";
  EXPECT_EQ(waiter.get().error().code, StoreWaitError::Closed);
}

// --- store values attached to messages (Loan::attach(const StoreValue&, ...)) ---------

/// A loan on `queue` that names `range` of `value`: three u64 (attachment, offset, size).
hakobu::Loan loan_naming(hakobu::Queue& queue, const hakobu::StoreValue& value, std::span<const std::byte> range) {
  auto loan = queue.loan(3 * sizeof(std::uint64_t), MessageKind::Bytes, 1);
  EXPECT_TRUE(loan) << loan.error().message;
  auto attached = loan->attach(value, range);
  EXPECT_TRUE(attached) << attached.error().message;
  if (!attached) return {};
  const std::uint64_t fields[3] = {attached->index, attached->offset, range.size()};
  std::memcpy(loan->bytes().data(), fields, sizeof fields);
  return std::move(loan).value();
}

TEST(StoreRef, AnAttachedValueOutlivesRepublishEraseAndUnlinkWithoutACopy) {
  Store store = open_store(unique_name("ref"));
  auto queue = hakobu::Queue::create(unique_name("ref-q"));
  ASSERT_TRUE(queue) << queue.error().message;
  const HeapUse before = settled_heap_use(store);
  constexpr std::size_t kSize = std::size_t{4} << 20;
  ASSERT_TRUE(store.put("X", filled(kSize, 21)));
  auto value = store.get("X");
  ASSERT_TRUE(value) << value.error().message;
  const HeapUse published = heap_use();
  // The whole value and a part of it, each in its own message.
  ASSERT_TRUE(queue->put(loan_naming(*queue, *value, value->bytes())));
  ASSERT_TRUE(queue->put(loan_naming(*queue, *value, value->bytes().subspan(1000, 5000))));
  EXPECT_LT(heap_use().bytes, published.bytes + kSize / 2) << "attaching copies nothing";
  // The store moves on; the sender lets go of its handle.
  ASSERT_TRUE(store.put("X", filled(kSize, 22)));
  ASSERT_TRUE(store.erase("X"));
  value->reset();
  ASSERT_TRUE(store.unlink());
  EXPECT_EQ(run_peer({"receive", queue->name(), std::to_string(kSize), "21"}), 0)
      << "another process reads the version that was sent";
  EXPECT_EQ(run_peer({"receive", queue->name(), "5000", "21"}), 0);
  store.close();
  EXPECT_EQ(heap_use(), before) << "the version's memory returned with the last message";
  ASSERT_TRUE(queue->unlink());
}

TEST(StoreRef, ArrayElementsAttachTheirOwnBlockAndRangesAreChecked) {
  Store store = open_store(unique_name("ref-array"));
  auto queue = hakobu::Queue::create(unique_name("ref-array-q"));
  ASSERT_TRUE(queue) << queue.error().message;
  // An array value whose elements are the value block's attachment (published by reference).
  auto elements = store.loan(1 << 16);
  ASSERT_TRUE(elements);
  std::memset(elements->bytes().data(), 7, elements->bytes().size());
  const std::int64_t shape[] = {1 << 13};
  const std::int64_t strides[] = {8};
  auto meta = queue->loan_array_ref(hakobu::DType::of<double>(), shape, strides, 0);
  ASSERT_TRUE(meta) << meta.error().message;
  auto published = store.loan(meta->bytes().size(), MessageKind::Array, 1);
  ASSERT_TRUE(published);
  std::memcpy(published->bytes().data(), meta->bytes().data(), meta->bytes().size());
  ASSERT_TRUE(published->attach(*elements));
  elements = hakobu::Loan();
  ASSERT_TRUE(store.put("A", std::move(*published)));
  auto value = store.get("A");
  ASSERT_TRUE(value);
  auto view = value->array();
  ASSERT_TRUE(view) << view.error().message;
  const std::span<const std::byte> data(view->data, static_cast<std::size_t>(view->size()) * 8);
  auto loan = queue->loan(8, MessageKind::Bytes, 2);
  ASSERT_TRUE(loan);
  auto attached = loan->attach(*value, data.subspan(8, 64));
  ASSERT_TRUE(attached) << attached.error().message;
  EXPECT_EQ(attached->offset, 8U) << "the elements' own block is attached, not the record";
  // Outside the value's memory, empty, or released: nothing is attached.
  const std::byte elsewhere[16]{};
  EXPECT_EQ(loan->attach(*value, std::span<const std::byte>(elsewhere)).error().code, hakobu::AttachError::NotShared);
  EXPECT_EQ(loan->attach(*value, data.subspan(0, 0)).error().code, hakobu::AttachError::NotShared);
  EXPECT_EQ(loan->attach(*value, std::span<const std::byte>(data.data() + 8, data.size())).error().code,
            hakobu::AttachError::NotShared)
      << "a range running past the block";
  EXPECT_EQ(loan->attachment_count(), 1U);
  hakobu::StoreValue released;
  EXPECT_EQ(loan->attach(released).error().code, hakobu::AttachError::NotShared);
  ASSERT_TRUE(store.unlink());
  ASSERT_TRUE(queue->unlink());
}

}  // namespace
