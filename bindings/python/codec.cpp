// hakobu._core — NumPy arrays encoded and decoded in the extension (see codec.hpp).
//
// This is the only file that uses NumPy's C API: its function table
// (PyArray_API) is static to this translation unit and imported once by
// import_numpy().
#include "codec.hpp"

#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#include <numpy/arrayobject.h>

#include <cstring>
#include <stdexcept>
#include <string_view>

#include "objects.hpp"

namespace nb = nanobind;

namespace hakobu::python {
namespace {

/// A built-in numeric element type and how it travels.
struct DTypeEntry {
  PyArray_Descr* descr = nullptr;  ///< np.dtype(typestr): what a receiver builds (a singleton, never freed)
  DType dtype;
  std::size_t itemsize = 0;
  char typestr[8]{};  ///< dtype.str, e.g. "<f8", "|b1"
  std::size_t typestr_size = 0;
  [[nodiscard]] std::string_view type() const noexcept { return {typestr, typestr_size}; }
};

/// The table, by NumPy type number (the legacy built-in numbers are small).
constexpr int kTableSize = 32;
static_assert(NPY_HALF < kTableSize && NPY_CLONGDOUBLE < kTableSize && NPY_ULONGLONG < kTableSize,
              "the built-in numeric type numbers index the table");

struct DTypeTable {
  std::array<DTypeEntry, kTableSize> by_number{};
  std::array<bool, kTableSize> present{};
};

DTypeTable& table() noexcept {
  static DTypeTable instance;
  return instance;
}

// What python/hakobu/_codec.py dtype_fields() says for a native numeric type:
// (code, itemsize*8, 1), or (UInt, 8, itemsize) when the bits do not fit DLPack's u8.
DType fields_of(char kind, std::size_t itemsize) {
  DTypeCode code = DTypeCode::UInt;
  switch (kind) {
    case 'i': code = DTypeCode::Int; break;
    case 'u': code = DTypeCode::UInt; break;
    case 'f': code = DTypeCode::Float; break;
    case 'c': code = DTypeCode::Complex; break;
    case 'b': code = DTypeCode::Bool; break;
    default: break;
  }
  if (itemsize * 8 <= 255) return {code, static_cast<std::uint8_t>(itemsize * 8), 1};
  return {DTypeCode::UInt, 8, static_cast<std::uint16_t>(itemsize)};
}

void build_table() {
  static constexpr int kNumbers[] = {NPY_BOOL,      NPY_BYTE,    NPY_UBYTE,      NPY_SHORT,  NPY_USHORT,
                                     NPY_INT,       NPY_UINT,    NPY_LONG,       NPY_ULONG,  NPY_LONGLONG,
                                     NPY_ULONGLONG, NPY_HALF,    NPY_FLOAT,      NPY_DOUBLE, NPY_LONGDOUBLE,
                                     NPY_CFLOAT,    NPY_CDOUBLE, NPY_CLONGDOUBLE};
  DTypeTable& t = table();
  for (const int number : kNumbers) {
    PyArray_Descr* builtin = PyArray_DescrFromType(number);
    if (builtin == nullptr) throw nb::python_error();
    nb::object descr = nb::steal(reinterpret_cast<PyObject*>(builtin));  // NOLINT: NumPy's object layout
    nb::object text = descr.attr("str");
    Py_ssize_t length = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(text.ptr(), &length);
    if (utf8 == nullptr) throw nb::python_error();
    const std::string_view typestr(utf8, static_cast<std::size_t>(length));
    DTypeEntry entry;
    if (typestr.size() >= sizeof entry.typestr) continue;  // never for built-in types
    // The receiver's dtype is np.dtype(typestr), exactly as the Python codec builds it.
    PyArray_Descr* received = nullptr;
    if (PyArray_DescrConverter(text.ptr(), &received) == NPY_FAIL) throw nb::python_error();
    entry.descr = received;  // kept for the process's life
    entry.itemsize = static_cast<std::size_t>(PyDataType_ELSIZE(builtin));
    entry.dtype = fields_of(builtin->kind, entry.itemsize);
    std::memcpy(entry.typestr, typestr.data(), typestr.size());
    entry.typestr_size = typestr.size();
    t.by_number[number] = entry;
    t.present[number] = true;
  }
}

const DTypeEntry* entry_for_number(int number) noexcept {
  if (number < 0 || number >= kTableSize || !table().present[number]) return nullptr;
  return &table().by_number[number];
}

// The entry a received message names: by type string, or, from a C++ producer
// that sent none, by its DLPack triple (one lane only, as the Python codec).
bool names(const DTypeEntry& entry, const ArrayView& view) noexcept {
  return view.typestr.empty() ? (entry.dtype.lanes == 1 && entry.dtype == view.dtype) : entry.type() == view.typestr;
}

const DTypeEntry* entry_for_message(const ArrayView& view) noexcept {
  // Streams mostly carry one type: the last match is tried first (the GIL guards it).
  static const DTypeEntry* last = nullptr;
  if (last != nullptr && names(*last, view)) return last;
  const DTypeTable& t = table();
  for (int number = 0; number < kTableSize; ++number) {
    if (!t.present[number]) continue;
    const DTypeEntry& entry = t.by_number[number];
    if (names(entry, view)) {
      last = &entry;
      return &entry;
    }
  }
  return nullptr;
}

// The types add_shared_owner_type registered (set at module init, read with the GIL).
std::array<PyObject*, kMaxSharedOwnerTypes> shared_owner_types{};

// True when `array` is a view of hakobu shared memory (a Loan, an Attachment,
// a Message in a shared block, or a registered owner such as a store value):
// the Python codec sends it by reference.
// A Message received inline lives in this process's memory: copied like any array.
bool in_hakobu_memory(PyObject* array) {
  PyObject* base = array;
  while (PyArray_Check(base)) {
    PyObject* next = PyArray_BASE(reinterpret_cast<PyArrayObject*>(base));  // NOLINT: NumPy's object layout
    if (next == nullptr) return false;
    base = next;
  }
  if (PyMemoryView_Check(base)) {
    base = PyMemoryView_GET_BUFFER(base)->obj;
    if (base == nullptr) return false;
  }
  if (nb::isinstance<PyMessage>(base)) return nb::inst_ptr<PyMessage>(base)->sample.in_shared_memory();
  if (nb::isinstance<PyLoan>(base) || nb::isinstance<PyAttachment>(base)) return true;
  for (PyObject* type : shared_owner_types) {
    if (type != nullptr && reinterpret_cast<PyObject*>(Py_TYPE(base)) == type) return true;  // NOLINT
  }
  return false;
}

}  // namespace

void import_numpy() {
  if (PyArray_ImportNumPyAPI() < 0) throw nb::python_error();
  build_table();
}

void add_shared_owner_type(nb::handle type) {
  for (PyObject*& slot : shared_owner_types) {
    if (slot == nullptr || slot == type.ptr()) {
      slot = type.inc_ref().ptr();  // bound types live as long as the module
      return;
    }
  }
  throw std::logic_error("add_shared_owner_type: more types than kMaxSharedOwnerTypes");
}

bool is_ndarray(nb::handle obj) noexcept {
  return PyArray_Check(obj.ptr());
}

bool plan_array(nb::handle obj, ArrayPlan& plan) {
  PyObject* object = obj.ptr();
  if (!PyArray_Check(object)) return false;
  auto* array = reinterpret_cast<PyArrayObject*>(object);  // NOLINT: NumPy's object layout
  const DTypeEntry* entry = entry_for_number(PyArray_DESCR(array)->type_num);
  if (entry == nullptr || !PyArray_ISNOTSWAPPED(array)) return false;
  const int ndim = PyArray_NDIM(array);
  if (ndim < 0 || static_cast<std::size_t>(ndim) > kMaxArrayDims) return false;
  if (in_hakobu_memory(object)) return false;
  plan.array = object;
  plan.dtype = entry->dtype;
  plan.typestr = entry->type();
  plan.ndim = static_cast<std::size_t>(ndim);
  const npy_intp* dims = PyArray_DIMS(array);
  for (std::size_t k = 0; k < plan.ndim; ++k) plan.shape[k] = dims[k];
  // As the Python codec: Fortran order only for arrays that are not also C-contiguous.
  plan.contiguous = true;
  if (PyArray_IS_C_CONTIGUOUS(array)) {
    plan.order = Order::C;
  } else if (PyArray_IS_F_CONTIGUOUS(array)) {
    plan.order = Order::F;
  } else {
    plan.order = Order::C;
    plan.contiguous = false;
  }
  plan.nbytes = static_cast<std::size_t>(PyArray_NBYTES(array));
  plan.source = plan.contiguous ? PyArray_DATA(array) : nullptr;
  return true;
}

void copy_elements(const ArrayPlan& plan, std::byte* out) {
  auto* source = reinterpret_cast<PyArrayObject*>(plan.array);  // NOLINT: NumPy's object layout
  if (plan.contiguous) {
    if (plan.nbytes > 0) std::memcpy(out, PyArray_DATA(source), plan.nbytes);
    return;
  }
  // Any other layout: NumPy gathers the elements into a C-ordered array over `out`.
  std::array<npy_intp, kMaxArrayDims> dims;  // the first ndim are set (not cleared: per message)
  for (std::size_t k = 0; k < plan.ndim; ++k) dims[k] = static_cast<npy_intp>(plan.shape[k]);
  PyArray_Descr* descr = PyArray_DESCR(source);
  Py_INCREF(descr);  // stolen by PyArray_NewFromDescr
  nb::object target = nb::steal(PyArray_NewFromDescr(&PyArray_Type, descr, static_cast<int>(plan.ndim), dims.data(),
                                                     nullptr, out, NPY_ARRAY_CARRAY, nullptr));
  if (!target.is_valid()) throw nb::python_error();
  if (PyArray_CopyInto(reinterpret_cast<PyArrayObject*>(target.ptr()), source) < 0) {  // NOLINT
    throw nb::python_error();
  }
}

nb::object array_over(const ArrayView& view, nb::handle owner, bool writable) {
  const DTypeEntry* entry = entry_for_message(view);
  if (entry == nullptr || entry->itemsize != view.dtype.itemsize()) return {};
  std::array<npy_intp, kMaxArrayDims> dims;  // the first ndim of each are set (not cleared: per message)
  std::array<npy_intp, kMaxArrayDims> strides;
  const std::size_t ndim = view.ndim();
  for (std::size_t k = 0; k < ndim; ++k) {
    dims[k] = static_cast<npy_intp>(view.shape[k]);
    strides[k] = static_cast<npy_intp>(view.strides[k]);
  }
  Py_INCREF(entry->descr);  // stolen by PyArray_NewFromDescr
  // NumPy works out the contiguity and alignment flags from the strides and the address.
  nb::object array =
      nb::steal(PyArray_NewFromDescr(&PyArray_Type, entry->descr, static_cast<int>(ndim), dims.data(), strides.data(),
                                     view.data, writable ? NPY_ARRAY_WRITEABLE : 0, nullptr));
  if (!array.is_valid()) throw nb::python_error();
  // The array keeps its owner (and so the message) alive; SetBaseObject steals the reference.
  if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(array.ptr()), owner.inc_ref().ptr()) < 0) {  // NOLINT
    throw nb::python_error();
  }
  return array;
}

