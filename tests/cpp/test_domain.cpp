// Unit tests: the domain's names and lifecycle (its files appear with the first
// user and go with the last, leftovers of crashed processes, garbage collection).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "domain/domain_state.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/queue.hpp"
#include "platform/os.hpp"
#include "test_support.hpp"

namespace {

using hakobu::detail::DomainState;

std::shared_ptr<DomainState> attach() {
  auto state = DomainState::attach({});
  EXPECT_TRUE(state) << state.error().message;
  return state ? *state : nullptr;
}

TEST(Domain, RejectsBadNames) {
  for (const char* bad : {"a/b", "..", ".x", "-x", "a..b", "sp ace"}) {
    hakobu::DomainOptions options;
    options.name = bad;
    auto domain = hakobu::Domain::open(options);
    ASSERT_FALSE(domain) << bad;
    EXPECT_EQ(domain.error().code, hakobu::OpenError::InvalidName);
    EXPECT_FALSE(domain.error().message.empty());
  }
  EXPECT_FALSE(hakobu::validate_name(std::string(65, 'a')).empty());
  EXPECT_TRUE(hakobu::validate_name(std::string(64, 'a')).empty());
  EXPECT_FALSE(hakobu::validate_name("").empty());
}

TEST(Domain, FilesAppearWithTheFirstUserAndGoWithTheLast) {
  const std::string name = hakobu::test::domain() + "-life";
  hakobu::DomainOptions options;
  options.name = name;
  {
    auto domain = hakobu::Domain::open(options);
    ASSERT_TRUE(domain) << domain.error().message;
    // The registry and the heap, and a second heap file where huge pages are reserved.
    EXPECT_EQ(hakobu::test::files_of_domain(name).size(), domain->stats().huge_pages ? 3U : 2U);
    auto again = hakobu::Domain::open(options);  // shares the attachment
    ASSERT_TRUE(again);
    EXPECT_EQ(again->process_slot(), domain->process_slot());
    const auto stats = domain->stats();
    ASSERT_EQ(stats.processes.size(), 1U);
    EXPECT_EQ(stats.processes[0].pid, ::getpid());
    EXPECT_TRUE(stats.processes[0].alive);
  }
  EXPECT_TRUE(hakobu::test::files_of_domain(name).empty());
}

TEST(Domain, LastProcessOutRemovesWhatACrashedCreatorLeft) {
  const std::string name = hakobu::test::domain() + "-crash";
  hakobu::DomainOptions options;
  options.name = name;
  {
    auto domain = hakobu::Domain::open(options);
    ASSERT_TRUE(domain);
    // A queue file half-built by a creator that died before publishing it.
    const std::string leftover = "/dev/shm/hakobu:" + name + ":new:x:99999:0";
    FILE* f = std::fopen(leftover.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  EXPECT_TRUE(hakobu::test::files_of_domain(name).empty());
}

// The last process died after removing the heap and before removing the
// registry: the next open rebuilds the domain instead of failing forever.
TEST(Domain, AMissingHeapWithNobodyAttachedIsRebuilt) {
  const std::string name = hakobu::test::domain() + "-noheap";
  hakobu::DomainOptions options;
  options.name = name;
  {
    auto domain = hakobu::Domain::open(options);
    ASSERT_TRUE(domain);
    // A queue keeps the files after this process leaves.
    hakobu::QueueOptions queue_options;
    queue_options.domain = options;
    auto queue = hakobu::Queue::create("kept", queue_options);
    ASSERT_TRUE(queue);
  }
  ASSERT_TRUE(hakobu::platform::shm_remove("hakobu:" + name + ":heap"));
  ASSERT_TRUE(hakobu::platform::shm_remove("hakobu:" + name + ":q:kept"));
  auto reopened = hakobu::Domain::open(options);
  ASSERT_TRUE(reopened) << reopened.error().message;
  auto loan = reopened->loan(10000);
  ASSERT_TRUE(loan) << loan.error().message;
}

TEST(Domain, AMissingHeapWhileOthersAreAttachedIsAnError) {
  const std::string name = hakobu::test::domain() + "-noheap2";
  hakobu::DomainOptions options;
  options.name = name;
  auto first = DomainState::attach(options);
  ASSERT_TRUE(first);
  // Another attachment of this process: a fresh registry descriptor holds the
  // lifecycle lock like another process would.
  const pid_t child = ::fork();
  if (child == 0) {
    auto mine = hakobu::Domain::open(options);
    ::_exit(mine ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(hakobu::platform::shm_remove("hakobu:" + name + ":heap"));
  // This process is attached, so a newcomer must not rebuild under it.
  const pid_t second = ::fork();
  if (second == 0) {
    auto mine = hakobu::Domain::open(options);
    ::_exit(!mine && mine.error().code == hakobu::OpenError::NotFound ? 0 : 1);
  }
  ASSERT_EQ(::waitpid(second, &status, 0), second);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(Domain, GarbageCollectionAloneReturnsTheCache) {
  auto domain = attach();
  auto& heap = domain->heap();
  auto block = heap.allocate(8 << 20);
  ASSERT_TRUE(block);
  std::memset(heap.payload(*block), 1, 8 << 20);
  heap.drop_ref(*block);
  EXPECT_GE(domain->stats().cached_bytes, std::uint64_t{8} << 20);
  domain->collect_garbage();  // no other process is attached
  EXPECT_LT(domain->stats().cached_bytes, std::uint64_t{4} << 20);
}

// A holder of a block died; the last process to leave gives the block back
// (and the queue that keeps the domain alive costs no cached memory).
TEST(Domain, TheLastProcessOutReclaimsTheDeadAndTrimsTheCache) {
  const std::string name = hakobu::test::domain() + "-lastout";
  hakobu::DomainOptions options;
  options.name = name;
  options.huge_pages = hakobu::HugePages::Never;  // the figure below is of the /dev/shm heap file
  hakobu::QueueOptions queue_options;
  queue_options.domain = options;
  {
    auto queue = hakobu::Queue::create("kept", queue_options);
    ASSERT_TRUE(queue);
  }
  const pid_t child = ::fork();
  if (child == 0) {
    hakobu::DomainOptions quiet = options;
    quiet.collect_on_attach = false;
    auto mine = hakobu::Domain::open(quiet);
    if (!mine) ::_exit(1);
    auto loan = mine->loan(16 << 20);
    if (!loan) ::_exit(2);
    std::memset(loan->bytes().data(), 1, loan->bytes().size());
    ::_exit(0);  // dies holding the loan
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  {
    hakobu::DomainOptions quiet = options;
    quiet.collect_on_attach = false;
    auto domain = hakobu::Domain::open(quiet);  // attaches and leaves: the last one out
    ASSERT_TRUE(domain);
    EXPECT_GE(domain->stats().live_bytes, std::uint64_t{16} << 20);
  }
  auto heap_file = hakobu::platform::path_info("/dev/shm/hakobu:" + name + ":heap");
  ASSERT_TRUE(heap_file);
  EXPECT_LT(heap_file->allocated, std::uint64_t{4} << 20) << "the dead holder's 16 MiB went back to the system";
  hakobu::DomainOptions quiet = options;
  quiet.collect_on_attach = false;
  auto domain = hakobu::Domain::open(quiet);
  ASSERT_TRUE(domain);
  EXPECT_EQ(domain->stats().live_blocks, 0U);
  EXPECT_TRUE(hakobu::Queue::remove("kept", name));
}

}  // namespace
