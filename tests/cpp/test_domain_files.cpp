// Unit tests: the files of domains by name (hakobu/domain_files.hpp) — parsing,
// forming, listing in removal order, and agreement with the names the library
// itself gives the files it creates.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "channel/ring.hpp"
#include "channel/topic_file.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/domain_files.hpp"
#include "hakobu/inspect.hpp"
#include "hakobu/queue.hpp"
#include "hakobu/store.hpp"
#include "hakobu/sync.hpp"
#include "hakobu/topic.hpp"
#include "platform/os.hpp"
#include "test_support.hpp"

namespace {

using hakobu::FileKind;

/// Makes an empty file in /dev/shm and removes it on destruction.
class StrayFile {
 public:
  explicit StrayFile(std::string name) : path_("/dev/shm/" + std::move(name)) {
    FILE* f = std::fopen(path_.c_str(), "w");
    made_ = f != nullptr;
    if (f != nullptr) std::fclose(f);
  }
  StrayFile(const StrayFile&) = delete;
  StrayFile& operator=(const StrayFile&) = delete;
  ~StrayFile() { (void)std::remove(path_.c_str()); }
  [[nodiscard]] bool made() const { return made_; }

 private:
  std::string path_;
  bool made_ = false;
};

std::vector<FileKind> kinds(const std::vector<hakobu::DomainFile>& files) {
  std::vector<FileKind> out;
  for (const auto& f : files) out.push_back(f.kind);
  return out;
}

TEST(DomainFiles, ParsesEveryKindOfName) {
  auto registry = hakobu::parse_file_name("hakobu:d1:registry");
  ASSERT_TRUE(registry);
  EXPECT_EQ(registry->domain, "d1");
  EXPECT_EQ(registry->kind, FileKind::Registry);
  EXPECT_EQ(registry->name, "");

  auto heap = hakobu::parse_file_name("hakobu:d1:heap");
  ASSERT_TRUE(heap);
  EXPECT_EQ(heap->kind, FileKind::Heap);

  auto queue = hakobu::parse_file_name("hakobu:d_2.x:q:frames-1");
  ASSERT_TRUE(queue);
  EXPECT_EQ(queue->domain, "d_2.x");
  EXPECT_EQ(queue->kind, FileKind::Queue);
  EXPECT_EQ(queue->name, "frames-1");

  auto store = hakobu::parse_file_name("hakobu:d1:st:features");
  ASSERT_TRUE(store);
  EXPECT_EQ(store->kind, FileKind::Store);
  EXPECT_EQ(store->name, "features");

  auto sync = hakobu::parse_file_name("hakobu:d1:s:db.lock");
  ASSERT_TRUE(sync);
  EXPECT_EQ(sync->kind, FileKind::Sync);
  EXPECT_EQ(sync->name, "db.lock");

  auto topic = hakobu::parse_file_name("hakobu:d1:t:camera.0");
  ASSERT_TRUE(topic);
  EXPECT_EQ(topic->kind, FileKind::Topic);
  EXPECT_EQ(topic->name, "camera.0");

  auto building = hakobu::parse_file_name("hakobu:d1:new:frames:0123abcd");
  ASSERT_TRUE(building);
  EXPECT_EQ(building->kind, FileKind::NewQueue);
  EXPECT_EQ(building->name, "frames");

  for (const char* unknown : {"hakobu:d1:topic:x", "hakobu:d1:heap:extra", "hakobu:d1:registry:", "hakobu:d1:",
                              "hakobu:d1:q:", "hakobu:d1:q:a:b", "hakobu:d1:q:-bad", "hakobu:d1:new:frames",
                              "hakobu:d1:st:", "hakobu:d1:st:a:b", "hakobu:d1:s:", "hakobu:d1:s:-x", "hakobu:d1:sync:x",
                              "hakobu:d1:t:", "hakobu:d1:t:a:b", "hakobu:d1:t:-x", "hakobu:d1:t"}) {
    auto parsed = hakobu::parse_file_name(unknown);
    ASSERT_TRUE(parsed) << unknown;
    EXPECT_EQ(parsed->domain, "d1") << unknown;
    EXPECT_EQ(parsed->kind, FileKind::Other) << unknown;
    EXPECT_EQ("hakobu:d1:" + parsed->name, unknown) << "Other keeps what follows the domain";
  }
}

TEST(DomainFiles, NamesOfNoDomainAreNotParsed) {
  for (const char* foreign : {"", "hakobu", "hakobu:", "hakobu:d1", "hakobu::heap", "hakobu:.d:heap", "hakobu:-d:heap",
                              "Hakobu:d1:heap", "sem.hakobu:d1:heap", "psm_1234"}) {
    EXPECT_FALSE(hakobu::parse_file_name(foreign)) << foreign;
  }
  EXPECT_FALSE(hakobu::parse_file_name("hakobu:" + std::string(65, 'a') + ":heap")) << "a domain name too long";
}

TEST(DomainFiles, FormedNamesParseBack) {
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Registry), "hakobu:d1:registry");
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Heap), "hakobu:d1:heap");
  EXPECT_EQ(hakobu::file_name("d1", FileKind::HugeHeap), "hakobu:d1:heap");
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Queue, "frames"), "hakobu:d1:q:frames");
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Queue, "a:b"), "") << "not a queue name";
  EXPECT_EQ(hakobu::file_name("d:1", FileKind::Registry), "") << "not a domain name";
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Store, "features"), "hakobu:d1:st:features");
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Sync, "db"), "hakobu:d1:s:db");
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Sync, "a:b"), "") << "not an object name";
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Topic, "camera"), "hakobu:d1:t:camera");
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Topic, "a:b"), "") << "not an object name";
  EXPECT_EQ(hakobu::file_name("d1", FileKind::NewQueue, "frames"), "");
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Registry), hakobu::Domain::file_prefix("d1") + "registry");
  for (auto kind :
       {FileKind::Registry, FileKind::Heap, FileKind::Queue, FileKind::Store, FileKind::Sync, FileKind::Topic}) {
    auto parsed = hakobu::parse_file_name(hakobu::file_name("d1", kind, "frames"));
    ASSERT_TRUE(parsed) << hakobu::to_string(kind);
    EXPECT_EQ(parsed->kind, kind);
    EXPECT_EQ(parsed->domain, "d1");
  }
}

