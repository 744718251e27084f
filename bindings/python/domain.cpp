// hakobu._core — domains: statistics and reclaiming what dead processes held.
#include "hakobu/domain.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "errors.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace hakobu::python {

Domain open_domain(const std::string& name, bool collect_on_attach) {
  DomainOptions options;
  options.name = name;
  options.collect_on_attach = collect_on_attach;
  auto domain = [&] {
    nb::gil_scoped_release unlocked;
    return Domain::open(options);
  }();
  if (!domain) raise(domain.error());
  return std::move(*domain);
}

namespace {

nb::typed<nb::dict, nb::str, nb::any> domain_stats(const std::string& name) {
  const Domain domain = open_domain(name);
  const DomainStats stats = domain.stats();
  nb::dict out;
  out["name"] = domain.name();
  out["heap_capacity"] = stats.heap_capacity;
  out["heap_used"] = stats.heap_used;
  out["live_bytes"] = stats.live_bytes;
  out["live_blocks"] = stats.live_blocks;
  out["cached_bytes"] = stats.cached_bytes;
  out["named_objects"] = stats.named_objects;
  out["huge_pages"] = stats.huge_pages;
  out["huge_page_used"] = stats.huge_page_used;
  nb::list processes;
  for (const auto& process : stats.processes) {
    nb::dict p;
    p["slot"] = process.slot;
    p["pid"] = process.pid;
    p["alive"] = process.alive;
    p["held_blocks"] = process.held_blocks;
    processes.append(p);
  }
  out["processes"] = processes;
  return out;
}

}  // namespace

void bind_domain(nb::module_& m) {
  m.def("domain_stats", &domain_stats, "name"_a = "",
        "Heap use and attached processes of a domain (attaches to it, creating it if needed)");
  m.def(
      "collect_garbage",
      [](const std::string& name) {
        Domain domain = open_domain(name);
        nb::gil_scoped_release unlocked;
        return domain.collect_garbage();
      },
      "name"_a = "", "Reclaims what dead processes held; returns how many were reclaimed");
}

}  // namespace hakobu::python
