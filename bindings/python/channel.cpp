// hakobu._core — the parts of sending and receiving that queues and topics
// share (the rules are in channel.hpp).
#include "channel.hpp"

#include <nanobind/nanobind.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace nb = nanobind;

namespace hakobu::python {

namespace {

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

/// The array a received array message carries, as a view of the message (or
/// of its attachment, for an array sent by reference); the Message itself when
/// its element type is for the Python codec.
nb::object decode_array(Sample&& received, bool read_only) {
  if (!received.in_shared_memory()) {
    // Inline: the bytes are this process's copy already; the array takes its own copy of them.
    auto view = received.array();
    if (!view) raise(view.error());
    if (nb::object array = array_copy(*view, !read_only); array.is_valid()) return array;
  }
  // Moved first: an inline message's bytes move with the sample, so the view is taken after.
  nb::object owner = make_instance<PyMessage>(std::move(received), Py_ssize_t{0}, read_only);
  auto* message = nb::inst_ptr<PyMessage>(owner);
  auto view = message->sample.array();
  if (!view) raise(view.error());
  nb::object base = owner;
  if (const std::uint32_t source = array_data_attachment(message->sample.bytes()); source != 0) {
    auto data = message->sample.attachment(source - 1);
    if (!data) raise(data.error());
    base = make_instance<PyAttachment>(owner, *data, source - 1);
  }
  nb::object array = array_over(*view, base, !read_only);
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

}  // namespace

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

nb::object decode_sample(Sample&& sample, bool allow_pickle, bool read_only) {
  switch (sample.kind()) {
    case MessageKind::Bytes: {
      const auto bytes = sample.bytes();
      PyObject* out = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(bytes.data()),  // NOLINT
                                                static_cast<Py_ssize_t>(bytes.size()));
      if (out == nullptr) throw nb::python_error();
      return nb::steal(out);
    }
    case MessageKind::Array: return decode_array(std::move(sample), read_only);
    case MessageKind::Object:
      if (allow_pickle) {
        if (nb::object obj = small_pickle(sample); obj.is_valid()) return obj;
      }
      break;
  }
  return make_instance<PyMessage>(std::move(sample), Py_ssize_t{0}, read_only);
}

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

}  // namespace hakobu::python