TEST(DomainFiles, KindsHaveStableWords) {
  EXPECT_EQ(hakobu::to_string(FileKind::Registry), "registry");
  EXPECT_EQ(hakobu::to_string(FileKind::Heap), "heap");
  EXPECT_EQ(hakobu::to_string(FileKind::HugeHeap), "huge_heap");
  EXPECT_EQ(hakobu::to_string(FileKind::Queue), "queue");
  EXPECT_EQ(hakobu::to_string(FileKind::NewQueue), "new_queue");
  EXPECT_EQ(hakobu::to_string(FileKind::Other), "other");
  EXPECT_EQ(hakobu::to_string(FileKind::Store), "store");
  EXPECT_EQ(hakobu::to_string(FileKind::Sync), "sync");
  EXPECT_EQ(hakobu::to_string(FileKind::Topic), "topic");
}

// The files the library creates are found under the kinds the parser gives
// them: the names formed in Domain and Queue agree with the listing.
TEST(DomainFiles, ListsWhatTheLibraryCreates) {
  const std::string name = hakobu::test::domain() + "-files";
  ASSERT_TRUE(hakobu::list_domain_files(name).empty());
  hakobu::QueueOptions options;
  options.domain.name = name;
  {
    auto queue = hakobu::Queue::create("frames", options);
    ASSERT_TRUE(queue) << queue.error().message;
    const bool huge = queue->domain().stats().huge_pages;
    const auto files = hakobu::list_domain_files(name);
    std::vector<FileKind> expected{FileKind::Queue};
    if (huge) expected.push_back(FileKind::HugeHeap);
    expected.push_back(FileKind::Heap);
    expected.push_back(FileKind::Registry);
    EXPECT_EQ(kinds(files), expected);
    ASSERT_FALSE(files.empty());
    EXPECT_EQ(files.front().name, "frames");
    EXPECT_EQ(files.front().path, "/dev/shm/hakobu:" + name + ":q:frames");
    std::vector<std::string> paths;
    for (const auto& f : files) paths.push_back(f.path);
    auto seen = hakobu::test::files_of_domain(name);
    std::sort(paths.begin(), paths.end());
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(paths, seen) << "every file of the domain, and nothing else";
    const auto domains = hakobu::list_domains();
    EXPECT_NE(std::find(domains.begin(), domains.end(), name), domains.end());
    EXPECT_TRUE(std::is_sorted(domains.begin(), domains.end()));
    ASSERT_TRUE(hakobu::Queue::remove("frames", name));
  }
  EXPECT_TRUE(hakobu::list_domain_files(name).empty()) << "the last process out removed the domain";
  const auto domains = hakobu::list_domains();
  EXPECT_EQ(std::find(domains.begin(), domains.end(), name), domains.end());
}

