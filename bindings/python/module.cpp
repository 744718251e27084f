// hakobu._core — module definition and the error table.
#include <nanobind/nanobind.h>

#include "errors.hpp"
#include "hakobu/version.hpp"

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
  hakobu::python::bind_queue(m);
  hakobu::python::bind_domain(m);
  hakobu::python::bind_admin(m);
}
