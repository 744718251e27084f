// hakobu._core — Queue, Message (a received message) and Loan (shared memory
// being written), with the buffer protocol on messages and loans.
//
// One call per message: put_object() sends bytes, arrays of the built-in
// numeric types (codec.hpp) and objects whose pickle has no large buffer, and get_object() decodes bytes,
// such arrays and small pickles, without going back to Python; what they do not
// take (put_object returns False, get_object returns the Message) goes to the
// Python codec (python/hakobu/_codec.py), which writes and reads the same format.
// Both paths are shared with topics (channel.hpp); Message and Attachment,
// bound here, are a topic's received messages too (exported read-only then).
//
// Waiting rules (interruptible.hpp): every wait releases the GIL and is cut
// into slices; Ctrl-C raises KeyboardInterrupt in a blocked get/put and leaves
// the queue as it was.
#include "hakobu/queue.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "channel.hpp"
#include "codec.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "interruptible.hpp"
#include "objects.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace hakobu::python {

std::atomic<std::ptrdiff_t>& live_holders() noexcept {
  static std::atomic<std::ptrdiff_t> count{0};
  return count;
}

std::atomic<std::ptrdiff_t>& live_queues() noexcept {
  static std::atomic<std::ptrdiff_t> count{0};
  return count;
}

namespace {

int fill_buffer(PyObject* owner, Py_buffer* view, std::byte* data, std::size_t size, int flags) {
  view->obj = owner;
  Py_INCREF(owner);
  view->buf = data;
  view->len = static_cast<Py_ssize_t>(size);
  view->readonly = 0;
  view->itemsize = 1;
  view->format = (flags & PyBUF_FORMAT) != 0 ? const_cast<char*>("B") : nullptr;  // NOLINT
  view->ndim = 1;
  view->shape = (flags & PyBUF_ND) != 0 ? &view->len : nullptr;
  view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? &view->itemsize : nullptr;
  view->suboffsets = nullptr;
  view->internal = nullptr;
  return 0;
}

/// Exports `data` read-only: PyBuffer_FillInfo refuses a request for a
/// writable buffer (BufferError) and never writes through the pointer.
int fill_read_only(PyObject* owner, Py_buffer* view, std::byte* data, std::size_t size, int flags) {
  return PyBuffer_FillInfo(view, owner, data, static_cast<Py_ssize_t>(size), 1, flags);
}

int message_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  auto* message = nb::inst_ptr<PyMessage>(self);
  if (!message->sample.valid()) {
    PyErr_SetString(PyExc_BufferError, "the message was released");
    return -1;
  }
  std::byte* data = message->sample.bytes().data();
  const std::size_t size = message->sample.size();
  const int filled =
      message->read_only ? fill_read_only(self, view, data, size, flags) : fill_buffer(self, view, data, size, flags);
  if (filled == 0) ++message->exports;
  return filled;
}

void message_releasebuffer(PyObject* self, Py_buffer* /*view*/) {
  --nb::inst_ptr<PyMessage>(self)->exports;
}

int loan_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  auto* loan = nb::inst_ptr<PyLoan>(self);
  if (!loan->loan.valid()) {
    PyErr_SetString(PyExc_BufferError, "the loan was sent or released");
    return -1;
  }
  ++loan->exports;
  return fill_buffer(self, view, loan->loan.bytes().data(), loan->loan.bytes().size(), flags);
}

void loan_releasebuffer(PyObject* self, Py_buffer* /*view*/) {
  --nb::inst_ptr<PyLoan>(self)->exports;
}

int attachment_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  auto* attachment = nb::inst_ptr<PyAttachment>(self);
  std::byte* data = attachment->bytes.data();
  const std::size_t size = attachment->bytes.size();
  // As its message: read-only for a topic's.
  const int filled = nb::inst_ptr<PyMessage>(attachment->message)->read_only
                         ? fill_read_only(self, view, data, size, flags)
                         : fill_buffer(self, view, data, size, flags);
  if (filled == 0) ++attachment->exports;
  return filled;
}

