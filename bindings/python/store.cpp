// hakobu._core — Store (the core of hakobu.Store) and StoreValue (one version
// of a stored value, read-only).
//
// Formats: a value is stored as the message a queue would carry (the Python
// codec's formats, python/hakobu/_codec.py): bytes, an array message, or an
// object message. Publishing takes the queue's paths: put_object() publishes
// bytes and arrays of the built-in numeric types in one call and returns None
// for the rest, which the Python codec writes into loans made here
// (loan, loan_array, loan_array_ref) and publishes with put_loan(). Reading:
// get_object() returns bytes (a copy, as Queue.get), arrays of the built-in
// numeric types (views, here), or the StoreValue for the Python codec.
//
// Read-only, always. A value is shared by every reader and immutable once
// published: StoreValue and StoreAttachment export their bytes read-only
// through the buffer protocol (so arrays the codec builds on them are not
// writeable), and the arrays built here have NumPy's WRITEABLE flag cleared.
//
// Lifetime rules. A StoreValue holds a counted reference on its version (the
// C++ StoreValue); every array view of a value has the StoreValue as its base
// (directly, or through a memoryview or a StoreAttachment, which holds it), so
// the version's memory lives exactly as long as any view of it, whatever was
// published under the key since. StoreValues count in live_holders() like
// messages (module.cpp, at exit).
#include "hakobu/store.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
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

namespace {

// Copies at least this large run without the GIL (the figure queue.cpp uses).
constexpr std::size_t kReleaseGilBytes = std::size_t{64} * 1024;

/// One version of a stored value (see the lifetime rules above).
struct PyStoreValue {
  StoreValue value;
  LiveCount<live_holders> counted{};
};

/// Attachment `index` of a stored value (an array's elements published by
/// reference, a buffer of an object); keeps the value alive.
struct PyStoreAttachment {
  nb::object value;  // the PyStoreValue
  std::span<const std::byte> bytes;
  std::size_t index = 0;
  LiveCount<live_holders> counted{};
};

int export_read_only(PyObject* owner, Py_buffer* view, std::span<const std::byte> bytes, int flags) {
  // PyBuffer_FillInfo refuses a request for a writable buffer (BufferError) and
  // takes a reference to `owner`; it never writes through the pointer.
  return PyBuffer_FillInfo(view, owner,
                           const_cast<std::byte*>(bytes.data()),  // NOLINT(cppcoreguidelines-pro-type-const-cast)
                           static_cast<Py_ssize_t>(bytes.size()), 1, flags);
}

int value_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  const StoreValue& value = nb::inst_ptr<PyStoreValue>(self)->value;
  if (!value.valid()) {
    PyErr_SetString(PyExc_BufferError, "the store value was released");
    return -1;
  }
  return export_read_only(self, view, value.bytes(), flags);
}

int attachment_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  return export_read_only(self, view, nb::inst_ptr<PyStoreAttachment>(self)->bytes, flags);
}

PyType_Slot value_slots[] = {{Py_bf_getbuffer, reinterpret_cast<void*>(value_getbuffer)},  // NOLINT
                             {0, nullptr}};
PyType_Slot attachment_slots[] = {{Py_bf_getbuffer, reinterpret_cast<void*>(attachment_getbuffer)},  // NOLINT
                                  {0, nullptr}};

nb::object new_value(StoreValue&& value) {
  return nb::cast(new PyStoreValue{std::move(value)}, nb::rv_policy::take_ownership);
}

/// The Python object a stored value reads as, without the Python codec when
/// it can: bytes (a copy, as Queue.get returns), an array of a built-in numeric
/// type (a read-only view whose base is the StoreValue); else the StoreValue,
/// for the codec (other arrays, objects).
nb::object decode(StoreValue&& value) {
  if (value.kind() == MessageKind::Bytes) {
    const auto bytes = value.bytes();
    PyObject* out = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(bytes.data()),  // NOLINT
                                              static_cast<Py_ssize_t>(bytes.size()));
    if (out == nullptr) throw nb::python_error();
    return nb::steal(out);
  }
  if (value.kind() == MessageKind::Array) {
    auto view = value.array();
    if (!view) raise(view.error());
    const ArrayView elements = *view;  // points into shared memory, not into `value`
    nb::object owner = new_value(std::move(value));
    nb::object array = array_over(elements, owner);
    if (!array.is_valid()) return owner;  // an element type for the codec
    array.attr("setflags")("write"_a = false);
    return array;
  }
  return new_value(std::move(value));
}

