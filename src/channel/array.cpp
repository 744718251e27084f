// hakobu — array message metadata: writing it and checking it.
//
// Wire format (little-endian), at the start of an array message:
//   ArrayMetaHeader (32 bytes)
//   int64 shape[ndim]; int64 strides[ndim] (bytes)
//   char typestr[typestr_size]
//   padding to a multiple of 64 → the data region starts here
// `byte_offset` locates element [0,...,0] within the data region, so views with
// negative strides or into part of a block can be described.
#include "hakobu/array.hpp"

#include <cstring>
#include <limits>

namespace hakobu {
namespace {

constexpr std::uint32_t kArrayMagic = 0x3141'4B48U;  // "HKA1"

struct ArrayMetaHeader {
  std::uint32_t magic;
  std::uint8_t dtype_code;
  std::uint8_t dtype_bits;
  std::uint16_t dtype_lanes;
  std::uint16_t ndim;
  std::uint16_t typestr_size;
  std::uint32_t meta_size;  ///< bytes before the data region
  std::int64_t byte_offset;
  std::uint32_t data_attachment;  ///< 0: elements follow; i + 1: in attachment i
  std::uint32_t reserved;
};
static_assert(sizeof(ArrayMetaHeader) == 32,
              "the array metadata header is 32 bytes in every message: its layout changed (wire format)");

bool mul_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
  return __builtin_mul_overflow(a, b, &out);
}

}  // namespace

std::size_t array_meta_size(std::size_t ndim, std::size_t typestr_size) noexcept {
  const std::size_t raw = sizeof(ArrayMetaHeader) + 2 * ndim * sizeof(std::int64_t) + typestr_size;
  return (raw + 63) / 64 * 64;
}

Result<std::size_t, LoanError> contiguous_bytes(DType dtype, std::span<const std::int64_t> shape) noexcept {
  std::uint64_t total = dtype.itemsize();
  for (const auto extent : shape) {
    if (extent < 0) return {LoanError::InvalidArgument, "negative dimension in array shape"};
    if (mul_overflows(total, static_cast<std::uint64_t>(extent), total)) {
      return {LoanError::InvalidArgument, "array byte size overflows"};
    }
  }
  if (total > std::numeric_limits<std::size_t>::max() / 2) return {LoanError::TooLarge, "array too large"};
  return static_cast<std::size_t>(total);
}

void write_array_meta(std::span<std::byte> out, DType dtype, std::span<const std::int64_t> shape,
                      std::span<const std::int64_t> strides, std::int64_t byte_offset, std::string_view typestr,
                      Order order, std::uint32_t data_attachment) noexcept {
  const std::size_t ndim = shape.size();
  const std::size_t meta = array_meta_size(ndim, typestr.size());
  std::memset(out.data(), 0, meta);
  ArrayMetaHeader header{};
  header.magic = kArrayMagic;
  header.dtype_code = static_cast<std::uint8_t>(dtype.code);
  header.dtype_bits = dtype.bits;
  header.dtype_lanes = dtype.lanes;
  header.ndim = static_cast<std::uint16_t>(ndim);
  header.typestr_size = static_cast<std::uint16_t>(typestr.size());
  header.meta_size = static_cast<std::uint32_t>(meta);
  header.byte_offset = byte_offset;
  header.data_attachment = data_attachment;
  std::memcpy(out.data(), &header, sizeof header);
  std::byte* cursor = out.data() + sizeof header;
  if (ndim > 0) std::memcpy(cursor, shape.data(), ndim * sizeof(std::int64_t));  // 0-d: shape.data() may be null
  cursor += ndim * sizeof(std::int64_t);
  if (ndim == 0) {
    // a 0-d array has no shape or strides
  } else if (strides.size() == ndim) {
    std::memcpy(cursor, strides.data(), ndim * sizeof(std::int64_t));
  } else {
    // Contiguous in the requested order.
    auto* out_strides = reinterpret_cast<std::int64_t*>(cursor);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    auto step = static_cast<std::int64_t>(dtype.itemsize());
    for (std::size_t k = 0; k < ndim; ++k) {
      const std::size_t axis = order == Order::C ? ndim - 1 - k : k;
      std::int64_t value = step;
      std::memcpy(out_strides + axis, &value, sizeof value);
      step *= std::max<std::int64_t>(shape[axis], 1);
    }
  }
  cursor += ndim * sizeof(std::int64_t);
  if (!typestr.empty()) std::memcpy(cursor, typestr.data(), typestr.size());
}

std::uint32_t array_data_attachment(std::span<const std::byte> message) noexcept {
  ArrayMetaHeader header{};
  if (message.size() < sizeof header) return 0;
  std::memcpy(&header, message.data(), sizeof header);
  return header.magic == kArrayMagic ? header.data_attachment : 0;
}

namespace {
Result<ArrayView, ArrayError> parse(std::span<std::byte> message, std::span<std::byte> data, bool external) noexcept;
}  // namespace

