"""Arrays that live in hakobu's shared memory.

An array made here (or received from a queue, or any view of either) is sent
without a copy: the message carries a reference to its memory, which stays
alive until every holder in every process lets go. Sender and receivers then
share the memory; writes by one are seen by the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, Optional, Union, cast

import numpy as np

from . import _checks, _core, _errors

ShapeLike = Union[int, Sequence[int]]
# Store values are shared memory too, read-only: the codec sends views of them by
# reference (a counted reference to the version travels with the message).
STORE_OWNERS = (_core.StoreValue, _core.StoreAttachment)
_OWNERS = (_core.Loan, _core.Message, _core.Attachment, *STORE_OWNERS)


def _shape(shape: object) -> tuple[int, ...]:
    """``shape`` (an int or a sequence of ints) as a tuple; InvalidArgument for floats, bools,
    negative numbers and anything else."""
    if isinstance(shape, Iterable) and not isinstance(shape, (str, bytes)):
        return tuple(_checks.count(n, f"dimension {k} of the shape") for k, n in enumerate(shape))
    return (_checks.count(shape, "the shape"),)


def empty(
    shape: ShapeLike, dtype: Any = float, order: str = "C", *, domain: Optional[str] = None
) -> np.ndarray:
    """Like ``numpy.empty``, in shared memory: sending it costs no copy.

    Raises InvalidArgument for a shape that is not ints (or has negative ones)
    and TooLarge for one whose size no memory can hold.
    """
    shape_tuple = _shape(shape)
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise TypeError("arrays of Python objects cannot live in shared memory")
    if order not in ("C", "F"):
        raise _errors.InvalidArgument(f"order must be 'C' or 'F', got {order!r}")
    nbytes = _checks.byte_size(shape_tuple, dtype.itemsize)
    buffer = _core.allocate(max(nbytes, 1), _checks.domain(domain))
    layout = cast(Literal["C", "F"], order)
    return np.ndarray(shape_tuple, dtype, buffer=memoryview(buffer), order=layout)


def zeros(
    shape: ShapeLike, dtype: Any = float, order: str = "C", *, domain: Optional[str] = None
) -> np.ndarray:
    """Like ``numpy.zeros``, in shared memory (recycled memory is cleared)."""
    array = empty(shape, dtype, order, domain=domain)
    np.frombuffer(owner_of(array), dtype=np.uint8).fill(0)  # type: ignore[arg-type]
    return array


def full(
    shape: ShapeLike, fill_value: Any, dtype: Any = None, order: str = "C", *, domain: Optional[str] = None
) -> np.ndarray:
    """Like ``numpy.full``, in shared memory."""
    array = empty(shape, np.array(fill_value).dtype if dtype is None else dtype, order, domain=domain)
    array.fill(fill_value)
    return array


def array(obj: Any, dtype: Any = None, order: str = "K", *, domain: Optional[str] = None) -> np.ndarray:
    """Like ``numpy.array``: a copy of ``obj`` in shared memory."""
    source = np.asarray(obj, dtype=dtype)
    layout = order
    if order in ("K", "A"):
        layout = "F" if source.flags.f_contiguous and not source.flags.c_contiguous else "C"
    result = empty(source.shape, source.dtype, layout, domain=domain)
    np.copyto(result, source, casting="no")
    return result


def empty_like(prototype: np.ndarray, dtype: Any = None, *, domain: Optional[str] = None) -> np.ndarray:
    """Like ``numpy.empty_like`` (C or Fortran order as the prototype), in shared memory."""
    order = "F" if prototype.flags.f_contiguous and not prototype.flags.c_contiguous else "C"
    return empty(prototype.shape, prototype.dtype if dtype is None else dtype, order, domain=domain)


def zeros_like(prototype: np.ndarray, dtype: Any = None, *, domain: Optional[str] = None) -> np.ndarray:
    """Like ``numpy.zeros_like``, in shared memory."""
    order = "F" if prototype.flags.f_contiguous and not prototype.flags.c_contiguous else "C"
    return zeros(prototype.shape, prototype.dtype if dtype is None else dtype, order, domain=domain)


def owner_of(array: np.ndarray) -> Optional[Any]:
    """The hakobu shared memory ``array`` is a view of (a Loan, a received Message or
    Attachment, a store value's StoreValue or StoreAttachment), or None."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if isinstance(base, _core.Message) and not base.in_shared_memory:
        return None  # a small message received inline: a copy in this process's memory
    return base if isinstance(base, _OWNERS) else None


def is_shared(array: np.ndarray) -> bool:
    """True when ``array`` lives in hakobu shared memory (it is sent without a copy),
    including a value read from a hakobu.Store and any view of one."""
    return owner_of(array) is not None
