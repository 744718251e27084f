// hakobu._core — the named sync objects of hakobu/sync.hpp: Lock, Event,
// RLock, Semaphore/BoundedSemaphore, Barrier, Condition and SharedArray (use
// the classes of python/hakobu/_sync.py).
//
// Waiting follows interruptible.hpp: a first try with the GIL held and no
// wait (an uncontended acquire is one compare-and-swap), then slices without
// the GIL, with Ctrl-C looked at between them. A lock or semaphore acquire cut
// short by KeyboardInterrupt leaves the object as it was (not taken); an event
// wait leaves the event as it was. Two waits cannot be sliced that way:
// * Condition: each slice is a whole wait_for (release, sleep, re-take), so a
//   notify can only come while a slice sleeps (between slices we hold the
//   lock, which a notifier must hold). KeyboardInterrupt leaves the lock held,
//   as threading.Condition.wait does. A slice that could not re-take the lock
//   by its deadline (LockTimeout) is followed by an acquire without deadline,
//   and the wait returns as woken (it cannot tell whether a notify came).
// * Barrier: an arrival cannot be taken back, and a timed-out wait breaks the
//   barrier. In Python's main thread (the one Ctrl-C reaches) the wait runs
//   whole in a helper thread; the main thread waits for it in slices, and on
//   KeyboardInterrupt aborts the barrier (the party will never arrive: the
//   others get BrokenBarrierError instead of a hang). The helper costs a
//   thread start per wait (tens of microseconds); other threads wait directly.
#include "hakobu/sync.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

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

/// Opens sync object `name` of type T, checking the arguments; `args` go
/// between the name and the mode (a semaphore's value...); raises on failure.
template <class T, class... Args>
T open_sync(const std::string& name, std::optional<bool> create, const std::string& domain_name, const char* what,
            const Args&... args) {
  check_name(name, what);
  check_name(domain_name, "domain", /*empty_ok=*/true);
  SyncOptions options;
  options.domain.name = domain_name;
  auto opened = [&] {
    nb::gil_scoped_release unlocked;
    return T::open(name, args..., open_mode(create), options);
  }();
  if (!opened) raise(opened.error());
  return std::move(*opened);
}

/// Acquires any lock-like `target` (Lock, RLock, Condition, SharedArray) as
/// Lock.acquire: the outcome for the Python front; `kind` names it in a fork message.
template <class T>
int acquire_lock(T& target, std::optional<double> timeout, const char* kind) {
  auto got = wait_interruptibly(timeout, AcquireError::WouldBlock, AcquireError::Timeout,
                                [&](std::chrono::nanoseconds slice) -> Result<Acquired, AcquireError> {
                                  if constexpr (requires { target.try_acquire(); }) {
                                    if (slice.count() == 0) return target.try_acquire();
                                  } else if (slice.count() == 0) {
                                    // acquire_for(0) is a try that reports Timeout: the first try must say busy
                                    auto got = target.acquire_for(slice);
                                    if (!got && got.error().code == AcquireError::Timeout) {
                                      return Error<AcquireError>{AcquireError::WouldBlock, got.error().message};
                                    }
                                    return got;
                                  }
                                  return target.acquire_for(slice);
                                });
  if (got) return *got == Acquired::OwnerDied ? kOwnerDied : kClean;
  if (got.error().code == AcquireError::Forked) raise_forked(got.error(), kind, target.name());
  if (got.error().code == AcquireError::TooDeep) raise(got.error());
  return kNotAcquired;  // WouldBlock or Timeout: as threading.Lock, False
}

template <class T>
void release_lock(T& target, const char* kind) {
  auto released = target.release();
  if (released) return;
  if (released.error().code == ReleaseError::Forked) raise_forked(released.error(), kind, target.name());
  raise(released.error());
}

nb::dict lock_info(const LockInfo& i) {
  nb::dict out;
  out["held"] = i.held;
  out["waiters"] = i.waiters;
  out["held_by_this_process"] = i.held_by_this_process;
  out["holder_pid"] = i.holder_pid;
  out["owner_deaths"] = i.owner_deaths;
  return out;
}

struct PyLock {
  Lock lock;
  std::string domain;

  PyLock(const std::string& name, std::optional<bool> create, const std::string& domain_name)
      : lock(open_sync<Lock>(name, create, domain_name, "lock")), domain(domain_of(domain_name)) {}

  int acquire(std::optional<double> timeout) { return acquire_lock(lock, timeout, "Lock"); }
  void release() { release_lock(lock, "Lock"); }
  [[nodiscard]] nb::typed<nb::dict, nb::str, nb::any> info() const { return lock_info(lock.info()); }
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

struct PyRLock {
  RLock lock;
  std::string domain;