// A domain is listed from its names alone, damaged or half-built, in the order
// a removal takes the files: queues, then other files, the heap, the registry.
TEST(DomainFiles, ListsLeftoversInRemovalOrder) {
  const std::string name = hakobu::test::domain() + "-left";
  const std::string prefix = "hakobu:" + name + ":";
  StrayFile registry(prefix + "registry");
  StrayFile heap(prefix + "heap");
  StrayFile queue_b(prefix + "q:b");
  StrayFile queue_a(prefix + "q:a");
  StrayFile building(prefix + "new:c:0123");
  StrayFile unknown(prefix + "topic:d");
  StrayFile topic(prefix + "t:e");
  StrayFile another_domain("hakobu:" + name + "x:q:a");
  ASSERT_TRUE(registry.made() && heap.made() && queue_a.made() && queue_b.made() && building.made() && unknown.made() &&
              topic.made() && another_domain.made());
  const auto files = hakobu::list_domain_files(name);
  ASSERT_EQ(files.size(), 7U);
  // Named objects of every kind come first, sorted by path ("q:" before "t:").
  EXPECT_EQ(kinds(files), (std::vector<FileKind>{FileKind::Queue, FileKind::Queue, FileKind::Topic, FileKind::NewQueue,
                                                 FileKind::Other, FileKind::Heap, FileKind::Registry}));
  EXPECT_EQ(files[0].name, "a");
  EXPECT_EQ(files[1].name, "b");
  EXPECT_EQ(files[2].name, "e");
  EXPECT_EQ(files[3].name, "c");
  EXPECT_EQ(files[4].name, "topic:d");
  EXPECT_EQ(files[6].path, "/dev/shm/" + prefix + "registry");
  const auto domains = hakobu::list_domains();
  EXPECT_NE(std::find(domains.begin(), domains.end(), name), domains.end());
  EXPECT_NE(std::find(domains.begin(), domains.end(), name + "x"), domains.end());
}

TEST(DomainFiles, InvalidDomainNamesListNothing) {
  EXPECT_TRUE(hakobu::list_domain_files("").empty());
  EXPECT_TRUE(hakobu::list_domain_files("a:b").empty());
  EXPECT_TRUE(hakobu::list_domain_files("../etc").empty());
}

TEST(DomainFiles, HugetlbfsMountsIncludeThoseTheLibraryUses) {
  const auto mounts = hakobu::hugetlbfs_mounts();
  for (const auto& mount : mounts) {
    EXPECT_EQ(mount.path.front(), '/') << mount.path;
    EXPECT_EQ(mount.page_size & (mount.page_size - 1), 0U) << "a power of two: " << mount.page_size;
  }
  // The library's own choice (the default page size) is a subset of every
  // mount.
  for (const auto& path : hakobu::platform::hugetlbfs_mounts()) {
    EXPECT_TRUE(std::any_of(mounts.begin(), mounts.end(), [&](const auto& m) { return m.path == path; })) << path;
  }
  EXPECT_EQ(hakobu::shm_directory(), "/dev/shm");
}

}  // namespace

