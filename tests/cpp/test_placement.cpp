// Unit tests: where payloads and array elements sit in their blocks, so that
// copies into and out of them avoid 4K aliasing (layout.hpp, "payload
// placement"), and that a forged placement in a block header is refused.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "domain/domain_state.hpp"
#include "hakobu/queue.hpp"
#include "memory/heap.hpp"
#include "test_queues.hpp"
#include "test_support.hpp"

namespace {

using hakobu::Queue;
using hakobu::detail::BlockHeader;
using hakobu::detail::class_bytes;
using hakobu::detail::CopyPlacement;
using hakobu::detail::DomainState;
using hakobu::detail::Heap;
using hakobu::detail::kAliasReach;
using hakobu::detail::kBlockHeaderBytes;
using hakobu::detail::kMaxPayloadShift;
using hakobu::detail::kPlacedMinBytes;
using hakobu::detail::kPlacementPage;
using hakobu::detail::Placement;
using hakobu::test::make_queue;
using hakobu::test::Unlinker;

// Where this process places the copied bytes of a payload copied from `source`.
std::uint64_t placement_offset(const void* source) {
  return hakobu::detail::placement_offset(reinterpret_cast<std::uintptr_t>(source), Heap::copy_placement());
}

constexpr std::uint64_t kPage = kPlacementPage;

std::shared_ptr<DomainState> attach() {
  auto state = DomainState::attach({});
  EXPECT_TRUE(state) << state.error().message;
  return state ? *state : nullptr;
}

// Page-aligned private memory to take sources at chosen page offsets from.
struct Source {
  explicit Source(std::size_t bytes) : storage((bytes + 2 * kPage) / 8) {
    for (std::size_t i = 0; i < storage.size(); ++i) storage[i] = i * 0x9E3779B97F4A7C15ULL;
  }
  [[nodiscard]] const std::byte* at(std::uint64_t page_offset) const {
    const auto address = reinterpret_cast<std::uintptr_t>(storage.data());
    const std::uintptr_t page = (address + kPage - 1) / kPage * kPage;
    return reinterpret_cast<const std::byte*>(page + page_offset);  // NOLINT(performance-no-int-to-ptr)
  }
  std::vector<std::uint64_t> storage;
};

std::uint64_t page_offset(const void* address) {
  return reinterpret_cast<std::uintptr_t>(address) % kPage;
}

// (dst - src) mod 4096 in (0, kAliasReach): the copy's loads would alias its stores.
bool aliases(std::uint64_t destination, std::uint64_t source) {
  const std::uint64_t distance = (destination + kPage - source % kPage) % kPage;
  return distance != 0 && distance < kAliasReach;
}

TEST(Placement, AwayFromAliasingAvoidsItBothWaysForEverySourceOffset) {
  // Copy in from the source, copy out into a buffer on a page or 16 past one
  // (aligned allocations; glibc's mmap'ed chunks such as NumPy's arrays).
  constexpr auto kRule = CopyPlacement::AwayFromAliasing;
  for (std::uint64_t source = 0; source < kPage; source += 16) {
    const std::uint64_t placed = hakobu::detail::placement_offset(0x7f0000000000ULL + source, kRule);
    EXPECT_EQ(placed % 64, 0U) << "payloads stay 64-byte aligned";
    EXPECT_FALSE(aliases(placed, source)) << "copy in from offset " << source;
    EXPECT_FALSE(aliases(0, placed)) << "copy out to a page-aligned buffer, source offset " << source;
    EXPECT_FALSE(aliases(16, placed)) << "copy out to a malloc'ed buffer, source offset " << source;
  }
  EXPECT_EQ(hakobu::detail::placement_offset(0, kRule), 2048U) << "unknown source: the middle of a page";
  EXPECT_EQ(hakobu::detail::placement_offset(0x7f0000000000ULL + 64, kRule), 64U) << "the source's own offset";
  EXPECT_EQ(hakobu::detail::placement_offset(0x7f0000000000ULL + 2100, kRule), 2048U) << "rounded down to 64 bytes";
}

TEST(Placement, PageStartKeepsCopiesOfOrdinaryBuffersAtTheFastDistances) {
  // Copy in from a buffer at 0 or 16: distance 0 or 4080; copy out into a fresh
  // buffer at 0 or 16: distance 0 or 16 (glibc's four-page loop, or none).
  constexpr auto kRule = CopyPlacement::PageStart;
  for (const std::uint64_t source : {0ULL, 16ULL, 64ULL, 2048ULL, 4080ULL}) {
    EXPECT_EQ(hakobu::detail::placement_offset(0x7f0000000000ULL + source, kRule), 0U);
  }
  EXPECT_EQ(hakobu::detail::placement_offset(0, kRule), 0U);
}

TEST(Placement, SmallPayloadsFollowTheHeaderLargeOnesArePlaced) {
  auto domain = attach();
  auto& heap = domain->heap();
  Source source(kPage);
  for (const std::uint64_t size : {std::uint64_t{1}, std::uint64_t{300}, std::uint64_t{4096}, kPlacedMinBytes - 1,
                                   kPlacedMinBytes, std::uint64_t{1} << 20, std::uint64_t{5} << 20}) {
    for (const std::uint64_t anchor : {std::uint64_t{0}, std::uint64_t{128}}) {
      for (const std::int64_t from : {std::int64_t{-1}, std::int64_t{0}, std::int64_t{16}, std::int64_t{64},
                                      std::int64_t{2048}, std::int64_t{4080}}) {
        const std::byte* src = from < 0 ? nullptr : source.at(static_cast<std::uint64_t>(from));
        auto block = heap.allocate(size, Placement{anchor, src});
        ASSERT_TRUE(block) << block.error().message;
        std::byte* payload = heap.payload(*block);
        EXPECT_EQ(heap.checked_payload(*block, size), payload);
        EXPECT_EQ(page_offset(payload) % 64, 0U);
        const std::uint64_t offset = payload - heap.base() - *block;
        EXPECT_LE(offset + size, class_bytes(heap.header(*block)->size_class));
        if (size < kPlacedMinBytes) {
          EXPECT_EQ(offset, kBlockHeaderBytes) << size << " bytes: no page spent on placement";
        } else {
          EXPECT_EQ(page_offset(payload + anchor), placement_offset(src))
              << size << " bytes, anchor " << anchor << ", source offset " << from;
          EXPECT_LE(offset, kBlockHeaderBytes + kMaxPayloadShift);
        }
        std::memset(payload, 0x5A, size);  // backed: must not fault
        EXPECT_TRUE(heap.drop_ref(*block));
      }
    }
  }
  // Without a placement (the heap's own tables), payloads follow the header.
  auto table = heap.allocate(std::uint64_t{1} << 20);
  ASSERT_TRUE(table);
  EXPECT_EQ(heap.payload(*table), heap.base() + *table + kBlockHeaderBytes);
  heap.drop_ref(*table);
}

TEST(Placement, LoansPlaceWhatTheCallerCopies) {
  auto q = make_queue(4);
  Unlinker cleanup{q};
  Source source(std::size_t{1} << 20);
  const std::int64_t shape[] = {(1 << 20) / 8};
  for (const std::uint64_t from : {0U, 16U, 64U, 2048U, 4080U}) {
    const std::byte* src = source.at(from);
    const auto expected = placement_offset(src);
    auto bytes = q.loan(std::size_t{1} << 20, hakobu::MessageKind::Bytes, 0, src);
    ASSERT_TRUE(bytes) << bytes.error().message;
    EXPECT_EQ(page_offset(bytes->bytes().data()), expected) << "source offset " << from;
    auto array = q.loan_array(hakobu::DType::of<double>(), shape, hakobu::Order::C, {}, src);
    ASSERT_TRUE(array) << array.error().message;
    auto view = array->array();
    ASSERT_TRUE(view) << view.error().message;
    EXPECT_EQ(page_offset(view->data), expected) << "the elements are placed, not the metadata";
  }
  // No source given: as for an unknown source (AwayFromAliasing: the middle of a page).
  auto bytes = q.loan(std::size_t{1} << 20);
  ASSERT_TRUE(bytes);
  EXPECT_EQ(page_offset(bytes->bytes().data()), placement_offset(nullptr));
  auto array = q.loan_array(hakobu::DType::of<double>(), shape);
  ASSERT_TRUE(array);
  EXPECT_EQ(page_offset(array->array()->data), placement_offset(nullptr));
  // A small array stays compact: metadata right after the header, elements after it.
  const std::int64_t small_shape[] = {100};
  auto small = q.loan_array(hakobu::DType::of<double>(), small_shape, hakobu::Order::C, {}, source.at(16));
  ASSERT_TRUE(small);
  EXPECT_EQ(small->array()->data - small->bytes().data(), 64);
  EXPECT_EQ(page_offset(small->bytes().data()) % 64, 0U);
}

TEST(Placement, CopiesThroughTheQueueArriveIntactAndPlacedInRecycledBlocks) {
  auto q = make_queue(4);
  Unlinker cleanup{q};
  constexpr std::size_t kBytes = std::size_t{3} << 20;
  Source source(kBytes);
  const std::int64_t shape[] = {kBytes / 8};
  std::uint64_t first_block = 0;
  for (const std::uint64_t from : {0U, 16U, 64U, 2048U, 3136U, 4080U}) {
    const std::byte* src = source.at(from);
    const auto expected = placement_offset(src);
    ASSERT_TRUE(q.put(std::span<const std::byte>(src, kBytes)));
    auto bytes = q.get(std::chrono::seconds(10));
    ASSERT_TRUE(bytes) << bytes.error().message;
    ASSERT_EQ(bytes->size(), kBytes);
    EXPECT_EQ(page_offset(bytes->bytes().data()), expected) << "bytes from offset " << from;
    EXPECT_EQ(std::memcmp(bytes->bytes().data(), src, kBytes), 0);
    // The same class every time: the block is recycled, its placement chosen anew.
    if (first_block == 0) first_block = bytes->block_offset();
    EXPECT_EQ(bytes->block_offset(), first_block);
    bytes->reset();

    ASSERT_TRUE(q.put_array(src, hakobu::DType::of<double>(), shape));
    auto array = q.get(std::chrono::seconds(10));
    ASSERT_TRUE(array) << array.error().message;
    auto view = array->array();
    ASSERT_TRUE(view) << view.error().message;
    EXPECT_EQ(page_offset(view->data), expected) << "elements from offset " << from;
    EXPECT_EQ(std::memcmp(view->data, src, kBytes), 0);
  }
}

TEST(Placement, AForgedShiftIsRefused) {
  auto domain = attach();
  auto& heap = domain->heap();
  auto q = make_queue(4);
  Unlinker cleanup{q};
  // A small message: no shift, and no room in its class for one.
  auto small = q.loan(1000);
  ASSERT_TRUE(small);
  std::memset(small->bytes().data(), 1, 1000);
  ASSERT_TRUE(q.put(*small));
  auto large = q.loan(std::size_t{1} << 20);
  ASSERT_TRUE(large);
  ASSERT_TRUE(q.put(*large));
  auto small_sample = q.get(std::chrono::seconds(5));
  auto large_sample = q.get(std::chrono::seconds(5));
  ASSERT_TRUE(small_sample && large_sample);
  const std::uint64_t small_block = small_sample->block_offset();
  const std::uint64_t large_block = large_sample->block_offset();
  BlockHeader* h = heap.header(large_block);
  const std::uint16_t saved = h->payload_shift.load();
  EXPECT_TRUE(heap.check_block(large_block, std::size_t{1} << 20));
  for (const std::uint16_t forged : {std::uint16_t{4096}, std::uint16_t{0xFFFF}, std::uint16_t{100},
                                     static_cast<std::uint16_t>(kMaxPayloadShift + 64)}) {
    h->payload_shift.store(forged);
    EXPECT_FALSE(heap.check_block(large_block, std::size_t{1} << 20)) << "shift " << forged;
    EXPECT_EQ(heap.checked_payload(large_block, 0), nullptr) << "shift " << forged;
    // Whatever it says, the unchecked address stays right after the header.
    EXPECT_EQ(heap.payload(large_block), heap.base() + large_block + kBlockHeaderBytes);
  }
  h->payload_shift.store(saved);
  EXPECT_TRUE(heap.check_block(large_block, std::size_t{1} << 20));

  // A valid-looking shift that pushes the payload past the end of its block.
  BlockHeader* s = heap.header(small_block);
  s->payload_shift.store(static_cast<std::uint16_t>(kMaxPayloadShift));
  EXPECT_FALSE(heap.check_block(small_block, 1000));
  s->payload_shift.store(0);
  EXPECT_TRUE(heap.check_block(small_block, 1000));

  // A message whose shift was forged while queued is dropped by the receiver.
  small_sample->reset();
  large_sample->reset();
  auto again = q.loan(std::size_t{1} << 20);
  ASSERT_TRUE(again);
  // The payload lies within a page past the header's end, and the block is page-aligned.
  const std::uint64_t block =
      (static_cast<std::uint64_t>(again->bytes().data() - heap.base()) - kBlockHeaderBytes) / kPage * kPage;
  ASSERT_TRUE(q.put(*again));
  heap.header(block)->payload_shift.store(static_cast<std::uint16_t>(kMaxPayloadShift - 64 + 1));
  auto refused = q.get(std::chrono::seconds(5));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, hakobu::GetError::Corrupt);
}

}  // namespace
