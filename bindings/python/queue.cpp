// hakobu._core — Queue, Message (a received message) and Loan (shared memory
// being written), with the buffer protocol on messages and loans.
//
// One call per message: put_object() sends bytes, arrays of the built-in
// numeric types (codec.hpp) and objects whose pickle has no large buffer, and get_object() decodes bytes,
// such arrays and small pickles, without going back to Python; what they do not
// take (put_object returns False, get_object returns the Message) goes to the
// Python codec (python/hakobu/_codec.py), which writes and reads the same format.
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

// Copies at least this large run without the GIL: below it, releasing and
// taking the GIL back costs more than other threads gain.
constexpr std::size_t kReleaseGilBytes = std::size_t{64} * 1024;

// Object messages (the Python codec's format): b"HKP1", a u32 count of
// out-of-band buffers (little-endian), the table of those, then the pickle.
constexpr char kObjectMagic[4] = {'H', 'K', 'P', '1'};
constexpr std::size_t kObjectHeaderBytes = 8;
// Buffers inside pickled objects from this size on travel out of band, as
// attachments (the Python codec's OUT_OF_BAND_MIN_BYTES is this figure).
constexpr std::size_t kOutOfBandMinBytes = std::size_t{64} * 1024;
// Pickles up to this size are unpickled here, from a copy (one allocation);
// larger ones from a view of the message, by the Python codec.
constexpr std::size_t kSmallPickleBytes = std::size_t{64} * 1024;

/// pickle.dumps and pickle.loads, looked up once and kept to the end (never
/// released: the interpreter may be gone by the time static objects die).
PyObject* pickle_function(const char* name) {
  nb::object function = nb::module_::import_("pickle").attr(name);
  return function.release().ptr();
}
PyObject* pickle_dumps() {
  static PyObject* const function = pickle_function("dumps");
  return function;
}
PyObject* pickle_loads() {
  static PyObject* const function = pickle_function("loads");
  return function;
}

/// Raised by keep_small_buffers_in_band to stop pickling: the object has a
/// buffer the Python codec sends out of band (never seen outside this file).
PyObject* out_of_band_error() {
  static PyObject* const error = PyErr_NewException("hakobu._core._OutOfBand", PyExc_Exception, nullptr);
  return error;
}

/// The buffer_callback of pickling in the extension: a buffer smaller than
/// kOutOfBandMinBytes stays in the stream (True); a larger one stops the
/// pickling, and the Python codec pickles the object again, sending that
/// buffer as an attachment.
PyObject* keep_small_buffers_in_band(PyObject* /*self*/, PyObject* buffer) {
  Py_buffer view;
  if (PyObject_GetBuffer(buffer, &view, PyBUF_FULL_RO) != 0) return nullptr;
  const auto size = static_cast<std::size_t>(view.len);
  PyBuffer_Release(&view);
  if (size >= kOutOfBandMinBytes) {
    PyErr_SetNone(out_of_band_error());
    return nullptr;
  }
  Py_RETURN_TRUE;
}

PyMethodDef keep_small_buffers_in_band_def = {"keep_small_buffers_in_band",  // NOLINT: CPython's C interface
                                              keep_small_buffers_in_band, METH_O, nullptr};

/// pickle.dumps(obj, protocol=5) with every buffer in band, or an invalid
/// object when the Python codec must pickle it: a large buffer (sent out of
/// band), or a failure (cloudpickle may succeed; else the codec reports it).
nb::object pickle_in_band(PyObject* obj) {
  static PyObject* const protocol = PyLong_FromLong(5);
  static PyObject* const callback = PyCFunction_New(&keep_small_buffers_in_band_def, nullptr);
  static PyObject* const keywords = Py_BuildValue("(s)", "buffer_callback");
  if (protocol == nullptr || callback == nullptr || keywords == nullptr) throw nb::python_error();
  PyObject* args[] = {obj, protocol, callback};
  PyObject* stream = PyObject_Vectorcall(pickle_dumps(), args, 2, keywords);
  if (stream != nullptr) return nb::steal(stream);
  // KeyboardInterrupt and the like are not the codec's to retry.
  if (PyErr_ExceptionMatches(PyExc_Exception) == 0) throw nb::python_error();
  PyErr_Clear();
  return {};
}

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