namespace {

/// A file of `size` zero bytes in /dev/shm, mode 0600 (what the library
/// accepts from its own user); removed on destruction.
class ZeroFile {
 public:
  ZeroFile(std::string name, std::size_t size) : path_("/dev/shm/" + std::move(name)) {
    const int fd = ::open(path_.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    made_ = fd >= 0 && ::ftruncate(fd, static_cast<off_t>(size)) == 0;
    if (fd >= 0) ::close(fd);
  }
  ZeroFile(const ZeroFile&) = delete;
  ZeroFile& operator=(const ZeroFile&) = delete;
  ~ZeroFile() { (void)std::remove(path_.c_str()); }
  [[nodiscard]] bool made() const { return made_; }

 private:
  std::string path_;
  bool made_ = false;
};

}  // namespace

// Stores and sync objects are listed as such, with the names the library gives
// their files, and their summaries say what is in them.
TEST(DomainFiles, ListsAndInspectsStoresAndSyncObjects) {
  const std::string name = hakobu::test::domain() + "-objects";
  hakobu::StoreOptions store_options;
  store_options.domain.name = name;
  store_options.capacity = 8;
  hakobu::SyncOptions sync_options;
  sync_options.domain.name = name;
  {
    auto store = hakobu::Store::create("features", store_options);
    ASSERT_TRUE(store) << store.error().message;
    auto lock = hakobu::Lock::open("db", hakobu::OpenMode::CreateExclusive, sync_options);
    ASSERT_TRUE(lock) << lock.error().message;
    auto event = hakobu::Event::open("ready", hakobu::OpenMode::CreateExclusive, sync_options);
    ASSERT_TRUE(event) << event.error().message;

    const auto files = hakobu::list_domain_files(name);
    ASSERT_GE(files.size(), 3U);
    EXPECT_EQ(files[0].kind, FileKind::Sync);
    EXPECT_EQ(files[0].name, "db");
    EXPECT_EQ(files[1].kind, FileKind::Sync);
    EXPECT_EQ(files[1].name, "ready");
    EXPECT_EQ(files[2].kind, FileKind::Store);
    EXPECT_EQ(files[2].name, "features");
    EXPECT_EQ(files[2].path, "/dev/shm/" + hakobu::file_name(name, FileKind::Store, "features"));
    EXPECT_EQ(files[0].path, "/dev/shm/" + hakobu::file_name(name, FileKind::Sync, "db"));

    auto free_lock = hakobu::inspect_sync("db", name);
    ASSERT_TRUE(free_lock) << free_lock.error().message;
    EXPECT_EQ(free_lock->kind_name, "lock");
    EXPECT_FALSE(free_lock->held);
    ASSERT_TRUE(lock->acquire());
    auto held = hakobu::inspect_sync("db", name);
    ASSERT_TRUE(held) << held.error().message;
    EXPECT_TRUE(held->held);
    EXPECT_TRUE(held->holder_alive);
    EXPECT_EQ(held->holder_pid, static_cast<std::int32_t>(::getpid()));
    EXPECT_EQ(held->owner_deaths, 0U);
    ASSERT_TRUE(lock->release());

    auto clear = hakobu::inspect_sync("ready", name);
    ASSERT_TRUE(clear) << clear.error().message;
    EXPECT_EQ(clear->kind_name, "event");
    EXPECT_FALSE(clear->is_set);
    event->set();
    auto set = hakobu::inspect_sync("ready", name);
    ASSERT_TRUE(set);
    EXPECT_TRUE(set->is_set);

    auto empty = hakobu::inspect_store("features", name);
    ASSERT_TRUE(empty) << empty.error().message;
    EXPECT_EQ(empty->capacity, 8U);
    EXPECT_TRUE(empty->keys.empty());
    const std::vector<std::byte> bytes(1000, std::byte{7});
    auto version = store->put("x", bytes);
    ASSERT_TRUE(version) << version.error().message;
    ASSERT_TRUE(store->put("a", std::span<const std::byte>(bytes).first(10), hakobu::MessageKind::Object));
    {
      auto value = store->get("x");
      ASSERT_TRUE(value) << value.error().message;
      auto read = hakobu::inspect_store("features", name);
      ASSERT_TRUE(read) << read.error().message;
      ASSERT_EQ(read->keys.size(), 2U);
      EXPECT_EQ(read->keys[0].key, "a");
      EXPECT_EQ(read->keys[0].kind, "object");
      EXPECT_EQ(read->keys[0].size, 10U);
      EXPECT_EQ(read->keys[0].readers, 0U);
      EXPECT_EQ(read->keys[1].key, "x");
      EXPECT_EQ(read->keys[1].kind, "bytes");
      EXPECT_EQ(read->keys[1].size, 1000U);
      EXPECT_EQ(read->keys[1].version, *version);
      EXPECT_EQ(read->keys[1].readers, 1U) << "the value held above";
      EXPECT_FALSE(read->keys[1].damaged);
      EXPECT_EQ(read->value_bytes, 1010U);
    }
    auto released = hakobu::inspect_store("features", name);
    ASSERT_TRUE(released);
    ASSERT_EQ(released->keys.size(), 2U);
    EXPECT_EQ(released->keys[1].readers, 0U) << "the value was let go";
    ASSERT_TRUE(store->erase("a"));
    auto erased = hakobu::inspect_store("features", name);
    ASSERT_TRUE(erased);
    ASSERT_EQ(erased->keys.size(), 1U);
    EXPECT_EQ(erased->keys[0].key, "x");

    EXPECT_EQ(hakobu::inspect_sync("features", name).error().code, hakobu::OpenError::NotFound);
    EXPECT_EQ(hakobu::inspect_store("db", name).error().code, hakobu::OpenError::NotFound);
    EXPECT_EQ(hakobu::inspect_sync("a:b", name).error().code, hakobu::OpenError::InvalidName);

    ASSERT_TRUE(store->unlink());
    ASSERT_TRUE(hakobu::Lock::remove("db", name));
    ASSERT_TRUE(hakobu::Event::remove("ready", name));
  }
  EXPECT_TRUE(hakobu::list_domain_files(name).empty()) << "the last process out removed the domain";
}

// Files of the right names whose contents are not what they should be are
// reported damaged, never read past their end.
TEST(DomainFiles, InspectingDamagedObjectsReportsCorrupt) {
  const std::string name = hakobu::test::domain() + "-damaged";
  hakobu::SyncOptions options;
  options.domain.name = name;
  auto keep = hakobu::Lock::open("keep", hakobu::OpenMode::CreateExclusive,
                                 options);  // keeps the domain
  ASSERT_TRUE(keep) << keep.error().message;
  const std::string prefix = "hakobu:" + name + ":";
  {
    ZeroFile short_sync(prefix + "s:short", 16);
    ZeroFile zero_sync(prefix + "s:zero", 4096);
    ZeroFile short_store(prefix + "st:short", 16);
    ZeroFile zero_store(prefix + "st:zero", 1 << 16);
    ZeroFile short_topic(prefix + "t:short", 16);
    ZeroFile zero_topic(prefix + "t:zero", 1 << 16);
    ASSERT_TRUE(short_sync.made() && zero_sync.made() && short_store.made() && zero_store.made() &&
                short_topic.made() && zero_topic.made());
    for (const char* object : {"short", "zero"}) {
      auto sync = hakobu::inspect_sync(object, name);
      ASSERT_FALSE(sync) << object;
      EXPECT_EQ(sync.error().code, hakobu::OpenError::Corrupt) << object << ": " << sync.error().message;
      auto store = hakobu::inspect_store(object, name);
      ASSERT_FALSE(store) << object;
      EXPECT_EQ(store.error().code, hakobu::OpenError::Corrupt) << object << ": " << store.error().message;
      auto topic = hakobu::inspect_topic(object, name);
      ASSERT_FALSE(topic) << object;
      EXPECT_EQ(topic.error().code, hakobu::OpenError::Corrupt) << object << ": " << topic.error().message;
    }
  }
  ASSERT_TRUE(hakobu::Lock::remove("keep", name));
}

// Every kind is named and summarized (no kind with a file of its own size is
// called damaged), and a file whose size disagrees with its kind is Corrupt,
// as an open would call it.
TEST(DomainFiles, InspectingEveryKindOfSyncObject) {
  const std::string name = hakobu::test::domain() + "-kinds";
  hakobu::SyncOptions options;
  options.domain.name = name;
  {
    auto sem = hakobu::BoundedSemaphore::open("sem", 3, hakobu::OpenMode::CreateExclusive, options);
    auto barrier = hakobu::Barrier::open("bar", 4, hakobu::OpenMode::CreateExclusive, options);
    auto rlock = hakobu::RLock::open("rl", hakobu::OpenMode::CreateExclusive, options);
    auto lock = hakobu::Lock::open("cl", hakobu::OpenMode::CreateExclusive, options);
    ASSERT_TRUE(sem && barrier && rlock && lock);
    auto cond = hakobu::Condition::open("cond", *lock, hakobu::OpenMode::CreateExclusive, options);
    const std::int64_t shape[] = {2, 5};
    auto array = hakobu::SharedArray::open("arr", hakobu::DType{hakobu::DTypeCode::Float, 32, 1}, shape,
                                           hakobu::OpenMode::CreateExclusive, options);
    ASSERT_TRUE(cond && array);

    ASSERT_TRUE(sem->acquire());
    ASSERT_TRUE(sem->acquire());
    auto s = hakobu::inspect_sync("sem", name);
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(s->kind_name, "bounded_semaphore");
    EXPECT_EQ(s->value, 1U);
    EXPECT_EQ(s->bound, 3U);
    ASSERT_EQ(s->holders.size(), 1U);
    EXPECT_EQ(s->holders[0].counts, 2U);
    EXPECT_EQ(s->holders[0].pid, static_cast<std::int32_t>(::getpid()));
    EXPECT_TRUE(s->holders[0].alive);
    ASSERT_TRUE(sem->release(2));

    barrier->abort();
    auto b = hakobu::inspect_sync("bar", name);
    ASSERT_TRUE(b) << b.error().message;
    EXPECT_EQ(b->kind_name, "barrier");
    EXPECT_EQ(b->parties, 4U);
    EXPECT_EQ(b->n_waiting, 0U);
    EXPECT_TRUE(b->broken);

    ASSERT_TRUE(rlock->acquire());
    ASSERT_TRUE(rlock->acquire());
    auto r = hakobu::inspect_sync("rl", name);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->kind_name, "rlock");
    EXPECT_TRUE(r->held && r->holder_alive);
    EXPECT_EQ(r->depth, 2U);
    ASSERT_TRUE(rlock->release());
    ASSERT_TRUE(rlock->release());

    auto c = hakobu::inspect_sync("cond", name);
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->kind_name, "condition");
    EXPECT_EQ(c->lock_name, "cl");