nb::object array_copy(const ArrayView& view, bool writable) {
  const DTypeEntry* entry = entry_for_message(view);
  if (entry == nullptr || entry->itemsize != view.dtype.itemsize()) return {};
  const bool c_order = view.is_c_contiguous();
  if (!c_order && !view.is_f_contiguous()) return {};
  std::array<npy_intp, kMaxArrayDims> dims;  // the first ndim are set (not cleared: per message)
  const std::size_t ndim = view.ndim();
  for (std::size_t k = 0; k < ndim; ++k) dims[k] = static_cast<npy_intp>(view.shape[k]);
  Py_INCREF(entry->descr);  // stolen by PyArray_NewFromDescr
  nb::object array = nb::steal(PyArray_NewFromDescr(&PyArray_Type, entry->descr, static_cast<int>(ndim), dims.data(),
                                                    nullptr, nullptr, c_order ? 0 : NPY_ARRAY_F_CONTIGUOUS, nullptr));
  if (!array.is_valid()) throw nb::python_error();
  // The view was bounds-checked against the message: size * itemsize bytes lie inside it.
  const auto nbytes = static_cast<std::size_t>(view.size()) * entry->itemsize;
  if (nbytes > 0)
    std::memcpy(PyArray_DATA(reinterpret_cast<PyArrayObject*>(array.ptr())), view.data, nbytes);          // NOLINT
  if (!writable) PyArray_CLEARFLAGS(reinterpret_cast<PyArrayObject*>(array.ptr()), NPY_ARRAY_WRITEABLE);  // NOLINT
  return array;
}

}  // namespace hakobu::python