int message_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  auto* message = nb::inst_ptr<PyMessage>(self);
  if (!message->sample.valid()) {
    PyErr_SetString(PyExc_BufferError, "the message was released");
    return -1;
  }
  ++message->exports;
  return fill_buffer(self, view, message->sample.bytes().data(), message->sample.size(), flags);
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
  ++attachment->exports;
  return fill_buffer(self, view, attachment->bytes.data(), attachment->bytes.size(), flags);
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

/// A new instance of the bound class T, built in place (no separate heap
/// object, unlike casting a pointer) from `args`.
template <class T, class... Args>
nb::object make_instance(Args&&... args) {
  static const nb::handle type = nb::type<T>();  // bound once, lives as long as the module
  nb::object instance = nb::inst_alloc(type);
  new (nb::inst_ptr<T>(instance)) T{std::forward<Args>(args)...};
  nb::inst_mark_ready(instance);  // from now on nanobind runs ~T when the instance dies
  return instance;
}

/// The array a received array message carries, as a view of the message (or
/// of its attachment, for an array sent by reference); the Message itself when
/// its element type is for the Python codec.
nb::object decode_array(Sample&& received) {
  if (!received.in_shared_memory()) {
    // Inline: the bytes are this process's copy already; the array takes its own copy of them.
    auto view = received.array();
    if (!view) raise(view.error());
    if (nb::object array = array_copy(*view); array.is_valid()) return array;
  }
  // Moved first: an inline message's bytes move with the sample, so the view is taken after.
  nb::object owner = make_instance<PyMessage>(std::move(received));
  auto* message = nb::inst_ptr<PyMessage>(owner);
  auto view = message->sample.array();
  if (!view) raise(view.error());
  nb::object base = owner;
  if (const std::uint32_t source = array_data_attachment(message->sample.bytes()); source != 0) {
    auto data = message->sample.attachment(source - 1);
    if (!data) raise(data.error());
    base = make_instance<PyAttachment>(owner, *data, source - 1);
  }
  nb::object array = array_over(*view, base);
  return array.is_valid() ? array : owner;
}

/// The object of a small object message without out-of-band buffers, or an
/// invalid object (left to the Python codec, which also reports damage).
nb::object small_pickle(const Sample& sample) {
  const auto bytes = sample.bytes();
  if (bytes.size() < kObjectHeaderBytes || bytes.size() > kSmallPickleBytes) return {};
  std::uint32_t count = 0;
  std::memcpy(&count, bytes.data() + sizeof kObjectMagic, sizeof count);
  if (std::memcmp(bytes.data(), kObjectMagic, sizeof kObjectMagic) != 0 || count != 0) return {};
  // A copy: the stream must not outlive the message (pickle.loads keeps nothing, but a copy is cheap here).
  nb::object stream = nb::steal(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(bytes.data()) +  // NOLINT
                                                              kObjectHeaderBytes,
                                                          static_cast<Py_ssize_t>(bytes.size() - kObjectHeaderBytes)));
  if (!stream.is_valid()) throw nb::python_error();
  nb::object obj = nb::steal(PyObject_CallOneArg(pickle_loads(), stream.ptr()));
  if (!obj.is_valid()) throw nb::python_error();
  return obj;
}

struct PyQueue {
  Queue queue;
  std::string domain;          // the domain's name, kept: a closed handle has no domain to ask
  std::size_t slot_bytes = 0;  // messages up to this size ride inline in the slot
  LiveCount<live_queues> counted{};

