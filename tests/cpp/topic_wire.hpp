// hakobu tests — the contents of topic test messages, the same in every test
// program (C++ and Python), so that each checks what the other published:
//
//   bytes message `seq` of S bytes (S >= 16): [0, 8) seq (u64 little-endian),
//     [8, 16) S (u64 little-endian), byte i >= 16 = (seq * 31 + i) & 0xFF
//   array message `seq`, float64 (rows, cols), C order: [r, c] = seq * 1e6 + r * cols + c
//
// (The hosts are little-endian, as the library requires: memcpy of a u64 is its
// little-endian encoding.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "hakobu/array.hpp"

namespace hakobu::test {

inline constexpr std::size_t kWireHeaderBytes = 16;

inline std::byte wire_byte(std::uint64_t seq, std::size_t i) {
  return static_cast<std::byte>((seq * 31 + i) & 0xFFU);
}

/// Writes bytes message `seq` into `out` (its size is the message's; at least 16).
inline void write_wire_bytes(std::span<std::byte> out, std::uint64_t seq) {
  const std::uint64_t size = out.size();
  std::memcpy(out.data(), &seq, 8);
  std::memcpy(out.data() + 8, &size, 8);
  for (std::size_t i = kWireHeaderBytes; i < out.size(); ++i) out[i] = wire_byte(seq, i);
}

inline std::vector<std::byte> wire_bytes(std::uint64_t seq, std::size_t size) {
  std::vector<std::byte> out(size);
  write_wire_bytes(out, seq);
  return out;
}

/// Checks a bytes message: its seq, or nothing with the reason in `why`.
inline std::optional<std::uint64_t> check_wire_bytes(std::span<const std::byte> in, std::string& why) {
  if (in.size() < kWireHeaderBytes) {
    why = "a message of " + std::to_string(in.size()) + " bytes is shorter than the 16-byte header";
    return std::nullopt;
  }
  std::uint64_t seq = 0;
  std::uint64_t size = 0;
  std::memcpy(&seq, in.data(), 8);
  std::memcpy(&size, in.data() + 8, 8);
  if (size != in.size()) {
    why =
        "message " + std::to_string(seq) + " says " + std::to_string(size) + " bytes, has " + std::to_string(in.size());
    return std::nullopt;
  }
  for (std::size_t i = kWireHeaderBytes; i < in.size(); ++i) {
    if (in[i] != wire_byte(seq, i)) {
      why = "message " + std::to_string(seq) + ": byte " + std::to_string(i) + " differs";
      return std::nullopt;
    }
  }
  return seq;
}

inline double wire_element(std::uint64_t seq, std::int64_t r, std::int64_t c, std::int64_t cols) {
  return static_cast<double>(seq) * 1e6 + static_cast<double>(r * cols + c);
}

/// The elements of array message `seq` of shape (rows, cols), C order.
inline std::vector<double> wire_array(std::uint64_t seq, std::int64_t rows, std::int64_t cols) {
  std::vector<double> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) out[static_cast<std::size_t>(r * cols + c)] = wire_element(seq, r, c, cols);
  }
  return out;
}

/// Checks an array message (any strides): its seq, read from element [0, 0]
/// (seq * 1e6 is exact in a double for every seq a test uses), or nothing.
inline std::optional<std::uint64_t> check_wire_array(const ArrayView& view, std::string& why) {
  if (view.dtype != DType::of<double>() || view.ndim() != 2) {
    why = "not a 2-d float64 array";
    return std::nullopt;
  }
  const std::int64_t rows = view.shape[0];
  const std::int64_t cols = view.shape[1];
  const auto element = [&](std::int64_t r, std::int64_t c) {
    double value = 0;
    std::memcpy(&value, view.data + r * view.strides[0] + c * view.strides[1], sizeof value);  // NOLINT
    return value;
  };
  if (rows <= 0 || cols <= 0) {
    why = "an empty array carries no seq";
    return std::nullopt;
  }
  const double first = element(0, 0);
  if (first < 0 || first / 1e6 != static_cast<double>(static_cast<std::uint64_t>(first / 1e6))) {
    why = "element [0, 0] is no seq * 1e6";
    return std::nullopt;
  }
  const auto seq = static_cast<std::uint64_t>(first / 1e6);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      if (element(r, c) != wire_element(seq, r, c, cols)) {
        why = "array message " + std::to_string(seq) + ": element [" + std::to_string(r) + ", " + std::to_string(c) +
              "] differs";
        return std::nullopt;
      }
    }
  }
  return seq;
}

}  // namespace hakobu::test
