// hakobu._core — administration: what the `hakobu` command needs to inspect queues.
#include <nanobind/nanobind.h>

namespace nb = nanobind;

namespace hakobu::python {

void bind_admin(nb::module_& /*m*/) {}

}  // namespace hakobu::python