  /// The metadata of the last small array sent, reused (one memcpy) when the
  /// next has the same type, shape and order, as streams of small arrays do.
  /// Read and written with the GIL held.
  struct LastMeta {
    static constexpr std::size_t kMaxDims = 4;
    static constexpr std::size_t kMaxBytes = 128;
    DType dtype;
    const char* typestr = nullptr;  // the dtype table's static storage: compared by address
    Order order = Order::C;
    std::size_t ndim = SIZE_MAX;  // nothing remembered yet
    std::array<std::int64_t, kMaxDims> shape{};
    std::size_t size = 0;
    alignas(64) std::byte bytes[kMaxBytes]{};

    [[nodiscard]] bool matches(const ArrayPlan& plan, std::size_t meta) const noexcept {
      return ndim == plan.ndim && size == meta && typestr == plan.typestr.data() && dtype == plan.dtype &&
             order == plan.order &&
             std::equal(shape.begin(), shape.begin() + static_cast<std::ptrdiff_t>(ndim), plan.shape.begin());
    }
    void remember(const ArrayPlan& plan, std::span<const std::byte> written) noexcept {
      if (plan.ndim > kMaxDims || written.size() > kMaxBytes) return;
      dtype = plan.dtype;
      typestr = plan.typestr.data();
      order = plan.order;
      ndim = plan.ndim;
      std::copy_n(plan.shape.begin(), plan.ndim, shape.begin());
      size = written.size();
      std::memcpy(bytes, written.data(), written.size());
    }
  } last_meta;

  // capacity and inline_capacity arrive as Python objects: a float, a bool or a
  // negative number is an InvalidArgument naming the option, not a TypeError.
  PyQueue(const std::string& name, std::optional<bool> create, nb::handle capacity, nb::handle inline_capacity,
          const std::string& domain_name, double spin_seconds) {
    check_name(name, "queue");
    check_name(domain_name, "domain", /*empty_ok=*/true);
    QueueOptions options;
    options.capacity = to_size(capacity, "capacity", SIZE_MAX, Beyond::InvalidArgument);
    options.inline_capacity = to_size(inline_capacity, "inline_capacity", SIZE_MAX, Beyond::InvalidArgument);
    options.spin = duration(spin_seconds, "spin");
    options.domain.name = domain_name;
    auto opened = [&] {
      nb::gil_scoped_release unlocked;
      return Queue::open(name, open_mode(create), options);
    }();
    if (!opened) raise(opened.error());
    queue = std::move(*opened);
    domain = queue.domain().name();
    slot_bytes = std::min(queue.stats().inline_capacity, kMaxInlineBytes);
  }

