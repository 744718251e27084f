// fuzz_array_header — the array-message metadata parser (parse_array,
// array_data_attachment; src/channel/array.cpp).
//
// Input: one mode byte, then the message.
//   mode bit 0 clear: the whole rest is the message; its elements follow the
//                     metadata (parse_array(message)).
//   mode bit 0 set:   a little-endian u16 splits the rest: the first
//                     (u16 % (rest + 1)) bytes are the message, the others are
//                     the elements of a separate data attachment
//                     (parse_array(message, data)).
// Both spans are heap copies of exactly their size, so AddressSanitizer sees
// any read past them. When parsing succeeds, every promise of ArrayView is
// checked: all addressed elements lie inside the data region (never in the
// metadata), the shape and strides are the view's own copies, and writing the
// metadata back with write_array_meta parses to the same view.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "fuzz_support.hpp"
#include "hakobu/array.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_array_header: %s\n", what);
  std::abort();
}

// The lowest and highest byte addressed by `view`, relative to view.data; false if empty.
bool extent_of(const hakobu::ArrayView& view, std::int64_t& low, std::int64_t& high) {
  low = 0;
  high = 0;
  for (std::size_t k = 0; k < view.ndim(); ++k) {
    if (view.shape[k] == 0) return false;
    const std::int64_t span = (view.shape[k] - 1) * view.strides[k];  // the parser checked for overflow
    (span < 0 ? low : high) += span;
  }
  high += static_cast<std::int64_t>(view.dtype.itemsize()) - 1;
  return true;
}

// Reads up to `budget` elements in C order (first byte of each): the way a consumer walks the array.
void walk(const hakobu::ArrayView& view, std::size_t budget) {
  std::int64_t index[hakobu::kMaxArrayDims] = {};
  const std::size_t ndim = view.ndim();
  for (std::size_t k = 0; k < ndim; ++k) {
    if (view.shape[k] == 0) return;
  }
  for (std::size_t n = 0; n < budget; ++n) {
    std::int64_t offset = 0;
    for (std::size_t k = 0; k < ndim; ++k) offset += index[k] * view.strides[k];
    hakobu::fuzz::touch(view.data + offset);
    std::size_t k = ndim;
    for (; k > 0; --k) {
      if (++index[k - 1] < view.shape[k - 1]) break;
      index[k - 1] = 0;
    }
    if (k == 0) return;  // every element visited
  }
}

void check(const hakobu::ArrayView& view, std::span<std::byte> region, std::span<const std::byte> message) {
  if (view.ndim() > hakobu::kMaxArrayDims || view.typestr.size() > hakobu::kMaxTypestrBytes) fail("limits");
  if (view.dtype.itemsize() == 0) fail("empty element type accepted");
  // The view owns its layout: not pointers into shared memory.
  const auto* lo = message.data();
  const auto* hi = message.data() + message.size();
  const auto* shape = reinterpret_cast<const std::byte*>(view.shape.data());  // NOLINT
  if (shape >= lo && shape < hi) fail("the shape points into the message");
  const auto* type = reinterpret_cast<const std::byte*>(view.typestr.data());  // NOLINT
  if (!view.typestr.empty() && (type < lo || type + view.typestr.size() > hi)) fail("typestr outside the message");
  for (const char c : view.typestr) hakobu::fuzz::touch(reinterpret_cast<const std::byte*>(&c));  // NOLINT

  std::int64_t low = 0;
  std::int64_t high = 0;
  if (view.data < region.data() || view.data > region.data() + region.size()) fail("data outside its region");
  if (extent_of(view, low, high)) {
    const std::int64_t start = view.data - region.data();
    if (start + low < 0 || start + high >= static_cast<std::int64_t>(region.size())) {
      fail("an element lies outside the data region");
    }
    hakobu::fuzz::touch(view.data + low);
    hakobu::fuzz::touch(view.data + high);
    walk(view, 4096);
  }
  (void)view.size();
  (void)view.is_c_contiguous();
  (void)view.is_f_contiguous();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  ++data;
  --size;
  const bool external = (mode & 1U) != 0;
  std::size_t split = size;
  if (external) {
    if (size < 2) return 0;
    split = static_cast<std::size_t>(data[0] | (data[1] << 8U)) % (size - 1);
    data += 2;
    size -= 2;
  }
  // Exactly sized heap copies: a read past either end is an AddressSanitizer report.
  std::vector<std::byte> message(split);
  std::vector<std::byte> elements(size - split);
  if (split > 0) std::memcpy(message.data(), data, split);
  if (size > split) std::memcpy(elements.data(), data + split, size - split);

  const std::uint32_t attachment = hakobu::array_data_attachment(message);
  auto view = external ? hakobu::parse_array(message, elements) : hakobu::parse_array(message);
  if (!view) {
    if (view.error().code != hakobu::ArrayError::Corrupt) fail("a parse failure that is not Corrupt");
    return 0;
  }
  if ((attachment != 0) != external) fail("accepted elements that are not where the message says");
  const std::size_t meta = hakobu::array_meta_size(view->ndim(), view->typestr.size());
  const std::span<std::byte> region = external ? std::span<std::byte>(elements) : std::span(message).subspan(meta);
  check(*view, region, message);

  // A copy of the view is as valid as the view.
  const hakobu::ArrayView copy = *view;
  check(copy, region, message);

  // What parses can be written back and parses the same.
  std::vector<std::byte> rewritten(meta + region.size());
  const std::int64_t byte_offset = view->data - region.data();
  hakobu::write_array_meta(std::span(rewritten).first(meta), view->dtype, view->shape, view->strides, byte_offset,
                           view->typestr, hakobu::Order::C, attachment);
  if (!region.empty()) std::memcpy(rewritten.data() + meta, region.data(), region.size());
  std::span<std::byte> again_region = external ? std::span<std::byte>(elements) : std::span(rewritten).subspan(meta);
  auto again =
      external ? hakobu::parse_array(std::span(rewritten).first(meta), elements) : hakobu::parse_array(rewritten);
  if (!again) fail("metadata written back from a parsed view does not parse");
  if (again->dtype != view->dtype || again->ndim() != view->ndim() || again->typestr != view->typestr ||
      again->data - again_region.data() != byte_offset) {
    fail("metadata written back parses differently");
  }
  for (std::size_t k = 0; k < view->ndim(); ++k) {
    if (again->shape[k] != view->shape[k] || again->strides[k] != view->strides[k]) fail("layout changed");
  }
  return 0;
}