  PyRLock(const std::string& name, std::optional<bool> create, const std::string& domain_name)
      : lock(open_sync<RLock>(name, create, domain_name, "rlock")), domain(domain_of(domain_name)) {}

  int acquire(std::optional<double> timeout) { return acquire_lock(lock, timeout, "RLock"); }
  void release() { release_lock(lock, "RLock"); }
  [[nodiscard]] nb::typed<nb::dict, nb::str, nb::any> info() const {
    nb::dict out = lock_info(lock.info());
    out["depth"] = lock.depth();
    return out;
  }
};

/// A Semaphore or a BoundedSemaphore: the bounded one differs only in its
/// file's kind and bound, so the handle is kept as its base.
struct PySemaphore {
  Semaphore sem;
  std::string domain;

  static Semaphore open(const std::string& name, std::uint32_t value, bool bounded, std::optional<bool> create,
                        const std::string& domain_name) {
    if (bounded) return open_sync<BoundedSemaphore>(name, create, domain_name, "semaphore", value);
    return open_sync<Semaphore>(name, create, domain_name, "semaphore", value);
  }

  PySemaphore(const std::string& name, std::uint32_t value, bool bounded, std::optional<bool> create,
              const std::string& domain_name)
      : sem(open(name, value, bounded, create, domain_name)), domain(domain_of(domain_name)) {}

  bool acquire(std::optional<double> timeout) {
    auto got = wait_interruptibly(timeout, AcquireError::WouldBlock, AcquireError::Timeout,
                                  [&](std::chrono::nanoseconds slice) {
                                    return slice.count() == 0 ? sem.try_acquire() : sem.acquire_for(slice);
                                  });
    if (got) return true;
    if (got.error().code == AcquireError::Forked) raise_forked(got.error(), "Semaphore", sem.name());
    return false;
  }

  void release(std::uint32_t n) {
    auto released = sem.release(n);
    if (released) return;
    if (released.error().code == SemaphoreReleaseError::Forked) {
      raise_forked(released.error(), "Semaphore", sem.name());
    }
    raise(released.error());
  }

  [[nodiscard]] nb::typed<nb::dict, nb::str, nb::any> info() const {
    const SemaphoreInfo i = sem.info();
    nb::dict out;
    out["value"] = i.value;
    out["bound"] = i.bound;
    out["waiters"] = i.waiters;
    out["held_by_this_process"] = i.held_by_this_process;
    out["holders"] = i.holders;
    out["returned"] = i.returned;
    out["maybe_leaked"] = i.maybe_leaked;
    return out;
  }
};

struct PyBarrier {
  // Used by the helper thread of a main-thread wait too: the wait joins the
  // helper before it returns, whatever happens.
  Barrier barrier;
  std::string domain;

  PyBarrier(const std::string& name, std::uint32_t parties, std::optional<bool> create, const std::string& domain_name)
      : barrier(open_sync<Barrier>(name, create, domain_name, "barrier", parties)), domain(domain_of(domain_name)) {}

  /// `interruptible`: the caller is Python's main thread (the only one that
  /// runs signal handlers); other threads wait here, without a helper.
  std::uint32_t wait(std::optional<double> timeout, bool interruptible) {
    const std::optional<std::chrono::nanoseconds> limit = wait_duration(timeout, "timeout");
    if (!interruptible) {
      auto got = [&] {
        nb::gil_scoped_release unlocked;
        return limit ? barrier.wait_for(*limit) : barrier.wait();
      }();
      if (got) return *got;
      if (got.error().code == BarrierError::Forked) raise_forked(got.error(), "Barrier", barrier.name());
      raise(got.error());
    }
    std::optional<Result<std::uint32_t, BarrierError>> outcome;
    std::mutex mutex;
    std::condition_variable done;
    bool interrupted = false;
    {
      nb::gil_scoped_release unlocked;
      std::thread waiter([&] {
        auto r = limit ? barrier.wait_for(*limit) : barrier.wait();
        const std::lock_guard guard(mutex);
        outcome.emplace(std::move(r));
        done.notify_one();
      });
      std::unique_lock held(mutex);
      while (!outcome) {
        if (done.wait_for(held, std::chrono::nanoseconds(kSliceNs), [&] { return outcome.has_value(); })) break;
        held.unlock();
        bool signalled = false;
        {
          // A KeyboardInterrupt stays set in this thread's state until it is
          // raised below (no Python code runs here meanwhile).
          nb::gil_scoped_acquire python;
          signalled = PyErr_CheckSignals() != 0;
        }
        if (signalled) {
          interrupted = true;
          barrier.abort();  // wakes the helper, which returns Broken
        }
        held.lock();
        if (interrupted) {
          done.wait(held, [&] { return outcome.has_value(); });
          break;
        }
      }
      held.unlock();
      waiter.join();
    }
    if (interrupted) throw nb::python_error();
    if (!*outcome) {
      if (outcome->error().code == BarrierError::Forked) raise_forked(outcome->error(), "Barrier", barrier.name());
      raise(outcome->error());
    }
    return **outcome;
  }
};

struct PyCondition {
  Condition cond;
  std::string domain;
  std::string lock_name;  // empty: its own lock