Result<ArrayView, ArrayError> parse_array(std::span<std::byte> message) noexcept {
  return parse(message, {}, false);
}

Result<ArrayView, ArrayError> parse_array(std::span<std::byte> message, std::span<std::byte> data) noexcept {
  return parse(message, data, true);
}

namespace {

Result<ArrayView, ArrayError> parse(std::span<std::byte> message, std::span<std::byte> external_data,
                                    bool external) noexcept {
  const auto corrupt = [](const char* why) -> Result<ArrayView, ArrayError> {
    return {ArrayError::Corrupt, std::string("array message failed validation: ") + why};
  };
  if (message.size() < sizeof(ArrayMetaHeader)) return corrupt("shorter than its header");
  ArrayMetaHeader header{};
  std::memcpy(&header, message.data(), sizeof header);
  if (header.magic != kArrayMagic) return corrupt("bad magic");
  if (header.ndim > kMaxArrayDims) return corrupt("too many dimensions");
  if (header.typestr_size > kMaxTypestrBytes) return corrupt("type string too long");
  if (header.dtype_lanes == 0 || header.dtype_bits == 0) return corrupt("empty element type");
  const std::size_t meta = array_meta_size(header.ndim, header.typestr_size);
  if (header.meta_size != meta || meta > message.size()) return corrupt("metadata size out of bounds");
  if (external != (header.data_attachment != 0)) return corrupt("elements are not where the message says");
  const std::span<std::byte> data = external ? external_data : message.subspan(meta);

  // Shape and strides are copied out of the message first and only the copies
  // are checked and used: the sender may still be writing to shared memory.
  std::array<std::int64_t, 2 * kMaxArrayDims> layout;  // the first 2 * ndim are copied in, the rest unused
  std::memcpy(layout.data(), message.data() + sizeof header, std::size_t{2} * header.ndim * sizeof(std::int64_t));
  ArrayView view;
  view.dtype = DType{static_cast<DTypeCode>(header.dtype_code), header.dtype_bits, header.dtype_lanes};
  view.set_layout({layout.data(), header.ndim}, {layout.data() + header.ndim, header.ndim});
  view.typestr = {
      reinterpret_cast<const char*>(message.data() + sizeof header + 2 * header.ndim * sizeof(std::int64_t)),  // NOLINT
      header.typestr_size};

  // Every element addressed must lie inside the data region.
  const std::uint64_t data_size = data.size();
  const auto itemsize = static_cast<std::int64_t>(view.dtype.itemsize());
  bool empty = false;
  std::int64_t low = 0;
  std::int64_t high = 0;
  std::int64_t count = 1;
  for (std::size_t k = 0; k < header.ndim; ++k) {
    const std::int64_t extent = view.shape[k];
    const std::int64_t stride = view.strides[k];
    if (extent < 0) return corrupt("negative dimension");
    if (extent == 0) empty = true;
    if (__builtin_mul_overflow(count, extent, &count)) return corrupt("element count overflows");
    std::int64_t span = 0;
    if (extent > 0 && __builtin_mul_overflow(extent - 1, stride, &span)) return corrupt("stride overflow");
    if (span < 0) {
      if (__builtin_add_overflow(low, span, &low)) return corrupt("stride overflow");
    } else if (__builtin_add_overflow(high, span, &high)) {
      return corrupt("stride overflow");
    }
  }
  const std::int64_t offset = header.byte_offset;
  if (offset < 0 || static_cast<std::uint64_t>(offset) > data_size) return corrupt("data offset out of bounds");
  if (!empty) {
    std::int64_t first = 0;
    std::int64_t last = 0;
    if (__builtin_add_overflow(offset, low, &first) || __builtin_add_overflow(offset, high, &last) ||
        __builtin_add_overflow(last, itemsize, &last)) {
      return corrupt("extent overflow");
    }
    if (first < 0 || static_cast<std::uint64_t>(last) > data_size) return corrupt("elements outside the message");
  }
  view.data = data.data() + offset;
  return view;
}

}  // namespace

namespace {

// As in NumPy: an empty array is both C- and F-contiguous, and axes of
// length 1 may have any stride.
bool contiguous(const ArrayView& view, bool c_order) noexcept {
  if (view.size() == 0) return true;
  auto expected = static_cast<std::int64_t>(view.dtype.itemsize());
  const std::size_t ndim = view.ndim();
  for (std::size_t k = 0; k < ndim; ++k) {
    const std::size_t axis = c_order ? ndim - 1 - k : k;
    if (view.shape[axis] != 1 && view.strides[axis] != expected) return false;
    expected *= view.shape[axis];
  }
  return true;
}

}  // namespace

bool ArrayView::is_c_contiguous() const noexcept {
  return contiguous(*this, true);
}
bool ArrayView::is_f_contiguous() const noexcept {
  return contiguous(*this, false);
}

}  // namespace hakobu
