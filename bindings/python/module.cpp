// hakobu._core — module definition and the error table.
#include <nanobind/nanobind.h>

#include "codec.hpp"
#include "errors.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/version.hpp"
#include "objects.hpp"

namespace nb = nanobind;

namespace hakobu::python {

void bind_queue(nb::module_& m);
void bind_domain(nb::module_& m);
void bind_admin(nb::module_& m);

const char* exception_name(OpenError code) noexcept {
  switch (code) {
    case OpenError::InvalidName: return "InvalidName";
    case OpenError::NotFound: return "NotFound";
    case OpenError::AlreadyExists: return "AlreadyExists";
    case OpenError::PermissionDenied: return "AccessDenied";
    case OpenError::Incompatible: return "Incompatible";
    case OpenError::Corrupt: return "Corrupt";
    case OpenError::OutOfMemory: return "OutOfSharedMemory";
    case OpenError::TooManyProcesses: return "TooManyProcesses";
    case OpenError::InvalidArgument: return "InvalidArgument";
    case OpenError::SystemError: return "SystemFailure";
  }
  return "HakobuError";
}

const char* exception_name(PutError code) noexcept {
  switch (code) {
    case PutError::Full: return "Full";
    case PutError::Timeout: return "Full";  // as queue.Queue.put: Full after a timeout too
    case PutError::Closed: return "Closed";
    case PutError::Unlinked: return "Unlinked";
    case PutError::TooLarge: return "TooLarge";
    case PutError::OutOfMemory: return "OutOfSharedMemory";
    case PutError::Invalid: return "InvalidArgument";
  }
  return "HakobuError";
}

const char* exception_name(GetError code) noexcept {
  switch (code) {
    case GetError::Empty: return "Empty";
    case GetError::Timeout: return "Empty";  // as queue.Queue.get: Empty after a timeout too
    case GetError::Closed: return "Closed";
    case GetError::Unlinked: return "Unlinked";
    case GetError::Corrupt: return "Corrupt";
    case GetError::OutOfMemory: return "OutOfSharedMemory";
  }
  return "HakobuError";
}

const char* exception_name(LoanError code) noexcept {
  switch (code) {
    case LoanError::TooLarge: return "TooLarge";
    case LoanError::OutOfMemory: return "OutOfSharedMemory";
    case LoanError::Closed: return "Closed";
    case LoanError::InvalidArgument: return "InvalidArgument";
  }
  return "HakobuError";
}

const char* exception_name(UnlinkError code) noexcept {
  switch (code) {
    case UnlinkError::NotCreator: return "NotCreator";
    case UnlinkError::Closed: return "Closed";
    case UnlinkError::NotFound: return "NotFound";
    case UnlinkError::InvalidName: return "InvalidName";
    case UnlinkError::PermissionDenied: return "AccessDenied";
    case UnlinkError::SystemError: return "SystemFailure";
  }
  return "HakobuError";
}

const char* exception_name(ArrayError code) noexcept {
  switch (code) {
    case ArrayError::NotAnArray: return "InvalidArgument";
    case ArrayError::Corrupt: return "Corrupt";
  }
  return "HakobuError";
}

namespace {

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
  m.doc() = "hakobu's C++ core: named shared-memory queues (use the hakobu package, not this module)";
  m.attr("__version__") = hakobu::kVersion;
  nb::register_exception_translator([](const std::exception_ptr& error, void*) {
    try {
      std::rethrow_exception(error);
    } catch (const hakobu::python::PythonError& e) {
      nb::object errors = nb::module_::import_("hakobu._errors");
      nb::object cls = errors.attr(e.kind.c_str());
      PyErr_SetString(cls.ptr(), e.what());
    }
  });
  hakobu::python::import_numpy();
  if (Py_AtExit(&hakobu::python::at_exit) != 0) {
    // Not fatal: only the clean exit of processes that end holding shared arrays is lost.
    PyErr_WarnEx(PyExc_RuntimeWarning, "hakobu: could not register the interpreter-exit handler", 1);
  }
  hakobu::python::bind_queue(m);
  hakobu::python::bind_domain(m);
  hakobu::python::bind_admin(m);
}