  PyCondition(const std::string& name, const PyLock* lock, std::optional<bool> create, const std::string& domain_name)
      : cond(lock != nullptr ? open_sync<Condition>(name, create, domain_name, "condition", lock->lock)
                             : open_sync<Condition>(name, create, domain_name, "condition")),
        domain(domain_of(domain_name)),
        lock_name(lock != nullptr ? lock->lock.name() : std::string()) {}

  int acquire(std::optional<double> timeout) { return acquire_lock(cond, timeout, "Condition"); }
  void release() { release_lock(cond, "Condition"); }

  /// (notified, lock outcome as acquire's: 1 clean, 2 taken from a dead holder).
  std::pair<bool, int> wait(std::optional<double> timeout) {
    using Clock = std::chrono::steady_clock;
    const std::optional<std::chrono::nanoseconds> limit = wait_duration(timeout, "timeout");
    const auto deadline = Clock::now() + limit.value_or(std::chrono::nanoseconds(0));
    int lock_outcome = kClean;
    for (;;) {
      std::chrono::nanoseconds slice(kSliceNs);
      if (limit) slice = std::min(slice, std::max(std::chrono::nanoseconds(0), deadline - Clock::now()));
      auto woke = [&] {
        nb::gil_scoped_release unlocked;
        return cond.wait_for(slice);
      }();
      if (woke) {
        if (woke->lock == Acquired::OwnerDied) lock_outcome = kOwnerDied;
        if (woke->notified) return {true, lock_outcome};
      } else if (woke.error().code == ConditionError::LockTimeout) {
        // As threading: the lock is held again on return, however long that
        // takes. Whether a notify came is lost with LockTimeout: report a
        // wake-up (a spurious one at worst, which callers allow for) rather
        // than sleep again through a notify.
        if (acquire_lock(cond, std::nullopt, "Condition") == kOwnerDied) lock_outcome = kOwnerDied;
        return {!(limit && Clock::now() >= deadline), lock_outcome};
      } else if (woke.error().code == ConditionError::Forked) {
        raise_forked(woke.error(), "Condition", cond.name());
      } else {
        raise(woke.error());
      }
      if (limit && Clock::now() >= deadline) return {false, lock_outcome};
      if (PyErr_CheckSignals() != 0) throw nb::python_error();  // the lock is held, as threading leaves it
    }
  }

  void notify(std::uint32_t n) {
    auto done = cond.notify(n);
    if (done) return;
    if (done.error().code == ConditionError::Forked) raise_forked(done.error(), "Condition", cond.name());
    raise(done.error());
  }

  void notify_all() {
    auto done = cond.notify_all();
    if (done) return;
    if (done.error().code == ConditionError::Forked) raise_forked(done.error(), "Condition", cond.name());
    raise(done.error());
  }
};

/// hakobu.Value and hakobu.Array. The data bytes are exported by the buffer
/// protocol (writable, one dimension of bytes; the Python front views them as
/// its dtype and shape): the exporter stays alive while a view exists.
struct PySharedArray {
  SharedArray array;
  std::string domain;

  static SharedArray open(const std::string& name, int code, int bits, int lanes,
                          const std::vector<std::int64_t>& shape, std::optional<nb::bytes> initial,
                          std::optional<bool> create, const std::string& domain_name) {
    if (code < 0 || code > 6 || bits <= 0 || bits > 255 || lanes <= 0 || lanes > 65535) {
      throw PythonError(ErrorKind::InvalidArgument, "a dtype of whole bytes is needed");
    }
    const DType dtype{static_cast<DTypeCode>(code), static_cast<std::uint8_t>(bits), static_cast<std::uint16_t>(lanes)};
    if (initial) {  // a Value: created with these bytes, left as it is when attaching
      check_name(name, "value");
      check_name(domain_name, "domain", /*empty_ok=*/true);
      SyncOptions options;
      options.domain.name = domain_name;
      const std::span<const std::byte> bytes(static_cast<const std::byte*>(initial->data()), initial->size());
      auto opened = [&] {
        nb::gil_scoped_release unlocked;
        return SharedArray::open_value(name, dtype, bytes, open_mode(create), options);
      }();
      if (!opened) raise(opened.error());
      return std::move(*opened);
    }
    return open_sync<SharedArray>(name, create, domain_name, "array", dtype, std::span<const std::int64_t>(shape));
  }

