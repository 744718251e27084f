// Unit tests: the shared heap (allocation, recycling, bounds checks, the cache
// limit, a full /dev/shm) and the domain's lifecycle.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>

#include "domain/domain_state.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/queue.hpp"
#include "memory/heap.hpp"
#include "platform/os.hpp"
#include "test_support.hpp"

namespace {

using hakobu::detail::DomainState;
using hakobu::detail::kBlockHeaderBytes;

std::shared_ptr<DomainState> attach(std::uint64_t cache_limit = 0) {
  hakobu::DomainOptions options;
  options.cache_limit = cache_limit;
  auto state = DomainState::attach(options);
  EXPECT_TRUE(state) << state.error().message;
  return state ? *state : nullptr;
}

TEST(Heap, AllocatesWritableBlocksOfEverySize) {
  auto domain = attach();
  auto& heap = domain->heap();
  std::vector<std::uint64_t> blocks;
  for (std::uint64_t size : {1ULL, 100ULL, 192ULL, 193ULL, 4096ULL, 65536ULL, 1ULL << 20, 5ULL << 20}) {
    auto block = heap.allocate(size);
    ASSERT_TRUE(block) << block.error().message;
    EXPECT_TRUE(heap.check_block(*block, size));
    EXPECT_FALSE(heap.check_block(*block, hakobu::detail::class_bytes(heap.header(*block)->size_class)));
    std::memset(heap.payload(*block), 0xAB, size);  // must not fault
    blocks.push_back(*block);
  }
  EXPECT_EQ(std::set<std::uint64_t>(blocks.begin(), blocks.end()).size(), blocks.size());
  EXPECT_EQ(domain->stats().live_blocks, blocks.size());
  for (auto b : blocks) EXPECT_TRUE(heap.drop_ref(b));
  EXPECT_EQ(domain->stats().live_blocks, 0U);
}

TEST(Heap, RecyclesFreedBlocks) {
  auto domain = attach();
  auto& heap = domain->heap();
  auto first = heap.allocate(3 << 20);
  ASSERT_TRUE(first);
  const auto used = domain->stats().heap_used;
  EXPECT_TRUE(heap.drop_ref(*first));
  auto second = heap.allocate(3 << 20);
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, *first) << "a freed block of the same class is reused";
  EXPECT_EQ(domain->stats().heap_used, used) << "no new memory was carved";
  heap.drop_ref(*second);
}

TEST(Heap, ReferencesKeepBlocksAlive) {
  auto domain = attach();
  auto& heap = domain->heap();
  auto block = heap.allocate(1000);
  ASSERT_TRUE(block);
  ASSERT_TRUE(heap.add_ref(*block));
  EXPECT_FALSE(heap.drop_ref(*block));
  EXPECT_EQ(domain->stats().live_blocks, 1U);
  EXPECT_TRUE(heap.drop_ref(*block));
  EXPECT_FALSE(heap.drop_ref(*block)) << "a doubled release is ignored, not a double free";
  EXPECT_EQ(domain->stats().live_blocks, 0U);
}

TEST(Heap, RejectsOffsetsThatAreNotBlocks) {
  auto domain = attach();
  auto& heap = domain->heap();
  auto block = heap.allocate(100);
  ASSERT_TRUE(block);
  EXPECT_FALSE(heap.check_block(0, 0));
  EXPECT_FALSE(heap.check_block(*block + 8, 0));              // misaligned
  EXPECT_FALSE(heap.check_block(*block + 64, 0));             // inside a block, no header
  EXPECT_FALSE(heap.check_block(heap.capacity() - 64, 0));    // beyond the file
  EXPECT_FALSE(heap.check_block(~std::uint64_t{0} << 6, 0));  // beyond the capacity
  EXPECT_FALSE(heap.check_block(*block, std::uint64_t{1} << 40));
  heap.drop_ref(*block);
}

TEST(Heap, ReturnsPagesBeyondTheCacheLimit) {
  auto domain = attach(/*cache_limit=*/1 << 20);
  auto& heap = domain->heap();
  auto block = heap.allocate(16 << 20);
  ASSERT_TRUE(block);
  std::memset(heap.payload(*block), 1, 16 << 20);
  heap.drop_ref(*block);
  // What stays cached is the limit, plus the header page of the block (2 MiB on huge pages).
  const std::uint64_t header_page = heap.on_huge_pages(*block) ? std::uint64_t{2} << 20 : 4096;
  EXPECT_LE(domain->stats().cached_bytes, (std::uint64_t{1} << 20) + header_page);
  auto again = heap.allocate(16 << 20);  // backed again on reuse
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *block);
  std::memset(heap.payload(*again), 2, 16 << 20);
  heap.drop_ref(*again);
}