void attachment_releasebuffer(PyObject* self, Py_buffer* /*view*/) {
  --nb::inst_ptr<PyAttachment>(self)->exports;
}

PyType_Slot message_slots[] = {{Py_bf_getbuffer, reinterpret_cast<void*>(message_getbuffer)},  // NOLINT
                               {Py_bf_releasebuffer, reinterpret_cast<void*>(message_releasebuffer)},
                               {0, nullptr}};
PyType_Slot attachment_slots[] = {{Py_bf_getbuffer, reinterpret_cast<void*>(attachment_getbuffer)},  // NOLINT
                                  {Py_bf_releasebuffer, reinterpret_cast<void*>(attachment_releasebuffer)},
                                  {0, nullptr}};
PyType_Slot loan_slots[] = {{Py_bf_getbuffer, reinterpret_cast<void*>(loan_getbuffer)},  // NOLINT
                            {Py_bf_releasebuffer, reinterpret_cast<void*>(loan_releasebuffer)},
                            {0, nullptr}};

struct PyQueue {
  Queue queue;
  std::string domain;    // the domain's name, kept: a closed handle has no domain to ask
  Sender<Queue> sender;  // the one-call send path (channel.hpp)
  LiveCount<live_queues> counted{};

  Queue& channel() noexcept { return queue; }

  // capacity and inline_capacity arrive as Python objects: a float, a bool or a
  // negative number is an InvalidArgument naming the option, not a TypeError.
  // max_bytes: None is kAutoCapacityBytes, 0 no limit.
  PyQueue(const std::string& name, std::optional<bool> create, nb::handle capacity, nb::handle inline_capacity,
          const std::string& domain_name, double spin_seconds, nb::handle max_bytes, bool sends) {
    check_name(name, "queue");
    check_name(domain_name, "domain", /*empty_ok=*/true);
    QueueOptions options;
    options.capacity = to_size(capacity, "capacity", SIZE_MAX, Beyond::InvalidArgument);
    options.inline_capacity = to_size(inline_capacity, "inline_capacity", SIZE_MAX, Beyond::InvalidArgument);
    options.spin = duration(spin_seconds, "spin");
    if (!max_bytes.is_none()) {
      options.capacity_bytes = to_size(max_bytes, "max_bytes", kAutoCapacityBytes - 1, Beyond::InvalidArgument);
    }
    options.sends = sends;
    options.domain.name = domain_name;
    auto opened = [&] {
      nb::gil_scoped_release unlocked;
      return Queue::open(name, open_mode(create), options);
    }();
    if (!opened) raise(opened.error());
    queue = std::move(*opened);
    domain = queue.domain().name();
    sender.slot_bytes = std::min(queue.stats().inline_capacity, kMaxInlineBytes);
  }

  PyMessage* get(std::optional<double> timeout) {
    auto got = wait_interruptibly(timeout, GetError::Empty, GetError::Timeout,
                                  [&](auto slice) { return slice.count() == 0 ? queue.try_get() : queue.get(slice); });
    if (!got) raise(got.error());
    return new PyMessage{std::move(*got), 0};
  }

  /// Receives a message and decodes it in one call: bytes, arrays of the
  /// built-in numeric types (writable views of the message) and, with
  /// `allow_pickle`, small pickles without out-of-band buffers. Anything else
  /// comes back as the Message, for the Python codec.
  nb::object get_object(std::optional<double> timeout, bool allow_pickle) {
    auto got = wait_interruptibly(timeout, GetError::Empty, GetError::Timeout,
                                  [&](auto slice) { return slice.count() == 0 ? queue.try_get() : queue.get(slice); });
    if (!got) raise(got.error());
    return decode_sample(std::move(*got), allow_pickle, /*read_only=*/false);
  }

  void unlink() {
    auto removed = queue.unlink();
    if (!removed) raise(removed.error());
  }

  nb::typed<nb::dict, nb::str, nb::any> stats() const { return queue_stats_dict(queue.stats()); }
};

