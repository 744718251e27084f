// hakobu._core — how C++ errors become Python exceptions.
//
// Bindings throw `PythonError{kind, message}`; the module's translator raises
// the class named `kind` from `hakobu._errors` (one class per error kind, all
// under hakobu.HakobuError), so the class table lives in one Python file.
#pragma once

#include <stdexcept>
#include <string>

#include "hakobu/domain.hpp"
#include "hakobu/error.hpp"

namespace hakobu::python {

struct PythonError : std::runtime_error {
  PythonError(std::string kind_name, const std::string& message)
      : std::runtime_error(message), kind(std::move(kind_name)) {}
  std::string kind;
};

/// The Python exception class name for each error code.
const char* exception_name(OpenError code) noexcept;
const char* exception_name(PutError code) noexcept;
const char* exception_name(GetError code) noexcept;
const char* exception_name(LoanError code) noexcept;
const char* exception_name(UnlinkError code) noexcept;
const char* exception_name(ArrayError code) noexcept;

/// Attaches to domain `name` (empty: the default) without holding the GIL;
/// raises the matching Python exception on failure. `collect_on_attach`: see
/// DomainOptions (tools that report dead processes turn it off).
Domain open_domain(const std::string& name, bool collect_on_attach = true);

template <class Code>
[[noreturn]] void raise(const Error<Code>& error) {
  throw PythonError(exception_name(error.code), error.message);
}

}  // namespace hakobu::python