/// (code, bits, lanes, typestr, shape, strides, data_offset, data_attachment) of
/// an array value, or None: as Message.array_layout (the codec reads either).
std::optional<std::tuple<int, int, int, std::string, std::vector<std::int64_t>, std::vector<std::int64_t>, std::int64_t,
                         std::uint32_t>>
array_layout(const PyStoreValue& self) {
  if (self.value.kind() != MessageKind::Array) return std::nullopt;
  auto view = self.value.array();
  if (!view) raise(view.error());
  const std::uint32_t source = array_data_attachment(self.value.bytes());
  const std::byte* base = self.value.bytes().data();
  if (source != 0) {
    auto data = self.value.attachment(source - 1);
    if (!data) raise(data.error());
    base = data->data();
  }
  return std::make_tuple(static_cast<int>(view->dtype.code), static_cast<int>(view->dtype.bits),
                         static_cast<int>(view->dtype.lanes), std::string(view->typestr),
                         std::vector<std::int64_t>(view->shape.begin(), view->shape.end()),
                         std::vector<std::int64_t>(view->strides.begin(), view->strides.end()),
                         static_cast<std::int64_t>(view->data - base), source);
}

/// Attaches the memory of `value` holding [address, address + nbytes) to `loan`
/// without a copy (Loan::attach(const StoreValue&, range)): (attachment index,
/// offset in it), or None when it cannot be attached (another domain, or the
/// range is not in the value's memory): the caller copies instead.
std::optional<std::tuple<std::size_t, std::uint64_t>> attach_to(const StoreValue& value, PyLoan& loan,
                                                                std::uintptr_t address, std::size_t nbytes) {
  const std::span<const std::byte> range(reinterpret_cast<const std::byte*>(address), nbytes);  // NOLINT: an address
  auto attached = loan.loan.attach(value, range);
  if (attached) return std::make_tuple(attached->index, attached->offset);
  if (attached.error().code == AttachError::NotShared || attached.error().code == AttachError::OtherDomain) {
    return std::nullopt;
  }
  raise(attached.error());
}

struct PyStore {
  Store store;

  // capacity arrives as a Python object: a float, a bool or a negative number
  // is an InvalidArgument naming the option, not a TypeError.
  PyStore(const std::string& name, std::optional<bool> create, nb::handle capacity, const std::string& domain_name) {
    check_name(name, "store");
    check_name(domain_name, "domain", /*empty_ok=*/true);
    StoreOptions options;
    options.capacity = to_size(capacity, "capacity", SIZE_MAX, Beyond::InvalidArgument);
    options.domain.name = domain_name;
    auto opened = [&] {
      nb::gil_scoped_release unlocked;
      return Store::open(name, open_mode(create), options);
    }();
    if (!opened) raise(opened.error());
    store = std::move(*opened);
  }

  /// Publishes `loan` under `key`; the loan is consumed on success. Returns the version.
  std::uint64_t publish(const std::string& key, Loan& loan, bool replace) {
    auto published = [&] {
      nb::gil_scoped_release unlocked;  // a key claimed by another process may take a while
      return store.put(key, std::move(loan), replace);
    }();
    if (!published) raise(published.error());
    return *published;
  }