TEST(Heap, LargeBlocksUseReservedHugePagesAndFallBackWhenTheyRunOut) {
  const auto pool = hakobu::platform::huge_page_info();
  if (pool.free_pages < 8 || hakobu::platform::hugetlbfs_mounts().empty()) {
    GTEST_SKIP() << "needs reserved huge pages and a hugetlbfs mount (CI sets them up)";
  }
  hakobu::DomainOptions options;
  options.name = hakobu::test::domain() + "-huge";
  options.huge_pages = hakobu::HugePages::Require;
  auto domain = DomainState::attach(options);
  ASSERT_TRUE(domain) << domain.error().message;
  auto& heap = (*domain)->heap();
  ASSERT_TRUE(heap.has_huge_pages());
  EXPECT_TRUE((*domain)->stats().huge_pages);

  auto small = heap.allocate(1000);
  ASSERT_TRUE(small);
  EXPECT_FALSE(heap.on_huge_pages(*small)) << "small blocks stay in /dev/shm";
  auto large = heap.allocate(4 << 20);
  ASSERT_TRUE(large);
  EXPECT_TRUE(heap.on_huge_pages(*large));
  std::memset(heap.payload(*large), 7, 4 << 20);
  EXPECT_TRUE(heap.check_block(*large, 4 << 20));
  EXPECT_GT((*domain)->stats().huge_page_used, 0U);

  // More than the pool holds: the rest comes from /dev/shm.
  const auto left = hakobu::platform::huge_page_info();
  auto too_many = heap.allocate((left.free_pages + 4) * left.page_size);
  ASSERT_TRUE(too_many) << too_many.error().message;
  EXPECT_FALSE(heap.on_huge_pages(*too_many));
  EXPECT_EQ(hakobu::platform::huge_page_info().free_pages, left.free_pages) << "a failed try gives its pages back";
  heap.drop_ref(*too_many);
  heap.drop_ref(*large);
  heap.drop_ref(*small);
}

TEST(Heap, TrimmedHugePageBlocksPinNoPage) {
  const auto pool = hakobu::platform::huge_page_info();
  if (pool.free_pages < 8 || hakobu::platform::hugetlbfs_mounts().empty()) {
    GTEST_SKIP() << "needs reserved huge pages and a hugetlbfs mount (CI sets them up)";
  }
  hakobu::DomainOptions options;
  options.name = hakobu::test::domain() + "-hugetrim";
  options.huge_pages = hakobu::HugePages::Require;
  auto domain = DomainState::attach(options);
  ASSERT_TRUE(domain) << domain.error().message;
  auto& heap = (*domain)->heap();
  const auto before = hakobu::platform::huge_page_info().free_pages;
  auto block = heap.allocate(6 << 20);
  ASSERT_TRUE(block);
  ASSERT_TRUE(heap.on_huge_pages(*block));
  std::memset(heap.payload(*block), 3, 6 << 20);
  heap.drop_ref(*block);
  heap.trim_cache();
  EXPECT_EQ(hakobu::platform::huge_page_info().free_pages, before) << "no huge page stays pinned by a free block";
  EXPECT_FALSE(heap.check_block(*block, 0)) << "a returned block is not readable";
  auto again = heap.allocate(6 << 20);  // the returned block comes back, backed afresh
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *block);
  EXPECT_TRUE(heap.check_block(*again, 6 << 20));
  std::memset(heap.payload(*again), 4, 6 << 20);
  heap.drop_ref(*again);
}

TEST(Heap, FullSharedMemoryIsAnErrorWithNumbers) {
  auto domain = attach();
  auto space = hakobu::platform::space_info("/dev/shm");
  ASSERT_TRUE(space);
  const auto before = domain->stats();
  auto loan = domain->make_loan(space->free + (std::uint64_t{1} << 30), hakobu::MessageKind::Bytes);
  ASSERT_FALSE(loan);
  EXPECT_EQ(loan.error().code, hakobu::LoanError::OutOfMemory);
  EXPECT_NE(loan.error().message.find("asked for"), std::string::npos) << loan.error().message;
  EXPECT_NE(loan.error().message.find("free of"), std::string::npos) << loan.error().message;
  const auto after = domain->stats();
  EXPECT_EQ(after.live_blocks, before.live_blocks);
  EXPECT_EQ(after.live_bytes, before.live_bytes);
}

TEST(Heap, TooLargeForTheHeap) {
  auto domain = attach();
  auto block = domain->heap().allocate(domain->heap().capacity());
  ASSERT_FALSE(block);
  EXPECT_EQ(block.error().code, hakobu::LoanError::TooLarge);
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
