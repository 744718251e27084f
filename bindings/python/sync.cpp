// hakobu._core — Lock and Event: the named sync objects of hakobu/sync.hpp
// (use hakobu.Lock and hakobu.Event, python/hakobu/_sync.py).
//
// Waiting follows interruptible.hpp: a first try with the GIL held and no
// wait (an uncontended acquire is one compare-and-swap), then slices without
// the GIL, with Ctrl-C looked at between them. A lock acquire cut short by
// KeyboardInterrupt leaves the lock as it was (not taken); an event wait
// leaves the event as it was.
#include "hakobu/sync.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "convert.hpp"
#include "errors.hpp"
#include "interruptible.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace hakobu::python {
namespace {

/// What Lock.acquire returns to the Python front.
enum AcquireOutcome : int {
  kNotAcquired = 0,  ///< not free before the timeout (or at once, not blocking)
  kClean = 1,        ///< acquired from a release
  kOwnerDied = 2,    ///< acquired from a holder that died holding it
};

std::string domain_of(const std::string& domain_name) {
  return domain_name.empty() ? default_domain_name() : domain_name;
}

/// A message for a handle used in a forked child: the core's, and what to do.
template <class Code>
[[noreturn]] void raise_forked(const Error<Code>& error, const char* kind, const std::string& name) {
  raise(Error<Code>{error.code, error.message + ": open it again in the child (hakobu." + kind + "('" + name +
                                    "')), or use the parent's handle only in the parent"});
}

/// Opens sync object `name` of type T (Lock or Event), checking the arguments; raises on failure.
template <class T>
T open_sync(const std::string& name, std::optional<bool> create, const std::string& domain_name, const char* what) {
  check_name(name, what);
  check_name(domain_name, "domain", /*empty_ok=*/true);
  SyncOptions options;
  options.domain.name = domain_name;
  auto opened = [&] {
    nb::gil_scoped_release unlocked;
    return T::open(name, open_mode(create), options);
  }();
  if (!opened) raise(opened.error());
  return std::move(*opened);
}

struct PyLock {
  Lock lock;
  std::string domain;

  PyLock(const std::string& name, std::optional<bool> create, const std::string& domain_name)
      : lock(open_sync<Lock>(name, create, domain_name, "lock")), domain(domain_of(domain_name)) {}

  int acquire(std::optional<double> timeout) {
    auto got = wait_interruptibly(timeout, AcquireError::WouldBlock, AcquireError::Timeout,
                                  [&](std::chrono::nanoseconds slice) {
                                    return slice.count() == 0 ? lock.try_acquire() : lock.acquire_for(slice);
                                  });
    if (got) return *got == Acquired::OwnerDied ? kOwnerDied : kClean;
    if (got.error().code == AcquireError::Forked) raise_forked(got.error(), "Lock", lock.name());
    return kNotAcquired;  // WouldBlock or Timeout: as threading.Lock, False
  }

  void release() {
    auto released = lock.release();
    if (released) return;
    if (released.error().code == ReleaseError::Forked) raise_forked(released.error(), "Lock", lock.name());
    raise(released.error());
  }

  [[nodiscard]] nb::typed<nb::dict, nb::str, nb::any> info() const {
    const LockInfo i = lock.info();
    nb::dict out;
    out["held"] = i.held;
    out["waiters"] = i.waiters;
    out["held_by_this_process"] = i.held_by_this_process;
    out["holder_pid"] = i.holder_pid;
    out["owner_deaths"] = i.owner_deaths;
    return out;
  }
};

struct PyEvent {
  Event event;
  std::string domain;

  PyEvent(const std::string& name, std::optional<bool> create, const std::string& domain_name)
      : event(open_sync<Event>(name, create, domain_name, "event")), domain(domain_of(domain_name)) {}

  bool wait(std::optional<double> timeout) {
    // The event's wait reports only set or not: shaped as a result so that the
    // lock's slicing (and its Ctrl-C rule) serves it too.
    auto waited = wait_interruptibly(timeout, AcquireError::WouldBlock, AcquireError::Timeout,
                                     [&](std::chrono::nanoseconds slice) -> Result<bool, AcquireError> {
                                       if (slice.count() == 0) {
                                         if (event.is_set()) return true;
                                         return AcquireError::WouldBlock;
                                       }
                                       if (event.wait_for(slice)) return true;
                                       return AcquireError::Timeout;
                                     });
    return waited.has_value();
  }
};

void remove_sync(const std::string& name, const std::string& domain) {
  check_name(name, "sync object");
  check_name(domain, "domain", /*empty_ok=*/true);
  auto removed = [&] {
    nb::gil_scoped_release unlocked;
    return Lock::remove(name, domain);  // removes whatever kind the name is
  }();
  if (!removed) raise(removed.error());
}

}  // namespace

void bind_sync(nb::module_& m) {
  nb::class_<PyLock>(m, "Lock", "A named lock between processes (use hakobu.Lock)")
      .def(nb::init<const std::string&, std::optional<bool>, const std::string&>(), "name"_a, "create"_a.none(),
           "domain"_a)
      .def("acquire", &PyLock::acquire, "timeout"_a.none(),
           "0: not acquired before the timeout; 1: acquired; 2: acquired from a holder that died holding it")
      .def("release", &PyLock::release)
      .def("info", &PyLock::info, "held, waiters, held_by_this_process, holder_pid, owner_deaths (a snapshot)")
      .def_prop_ro("name", [](const PyLock& self) { return self.lock.name(); })
      .def_ro("domain", &PyLock::domain);

  nb::class_<PyEvent>(m, "Event", "A named event between processes (use hakobu.Event)")
      .def(nb::init<const std::string&, std::optional<bool>, const std::string&>(), "name"_a, "create"_a.none(),
           "domain"_a)
      .def("set", [](PyEvent& self) { self.event.set(); })
      .def("clear", [](PyEvent& self) { self.event.clear(); })
      .def("is_set", [](const PyEvent& self) { return self.event.is_set(); })
      .def("wait", &PyEvent::wait, "timeout"_a.none(), "True once the event is set; False if the timeout ran out")
      .def_prop_ro("name", [](const PyEvent& self) { return self.event.name(); })
      .def_ro("domain", &PyEvent::domain);

  m.def("remove_sync", &remove_sync, "name"_a, "domain"_a = "",
        "Removes the sync object `name` (a lock, an event...) whoever created it; NotFound if missing");
}

}  // namespace hakobu::python
