// Unit tests: the heap's size classes (memory/layout.hpp).
#include <gtest/gtest.h>

#include <cstdint>

#include "memory/layout.hpp"

namespace {

TEST(SizeClasses, CoverEverySizeWithAtMostAQuarterWaste) {
  using hakobu::detail::class_bytes;
  using hakobu::detail::class_for;
  for (std::uint64_t total = 1; total < (std::uint64_t{1} << 36); total = total * 3 / 2 + 7) {
    const unsigned c = class_for(total);
    ASSERT_LT(c, hakobu::detail::kSizeClassCount);
    EXPECT_GE(class_bytes(c), total);
    if (c > 0) {
      EXPECT_LT(class_bytes(c - 1), total) << "not the smallest class for " << total;
    }
    if (total > 256) {
      EXPECT_LE(class_bytes(c), total + total / 4 + 64);
    }
  }
}

}  // namespace
