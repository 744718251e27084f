// hakobu._core — what a queue and a topic share in the bindings: sending a
// Python object as one message, decoding a received message, and naming
// waiting modes.
//
// Sending. `Sender<Channel>` holds the per-handle state of the one-call send
// path (the inline size, the last small array's metadata) and sends through a
// Channel (Queue or Topic) with the `send()` overloads below: a queue puts,
// a topic publishes; loans are made the same way on both. `bind_sending()`
// defines the sending methods (put_object, put_bytes, put_pickle, put_loan,
// loan, loan_array, loan_array_ref) on a bound class with a `sender` member
// and a `channel()` accessor, so the Python codec (_codec.put_object) drives
// either without knowing which it has.
//
// Receiving. `decode_sample()` turns a received sample into bytes, an array
// (a view of the message, or an owned copy for an inline message), a small
// unpickled object, or the Message for the Python codec. With `read_only`
// (a topic's messages, shared by every subscriber) the Message exports its
// bytes read-only and every array made here has NumPy's WRITEABLE flag off.
//
// Waiting rules (interruptible.hpp): every wait releases the GIL and is cut
// into slices; Ctrl-C raises KeyboardInterrupt in a blocked call and leaves
// the channel as it was.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "codec.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "hakobu/queue.hpp"
#include "hakobu/topic.hpp"
#include "interruptible.hpp"
#include "objects.hpp"

namespace hakobu::python {

/// A queue's counters as Python sees them (Queue.stats(), hakobu info).
inline nanobind::typed<nanobind::dict, nanobind::str, nanobind::any> queue_stats_dict(const QueueStats& s) {
  nanobind::dict out;
  out["size"] = s.size;
  out["capacity"] = s.capacity;
  out["inline_capacity"] = s.inline_capacity;
  out["put_count"] = s.put_count;
  out["get_count"] = s.get_count;
  out["creator_pid"] = s.creator_pid;
  out["bytes"] = s.bytes;
  out["max_bytes"] = s.capacity_bytes;
  out["senders"] = s.senders;
  out["ended"] = s.ended;
  out["senders_lost"] = s.senders_lost;
  out["receivers_waiting"] = s.receivers_waiting;
  out["senders_waiting"] = s.senders_waiting;
  return out;
}

// Copies at least this large run without the GIL: below it, releasing and
// taking the GIL back costs more than other threads gain.
inline constexpr std::size_t kReleaseGilBytes = std::size_t{64} * 1024;

// Object messages (the Python codec's format): b"HKP1", a u32 count of
// out-of-band buffers (little-endian), the table of those, then the pickle.
inline constexpr char kObjectMagic[4] = {'H', 'K', 'P', '1'};
inline constexpr std::size_t kObjectHeaderBytes = 8;
// Buffers inside pickled objects from this size on travel out of band, as
// attachments (the Python codec's OUT_OF_BAND_MIN_BYTES is this figure).
inline constexpr std::size_t kOutOfBandMinBytes = std::size_t{64} * 1024;
// Pickles up to this size are unpickled here, from a copy (one allocation);
// larger ones from a view of the message, by the Python codec.
inline constexpr std::size_t kSmallPickleBytes = std::size_t{64} * 1024;

/// pickle.dumps(obj, protocol=5) with every buffer in band, or an invalid
/// object when the Python codec must pickle it: a large buffer (sent out of
/// band), or a failure (cloudpickle may succeed; else the codec reports it).
nanobind::object pickle_in_band(PyObject* obj);

/// Writes the header of an object message without out-of-band buffers.
inline void write_object_header(std::byte* out) noexcept {
  std::memcpy(out, kObjectMagic, sizeof kObjectMagic);
  std::memset(out + sizeof kObjectMagic, 0, kObjectHeaderBytes - sizeof kObjectMagic);
}

/// A new instance of the bound class T, built in place (no separate heap
/// object, unlike casting a pointer) from `args`.
template <class T, class... Args>
nanobind::object make_instance(Args&&... args) {
  static const nanobind::handle type = nanobind::type<T>();  // bound once, lives as long as the module
  nanobind::object instance = nanobind::inst_alloc(type);
  new (nanobind::inst_ptr<T>(instance)) T{std::forward<Args>(args)...};
  nanobind::inst_mark_ready(instance);  // from now on nanobind runs ~T when the instance dies
  return instance;
}

/// The Python object a received sample carries: bytes (a copy), an array of a
/// built-in numeric type, with `allow_pickle` a small pickle without
/// out-of-band buffers; anything else comes back as the Message, for the
/// Python codec. `read_only`: see the top of this file.
nanobind::object decode_sample(Sample&& sample, bool allow_pickle, bool read_only);

/// The latency mode named `name` ('adaptive', 'spin', 'sleep', 'fixed'); InvalidArgument otherwise.
Latency latency_from_name(const std::string& name);
const char* latency_name(Latency latency);

/// Sets how a channel's blocking calls wait: `mode` per latency_from_name,
/// `spin_seconds` the spin of 'fixed' (a spin of 0 picks 'sleep').
template <class Channel>
void set_channel_latency(Channel& channel, const std::string& mode, double spin_seconds) {
  const Latency latency = latency_from_name(mode);
  const auto spin = duration(spin_seconds, "spin");
  if (latency == Latency::Fixed) channel.set_spin(spin);  // also picks Sleep for a spin of 0
  if (latency != Latency::Fixed || spin.count() > 0) channel.set_latency(latency);
}

// How each channel sends what a Sender made: a queue puts, a topic publishes.
inline Result<void, PutError> send(Queue& queue, std::span<const std::byte> bytes, MessageKind kind,
                                   std::chrono::nanoseconds slice) {
  return queue.put(bytes, slice, kind);
}
inline Result<void, PutError> send(Queue& queue, Loan& loan, std::chrono::nanoseconds slice) {
  return queue.put(loan, slice);
}
inline Result<void, PutError> send(Topic& topic, std::span<const std::byte> bytes, MessageKind kind,
                                   std::chrono::nanoseconds slice) {
  return topic.publish(bytes, slice, kind);
}
inline Result<void, PutError> send(Topic& topic, Loan& loan, std::chrono::nanoseconds slice) {
  return topic.publish(loan, slice);
}

/// An event loop's wake-up descriptor (WakeSocket, bound in queue.cpp),
/// watched by queues and subscribers.
struct PyWakeSocket {
  WakeSocket socket;
};

/// The one-call send path of a handle on `Channel` (see the top of this file).
/// Read and written with the GIL held.
template <class Channel>
struct Sender {
  std::size_t slot_bytes = 0;  // messages up to this size ride inline in the slot