  /// Sends `obj` in one call if this path takes it (bytes, bytearray, a
  /// C-contiguous memoryview, an array of a built-in numeric type that is not
  /// in hakobu memory, an object whose pickle has no large buffer); False
  /// leaves it to the Python codec.
  bool put_object(nb::handle obj, std::optional<double> timeout) {
    PyObject* object = obj.ptr();
    if (PyBytes_Check(object) || PyByteArray_Check(object)) {
      put_bytes(obj, static_cast<int>(MessageKind::Bytes), timeout);
      return true;
    }
    if (ArrayPlan plan; plan_array(obj, plan)) {
      put_array(plan, timeout);
      return true;
    }
    if (PyMemoryView_Check(object)) {
      if (PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(object), 'C') == 0) return false;
      put_bytes(obj, static_cast<int>(MessageKind::Bytes), timeout);
      return true;
    }
    // Other arrays (exotic dtypes, by reference) have formats of their own.
    if (is_ndarray(obj)) return false;
    nb::object stream = pickle_in_band(object);
    if (!stream.is_valid()) return false;
    put_pickle(stream, timeout);
    return true;
  }

  /// Sends an array per `plan`: inline in the slot when metadata and elements
  /// fit (no heap block: as Queue::put_array), else one copy into a loan.
  void put_array(const ArrayPlan& plan, std::optional<double> timeout) {
    const std::size_t meta = array_meta_size(plan.ndim, plan.typestr.size());
    Result<void, PutError> sent;
    if (plan.nbytes <= slot_bytes && meta + plan.nbytes <= slot_bytes) {
      alignas(64) std::byte buffer[kMaxInlineBytes];
      if (last_meta.matches(plan, meta)) {
        std::memcpy(buffer, last_meta.bytes, meta);
      } else {
        write_array_meta({buffer, meta}, plan.dtype, plan.dims(), {}, 0, plan.typestr, plan.order);
        last_meta.remember(plan, {buffer, meta});
      }
      copy_elements(plan, buffer + meta);
      const std::span<const std::byte> bytes(buffer, meta + plan.nbytes);
      sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                [&](auto slice) { return queue.put(bytes, slice, MessageKind::Array); });
    } else {
      const bool large = plan.nbytes >= kReleaseGilBytes;
      auto made = [&] {
        std::optional<nb::gil_scoped_release> unlocked;
        if (large) unlocked.emplace();
        // The source's address lets the core place the elements where the copy does not 4K-alias.
        return queue.loan_array(plan.dtype, plan.dims(), plan.order, plan.typestr, plan.source);
      }();
      if (!made) raise(made.error());
      std::byte* elements = made->bytes().data() + meta;
      if (large && plan.contiguous) {
        nb::gil_scoped_release unlocked;
        copy_elements(plan, elements);
      } else {
        copy_elements(plan, elements);
      }
      sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                [&](auto slice) { return queue.put(*made, slice); });
    }
    if (!sent) raise(sent.error());
  }

  /// Sends a pickle `stream` (bytes-like) without out-of-band buffers as an
  /// object message: the header, then the stream, in the slot or in one loan.
  void put_pickle(nb::handle stream, std::optional<double> timeout) {
    Py_buffer view;
    if (PyObject_GetBuffer(stream.ptr(), &view, PyBUF_SIMPLE) != 0) throw nb::python_error();
    const std::span<const std::byte> pickle(static_cast<const std::byte*>(view.buf),
                                            static_cast<std::size_t>(view.len));
    const std::size_t total = kObjectHeaderBytes + pickle.size();
    Result<void, PutError> sent;
    try {
      if (total <= slot_bytes) {
        alignas(64) std::byte buffer[kMaxInlineBytes];
        std::memcpy(buffer, kObjectMagic, sizeof kObjectMagic);
        std::memset(buffer + sizeof kObjectMagic, 0, kObjectHeaderBytes - sizeof kObjectMagic);
        if (!pickle.empty()) std::memcpy(buffer + kObjectHeaderBytes, pickle.data(), pickle.size());
        const std::span<const std::byte> bytes(buffer, total);
        sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                  [&](auto slice) { return queue.put(bytes, slice, MessageKind::Object); });
      } else {
        // The stream lands kObjectHeaderBytes into the payload: the copy's source address, as the
        // payload's, is that much before the stream (an address for the layout, never dereferenced).
        const auto* source = reinterpret_cast<const void*>(  // NOLINT(performance-no-int-to-ptr)
            reinterpret_cast<std::uintptr_t>(pickle.data()) - kObjectHeaderBytes);
        auto made = queue.loan(total, MessageKind::Object, 0, source);
        if (!made) raise(made.error());
        std::byte* out = made->bytes().data();
        std::memcpy(out, kObjectMagic, sizeof kObjectMagic);
        std::memset(out + sizeof kObjectMagic, 0, kObjectHeaderBytes - sizeof kObjectMagic);
        if (pickle.size() >= kReleaseGilBytes) {
          nb::gil_scoped_release unlocked;
          std::memcpy(out + kObjectHeaderBytes, pickle.data(), pickle.size());
        } else if (!pickle.empty()) {
          std::memcpy(out + kObjectHeaderBytes, pickle.data(), pickle.size());
        }
        PyBuffer_Release(&view);
        view.obj = nullptr;
        sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                  [&](auto slice) { return queue.put(*made, slice); });
      }
    } catch (...) {
      if (view.obj != nullptr) PyBuffer_Release(&view);
      throw;
    }
    if (view.obj != nullptr) PyBuffer_Release(&view);
    if (!sent) raise(sent.error());
  }

  void put_bytes(nb::handle data, int kind, std::optional<double> timeout) {
    Py_buffer view;
    if (PyObject_GetBuffer(data.ptr(), &view, PyBUF_SIMPLE) != 0) throw nb::python_error();
    const std::span<const std::byte> bytes(static_cast<const std::byte*>(view.buf), static_cast<std::size_t>(view.len));
    const auto message_kind = static_cast<MessageKind>(kind);
    Result<void, PutError> sent;
    if (bytes.size() > kMaxInlineBytes) {
      // Copy once into shared memory, then wait for room with the loan ready.
      auto loan = [&] {
        std::optional<nb::gil_scoped_release> unlocked;
        if (bytes.size() >= kReleaseGilBytes) unlocked.emplace();
        auto made = queue.loan(bytes.size(), message_kind, 0, bytes.data());
        if (made) std::memcpy(made->bytes().data(), bytes.data(), bytes.size());
        return made;
      }();
      PyBuffer_Release(&view);
      if (!loan) raise(loan.error());
      sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                [&](auto slice) { return queue.put(*loan, slice); });
    } else {
      try {
        sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                  [&](auto slice) { return queue.put(bytes, slice, message_kind); });
      } catch (...) {
        PyBuffer_Release(&view);
        throw;
      }
      PyBuffer_Release(&view);
    }
    if (!sent) raise(sent.error());
  }

  PyLoan* loan_array(int code, int bits, int lanes, const std::string& typestr, const std::vector<std::int64_t>& shape,
                     bool fortran_order) {
    const DType dtype{static_cast<DTypeCode>(code), static_cast<std::uint8_t>(bits), static_cast<std::uint16_t>(lanes)};
    auto made = [&] {
      nb::gil_scoped_release unlocked;
      return queue.loan_array(dtype, shape, fortran_order ? Order::F : Order::C, typestr);
    }();
    if (!made) raise(made.error());
    auto* loan = new PyLoan{std::move(*made), array_meta_size(shape.size(), typestr.size()), 0};
    return loan;
  }

  void put_loan(PyLoan& loan, std::optional<double> timeout) {
    if (loan.exports != 0) {
      throw PythonError(ErrorKind::InvalidArgument, "release every view of the loan before sending it");
    }
    auto sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                   [&](auto slice) { return queue.put(loan.loan, slice); });
    if (!sent) raise(sent.error());
  }

  PyLoan* loan(nb::handle nbytes, int kind, nb::handle attachment_count) {
    const std::size_t size = to_size(nbytes, "nbytes", PTRDIFF_MAX, Beyond::TooLarge);
    const std::size_t attachments = to_size(attachment_count, "attachments", UINT32_MAX, Beyond::InvalidArgument);
    auto made = [&] {
      nb::gil_scoped_release unlocked;
      return queue.loan(size, static_cast<MessageKind>(kind), attachments);
    }();
    if (!made) raise(made.error());
    return new PyLoan{std::move(*made), 0, 0};
  }

  PyLoan* loan_array_ref(int code, int bits, int lanes, const std::string& typestr,
                         const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
                         std::int64_t byte_offset) {
    const DType dtype{static_cast<DTypeCode>(code), static_cast<std::uint8_t>(bits), static_cast<std::uint16_t>(lanes)};
    auto made = queue.loan_array_ref(dtype, shape, strides, byte_offset, typestr);
    if (!made) raise(made.error());
    return new PyLoan{std::move(*made), 0, 0};
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
    Sample& sample = *got;
    switch (sample.kind()) {
      case MessageKind::Bytes: {
        const auto bytes = sample.bytes();
        PyObject* out = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(bytes.data()),  // NOLINT
                                                  static_cast<Py_ssize_t>(bytes.size()));
        if (out == nullptr) throw nb::python_error();
        return nb::steal(out);
      }
      case MessageKind::Array: return decode_array(std::move(sample));
      case MessageKind::Object:
        if (allow_pickle) {
          if (nb::object obj = small_pickle(sample); obj.is_valid()) return obj;
        }
        break;
    }
    return make_instance<PyMessage>(std::move(sample));
  }

  void unlink() {
    auto removed = queue.unlink();
    if (!removed) raise(removed.error());
  }

  nb::typed<nb::dict, nb::str, nb::any> stats() const {
    const auto s = queue.stats();
    nb::dict out;
    out["size"] = s.size;
    out["capacity"] = s.capacity;
    out["inline_capacity"] = s.inline_capacity;
    out["put_count"] = s.put_count;
    out["get_count"] = s.get_count;
    out["creator_pid"] = s.creator_pid;
    return out;
  }
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

