// hakobu._core — arguments from Python, checked before they reach the core (see convert.hpp).
#include "convert.hpp"

#include <climits>
#include <cmath>
#include <cstdio>
#include <string>

#include "errors.hpp"
#include "hakobu/domain.hpp"

namespace nb = nanobind;

namespace hakobu::python {
namespace {

std::string text_of(nb::handle value) {
  nb::str text = nb::repr(value);
  return text.c_str();
}

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);  // NOLINT: -1, not -1.000000
  return text;
}

std::chrono::nanoseconds checked_ns(double seconds, const char* what, const char* advice) {
  if (std::isnan(seconds)) {
    throw PythonError(ErrorKind::InvalidArgument, std::string(what) + " is NaN: give a number of seconds" + advice);
  }
  if (seconds < 0) {
    throw PythonError(ErrorKind::InvalidArgument,
                      std::string(what) + " must be a non-negative number of seconds, got " + number(seconds) + advice);
  }
  // Compared as doubles first: a cast of a double beyond the int64 range is undefined.
  if (seconds * 1e9 >= static_cast<double>(kForeverNs)) return std::chrono::nanoseconds(kForeverNs);
  return std::chrono::nanoseconds(static_cast<std::int64_t>(seconds * 1e9));
}

}  // namespace

std::optional<std::chrono::nanoseconds> wait_duration(std::optional<double> seconds, const char* what) {
  if (!seconds.has_value()) return std::nullopt;
  const auto ns = checked_ns(*seconds, what, " (or None to wait without a limit)");
  if (ns.count() >= kForeverNs) return std::nullopt;
  return ns;
}

std::chrono::nanoseconds duration(double seconds, const char* what) {
  return checked_ns(seconds, what, "");
}

std::size_t to_size(nb::handle value, const char* what, std::size_t limit, Beyond beyond) {
  // bool is an int in Python, but True bytes or messages is a mistake, not a count.
  if (PyBool_Check(value.ptr()) != 0 || PyIndex_Check(value.ptr()) == 0) {
    throw PythonError(ErrorKind::InvalidArgument, std::string(what) + " must be an int, got " + text_of(value));
  }
  nb::object index = nb::steal(PyNumber_Index(value.ptr()));
  if (!index.is_valid()) throw nb::python_error();
  int overflow = 0;
  const long long count = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (count == -1 && PyErr_Occurred() != nullptr) throw nb::python_error();
  if (overflow < 0 || (overflow == 0 && count < 0)) {
    throw PythonError(ErrorKind::InvalidArgument, std::string(what) + " must not be negative, got " + text_of(value));
  }
  if (overflow > 0 || static_cast<unsigned long long>(count) > limit) {
    if (beyond == Beyond::InvalidArgument) {
      throw PythonError(ErrorKind::InvalidArgument, std::string(what) + " " + text_of(value) + " is out of range");
    }
    throw PythonError(ErrorKind::TooLarge, std::string(what) + " " + text_of(value) +
                                               " is too large: no buffer holds more than " + std::to_string(limit) +
                                               " bytes");
  }
  return static_cast<std::size_t>(count);
}

void check_name(const std::string& name, const char* what, bool empty_ok) {
  if (empty_ok && name.empty()) return;
  if (auto why = validate_name(name); !why.empty()) {
    throw PythonError(ErrorKind::InvalidName, "invalid " + std::string(what) + " name '" + name + "': " + why);
  }
}

}  // namespace hakobu::python