  /// Publishes `obj` in one call if this path takes it (bytes, bytearray, a
  /// C-contiguous memoryview, an array of a built-in numeric type that is not
  /// in hakobu memory) and returns the version; None leaves it to the codec.
  std::optional<std::uint64_t> put_object(const std::string& key, nb::handle obj, bool replace) {
    PyObject* object = obj.ptr();
    if (PyBytes_Check(object) || PyByteArray_Check(object)) {
      return put_bytes(key, obj, static_cast<int>(MessageKind::Bytes), replace);
    }
    if (ArrayPlan plan; plan_array(obj, plan)) return put_array(key, plan, replace);
    if (PyMemoryView_Check(object) && PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(object), 'C') != 0) {
      return put_bytes(key, obj, static_cast<int>(MessageKind::Bytes), replace);
    }
    return std::nullopt;
  }

  /// One copy of the elements into a loan (without the GIL when large and contiguous), then one CAS.
  std::uint64_t put_array(const std::string& key, const ArrayPlan& plan, bool replace) {
    const std::size_t meta = array_meta_size(plan.ndim, plan.typestr.size());
    const bool large = plan.nbytes >= kReleaseGilBytes;
    auto made = [&] {
      std::optional<nb::gil_scoped_release> unlocked;
      if (large) unlocked.emplace();
      return store.loan(meta + plan.nbytes, MessageKind::Array);
    }();
    if (!made) raise(made.error());
    write_array_meta(made->bytes().first(meta), plan.dtype, plan.dims(), {}, 0, plan.typestr, plan.order);
    std::byte* elements = made->bytes().data() + meta;
    if (large && plan.contiguous) {
      nb::gil_scoped_release unlocked;
      copy_elements(plan, elements);
    } else {
      copy_elements(plan, elements);
    }
    return publish(key, *made, replace);
  }

  /// Publishes a copy of a bytes-like `data` as a value of `kind`.
  std::uint64_t put_bytes(const std::string& key, nb::handle data, int kind, bool replace) {
    Py_buffer view;
    if (PyObject_GetBuffer(data.ptr(), &view, PyBUF_SIMPLE) != 0) throw nb::python_error();
    const std::span<const std::byte> bytes(static_cast<const std::byte*>(view.buf), static_cast<std::size_t>(view.len));
    auto published = [&] {
      std::optional<nb::gil_scoped_release> unlocked;
      if (bytes.size() >= kReleaseGilBytes) unlocked.emplace();
      return store.put(key, bytes, static_cast<MessageKind>(kind), replace);
    }();
    PyBuffer_Release(&view);
    if (!published) raise(published.error());
    return *published;
  }

  std::uint64_t put_loan(const std::string& key, PyLoan& loan, bool replace) {
    if (loan.exports != 0) {
      throw PythonError(ErrorKind::InvalidArgument, "release every view of the loan before publishing it");
    }
    return publish(key, loan.loan, replace);
  }

  PyLoan* loan(nb::handle nbytes, int kind, nb::handle attachment_count) {
    const std::size_t size = to_size(nbytes, "nbytes", PTRDIFF_MAX, Beyond::TooLarge);
    const std::size_t attachments = to_size(attachment_count, "attachments", UINT32_MAX, Beyond::InvalidArgument);
    auto made = [&] {
      nb::gil_scoped_release unlocked;
      return store.loan(size, static_cast<MessageKind>(kind), attachments);
    }();
    if (!made) raise(made.error());
    return new PyLoan{std::move(*made), 0, 0};
  }

  /// A loan for an array of `shape`, its metadata written; the elements start at data_offset.
  PyLoan* loan_array(int code, int bits, int lanes, const std::string& typestr, const std::vector<std::int64_t>& shape,
                     bool fortran_order) {
    const DType dtype{static_cast<DTypeCode>(code), static_cast<std::uint8_t>(bits), static_cast<std::uint16_t>(lanes)};
    if (shape.size() > kMaxArrayDims || typestr.size() > kMaxTypestrBytes) {
      throw PythonError(ErrorKind::InvalidArgument, "arrays have at most " + std::to_string(kMaxArrayDims) +
                                                        " dimensions and a type string of at most " +
                                                        std::to_string(kMaxTypestrBytes) + " bytes");
    }
    auto elements = contiguous_bytes(dtype, shape);
    if (!elements) raise(elements.error());
    const std::size_t meta = array_meta_size(shape.size(), typestr.size());
    auto made = [&] {
      nb::gil_scoped_release unlocked;
      return store.loan(meta + *elements, MessageKind::Array);
    }();
    if (!made) raise(made.error());
    write_array_meta(made->bytes().first(meta), dtype, shape, {}, 0, typestr, fortran_order ? Order::F : Order::C);
    return new PyLoan{std::move(*made), meta, 0};
  }

  /// A loan for an array whose elements are another block (attach it as attachment 0).
  PyLoan* loan_array_ref(int code, int bits, int lanes, const std::string& typestr,
                         const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
                         std::int64_t byte_offset) {
    const DType dtype{static_cast<DTypeCode>(code), static_cast<std::uint8_t>(bits), static_cast<std::uint16_t>(lanes)};
    if (shape.size() > kMaxArrayDims || strides.size() != shape.size() || typestr.size() > kMaxTypestrBytes) {
      throw PythonError(ErrorKind::InvalidArgument,
                        "shape and strides must have the same length, at most " + std::to_string(kMaxArrayDims));
    }
    const std::size_t meta = array_meta_size(shape.size(), typestr.size());
    auto made = store.loan(meta, MessageKind::Array, 1);
    if (!made) raise(made.error());
    write_array_meta(made->bytes(), dtype, shape, strides, byte_offset, typestr, Order::C, 1);
    return new PyLoan{std::move(*made), 0, 0};
  }

  [[nodiscard]] nb::object get_object(const std::string& key) const {
    auto got = store.get(key);
    if (!got) raise(got.error());
    return decode(std::move(*got));
  }

  /// As get_object, once the key has a value (waiting at most `timeout` seconds; None: no limit).
  [[nodiscard]] nb::object wait_object(const std::string& key, std::optional<double> timeout) const {
    auto got = wait_interruptibly(timeout, StoreWaitError::Timeout, StoreWaitError::Timeout,
                                  [&](auto slice) { return store.wait_for(key, slice); });
    if (!got) raise(got.error());
    return decode(std::move(*got));
  }

  /// The StoreValue of `key` (never decoded).
  [[nodiscard]] PyStoreValue* value(const std::string& key) const {
    auto got = store.get(key);
    if (!got) raise(got.error());
    return new PyStoreValue{std::move(*got)};
  }

  [[nodiscard]] bool contains(const std::string& key) const {
    auto got = store.get(key);
    if (got) return true;
    if (got.error().code == StoreGetError::NotFound) return false;
    raise(got.error());
  }

  void erase(const std::string& key) {
    auto erased = store.erase(key);
    if (!erased) raise(erased.error());
  }

  void unlink() {
    auto removed = store.unlink();
    if (!removed) raise(removed.error());
  }
};

}  // namespace

