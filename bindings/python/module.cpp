// hakobu._core — module definition, and the exception classes bound once (errors.hpp).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <array>
#include <climits>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "codec.hpp"
#include "errors.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/sync.hpp"
#include "hakobu/topic.hpp"
#include "hakobu/version.hpp"
#include "objects.hpp"

namespace nb = nanobind;

namespace hakobu::python {

void bind_queue(nb::module_& m);
void bind_domain(nb::module_& m);
void bind_admin(nb::module_& m);
void bind_store(nb::module_& m);
void bind_sync(nb::module_& m);
void bind_topic(nb::module_& m);

namespace {

// ===== exception classes (the rules are in errors.hpp) =====

/// The class of each ErrorKind, set by bind_errors: strong references, kept
/// to the end of the process (classes outlive every error raised with them;
/// released at exit they would be released after the interpreter is gone).
/// Read and written only with the GIL held.
std::array<PyObject*, kErrorKindCount> bound_classes{};

void bind_errors(const nb::module_& errors) {
  const std::string module_name = nb::str(nb::getattr(errors, "__name__", nb::str("?"))).c_str();
  const auto fail = [&](const char* name, const char* why) {
    throw nb::import_error(("hakobu._core: " + module_name + "." + name + " " + why +
                            " (the C++ core raises it: each ErrorKind of bindings/python/errors.hpp "
                            "needs a class of that name under HakobuError in hakobu/_errors.py)")
                               .c_str());
  };
  const nb::object base = nb::getattr(errors, "HakobuError", nb::none());
  if (PyType_Check(base.ptr()) == 0 || PyObject_IsSubclass(base.ptr(), PyExc_Exception) != 1) {
    fail("HakobuError", "is missing or not an Exception class");
  }
  // Every class is checked before any is kept: a failed call changes nothing.
  std::array<nb::object, kErrorKindCount> found;
  for (std::size_t i = 0; i < kErrorKindCount; ++i) {
    const char* name = class_name(static_cast<ErrorKind>(i));
    nb::object cls = nb::getattr(errors, name, nb::none());
    if (PyType_Check(cls.ptr()) == 0) fail(name, "is missing or not a class");
    const int derives = PyObject_IsSubclass(cls.ptr(), base.ptr());
    if (derives < 0) throw nb::python_error();
    if (derives == 0) fail(name, "does not derive from HakobuError");
    found[i] = std::move(cls);
  }
  for (std::size_t i = 0; i < kErrorKindCount; ++i) {
    PyObject* previous = bound_classes[i];
    bound_classes[i] = found[i].release().ptr();
    Py_XDECREF(previous);  // bound again (e.g. hakobu._errors reloaded): the new classes win
  }
}

/// The class kept for `kind`; RuntimeError if bind_errors never ran.
nb::object bound_class(ErrorKind kind) {
  PyObject* cls = bound_classes[static_cast<std::size_t>(kind)];
  if (cls == nullptr) {
    throw std::runtime_error("hakobu._core: no exception classes bound (import hakobu, which binds them)");
  }
  return nb::borrow(cls);
}

void translate(const std::exception_ptr& error, void* /*payload*/) {
  try {
    std::rethrow_exception(error);
  } catch (const PythonError& e) {
    PyObject* cls = bound_classes[static_cast<std::size_t>(e.kind)];
    if (cls == nullptr) {
      PyErr_Format(PyExc_RuntimeError, "%s: %s (hakobu._core raised it before hakobu bound its exception classes)",
                   class_name(e.kind), e.what());
      return;
    }
    PyErr_SetString(cls, e.what());
  }
}

std::string_view watch_error_name(WatchError code) noexcept {
  switch (code) {
    case WatchError::Closed: return "Closed";
    case WatchError::Full: return "Full";
    case WatchError::SystemError: return "SystemError";
  }
  return "?";
}

/// Appends (enum, value, class) for every enumerator of `Code`: every value of
/// the underlying type that `name_of` names (the core's to_string answers "?"
/// for the others), so an enumerator is listed even if the bindings forgot it;
/// its class is None then.
template <class Code, class NameOf>
void add_rows(nb::list& rows, const char* enum_name, NameOf name_of) {
  static_assert(std::is_same_v<std::underlying_type_t<Code>, std::uint8_t>,
                "the scan below covers the values of a one-byte enum");
  for (unsigned value = 0; value <= UINT8_MAX; ++value) {
    const auto code = static_cast<Code>(value);
    const std::string_view name = name_of(code);
    if (name == "?") continue;
    const std::optional<ErrorKind> kind = kind_of(code);
    rows.append(nb::make_tuple(enum_name, std::string(name), kind ? bound_class(*kind) : nb::none()));
  }
}

nb::list error_table() {
  const auto core_name = [](auto code) { return to_string(code); };
  nb::list rows;
  add_rows<OpenError>(rows, "OpenError", core_name);
  add_rows<PutError>(rows, "PutError", core_name);
  add_rows<GetError>(rows, "GetError", core_name);
  add_rows<LoanError>(rows, "LoanError", core_name);
  add_rows<UnlinkError>(rows, "UnlinkError", core_name);
  add_rows<ArrayError>(rows, "ArrayError", core_name);
  add_rows<AttachError>(rows, "AttachError", core_name);
  add_rows<WatchError>(rows, "WatchError", &watch_error_name);
  add_rows<StorePutError>(rows, "StorePutError", core_name);
  add_rows<StoreGetError>(rows, "StoreGetError", core_name);
  add_rows<StoreEraseError>(rows, "StoreEraseError", core_name);
  add_rows<StoreWaitError>(rows, "StoreWaitError", core_name);
  add_rows<AcquireError>(rows, "AcquireError", core_name);
  add_rows<ReleaseError>(rows, "ReleaseError", core_name);
  add_rows<SemaphoreReleaseError>(rows, "SemaphoreReleaseError", core_name);
  add_rows<BarrierError>(rows, "BarrierError", core_name);
  add_rows<ConditionError>(rows, "ConditionError", core_name);
  add_rows<ValueError>(rows, "ValueError", core_name);
  add_rows<SubscribeError>(rows, "SubscribeError", core_name);
  return rows;
}

// ===== end of exception classes =====

// Interpreter exit (Py_AtExit: after the last Python object that will ever be
// freed was freed, with no Python left to call). Messages, loans or attachments
// still alive now are held by something the runtime never frees, e.g. a JAX
// array made with from_dlpack() that the JAX runtime keeps to the end. They
// keep this process attached to its domains, so the domain files would stay
// behind (stale in `hakobu doctor`), and nanobind would report them as leaks.
// This process leaves its domains instead (the last one out removes the files;
// the leftovers' releases become no-ops), and, when nothing but such holders
// outlived the interpreter (no queue), nanobind's leak report is silenced:
// those objects were outlived on purpose by their holder, not leaked by us.
// Registered after nanobind's own handler, so it runs before its leak report.
void at_exit() {
  if (live_holders().load(std::memory_order_relaxed) <= 0) return;  // all freed: the domains left already
  Domain::leave_all_at_exit();
  if (live_queues().load(std::memory_order_relaxed) <= 0) nb::set_leak_warnings(false);
}

}  // namespace

}  // namespace hakobu::python

