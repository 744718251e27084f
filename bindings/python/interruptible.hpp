// hakobu._core — blocking calls that Ctrl-C can interrupt (queues and sync objects).
//
// Waiting rules: every wait releases the GIL and is cut into slices of at most
// kSliceNs; between slices the GIL is taken back to run signal handlers, so
// Ctrl-C raises KeyboardInterrupt in a blocked call and leaves the object as it
// was (the slice that was cut short failed with its timeout code, and nothing
// was taken).
//
// Interpreter exit: a daemon thread (a pipeline's feeder, a user's thread)
// may be in a wait when the interpreter finalizes. Taking the GIL back then
// makes CPython end the thread with pthread_exit, whose unwinding through a
// destructor or a catch-all aborts the whole process ("terminate called
// without an active exception"). So a wait that ends while the interpreter is
// finalizing does not take the GIL back: the thread sleeps until the process
// exits (what CPython itself does from 3.14 on).
#pragma once

#include <nanobind/nanobind.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <thread>

#include "convert.hpp"

namespace hakobu::python {

inline constexpr std::int64_t kSliceNs = 50'000'000;  // how long a wait runs without looking at signals

/// True once the interpreter is finalizing (readable without the GIL).
inline bool interpreter_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

/// Runs `work()` without the GIL; see "Interpreter exit" above for why this is
/// not nanobind::gil_scoped_release.
template <class Work>
auto without_gil(Work&& work) {
  PyThreadState* const saved = PyEval_SaveThread();
  auto restore = [&] {
    while (interpreter_finalizing()) std::this_thread::sleep_for(std::chrono::hours(1));
    PyEval_RestoreThread(saved);
  };
  try {
    auto result = work();
    restore();
    return result;
  } catch (...) {
    restore();
    throw;
  }
}

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
    result = without_gil([&] { return attempt(slice); });
    if (result || result.error().code != timeout_code) return result;
    if (!forever && Clock::now() >= deadline) return result;
    if (PyErr_CheckSignals() != 0) throw nanobind::python_error();  // e.g. KeyboardInterrupt
  }
}

}  // namespace hakobu::python