  PySharedArray(const std::string& name, int code, int bits, int lanes, const std::vector<std::int64_t>& shape,
                std::optional<nb::bytes> initial, std::optional<bool> create, const std::string& domain_name)
      : array(open(name, code, bits, lanes, shape, std::move(initial), create, domain_name)),
        domain(domain_of(domain_name)) {}

  int acquire(std::optional<double> timeout) { return acquire_lock(array, timeout, "Value"); }
  void release() { release_lock(array, "Value"); }

  /// `op(T{})` with T the array's integer type (InvalidArgument for another dtype).
  template <class Op>
  nb::object with_integer(Op&& op) {
    const DType d = array.dtype();
    const bool is_signed = d.code == DTypeCode::Int;
    if ((d.code != DTypeCode::Int && d.code != DTypeCode::UInt) || d.lanes != 1) {
      throw PythonError(ErrorKind::InvalidArgument, "atomics need an integer dtype");
    }
    switch (d.bits) {
      case 8: return is_signed ? op(std::int8_t{}) : op(std::uint8_t{});
      case 16: return is_signed ? op(std::int16_t{}) : op(std::uint16_t{});
      case 32: return is_signed ? op(std::int32_t{}) : op(std::uint32_t{});
      case 64: return is_signed ? op(std::int64_t{}) : op(std::uint64_t{});
      default: throw PythonError(ErrorKind::InvalidArgument, "atomics need an integer of 1, 2, 4 or 8 bytes");
    }
  }

  /// Atomic load (the Python int).
  nb::object load(std::size_t index) {
    return with_integer([&]<class T>(T) -> nb::object {
      auto got = array.load<T>(index);
      if (!got) raise(got.error());
      return nb::int_(*got);
    });
  }
  /// Atomic store of `value`'s low bits (the front checked its range).
  nb::object store(std::size_t index, std::uint64_t value) {
    return with_integer([&]<class T>(T) -> nb::object {
      auto done = array.store<T>(index, static_cast<T>(value));
      if (!done) raise(done.error());
      return nb::none();
    });
  }
  /// Adds `delta`'s low bits (wrapping, as NumPy integers); the value before.
  nb::object fetch_add(std::size_t index, std::uint64_t delta) {
    return with_integer([&]<class T>(T) -> nb::object {
      auto got = array.fetch_add<T>(index, static_cast<T>(delta));
      if (!got) raise(got.error());
      return nb::int_(*got);
    });
  }
  /// (swapped, the value found) for compare-and-swap of `expected` by `desired` (low bits).
  nb::object compare_exchange(std::size_t index, std::uint64_t expected, std::uint64_t desired) {
    return with_integer([&]<class T>(T) -> nb::object {
      T seen = static_cast<T>(expected);
      auto got = array.compare_exchange<T>(index, seen, static_cast<T>(desired));
      if (!got) raise(got.error());
      return nb::make_tuple(*got, nb::int_(seen));
    });
  }

  static int get_buffer(PyObject* exporter, Py_buffer* view, int flags) {
    auto* self = nb::inst_ptr<PySharedArray>(exporter);
    const std::span<std::byte> bytes = self->array.bytes();
    return PyBuffer_FillInfo(view, exporter, bytes.data(), static_cast<Py_ssize_t>(bytes.size()), 0, flags);
  }
};

PyType_Slot shared_array_slots[] = {  // NOLINT(*-avoid-c-arrays, *-avoid-non-const-global-variables)
    {Py_bf_getbuffer, reinterpret_cast<void*>(&PySharedArray::get_buffer)},  // NOLINT
    {0, nullptr}};

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

  nb::class_<PyRLock>(m, "RLock", "A named recursive lock between processes (use hakobu.RLock)")
      .def(nb::init<const std::string&, std::optional<bool>, const std::string&>(), "name"_a, "create"_a.none(),
           "domain"_a)
      .def("acquire", &PyRLock::acquire, "timeout"_a.none(), "as Lock.acquire")
      .def("release", &PyRLock::release)
      .def("info", &PyRLock::info, "Lock.info's keys and depth (this thread's recursion count)")
      .def_prop_ro("name", [](const PyRLock& self) { return self.lock.name(); })
      .def_ro("domain", &PyRLock::domain);