/// (code, bits, lanes, typestr, shape, strides, data_offset, data_attachment) of
/// an array message, or None. The elements are in the message itself when
/// data_attachment is 0, else in its attachment data_attachment - 1;
/// data_offset is relative to the start of that buffer.
std::optional<std::tuple<int, int, int, std::string, std::vector<std::int64_t>, std::vector<std::int64_t>, std::int64_t,
                         std::uint32_t>>
array_layout(PyMessage& message) {
  if (message.sample.kind() != MessageKind::Array) return std::nullopt;
  auto view = message.sample.array();
  if (!view) raise(view.error());
  const std::uint32_t source = array_data_attachment(message.sample.bytes());
  std::byte* base = message.sample.bytes().data();
  if (source != 0) {
    auto data = message.sample.attachment(source - 1);
    if (!data) raise(data.error());
    base = data->data();
  }
  return std::make_tuple(static_cast<int>(view->dtype.code), static_cast<int>(view->dtype.bits),
                         static_cast<int>(view->dtype.lanes), std::string(view->typestr),
                         std::vector<std::int64_t>(view->shape.begin(), view->shape.end()),
                         std::vector<std::int64_t>(view->strides.begin(), view->strides.end()),
                         static_cast<std::int64_t>(view->data - base), source);
}

/// Attaches `source` (a Loan, a Message or an Attachment) to `loan`. False when
/// it cannot be attached (not in shared memory, or another domain): the caller copies instead.
bool attach(PyLoan& loan, nb::handle source) {
  Result<std::size_t, AttachError> attached = AttachError::Invalid;
  if (nb::isinstance<PyLoan>(source)) {
    attached = loan.loan.attach(nb::cast<PyLoan&>(source).loan);
  } else if (nb::isinstance<PyMessage>(source)) {
    attached = loan.loan.attach(nb::cast<PyMessage&>(source).sample);
  } else if (nb::isinstance<PyAttachment>(source)) {
    auto& attachment = nb::cast<PyAttachment&>(source);
    attached = loan.loan.attach(nb::cast<PyMessage&>(attachment.message).sample, attachment.index);
  } else {
    throw PythonError(ErrorKind::InvalidArgument,
                      "only hakobu shared memory (a Loan, Message or Attachment) can be attached");
  }
  if (attached) return true;
  if (attached.error().code == AttachError::NotShared || attached.error().code == AttachError::OtherDomain) {
    return false;
  }
  raise(attached.error());
}

PyLoan* allocate(nb::handle nbytes, const std::string& domain_name) {
  // Beyond PTRDIFF_MAX no buffer can describe the memory (and the core's rounding could wrap).
  const std::size_t size = to_size(nbytes, "nbytes", PTRDIFF_MAX, Beyond::TooLarge);
  check_name(domain_name, "domain", /*empty_ok=*/true);
  Domain domain = open_domain(domain_name);
  auto made = [&] {
    nb::gil_scoped_release unlocked;
    return domain.loan(size);
  }();
  if (!made) raise(made.error());
  return new PyLoan{std::move(*made), 0, 0};
}

std::uintptr_t address_of(const std::byte* data) {
  return reinterpret_cast<std::uintptr_t>(data);
}  // NOLINT

// ===== waiting modes and event-loop wake-ups (Queue.set_latency ... WakeSocket) =====
// Kept apart from put/get: these only choose how a handle waits, and let an
// asyncio loop wait on a descriptor instead of polling.

void set_latency(PyQueue& self, const std::string& mode, double spin_seconds) {
  set_channel_latency(self.queue, mode, spin_seconds);
}

void open_wake_socket(PyWakeSocket* self) {
  auto opened = WakeSocket::open();
  if (!opened) raise(opened.error());
  new (self) PyWakeSocket{std::move(*opened)};
}

std::vector<int> drain_wake_socket(PyWakeSocket& self) {
  std::vector<int> cookies;
  std::uint16_t batch[256];
  for (;;) {
    const std::size_t n = self.socket.drain(batch);
    cookies.insert(cookies.end(), batch, batch + n);
    if (n < std::size(batch)) return cookies;
  }
}