  /// The metadata of the last small array sent, reused (one memcpy) when the
  /// next has the same type, shape and order, as streams of small arrays do.
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

  /// Sends `obj` in one call if this path takes it (bytes, bytearray, a
  /// C-contiguous memoryview, an array of a built-in numeric type that is not
  /// in hakobu memory, an object whose pickle has no large buffer); False
  /// leaves it to the Python codec.
  bool put_object(Channel& channel, nanobind::handle obj, std::optional<double> timeout) {
    PyObject* object = obj.ptr();
    if (PyBytes_Check(object) || PyByteArray_Check(object)) {
      put_bytes(channel, obj, static_cast<int>(MessageKind::Bytes), timeout);
      return true;
    }
    if (ArrayPlan plan; plan_array(obj, plan)) {
      put_array(channel, plan, timeout);
      return true;
    }
    if (PyMemoryView_Check(object)) {
      if (PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(object), 'C') == 0) return false;
      put_bytes(channel, obj, static_cast<int>(MessageKind::Bytes), timeout);
      return true;
    }
    // Other arrays (exotic dtypes, by reference) have formats of their own.
    if (is_ndarray(obj)) return false;
    nanobind::object stream = pickle_in_band(object);
    if (!stream.is_valid()) return false;
    put_pickle(channel, stream, timeout);
    return true;
  }