  nb::class_<PySemaphore>(m, "Semaphore", "A named (bounded) semaphore between processes (use hakobu.Semaphore)")
      .def(nb::init<const std::string&, std::uint32_t, bool, std::optional<bool>, const std::string&>(), "name"_a,
           "value"_a, "bounded"_a, "create"_a.none(), "domain"_a)
      .def("acquire", &PySemaphore::acquire, "timeout"_a.none(), "True once a count is taken")
      .def("release", &PySemaphore::release, "n"_a)
      .def("info", &PySemaphore::info,
           "value, bound, waiters, held_by_this_process, holders, returned, maybe_leaked (a snapshot)")
      .def_prop_ro("name", [](const PySemaphore& self) { return self.sem.name(); })
      .def_ro("domain", &PySemaphore::domain);

  nb::class_<PyBarrier>(m, "Barrier", "A named barrier between processes (use hakobu.Barrier)")
      .def(nb::init<const std::string&, std::uint32_t, std::optional<bool>, const std::string&>(), "name"_a,
           "parties"_a, "create"_a.none(), "domain"_a)
      .def("wait", &PyBarrier::wait, "timeout"_a.none(), "interruptible"_a,
           "this party's arrival index; raises BrokenBarrierError. interruptible: called from the main thread")
      .def("abort", [](PyBarrier& self) { self.barrier.abort(); })
      .def("reset", [](PyBarrier& self) { self.barrier.reset(); })
      .def_prop_ro("broken", [](const PyBarrier& self) { return self.barrier.broken(); })
      .def_prop_ro("parties", [](const PyBarrier& self) { return self.barrier.parties(); })
      .def_prop_ro("n_waiting", [](const PyBarrier& self) { return self.barrier.n_waiting(); })
      .def_prop_ro("name", [](const PyBarrier& self) { return self.barrier.name(); })
      .def_ro("domain", &PyBarrier::domain);

  nb::class_<PyCondition>(m, "Condition", "A named condition between processes (use hakobu.Condition)")
      .def(nb::init<const std::string&, const PyLock*, std::optional<bool>, const std::string&>(), "name"_a,
           "lock"_a.none(), "create"_a.none(), "domain"_a)
      .def("acquire", &PyCondition::acquire, "timeout"_a.none(), "as Lock.acquire")
      .def("release", &PyCondition::release)
      .def("wait", &PyCondition::wait, "timeout"_a.none(),
           "(notified, lock outcome as acquire's); the lock is held again on return")
      .def("notify", &PyCondition::notify, "n"_a)
      .def("notify_all", &PyCondition::notify_all)
      .def_prop_ro("name", [](const PyCondition& self) { return self.cond.name(); })
      .def_ro("lock_name", &PyCondition::lock_name)
      .def_ro("domain", &PyCondition::domain);

  nb::class_<PySharedArray>(m, "SharedArray", nb::type_slots(shared_array_slots),
                            "Named numbers between processes: exports its data bytes (use hakobu.Value, hakobu.Array)")
      .def(nb::init<const std::string&, int, int, int, const std::vector<std::int64_t>&, std::optional<nb::bytes>,
                    std::optional<bool>, const std::string&>(),
           "name"_a, "code"_a, "bits"_a, "lanes"_a, "shape"_a, "initial"_a.none(), "create"_a.none(), "domain"_a)
      .def("acquire", &PySharedArray::acquire, "timeout"_a.none(), "the array's lock, as Lock.acquire")
      .def("release", &PySharedArray::release)
      .def("load", &PySharedArray::load, "index"_a)
      .def("store", &PySharedArray::store, "index"_a, "value"_a)
      .def("fetch_add", &PySharedArray::fetch_add, "index"_a, "delta"_a)
      .def("compare_exchange", &PySharedArray::compare_exchange, "index"_a, "expected"_a, "desired"_a)
      .def_prop_ro("dtype",
                   [](const PySharedArray& self) {
                     const DType d = self.array.dtype();
                     return std::make_tuple(static_cast<int>(d.code), static_cast<int>(d.bits),
                                            static_cast<int>(d.lanes));
                   })
      .def_prop_ro("shape",
                   [](const PySharedArray& self) {
                     const auto s = self.array.shape();
                     return std::vector<std::int64_t>(s.begin(), s.end());
                   })
      .def_prop_ro("name", [](const PySharedArray& self) { return self.array.name(); })
      .def_ro("domain", &PySharedArray::domain);

  m.def("remove_sync", &remove_sync, "name"_a, "domain"_a = "",
        "Removes the sync object `name` (a lock, an event...) whoever created it; NotFound if missing");
}

}  // namespace hakobu::python
