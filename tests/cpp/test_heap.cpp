// Unit tests: the shared heap (allocation, recycling, bounds checks, the cache
// limit, huge pages, a full /dev/shm).
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "domain/domain_state.hpp"
#include "hakobu/domain.hpp"
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

}  // namespace