/// False when the queue's watcher table is full (the caller polls instead).
bool watch(PyQueue& self, PyWakeSocket& socket, bool writable, int cookie) {
  if (cookie < 0 || cookie > 0xFFFF) throw PythonError(ErrorKind::InvalidArgument, "cookie must be in [0, 65535]");
  auto watched = self.queue.watch(socket.socket, writable ? Readiness::Writable : Readiness::Readable,
                                  static_cast<std::uint16_t>(cookie));
  if (watched) return true;
  if (watched.error().code == WatchError::Full) return false;
  raise(watched.error());
}

void unwatch(PyQueue& self, PyWakeSocket& socket, bool writable, int cookie) {
  self.queue.unwatch(socket.socket, writable ? Readiness::Writable : Readiness::Readable,
                     static_cast<std::uint16_t>(cookie & 0xFFFF));
}

bool spin_until_ready(PyQueue& self, bool writable, double at_most_seconds) {
  const auto at_most = duration(at_most_seconds, "at_most");
  nb::gil_scoped_release unlocked;
  return self.queue.spin_until_ready(writable ? Readiness::Writable : Readiness::Readable, at_most);
}

void bind_waiting(nb::module_& m, nb::class_<PyQueue>& queue) {
  queue
      .def("set_latency", &set_latency, "mode"_a, "spin"_a,
           "How blocking calls wait: 'adaptive', 'spin', 'sleep', or 'fixed' (spin `spin` seconds, then sleep)")
      .def_prop_ro("latency", [](const PyQueue& self) { return latency_name(self.queue.latency()); })
      .def_prop_ro(
          "planned_spin", [](const PyQueue& self) { return self.queue.planned_spin_ns(); },
          "Nanoseconds the next blocking get would spin before its budget (a snapshot)")
      .def("spin_until_ready", &spin_until_ready, "writable"_a, "at_most"_a,
           "Spins as a blocking call would (at most `at_most` seconds, without the GIL) until the queue looks "
           "ready; never sleeps, takes nothing")
      .def("watch", &watch, "socket"_a, "writable"_a, "cookie"_a,
           "Puts (gets, if writable) signal `socket` with `cookie` until unwatch; False if the table is full")
      .def("unwatch", &unwatch, "socket"_a, "writable"_a, "cookie"_a);

  nb::class_<PyWakeSocket>(m, "WakeSocket",
                           "A descriptor that becomes readable when a watched queue may be ready (for event loops)")
      .def("__init__", &open_wake_socket)
      .def("fileno", [](const PyWakeSocket& self) { return self.socket.fd(); })
      .def_prop_ro("id", [](const PyWakeSocket& self) { return self.socket.id(); })
      .def("drain", &drain_wake_socket, "The cookies of the wake-ups received so far (without waiting)")
      .def("close", [](PyWakeSocket& self) { self.socket.close(); });
}
// ===== end of waiting modes and event-loop wake-ups =====

}  // namespace