    auto a = hakobu::inspect_sync("arr", name);
    ASSERT_TRUE(a) << a.error().message;
    EXPECT_EQ(a->kind_name, "array");
    EXPECT_EQ(a->dtype, "float32");
    EXPECT_EQ(a->shape, (std::vector<std::int64_t>{2, 5}));
    EXPECT_EQ(a->data_bytes, 40U);
    {
      auto value = hakobu::SharedArray::open_value("val", hakobu::DType{hakobu::DTypeCode::Int, 64, 1}, {},
                                                   hakobu::OpenMode::CreateExclusive, options);
      ASSERT_TRUE(value) << value.error().message;
      auto v = hakobu::inspect_sync("val", name);
      ASSERT_TRUE(v) << v.error().message;
      EXPECT_EQ(v->kind_name, "value");
      EXPECT_EQ(v->dtype, "int64");
      EXPECT_TRUE(v->shape.empty());
    }

    // A semaphore file cut to one page: its kind says more, so it is damaged.
    const std::string path = "/dev/shm/" + hakobu::file_name(name, FileKind::Sync, "sem");
    ASSERT_EQ(::truncate(path.c_str(), 4096), 0);
    auto cut = hakobu::inspect_sync("sem", name);
    ASSERT_FALSE(cut);
    EXPECT_EQ(cut.error().code, hakobu::OpenError::Corrupt) << cut.error().message;
  }
  for (const char* object : {"sem", "bar", "rl", "cl", "cond", "arr", "val"}) {
    EXPECT_TRUE(hakobu::Lock::remove(object, name)) << object;
  }
  EXPECT_TRUE(hakobu::list_domain_files(name).empty()) << "the last process out removed the domain";
}

