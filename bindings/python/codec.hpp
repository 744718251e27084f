// hakobu._core — NumPy arrays encoded and decoded in the extension, so that a
// put or a get of an array is one call from Python.
//
// The wire format is the one of python/hakobu/_codec.py and array.hpp: DLPack
// (code, bits, lanes) plus NumPy's type string (`dtype.str`). Only the
// built-in numeric types in native byte order (bool, integers, floats incl.
// float16 and long double, complex) take this path; their descriptors are
// singletons, looked up in a table built once. Everything else (structured,
// datetime, strings, non-native byte order, object arrays) and arrays that
// already live in hakobu memory (sent by reference) stay with the Python codec.
#pragma once

#include <nanobind/nanobind.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "hakobu/array.hpp"

namespace hakobu::python {

/// Imports NumPy's C API (once, from the module's init); raises on failure.
void import_numpy();

/// How the one-call path sends an ndarray.
struct ArrayPlan {
  PyObject* array = nullptr;  ///< the ndarray (borrowed from the caller)
  DType dtype;
  std::string_view typestr;  ///< NumPy's `dtype.str`, in static storage
  std::size_t ndim = 0;
  std::array<std::int64_t, kMaxArrayDims> shape;  ///< the first `ndim` are set (not cleared: this is per message)
  Order order = Order::C;
  bool contiguous = true;  ///< contiguous in `order`; else the elements are gathered
  std::size_t nbytes = 0;
  const void* source = nullptr;  ///< the elements' address when contiguous (what one memcpy copies)
  [[nodiscard]] std::span<const std::int64_t> dims() const noexcept { return {shape.data(), ndim}; }
};

/// Registers a type whose instances export hakobu shared memory read-only
/// (StoreValue, StoreAttachment): arrays over them, like arrays over a Loan or
/// Message, are left to the Python codec, which sends them by reference. Called
/// at module init (at most kMaxSharedOwnerTypes types).
void add_shared_owner_type(nanobind::handle type);
inline constexpr std::size_t kMaxSharedOwnerTypes = 4;

/// True for NumPy arrays (and subclasses).
bool is_ndarray(nanobind::handle obj) noexcept;

/// Fills `plan` to send `obj`; false when the Python codec takes it (not an
/// ndarray, an element type outside the table, or an array in hakobu shared
/// memory, which is sent by reference).
bool plan_array(nanobind::handle obj, ArrayPlan& plan);

/// Copies the elements to `out` (plan.nbytes bytes laid out in plan.order).
/// A contiguous source is one memcpy (callable without the GIL); any other
/// layout is gathered by NumPy (needs the GIL).
void copy_elements(const ArrayPlan& plan, std::byte* out);

/// An ndarray over `view` whose base is `owner` (which keeps the memory
/// alive), writable unless `writable` is false (a topic's messages, shared by
/// every subscriber), or an invalid object when the element type is not in the
/// table or does not match the element size (the Python codec decodes those,
/// and reports what is wrong).
nanobind::object array_over(const ArrayView& view, nanobind::handle owner, bool writable = true);

/// A new ndarray holding a copy of the elements of `view` (same shape, C or
/// Fortran order as the view), writable unless `writable` is false (so that a
/// topic's small messages read as its large ones do), or an invalid object
/// when the element type is not in the table or the view is not contiguous.
/// For small messages received inline: their bytes are already a private
/// copy, and an array owning its elements costs less than a view kept alive
/// by a Message.
nanobind::object array_copy(const ArrayView& view, bool writable = true);

}  // namespace hakobu::python