Latency latency_from_name(const std::string& name) {
  if (name == "adaptive") return Latency::Adaptive;
  if (name == "spin") return Latency::Spin;
  if (name == "sleep") return Latency::Sleep;
  if (name == "fixed") return Latency::Fixed;
  throw PythonError(ErrorKind::InvalidArgument,
                    "latency must be 'adaptive', 'spin', 'sleep' or 'fixed', got '" + name + "'");
}

const char* latency_name(Latency latency) {
  switch (latency) {
    case Latency::Spin: return "spin";
    case Latency::Sleep: return "sleep";
    case Latency::Fixed: return "fixed";
    case Latency::Adaptive: break;
  }
  return "adaptive";
}

void set_latency(PyQueue& self, const std::string& mode, double spin_seconds) {
  const Latency latency = latency_from_name(mode);
  const auto spin = duration(spin_seconds, "spin");
  if (latency == Latency::Fixed) self.queue.set_spin(spin);  // also picks Sleep for a spin of 0
  if (latency != Latency::Fixed || spin.count() > 0) self.queue.set_latency(latency);
}

struct PyWakeSocket {
  WakeSocket socket;
};

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
  queue_class
      .def(nb::init<const std::string&, std::optional<bool>, nb::handle, nb::handle, const std::string&, double>(),
           "name"_a, "create"_a.none(), "capacity"_a.none(), "inline_capacity"_a.none(), "domain"_a, "spin"_a,
           "capacity and inline_capacity: ints (anything else is an InvalidArgument); spin in seconds")
      .def("put_bytes", &PyQueue::put_bytes, "data"_a, "kind"_a, "timeout"_a.none())
      .def("loan_array", &PyQueue::loan_array, nb::rv_policy::take_ownership, "code"_a, "bits"_a, "lanes"_a,
           "typestr"_a, "shape"_a, "fortran_order"_a)
      .def("loan", &PyQueue::loan, nb::rv_policy::take_ownership, "nbytes"_a.none(), "kind"_a, "attachments"_a.none(),
           "Shared memory for a message of `nbytes` with room for `attachments`")
      .def("loan_array_ref", &PyQueue::loan_array_ref, nb::rv_policy::take_ownership, "code"_a, "bits"_a, "lanes"_a,
           "typestr"_a, "shape"_a, "strides"_a, "byte_offset"_a)
      .def("put_loan", &PyQueue::put_loan, "loan"_a, "timeout"_a.none())
      .def("put_object", &PyQueue::put_object, "obj"_a.none(), "timeout"_a.none(),
           "Sends bytes, an array of a built-in numeric type or an object whose pickle has no large buffer in one "
           "call; False when the Python codec must send `obj`")
      .def("put_pickle", &PyQueue::put_pickle, "stream"_a, "timeout"_a.none(),
           "Sends a pickle without out-of-band buffers as an object message")
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
      .def("close", [](PyQueue& self) { self.queue.close(); })
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