// A topic is listed as such, and its summary shows its settings, what its ring
// holds, and each subscription's policy, lag, drops and receipts.
TEST(DomainFiles, ListsAndInspectsTopics) {
  const std::string name = hakobu::test::domain() + "-topics";
  hakobu::TopicOptions options;
  options.domain.name = name;
  options.capacity = 8;
  options.history = 2;
  options.max_subscribers = 4;
  {
    auto topic = hakobu::Topic::create("camera", options);
    ASSERT_TRUE(topic) << topic.error().message;
    const auto files = hakobu::list_domain_files(name);
    ASSERT_FALSE(files.empty());
    EXPECT_EQ(files.front().kind, FileKind::Topic);
    EXPECT_EQ(files.front().name, "camera");
    EXPECT_EQ(files.front().path, "/dev/shm/" + hakobu::file_name(name, FileKind::Topic, "camera"));

    auto fresh = hakobu::inspect_topic("camera", name);
    ASSERT_TRUE(fresh) << fresh.error().message;
    EXPECT_EQ(fresh->name, "camera");
    EXPECT_EQ(fresh->domain, name);
    EXPECT_EQ(fresh->capacity, 8U);
    EXPECT_EQ(fresh->history, 2U);
    EXPECT_EQ(fresh->max_subscribers, 4U);
    EXPECT_EQ(fresh->inline_capacity, topic->stats().inline_capacity);
    EXPECT_EQ(fresh->published, 0U);
    EXPECT_EQ(fresh->creator_pid, static_cast<std::int32_t>(::getpid()));
    EXPECT_FALSE(fresh->unlinked);
    EXPECT_EQ(fresh->retained, 0U);
    EXPECT_TRUE(fresh->subscribers.empty());

    auto keeping = topic->subscribe({.on_full = hakobu::OnFull::Block});
    ASSERT_TRUE(keeping) << keeping.error().message;
    auto lagging = topic->subscribe({.on_full = hakobu::OnFull::DropOldest});
    ASSERT_TRUE(lagging) << lagging.error().message;
    const std::vector<std::byte> small(100, std::byte{1});
    const std::vector<std::byte> large(4096, std::byte{2});  // past the inline capacity: a heap block
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(topic->publish(small));
    ASSERT_TRUE(topic->publish(large));
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(keeping->try_get());

    auto held = hakobu::inspect_topic("camera", name);
    ASSERT_TRUE(held) << held.error().message;
    EXPECT_EQ(held->published, 4U);
    EXPECT_EQ(held->retained, 4U) << "the lagging subscriber's cursor holds every message";
    EXPECT_EQ(held->retained_bytes, 3 * small.size() + large.size());
    EXPECT_EQ(held->tombstones, 0U);
    EXPECT_EQ(held->damaged_slots, 0U);
    ASSERT_EQ(held->subscribers.size(), 2U);
    const auto& keeper = held->subscribers[0];
    const auto& laggard = held->subscribers[1];
    EXPECT_LT(keeper.entry, laggard.entry) << "listed by entry";
    EXPECT_EQ(keeper.pid, static_cast<std::int32_t>(::getpid()));
    EXPECT_TRUE(keeper.alive);
    EXPECT_EQ(keeper.on_full, "block");
    EXPECT_EQ(keeper.state, "active");
    EXPECT_EQ(keeper.lag, 0U);
    EXPECT_EQ(keeper.received, 4U);
    EXPECT_EQ(keeper.dropped, 0U);
    EXPECT_EQ(laggard.on_full, "drop_oldest");
    EXPECT_TRUE(laggard.alive);
    EXPECT_EQ(laggard.lag, 4U);
    EXPECT_EQ(laggard.lag, lagging->lag());
    EXPECT_EQ(laggard.received, 0U);

    ASSERT_TRUE(lagging->try_get());  // message 0: from here it has started
    // Eight more: the ring of 8 wraps, so publishers skip the lagging
    // subscriber past what they reuse (messages 1..3); the blocking one keeps up.
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(topic->publish(small, std::chrono::nanoseconds(0)));
      ASSERT_TRUE(keeping->try_get());
    }
    auto wrapped = hakobu::inspect_topic("camera", name);
    ASSERT_TRUE(wrapped) << wrapped.error().message;
    EXPECT_EQ(wrapped->published, 12U);
    ASSERT_EQ(wrapped->subscribers.size(), 2U);
    EXPECT_EQ(wrapped->subscribers[0].received, 12U);
    EXPECT_EQ(wrapped->subscribers[1].dropped, 3U) << "publishers moved it past messages 1..3 to reuse their slots";
    EXPECT_EQ(wrapped->subscribers[1].lag, 8U);
    EXPECT_EQ(wrapped->subscribers[1].lag, lagging->lag());
    EXPECT_EQ(wrapped->retained, 8U) << "a full ring: the lagging cursor holds it";
    auto next = lagging->try_get();
    ASSERT_TRUE(next) << next.error().message;
    EXPECT_EQ(next->sequence(), 4U);
    EXPECT_EQ(next->missed(), 3U);
    EXPECT_EQ(lagging->dropped(), 3U) << "what the subscriber learns agrees with what the file said";
    auto read = hakobu::inspect_topic("camera", name);
    ASSERT_TRUE(read) << read.error().message;
    ASSERT_EQ(read->subscribers.size(), 2U);
    EXPECT_EQ(read->subscribers[1].received, 2U);
    EXPECT_EQ(read->subscribers[1].dropped, 3U);
    EXPECT_EQ(read->subscribers[1].lag, 7U);

    lagging->close();
    keeping->close();
    auto alone = hakobu::inspect_topic("camera", name);
    ASSERT_TRUE(alone) << alone.error().message;
    EXPECT_TRUE(alone->subscribers.empty());
    EXPECT_LE(alone->retained, 2U) << "without subscribers only the history is kept";

    EXPECT_EQ(hakobu::inspect_topic("nothing", name).error().code, hakobu::OpenError::NotFound);
    EXPECT_EQ(hakobu::inspect_topic("a:b", name).error().code, hakobu::OpenError::InvalidName);
    EXPECT_EQ(hakobu::inspect_store("camera", name).error().code, hakobu::OpenError::NotFound);
    ASSERT_TRUE(hakobu::Topic::remove("camera", name));
    EXPECT_EQ(hakobu::inspect_topic("camera", name).error().code, hakobu::OpenError::NotFound);
  }
  EXPECT_TRUE(hakobu::list_domain_files(name).empty()) << "the last process out removed the domain";
}