  /// Sends an array per `plan`: inline in the slot when metadata and elements
  /// fit (no heap block), else one copy into a loan.
  void put_array(Channel& channel, const ArrayPlan& plan, std::optional<double> timeout) {
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
                                [&](auto slice) { return send(channel, bytes, MessageKind::Array, slice); });
    } else {
      const bool large = plan.nbytes >= kReleaseGilBytes;
      auto made = [&] {
        std::optional<nanobind::gil_scoped_release> unlocked;
        if (large) unlocked.emplace();
        // The source's address lets the core place the elements where the copy does not 4K-alias.
        return channel.loan_array(plan.dtype, plan.dims(), plan.order, plan.typestr, plan.source);
      }();
      if (!made) raise(made.error());
      std::byte* elements = made->bytes().data() + meta;
      if (large && plan.contiguous) {
        nanobind::gil_scoped_release unlocked;
        copy_elements(plan, elements);
      } else {
        copy_elements(plan, elements);
      }
      sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                [&](auto slice) { return send(channel, *made, slice); });
    }
    if (!sent) raise(sent.error());
  }

  /// Sends a pickle `stream` (bytes-like) without out-of-band buffers as an
  /// object message: the header, then the stream, in the slot or in one loan.
  void put_pickle(Channel& channel, nanobind::handle stream, std::optional<double> timeout) {
    Py_buffer view;
    if (PyObject_GetBuffer(stream.ptr(), &view, PyBUF_SIMPLE) != 0) throw nanobind::python_error();
    const std::span<const std::byte> pickle(static_cast<const std::byte*>(view.buf),
                                            static_cast<std::size_t>(view.len));
    const std::size_t total = kObjectHeaderBytes + pickle.size();
    Result<void, PutError> sent;
    try {
      if (total <= slot_bytes) {
        alignas(64) std::byte buffer[kMaxInlineBytes];
        write_object_header(buffer);
        if (!pickle.empty()) std::memcpy(buffer + kObjectHeaderBytes, pickle.data(), pickle.size());
        const std::span<const std::byte> bytes(buffer, total);
        sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                  [&](auto slice) { return send(channel, bytes, MessageKind::Object, slice); });
      } else {
        // The stream lands kObjectHeaderBytes into the payload: the copy's source address, as the
        // payload's, is that much before the stream (an address for the layout, never dereferenced).
        const auto* source = reinterpret_cast<const void*>(  // NOLINT(performance-no-int-to-ptr)
            reinterpret_cast<std::uintptr_t>(pickle.data()) - kObjectHeaderBytes);
        auto made = channel.loan(total, MessageKind::Object, 0, source);
        if (!made) raise(made.error());
        std::byte* out = made->bytes().data();
        write_object_header(out);
        if (pickle.size() >= kReleaseGilBytes) {
          nanobind::gil_scoped_release unlocked;
          std::memcpy(out + kObjectHeaderBytes, pickle.data(), pickle.size());
        } else if (!pickle.empty()) {
          std::memcpy(out + kObjectHeaderBytes, pickle.data(), pickle.size());
        }
        PyBuffer_Release(&view);
        view.obj = nullptr;
        sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                  [&](auto slice) { return send(channel, *made, slice); });
      }
    } catch (...) {
      if (view.obj != nullptr) PyBuffer_Release(&view);
      throw;
    }
    if (view.obj != nullptr) PyBuffer_Release(&view);
    if (!sent) raise(sent.error());
  }

  void put_bytes(Channel& channel, nanobind::handle data, int kind, std::optional<double> timeout) {
    Py_buffer view;
    if (PyObject_GetBuffer(data.ptr(), &view, PyBUF_SIMPLE) != 0) throw nanobind::python_error();
    const std::span<const std::byte> bytes(static_cast<const std::byte*>(view.buf), static_cast<std::size_t>(view.len));
    const auto message_kind = static_cast<MessageKind>(kind);
    Result<void, PutError> sent;
    if (bytes.size() > kMaxInlineBytes) {
      // Copy once into shared memory, then wait for room with the loan ready.
      auto loan = [&] {
        std::optional<nanobind::gil_scoped_release> unlocked;
        if (bytes.size() >= kReleaseGilBytes) unlocked.emplace();
        auto made = channel.loan(bytes.size(), message_kind, 0, bytes.data());
        if (made) std::memcpy(made->bytes().data(), bytes.data(), bytes.size());
        return made;
      }();
      PyBuffer_Release(&view);
      if (!loan) raise(loan.error());
      sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                [&](auto slice) { return send(channel, *loan, slice); });
    } else {
      try {
        sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                  [&](auto slice) { return send(channel, bytes, message_kind, slice); });
      } catch (...) {
        PyBuffer_Release(&view);
        throw;
      }
      PyBuffer_Release(&view);
    }
    if (!sent) raise(sent.error());
  }

  static PyLoan* loan_array(Channel& channel, int code, int bits, int lanes, const std::string& typestr,
                            const std::vector<std::int64_t>& shape, bool fortran_order) {
    const DType dtype{static_cast<DTypeCode>(code), static_cast<std::uint8_t>(bits), static_cast<std::uint16_t>(lanes)};
    auto made = [&] {
      nanobind::gil_scoped_release unlocked;
      return channel.loan_array(dtype, shape, fortran_order ? Order::F : Order::C, typestr);
    }();
    if (!made) raise(made.error());
    return new PyLoan{std::move(*made), array_meta_size(shape.size(), typestr.size()), 0};
  }

  static void put_loan(Channel& channel, PyLoan& loan, std::optional<double> timeout) {
    if (loan.exports != 0) {
      throw PythonError(ErrorKind::InvalidArgument, "release every view of the loan before sending it");
    }
    auto sent = wait_interruptibly(timeout, PutError::Full, PutError::Timeout,
                                   [&](auto slice) { return send(channel, loan.loan, slice); });
    if (!sent) raise(sent.error());
  }

  static PyLoan* loan(Channel& channel, nanobind::handle nbytes, int kind, nanobind::handle attachment_count) {
    const std::size_t size = to_size(nbytes, "nbytes", PTRDIFF_MAX, Beyond::TooLarge);
    const std::size_t attachments = to_size(attachment_count, "attachments", UINT32_MAX, Beyond::InvalidArgument);
    auto made = [&] {
      nanobind::gil_scoped_release unlocked;
      return channel.loan(size, static_cast<MessageKind>(kind), attachments);
    }();
    if (!made) raise(made.error());
    return new PyLoan{std::move(*made), 0, 0};
  }

  static PyLoan* loan_array_ref(Channel& channel, int code, int bits, int lanes, const std::string& typestr,
                                const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
                                std::int64_t byte_offset) {
    const DType dtype{static_cast<DTypeCode>(code), static_cast<std::uint8_t>(bits), static_cast<std::uint16_t>(lanes)};
    auto made = channel.loan_array_ref(dtype, shape, strides, byte_offset, typestr);
    if (!made) raise(made.error());
    return new PyLoan{std::move(*made), 0, 0};
  }
};

