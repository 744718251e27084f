// hakobu._core — arguments from Python, checked before they reach the core.
//
// nanobind's own conversions reject a bad argument with "incompatible function
// arguments" (a TypeError that names no argument) and pass NaN and huge
// doubles through to casts that overflow. These raise the hakobu error that
// says which argument is wrong and why instead.
#pragma once

#include <nanobind/nanobind.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "hakobu/queue.hpp"

namespace hakobu::python {

/// Waits longer than this (about 146 years) mean "forever": a deadline this far
/// ahead still fits the clock's 64-bit nanoseconds.
inline constexpr std::int64_t kForeverNs = std::int64_t{1} << 62;

/// `seconds` (None: forever) as a wait: nullopt means forever (None, +inf, or
/// at least kForeverNs). NaN and negative values raise InvalidArgument.
std::optional<std::chrono::nanoseconds> wait_duration(std::optional<double> seconds, const char* what);

/// A duration in seconds that cannot be "forever" (e.g. a spin): NaN and
/// negative values raise InvalidArgument; +inf and huge values saturate at kForeverNs.
std::chrono::nanoseconds duration(double seconds, const char* what);

/// What `to_size` raises for a value above its limit.
enum class Beyond : std::uint8_t { TooLarge, InvalidArgument };

/// A count (bytes, messages) from a Python int or an object with __index__:
/// bools, floats, other types and negative values raise InvalidArgument;
/// values above `limit` raise TooLarge or InvalidArgument per `beyond`.
std::size_t to_size(nanobind::handle value, const char* what, std::size_t limit, Beyond beyond);

/// Raises InvalidName unless `name` is a valid queue or domain name (an empty
/// domain means the default one and is allowed when `empty_ok`).
void check_name(const std::string& name, const char* what, bool empty_ok = false);

/// The open mode of a `create` argument: None creates or attaches, True
/// requires creating, False requires attaching.
inline OpenMode open_mode(std::optional<bool> create) {
  if (!create.has_value()) return OpenMode::CreateOrAttach;
  return *create ? OpenMode::CreateExclusive : OpenMode::AttachOnly;
}

}  // namespace hakobu::python
