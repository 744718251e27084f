// hakobu._core — blocking calls that Ctrl-C can interrupt (queues and sync objects).
//
// Waiting rules: every wait releases the GIL and is cut into slices of at most
// kSliceNs; between slices the GIL is taken back to run signal handlers, so
// Ctrl-C raises KeyboardInterrupt in a blocked call and leaves the object as it
// was (the slice that was cut short failed with its timeout code, and nothing
// was taken).
#pragma once

#include <nanobind/nanobind.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>

#include "convert.hpp"

namespace hakobu::python {

inline constexpr std::int64_t kSliceNs = 50'000'000;  // how long a wait runs without looking at signals

/// Runs `attempt(slice)` until it succeeds, fails with another error than
/// `busy_code` or `timeout_code`, or `timeout` (seconds; None, +inf or beyond
/// kForeverNs: forever; NaN or negative: InvalidArgument) runs out. The first
/// try is made with the GIL held and without waiting (slice 0, which fails
/// with `busy_code`): most calls succeed at once, and letting go of the GIL
/// and taking it back would cost more than the try. Waits run without the GIL.
template <class Code, class Attempt>
auto wait_interruptibly(std::optional<double> timeout, Code busy_code, Code timeout_code, Attempt&& attempt) {
  using Clock = std::chrono::steady_clock;
  const std::optional<std::chrono::nanoseconds> wait = wait_duration(timeout, "timeout");
  auto result = attempt(std::chrono::nanoseconds(0));
  if (result || result.error().code != busy_code) return result;
  const bool forever = !wait.has_value();
  if (!forever && wait->count() == 0) return result;
  const auto deadline = Clock::now() + wait.value_or(std::chrono::nanoseconds(0));
  for (;;) {
    std::chrono::nanoseconds slice(kSliceNs);
    if (!forever) slice = std::min(slice, std::max(std::chrono::nanoseconds(0), deadline - Clock::now()));
    result = [&] {
      nanobind::gil_scoped_release unlocked;
      return attempt(slice);
    }();
    if (result || result.error().code != timeout_code) return result;
    if (!forever && Clock::now() >= deadline) return result;
    if (PyErr_CheckSignals() != 0) throw nanobind::python_error();  // e.g. KeyboardInterrupt
  }
}

}  // namespace hakobu::python