/// Defines the sending methods on `cls`, whose C++ type `Py` has a
/// `Sender<...> sender` and a `channel()` accessor (see the top of this file).
template <class Py>
void bind_sending(nanobind::class_<Py>& cls) {
  using namespace nanobind::literals;
  using Send = decltype(Py::sender);
  namespace nb = nanobind;
  cls.def(
         "put_bytes",
         [](Py& self, nb::handle data, int kind, std::optional<double> timeout) {
           self.sender.put_bytes(self.channel(), data, kind, timeout);
         },
         "data"_a, "kind"_a, "timeout"_a.none())
      .def(
          "loan_array",
          [](Py& self, int code, int bits, int lanes, const std::string& typestr,
             const std::vector<std::int64_t>& shape, bool fortran_order) {
            return Send::loan_array(self.channel(), code, bits, lanes, typestr, shape, fortran_order);
          },
          nb::rv_policy::take_ownership, "code"_a, "bits"_a, "lanes"_a, "typestr"_a, "shape"_a, "fortran_order"_a)
      .def(
          "loan",
          [](Py& self, nb::handle nbytes, int kind, nb::handle attachments) {
            return Send::loan(self.channel(), nbytes, kind, attachments);
          },
          nb::rv_policy::take_ownership, "nbytes"_a.none(), "kind"_a, "attachments"_a.none(),
          "Shared memory for a message of `nbytes` with room for `attachments`")
      .def(
          "loan_array_ref",
          [](Py& self, int code, int bits, int lanes, const std::string& typestr,
             const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
             std::int64_t byte_offset) {
            return Send::loan_array_ref(self.channel(), code, bits, lanes, typestr, shape, strides, byte_offset);
          },
          nb::rv_policy::take_ownership, "code"_a, "bits"_a, "lanes"_a, "typestr"_a, "shape"_a, "strides"_a,
          "byte_offset"_a)
      .def(
          "put_loan",
          [](Py& self, PyLoan& loan, std::optional<double> timeout) { Send::put_loan(self.channel(), loan, timeout); },
          "loan"_a, "timeout"_a.none())
      .def(
          "put_object",
          [](Py& self, nb::handle obj, std::optional<double> timeout) {
            return self.sender.put_object(self.channel(), obj, timeout);
          },
          "obj"_a.none(), "timeout"_a.none(),
          "Sends bytes, an array of a built-in numeric type or an object whose pickle has no large buffer in one "
          "call; False when the Python codec must send `obj`")
      .def(
          "put_pickle",
          [](Py& self, nb::handle stream, std::optional<double> timeout) {
            self.sender.put_pickle(self.channel(), stream, timeout);
          },
          "stream"_a, "timeout"_a.none(), "Sends a pickle without out-of-band buffers as an object message");
}

}  // namespace hakobu::python