namespace {

/// Writes `value` at byte `offset` of the file at `path`.
template <class T>
bool poke(const std::string& path, std::size_t offset, T value) {
  const int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) return false;
  const bool written = ::pwrite(fd, &value, sizeof value, static_cast<off_t>(offset)) == sizeof value;
  ::close(fd);
  return written;
}

// Raw copies of shared-memory records (their atomics cannot be copied).
struct SubscriberEntryBytes {
  std::byte bytes[sizeof(hakobu::detail::SubscriberEntry)];
};
struct SlotHeaderBytes {
  std::byte bytes[sizeof(hakobu::detail::SlotHeader)];
};
struct TwoSlotHeaders {
  SlotHeaderBytes first;
  SlotHeaderBytes second;
};

/// The `T` at byte `offset` of the file at `path` (zero if it cannot be read).
template <class T>
T peek(const std::string& path, std::size_t offset) {
  T value{};
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return value;
  if (::pread(fd, &value, sizeof value, static_cast<off_t>(offset)) != sizeof value) value = T{};
  ::close(fd);
  return value;
}

}  // namespace

// A topic file is read as hostile: sizes that disagree are Corrupt, never
// followed; a subscriber entry or a slot with forged contents is shown as what
// it claims, bounded (a lag never negative, a message that cannot fit its slot
// counted as damaged, not as bytes).
TEST(DomainFiles, InspectingAHostileTopicStaysInBounds) {
  using hakobu::detail::SlotHeader;
  using hakobu::detail::SubscriberEntry;
  using hakobu::detail::TopicHeader;
  const std::string name = hakobu::test::domain() + "-hostile-topic";
  hakobu::TopicOptions options;
  options.domain.name = name;
  options.capacity = 4;
  options.max_subscribers = 2;
  {
    auto topic = hakobu::Topic::create("bent", options);
    ASSERT_TRUE(topic) << topic.error().message;
    const std::string path = "/dev/shm/" + hakobu::file_name(name, FileKind::Topic, "bent");
    const auto corrupt = [&](std::size_t offset, std::uint32_t value) {
      const auto good = peek<std::uint32_t>(path, offset);
      ASSERT_TRUE(poke(path, offset, value));
      auto seen = hakobu::inspect_topic("bent", name);
      ASSERT_FALSE(seen) << "field at " << offset << " = " << value;
      EXPECT_EQ(seen.error().code, hakobu::OpenError::Corrupt) << seen.error().message;
      ASSERT_TRUE(poke(path, offset, good));
    };
    corrupt(offsetof(TopicHeader, capacity), 1U << 30);
    corrupt(offsetof(TopicHeader, capacity), 3);
    corrupt(offsetof(TopicHeader, history), 4);
    corrupt(offsetof(TopicHeader, max_subscribers), 0);
    corrupt(offsetof(TopicHeader, max_subscribers), 3);
    corrupt(offsetof(TopicHeader, slot_bytes), 8);
    corrupt(offsetof(TopicHeader, inline_capacity), 1U << 20);
    ASSERT_TRUE(hakobu::inspect_topic("bent", name)) << "every field put back";

    // Forged below, put back after: entry 1 and the first two slots.
    const std::size_t entry = sizeof(TopicHeader) + sizeof(SubscriberEntry);
    const auto slot_bytes = peek<std::uint32_t>(path, offsetof(TopicHeader, slot_bytes));
    const std::size_t slot = sizeof(TopicHeader) + 2 * sizeof(SubscriberEntry);
    const auto saved_entry = peek<SubscriberEntryBytes>(path, entry);
    const TwoSlotHeaders saved_slots{peek<SlotHeaderBytes>(path, slot), peek<SlotHeaderBytes>(path, slot + slot_bytes)};
    // A forged subscriber in entry 1: a position ahead of every publish, a
    // token of no living process, an unknown policy.
    ASSERT_TRUE(poke(path, entry + offsetof(SubscriberEntry, cursor),
                     hakobu::detail::make_cursor(12345, hakobu::detail::CursorState::Active, 77)));
    ASSERT_TRUE(poke(path, entry + offsetof(SubscriberEntry, on_full), std::uint32_t{9}));
    // A forged message in slot 0: too long for its slot, no block.
    ASSERT_TRUE(poke(path, slot + offsetof(SlotHeader, kind), static_cast<std::uint8_t>(hakobu::MessageKind::Bytes)));
    ASSERT_TRUE(poke(path, slot + offsetof(SlotHeader, length), std::uint64_t{1} << 40));
    ASSERT_TRUE(poke(path, slot + offsetof(SlotHeader, control),
                     hakobu::detail::make_control(0, hakobu::detail::SlotState::Full, 0)));
    // And in slot 1: a block offset past the heap.
    ASSERT_TRUE(poke(path, slot + slot_bytes + offsetof(SlotHeader, kind),
                     static_cast<std::uint8_t>(hakobu::MessageKind::Bytes)));
    ASSERT_TRUE(poke(path, slot + slot_bytes + offsetof(SlotHeader, length), std::uint64_t{16}));
    ASSERT_TRUE(poke(path, slot + slot_bytes + offsetof(SlotHeader, block), std::uint64_t{1} << 60));
    ASSERT_TRUE(poke(path, slot + slot_bytes + offsetof(SlotHeader, control),
                     hakobu::detail::make_control(1, hakobu::detail::SlotState::Full, 0)));
    auto forged = hakobu::inspect_topic("bent", name);
    ASSERT_TRUE(forged) << forged.error().message;
    ASSERT_EQ(forged->subscribers.size(), 1U);
    EXPECT_EQ(forged->subscribers[0].entry, 1U);
    EXPECT_FALSE(forged->subscribers[0].alive);
    EXPECT_EQ(forged->subscribers[0].on_full, "on_full 9");
    EXPECT_EQ(forged->subscribers[0].lag, 0U) << "a cursor ahead of the publishers lags by nothing";
    EXPECT_EQ(forged->damaged_slots, 2U);
    EXPECT_EQ(forged->retained, 0U);
    EXPECT_EQ(forged->retained_bytes, 0U);
    ASSERT_TRUE(poke(path, entry, saved_entry));
    ASSERT_TRUE(poke(path, slot, saved_slots.first));
    ASSERT_TRUE(poke(path, slot + slot_bytes, saved_slots.second));
    ASSERT_TRUE(hakobu::Topic::remove("bent", name));
  }
  EXPECT_TRUE(hakobu::list_domain_files(name).empty()) << "the last process out removed the domain";
}
