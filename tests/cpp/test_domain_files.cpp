// Unit tests: the files of domains by name (hakobu/domain_files.hpp) — parsing,
// forming, listing in removal order, and agreement with the names the library
// itself gives the files it creates.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "hakobu/domain.hpp"
#include "hakobu/domain_files.hpp"
#include "hakobu/queue.hpp"
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

  auto building = hakobu::parse_file_name("hakobu:d1:new:frames:0123abcd");
  ASSERT_TRUE(building);
  EXPECT_EQ(building->kind, FileKind::NewQueue);
  EXPECT_EQ(building->name, "frames");

  for (const char* unknown : {"hakobu:d1:topic:x", "hakobu:d1:heap:extra", "hakobu:d1:registry:", "hakobu:d1:",
                              "hakobu:d1:q:", "hakobu:d1:q:a:b", "hakobu:d1:q:-bad", "hakobu:d1:new:frames"}) {
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
  EXPECT_EQ(hakobu::file_name("d1", FileKind::NewQueue, "frames"), "");
  EXPECT_EQ(hakobu::file_name("d1", FileKind::Registry), hakobu::Domain::file_prefix("d1") + "registry");
  for (auto kind : {FileKind::Registry, FileKind::Heap, FileKind::Queue}) {
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
  StrayFile another_domain("hakobu:" + name + "x:q:a");
  ASSERT_TRUE(registry.made() && heap.made() && queue_a.made() && queue_b.made() && building.made() && unknown.made() &&
              another_domain.made());
  const auto files = hakobu::list_domain_files(name);
  ASSERT_EQ(files.size(), 6U);
  EXPECT_EQ(kinds(files), (std::vector<FileKind>{FileKind::Queue, FileKind::Queue, FileKind::NewQueue, FileKind::Other,
                                                 FileKind::Heap, FileKind::Registry}));
  EXPECT_EQ(files[0].name, "a");
  EXPECT_EQ(files[1].name, "b");
  EXPECT_EQ(files[2].name, "c");
  EXPECT_EQ(files[3].name, "topic:d");
  EXPECT_EQ(files[5].path, "/dev/shm/" + prefix + "registry");
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
  // The library's own choice (the default page size) is a subset of every mount.
  for (const auto& path : hakobu::platform::hugetlbfs_mounts()) {
    EXPECT_TRUE(std::any_of(mounts.begin(), mounts.end(), [&](const auto& m) { return m.path == path; })) << path;
  }
  EXPECT_EQ(hakobu::shm_directory(), "/dev/shm");
}

}  // namespace
