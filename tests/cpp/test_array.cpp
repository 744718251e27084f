// Unit tests: array metadata (write, parse, bounds checks).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "hakobu/array.hpp"

namespace {

using hakobu::ArrayError;
using hakobu::DType;
using hakobu::Order;

// A 64-byte aligned message buffer.
struct Message {
  explicit Message(std::size_t size)
      : storage((size + 63) / 64 + 1), bytes(reinterpret_cast<std::byte*>(storage.data()), size) {}
  struct alignas(64) Line {
    std::byte b[64];
  };
  std::vector<Line> storage;
  std::span<std::byte> bytes;
};

Message make_array(DType dtype, std::vector<std::int64_t> shape, Order order = Order::C,
                   std::string_view typestr = {}) {
  const std::size_t meta = hakobu::array_meta_size(shape.size(), typestr.size());
  const std::size_t data = *hakobu::contiguous_bytes(dtype, shape);
  Message m(meta + data);
  hakobu::write_array_meta(m.bytes.first(meta), dtype, shape, {}, 0, typestr, order);
  return m;
}

TEST(Array, RoundTripCOrder) {
  auto m = make_array(DType::of<double>(), {2, 3, 4});
  auto view = hakobu::parse_array(m.bytes);
  ASSERT_TRUE(view) << view.error().message;
  EXPECT_EQ(view->dtype, DType::of<double>());
  EXPECT_EQ(view->ndim(), 3U);
  EXPECT_EQ(view->size(), 24);
  EXPECT_EQ(std::vector<std::int64_t>(view->shape.begin(), view->shape.end()), (std::vector<std::int64_t>{2, 3, 4}));
  EXPECT_EQ(std::vector<std::int64_t>(view->strides.begin(), view->strides.end()),
            (std::vector<std::int64_t>{96, 32, 8}));
  EXPECT_TRUE(view->is_c_contiguous());
  EXPECT_FALSE(view->is_f_contiguous());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(view->data) % 64, 0U);  // data region is 64-byte aligned
}

TEST(Array, RoundTripFOrderAndTypestr) {
  auto m = make_array(DType{hakobu::DTypeCode::Int, 64, 1}, {5, 7}, Order::F, "<M8[ns]");
  auto view = hakobu::parse_array(m.bytes);
  ASSERT_TRUE(view) << view.error().message;
  EXPECT_EQ(view->strides[0], 8);
  EXPECT_EQ(view->strides[1], 40);
  EXPECT_TRUE(view->is_f_contiguous());
  EXPECT_EQ(view->typestr, "<M8[ns]");
}

TEST(Array, ZeroDimensionalAndEmpty) {
  auto scalar = make_array(DType::of<float>(), {});
  auto view = hakobu::parse_array(scalar.bytes);
  ASSERT_TRUE(view);
  EXPECT_EQ(view->ndim(), 0U);
  EXPECT_EQ(view->size(), 1);

  auto empty = make_array(DType::of<float>(), {3, 0, 2});
  auto empty_view = hakobu::parse_array(empty.bytes);
  ASSERT_TRUE(empty_view);
  EXPECT_EQ(empty_view->size(), 0);
  EXPECT_TRUE(empty_view->is_c_contiguous()) << "empty arrays are both, as in NumPy";
  EXPECT_TRUE(empty_view->is_f_contiguous());
}

TEST(Array, NegativeStridesWithinBoundsAreAccepted) {
  // A reversed 1-d view of 4 doubles: element 0 is the last one.
  const std::int64_t shape[] = {4};
  const std::int64_t strides[] = {-8};
  const std::size_t meta = hakobu::array_meta_size(1, 0);
  Message m(meta + 32);
  hakobu::write_array_meta(m.bytes.first(meta), DType::of<double>(), shape, strides, 24, {});
  auto view = hakobu::parse_array(m.bytes);
  ASSERT_TRUE(view) << view.error().message;
  EXPECT_EQ(view->data, m.bytes.data() + meta + 24);
}

TEST(Array, RejectsElementsOutsideTheMessage) {
  const std::size_t meta = hakobu::array_meta_size(1, 0);
  const std::int64_t shape[] = {4};
  {
    const std::int64_t strides[] = {-8};  // offset 0 with a negative stride reaches before the data
    Message m(meta + 32);
    hakobu::write_array_meta(m.bytes.first(meta), DType::of<double>(), shape, strides, 0, {});
    auto view = hakobu::parse_array(m.bytes);
    ASSERT_FALSE(view);
    EXPECT_EQ(view.error().code, ArrayError::Corrupt);
  }
  {
    const std::int64_t strides[] = {16};  // 4 elements 16 bytes apart need 56 bytes
    Message m(meta + 32);
    hakobu::write_array_meta(m.bytes.first(meta), DType::of<double>(), shape, strides, 0, {});
    EXPECT_FALSE(hakobu::parse_array(m.bytes));
  }
  {
    const std::int64_t huge_shape[] = {std::int64_t{1} << 62};
    const std::int64_t strides[] = {std::int64_t{1} << 40};  // overflow in the extent
    Message m(meta + 32);
    hakobu::write_array_meta(m.bytes.first(meta), DType::of<double>(), huge_shape, strides, 0, {});
    EXPECT_FALSE(hakobu::parse_array(m.bytes));
  }
}

TEST(Array, RejectsDamagedHeaders) {
  auto good = make_array(DType::of<std::int32_t>(), {8});
  auto damaged = [&](auto&& damage) {
    Message m(good.bytes.size());
    std::memcpy(m.bytes.data(), good.bytes.data(), good.bytes.size());
    damage(m.bytes);
    return hakobu::parse_array(m.bytes);
  };
  EXPECT_FALSE(damaged([](std::span<std::byte> b) { b[0] = std::byte{0}; }));      // magic
  EXPECT_FALSE(damaged([](std::span<std::byte> b) { b[8] = std::byte{200}; }));    // ndim > 64
  EXPECT_FALSE(damaged([](std::span<std::byte> b) { b[12] = std::byte{7}; }));     // meta size
  EXPECT_FALSE(damaged([](std::span<std::byte> b) { b[32] = std::byte{0x7f}; }));  // shape beyond data
  EXPECT_FALSE(hakobu::parse_array(good.bytes.first(16)));                         // truncated
  EXPECT_FALSE(hakobu::parse_array(good.bytes.first(good.bytes.size() - 1)));      // data truncated
}

TEST(Array, ContiguousBytesDetectsOverflow) {
  const std::int64_t shape[] = {std::int64_t{1} << 40, std::int64_t{1} << 30};
  EXPECT_FALSE(hakobu::contiguous_bytes(DType::of<double>(), shape));
  const std::int64_t negative[] = {-1};
  EXPECT_FALSE(hakobu::contiguous_bytes(DType::of<double>(), negative));
  const std::int64_t ok[] = {128, 1024, 1024};
  EXPECT_EQ(*hakobu::contiguous_bytes(DType::of<double>(), ok), std::size_t{1} << 30);
}

}  // namespace