void bind_store(nb::module_& m) {
  nb::class_<PyStoreValue>(m, "StoreValue", nb::type_slots(value_slots),
                           "One version of a stored value; its bytes are shared memory, exported read-only")
      .def_prop_ro("kind", [](const PyStoreValue& self) { return static_cast<int>(self.value.kind()); })
      .def_prop_ro("nbytes", [](const PyStoreValue& self) { return self.value.size(); })
      .def_prop_ro("version", [](const PyStoreValue& self) { return self.value.version(); })
      .def_prop_ro(
          "record_offset", [](const PyStoreValue& self) { return self.value.record_offset(); },
          "Heap offset of the version's record (tells versions apart)")
      .def("array_layout", &array_layout,
           "(code, bits, lanes, typestr, shape, strides, data_offset, data_attachment) of an array value, else None")
      .def_prop_ro("attachment_count", [](const PyStoreValue& self) { return self.value.attachment_count(); })
      .def(
          "attachment",
          [](nb::handle self, std::size_t index) {
            auto bytes = nb::cast<PyStoreValue&>(self).value.attachment(index);
            if (!bytes) raise(bytes.error());
            return new PyStoreAttachment{nb::borrow(self), *bytes, index};
          },
          nb::rv_policy::take_ownership, "index"_a, "Attachment `index` of the value (read-only shared memory)")
      .def(
          "attach_to",
          [](const PyStoreValue& self, PyLoan& loan, std::uintptr_t address, std::size_t nbytes) {
            return attach_to(self.value, loan, address, nbytes);
          },
          "loan"_a, "address"_a, "nbytes"_a,
          "Attaches the block of the value's memory holding [address, address + nbytes) to `loan`, without a "
          "copy: (attachment index, offset in it), or None (another domain, or not the value's memory)");

  nb::class_<PyStoreAttachment>(m, "StoreAttachment", nb::type_slots(attachment_slots),
                                "Shared memory a stored value holds, exported read-only")
      .def_prop_ro("nbytes", [](const PyStoreAttachment& self) { return self.bytes.size(); })
      .def_prop_ro("index", [](const PyStoreAttachment& self) { return self.index; })
      .def(
          "attach_to",
          [](const PyStoreAttachment& self, PyLoan& loan, std::uintptr_t address, std::size_t nbytes) {
            return attach_to(nb::cast<const PyStoreValue&>(self.value).value, loan, address, nbytes);
          },
          "loan"_a, "address"_a, "nbytes"_a, "As StoreValue.attach_to (the value this attachment belongs to)");

  // Arrays over store values are sent by reference (the Python codec attaches their memory).
  add_shared_owner_type(nb::type<PyStoreValue>());
  add_shared_owner_type(nb::type<PyStoreAttachment>());

  nb::class_<PyStore>(m, "Store", "A named store of immutable values (use hakobu.Store)")
      .def(nb::init<const std::string&, std::optional<bool>, nb::handle, const std::string&>(), "name"_a,
           "create"_a.none(), "capacity"_a.none(), "domain"_a,
           "capacity: an int (anything else is an InvalidArgument); create: None, True or False")
      .def("put_object", &PyStore::put_object, "key"_a, "obj"_a.none(), "replace"_a,
           "Publishes bytes or an array of a built-in numeric type in one call and returns the version; None "
           "when the Python codec must encode `obj`")
      .def("put_bytes", &PyStore::put_bytes, "key"_a, "data"_a, "kind"_a, "replace"_a)
      .def("put_loan", &PyStore::put_loan, "key"_a, "loan"_a, "replace"_a,
           "Publishes a loan without a copy (it is consumed); returns the version")
      .def("loan", &PyStore::loan, nb::rv_policy::take_ownership, "nbytes"_a.none(), "kind"_a, "attachments"_a.none(),
           "Shared memory for a value of `nbytes` with room for `attachments`")
      .def("loan_array", &PyStore::loan_array, nb::rv_policy::take_ownership, "code"_a, "bits"_a, "lanes"_a,
           "typestr"_a, "shape"_a, "fortran_order"_a)
      .def("loan_array_ref", &PyStore::loan_array_ref, nb::rv_policy::take_ownership, "code"_a, "bits"_a, "lanes"_a,
           "typestr"_a, "shape"_a, "strides"_a, "byte_offset"_a)
      .def("get_object", &PyStore::get_object, "key"_a,
           "The value of `key`: bytes, a read-only array, or the StoreValue for the Python codec")
      .def("wait_object", &PyStore::wait_object, "key"_a, "timeout"_a.none(),
           "As get_object, once the key has a value (at most `timeout` seconds; None: no limit)")
      .def("value", &PyStore::value, nb::rv_policy::take_ownership, "key"_a, "The StoreValue of `key`, not decoded")
      .def("contains", &PyStore::contains, "key"_a)
      .def("erase", &PyStore::erase, "key"_a)
      .def(
          "keys", [](const PyStore& self) { return self.store.keys(); }, "The keys that have a value (a snapshot)")
      .def_prop_ro("capacity", [](const PyStore& self) { return self.store.capacity(); })
      .def_prop_ro("name", [](const PyStore& self) { return self.store.name(); })
      .def_prop_ro("is_open", [](const PyStore& self) { return self.store.valid(); })
      .def("close", [](PyStore& self) { self.store.close(); })
      .def("unlink", &PyStore::unlink);
}

}  // namespace hakobu::python
