// hakobu — array messages.
//
// An array message carries its element type, shape and strides in a small
// header in front of the data, so a C++ producer and a Python (NumPy) consumer
// read the same message. The element type uses DLPack's (code, bits, lanes)
// triple; an optional NumPy type string (e.g. "<M8[ns]", "<U10") carries types
// DLPack has no code for. Strides are in bytes, as in NumPy.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>

#include "hakobu/error.hpp"

namespace hakobu {

/// Largest number of dimensions an array message may have (NumPy 2's limit).
inline constexpr std::size_t kMaxArrayDims = 64;
/// Longest NumPy type string an array message may carry.
inline constexpr std::size_t kMaxTypestrBytes = 4096;

/// Element type codes, numerically equal to DLPack's `DLDataTypeCode`.
enum class DTypeCode : std::uint8_t {
  Int = 0,
  UInt = 1,
  Float = 2,
  OpaqueHandle = 3,
  BFloat = 4,
  Complex = 5,
  Bool = 6,
};

/// An element type: DLPack's (code, bits, lanes).
struct DType {
  DTypeCode code = DTypeCode::UInt;
  std::uint8_t bits = 8;
  std::uint16_t lanes = 1;

  /// Bytes per element (bits rounded up to whole bytes, times lanes).
  [[nodiscard]] constexpr std::size_t itemsize() const noexcept {
    return static_cast<std::size_t>((bits + 7U) / 8U) * lanes;
  }
  friend constexpr bool operator==(const DType&, const DType&) = default;

  /// The DType of a C++ arithmetic type, e.g. `DType::of<float>()`.
  template <class T>
  static constexpr DType of() noexcept {
    static_assert(std::is_arithmetic_v<T>, "DType::of<T> needs an arithmetic type");
    constexpr auto kBits = static_cast<std::uint8_t>(sizeof(T) * 8);
    if constexpr (std::is_same_v<T, bool>) {
      return {DTypeCode::Bool, 8, 1};
    } else if constexpr (std::is_floating_point_v<T>) {
      return {DTypeCode::Float, kBits, 1};
    } else if constexpr (std::is_signed_v<T>) {
      return {DTypeCode::Int, kBits, 1};
    } else {
      return {DTypeCode::UInt, kBits, 1};
    }
  }
};

/// A validated view of an array message's layout and data.
///
/// Every extent was checked against the message's bounds: all elements
/// addressed by `shape`, `strides` and `data` lie inside the message. The view
/// owns copies of the shape and strides it checked, so a sender that rewrites
/// them afterwards cannot move the receiver out of bounds.
struct ArrayView {
  DType dtype;
  std::span<const std::int64_t> shape;    ///< points into this view's own storage
  std::span<const std::int64_t> strides;  ///< in bytes; points into this view's own storage
  std::string_view typestr;               ///< NumPy type string, empty when `dtype` says it all
  std::byte* data = nullptr;              ///< address of element [0, 0, ..., 0]

  ArrayView() = default;
  ArrayView(const ArrayView& other) noexcept { *this = other; }
  ArrayView& operator=(const ArrayView& other) noexcept {
    if (this != &other) {
      dtype = other.dtype;
      typestr = other.typestr;
      data = other.data;
      set_layout(other.shape, other.strides);
    }
    return *this;
  }
  /// Copies `new_shape` and `new_strides` (at most kMaxArrayDims each) into the view.
  void set_layout(std::span<const std::int64_t> new_shape, std::span<const std::int64_t> new_strides) noexcept {
    const std::size_t n = std::min(new_shape.size(), kMaxDims);
    std::copy_n(new_shape.begin(), n, storage_.begin());
    std::copy_n(new_strides.begin(), std::min(new_strides.size(), n), storage_.begin() + kMaxDims);
    shape = {storage_.data(), n};
    strides = {storage_.data() + kMaxDims, n};
  }

  [[nodiscard]] std::size_t ndim() const noexcept { return shape.size(); }
  /// Number of elements (product of the shape; 1 for a 0-d array).
  [[nodiscard]] std::int64_t size() const noexcept {
    std::int64_t n = 1;
    for (const auto extent : shape) n *= extent;
    return n;
  }
  /// True when elements are laid out in C (row-major) order without gaps.
  [[nodiscard]] bool is_c_contiguous() const noexcept;
  /// True when elements are laid out in Fortran (column-major) order without gaps.
  [[nodiscard]] bool is_f_contiguous() const noexcept;

 private:
  static constexpr std::size_t kMaxDims = 64;  // kMaxArrayDims
  std::array<std::int64_t, 2 * kMaxDims>
      storage_;  // only the first ndim of each half are used: not cleared (views are copied per message)
};

/// How an array's elements are laid out when hakobu allocates it.
enum class Order : std::uint8_t { C, F };

/// Byte size of the metadata that precedes the data of an array message with
/// `ndim` dimensions and a type string of `typestr_size` bytes; the data that
/// follows is 64-byte aligned relative to the message start.
[[nodiscard]] std::size_t array_meta_size(std::size_t ndim, std::size_t typestr_size) noexcept;

/// Writes array metadata into `out` (which must hold `array_meta_size` bytes).
/// `strides` in bytes; empty `strides` means contiguous in `order`.
/// `byte_offset` is where element [0,...,0] lies relative to the data start.
/// `data_attachment`: 0 when the elements follow the metadata, i + 1 when they
/// are in the message's attachment i (an array sent by reference).
void write_array_meta(std::span<std::byte> out, DType dtype, std::span<const std::int64_t> shape,
                      std::span<const std::int64_t> strides, std::int64_t byte_offset, std::string_view typestr,
                      Order order = Order::C, std::uint32_t data_attachment = 0) noexcept;

/// Parses and bounds-checks the array metadata at the start of `message`, whose
/// elements follow the metadata. Fails with `ArrayError::Corrupt` if any extent
/// falls outside `message` (or the elements are in an attachment).
[[nodiscard]] Result<ArrayView, ArrayError> parse_array(std::span<std::byte> message) noexcept;
/// Parses the metadata at the start of `message` for elements that are in `data`.
[[nodiscard]] Result<ArrayView, ArrayError> parse_array(std::span<std::byte> message,
                                                        std::span<std::byte> data) noexcept;
/// 0 when the elements of the array message follow its metadata, i + 1 when
/// they are in its attachment i.
[[nodiscard]] std::uint32_t array_data_attachment(std::span<const std::byte> message) noexcept;

/// Bytes needed for the elements of a contiguous array, or an error on overflow.
[[nodiscard]] Result<std::size_t, LoanError> contiguous_bytes(DType dtype,
                                                              std::span<const std::int64_t> shape) noexcept;

}  // namespace hakobu