NB_MODULE(_core, m) {
  m.doc() = "hakobu's C++ core: named shared-memory queues and topics (use the hakobu package, not this module)";
  m.attr("__version__") = hakobu::kVersion;
  // A daemon thread still waiting in a queue at exit is left asleep (interruptible.hpp),
  // holding its handles: nanobind would report them as leaks on every such exit.
  nb::set_leak_warnings(false);
  nb::register_exception_translator(&hakobu::python::translate);
  m.def("bind_errors", &hakobu::python::bind_errors, nb::arg("errors"),
        "Keeps the exception class of every C++ error kind, looked up once in `errors` (hakobu._errors "
        "calls it); ImportError if one is missing");
  m.def("error_table", &hakobu::python::error_table,
        nb::sig("def error_table() -> list[tuple[str, str, type[Exception] | None]]"),
        "(error enum, value, exception class) for every value of every C++ error enum the core raises");
  hakobu::python::import_numpy();
  if (Py_AtExit(&hakobu::python::at_exit) != 0) {
    // Not fatal: only the clean exit of processes that end holding shared arrays is lost.
    PyErr_WarnEx(PyExc_RuntimeWarning, "hakobu: could not register the interpreter-exit handler", 1);
  }
  hakobu::python::bind_queue(m);
  hakobu::python::bind_domain(m);
  hakobu::python::bind_admin(m);
  hakobu::python::bind_store(m);
  hakobu::python::bind_sync(m);
  hakobu::python::bind_topic(m);
}