void bind_queue(nb::module_& m) {
  nb::class_<PyMessage>(m, "Message", nb::type_slots(message_slots),
                        "A received message; its bytes are shared memory, exported through the buffer protocol")
      .def_prop_ro("kind", [](const PyMessage& self) { return static_cast<int>(self.sample.kind()); })
      .def_prop_ro("nbytes", [](const PyMessage& self) { return self.sample.size(); })
      .def_prop_ro("in_shared_memory", [](const PyMessage& self) { return self.sample.in_shared_memory(); })
      .def("array_layout", &array_layout,
           "(code, bits, lanes, typestr, shape, strides, data_offset, data_attachment) of an array message, else None")
      .def_prop_ro("address", [](PyMessage& self) { return address_of(self.sample.bytes().data()); })
      .def_prop_ro("attachment_count", [](const PyMessage& self) { return self.sample.attachment_count(); })
      .def(
          "attachment",
          [](nb::handle self, std::size_t index) {
            auto& message = nb::cast<PyMessage&>(self);
            auto bytes = message.sample.attachment(index);
            if (!bytes) raise(bytes.error());
            return new PyAttachment{nb::borrow(self), *bytes, index, 0};
          },
          nb::rv_policy::take_ownership, "index"_a, "Attachment `index` (shared memory the message holds)");

  nb::class_<PyAttachment>(m, "Attachment", nb::type_slots(attachment_slots),
                           "Shared memory a received message holds (e.g. the elements of an array sent by reference)")
      .def_prop_ro("nbytes", [](const PyAttachment& self) { return self.bytes.size(); })
      .def_prop_ro("address", [](const PyAttachment& self) { return address_of(self.bytes.data()); })
      .def_prop_ro("index", [](const PyAttachment& self) { return self.index; });

  nb::class_<PyLoan>(m, "Loan", nb::type_slots(loan_slots), "Shared memory being written, sent without a copy")
      .def_prop_ro("nbytes", [](const PyLoan& self) { return self.loan.bytes().size(); })
      .def_prop_ro("data_offset", [](const PyLoan& self) { return self.data_offset; })
      .def_prop_ro("address", [](const PyLoan& self) { return address_of(self.loan.bytes().data()); })
      .def("attach", &attach, "source"_a,
           "Attaches a Loan, Message or Attachment; False if it cannot be (then copy instead)");

  auto queue_class = nb::class_<PyQueue>(m, "Queue", "A named shared-memory queue (use hakobu.Queue)");
  queue_class.def(
      nb::init<const std::string&, std::optional<bool>, nb::handle, nb::handle, const std::string&, double, nb::handle,
               bool>(),
      "name"_a, "create"_a.none(), "capacity"_a.none(), "inline_capacity"_a.none(), "domain"_a, "spin"_a,
      "max_bytes"_a.none() = nb::none(), "sends"_a = false,
      "capacity, inline_capacity and max_bytes (None: half of /dev/shm, 0: no limit): ints (anything else is an "
      "InvalidArgument); spin in seconds; sends: count as a sender from now on");
  bind_sending(queue_class);
  queue_class
      .def("get_object", &PyQueue::get_object, "timeout"_a.none(), "allow_pickle"_a,
           "Receives and decodes a message in one call; a Message when the Python codec must decode it")
      .def("get", &PyQueue::get, nb::rv_policy::take_ownership, "timeout"_a.none())
      .def("qsize", [](const PyQueue& self) { return self.queue.size(); })
      .def_prop_ro("capacity", [](const PyQueue& self) { return self.queue.capacity(); })
      .def_prop_ro("name", [](const PyQueue& self) { return self.queue.name(); })
      .def_prop_ro("domain", [](const PyQueue& self) { return self.domain; })
      .def_prop_ro("is_creator", [](const PyQueue& self) { return self.queue.is_creator(); })
      .def_prop_ro("is_open", [](const PyQueue& self) { return self.queue.is_open(); })
      .def("stats", &PyQueue::stats)
      .def(
          "close", [](PyQueue& self, bool failed) { self.queue.close(failed ? Ending::Failed : Ending::Finished); },
          "failed"_a = false, "Lets go of the queue; a sender's part of the stream ends (failed: as a failure)")
      .def("unlink", &PyQueue::unlink);
  bind_waiting(m, queue_class);

  m.def(
      "remove",
      [](const std::string& name, const std::string& domain) {
        // Checked here: the core reports a bad name in removal as a system error.
        check_name(name, "queue");
        check_name(domain, "domain", /*empty_ok=*/true);
        auto removed = Queue::remove(name, domain);
        if (!removed) raise(removed.error());
      },
      "name"_a, "domain"_a = "", "Removes a queue by name, whoever created it");
  m.attr("OUT_OF_BAND_MIN_BYTES") = kOutOfBandMinBytes;
  m.def("default_domain", &default_domain_name, "The domain used when none is given");
  m.def("allocate", &allocate, nb::rv_policy::take_ownership, "nbytes"_a.none(), "domain"_a = "",
        "Shared memory of the domain, to build arrays in (hakobu.empty)");
  m.def(
      "file_prefix", [](const std::string& domain) { return Domain::file_prefix(domain); }, "domain"_a,
      "The prefix of the names of a domain's files in /dev/shm");
}

}  // namespace hakobu::python
