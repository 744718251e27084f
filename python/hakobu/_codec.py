"""How Python objects become hakobu messages and back.

Wire formats (the message kind travels in the queue slot):

* kind 1, raw bytes: ``bytes``, ``bytearray`` and ``memoryview`` are sent as
  they are, so C++ programs read them directly; they are received as ``bytes``.
* kind 2, array: array metadata (element type as DLPack code/bits/lanes plus
  the NumPy type string, shape, strides) followed by the elements, 64-byte
  aligned; or, for an array that already lives in hakobu memory (made with
  hakobu.empty & co., or received), the metadata and a reference to that
  memory (an attachment): no copy. Received arrays are writable
  ``numpy.ndarray`` views of shared memory; the memory returns to the heap when
  the last view is gone.
* kind 3, object: a pickle (protocol 5) of anything else; cloudpickle is used
  for what plain pickle cannot handle (lambdas, locally defined functions).
  Large buffers inside the object (the arrays in a dict, a list, a dataclass,
  a DataFrame) are not pickled: they travel as attachments, without a copy
  when they already live in hakobu memory and with one copy into shared
  memory otherwise, and the receiver's arrays are views of them. Payload:
  ``b"HKP1"``, a u32 count N, N entries of (u32 attachment, u64 offset,
  u64 length) little-endian, then the pickle stream. The attachment's top
  bit (READ_ONLY) marks shared memory that must not be written: a value of a
  hakobu.Store (immutable, shared by every reader) or a read-only view of
  hakobu memory; the receiver gets a read-only buffer, so read-only arrays.

Store values travel by reference. An array read from a hakobu.Store (or any
view of one) is never copied: the message takes its own counted reference to
the block of the version's memory that holds it (``StoreValue.attach_to``,
C++ ``Loan::attach(const StoreValue&, range)``), so the receiver sees exactly
the version that was sent, whatever is published, deleted or unlinked in the
store meanwhile, and the memory stays until the receiver's last view is gone.
Such an array goes as an object message (the pickle of a contiguous array
names its elements as one out-of-band buffer), so the READ_ONLY mark reaches
the receiver, whose array is not writeable; ``hakobu.Pool`` task arguments
travel the same way.

Unpickling runs code named by the stream, so a peer that can write the domain
can run code in a reader. A queue opened with ``allow_pickle=False`` decodes
object messages with a restricted unpickler (_PlainUnpickler) that builds only
plain built-in types and raises UnpicklingRefused for anything else.
"""

from __future__ import annotations

import ast
import builtins
import io
import pickle
import struct
from collections.abc import Iterator
from typing import Any, Optional, Union

import cloudpickle
import numpy as np

from . import _arrays, _core, _errors

KIND_BYTES = 1
KIND_ARRAY = 2
KIND_OBJECT = 3

# Buffers inside pickled objects smaller than this stay in the pickle stream:
# an attachment costs a block and bookkeeping that small copies do not. The
# extension, which pickles objects without large buffers itself, decides with it.
OUT_OF_BAND_MIN_BYTES: int = _core.OUT_OF_BAND_MIN_BYTES
_OBJECT_MAGIC = b"HKP1"
_OBJECT_HEADER = struct.Struct("<4sI")
_OBJECT_ENTRY = struct.Struct("<IQQ")
# The top bit of an entry's attachment: the buffer is received read-only (see above).
READ_ONLY = 1 << 31

# NumPy kind -> DLPack type code, for native-order numeric types.
_DLPACK_CODES = {"i": 0, "u": 1, "f": 2, "c": 5, "b": 6}
_DLPACK_UINT = 1
_STRUCTURED_PREFIX = "descr:"

# What messages are sent on: a queue's core or a topic's (the same sending methods).
Channel = Union[_core.Queue, _core.Topic]


def dtype_fields(dtype: np.dtype) -> tuple[int, int, int, str]:
    """(code, bits, lanes, typestr) describing ``dtype`` in an array message.

    Types DLPack has no code for (datetimes, strings, structured, non-native
    byte order) travel as ``lanes`` bytes per element; their type string says
    what they are.
    """
    if dtype.fields is not None or dtype.subdtype is not None:
        typestr = _STRUCTURED_PREFIX + repr(dtype.descr)
    else:
        typestr = dtype.str
    code = _DLPACK_CODES.get(dtype.kind)
    native = dtype.isnative or dtype.itemsize == 1
    if code is not None and native and dtype.fields is None and dtype.itemsize * 8 <= 255:
        return code, dtype.itemsize * 8, 1, typestr
    if dtype.itemsize > 0xFFFF:
        raise _errors.InvalidArgument(
            f"elements of {dtype.itemsize} bytes are too large for an array message"
        )
    return _DLPACK_UINT, 8, max(dtype.itemsize, 1), typestr


def dtype_from_fields(code: int, bits: int, lanes: int, typestr: str) -> np.dtype:
    """The NumPy dtype of an array message (inverse of dtype_fields)."""
    try:
        if typestr.startswith(_STRUCTURED_PREFIX):
            descr: Any = ast.literal_eval(typestr[len(_STRUCTURED_PREFIX) :])
            structured: np.dtype[Any] = np.dtype(descr)
            return structured
        if typestr:
            return np.dtype(typestr)
    except (ValueError, TypeError, SyntaxError) as error:
        raise _errors.Corrupt(f"array message with an unreadable type {typestr!r}: {error}") from None
    # From a C++ producer: the DLPack triple alone.
    names = {0: "int", 1: "uint", 2: "float", 5: "complex"}
    if lanes == 1 and code == 6 and bits == 8:
        return np.dtype(bool)
    if lanes == 1 and code in names:
        try:
            return np.dtype(f"{names[code]}{bits}")
        except TypeError:
            pass
    if code == _DLPACK_UINT and bits == 8:
        return np.dtype(f"V{lanes}") if lanes > 1 else np.dtype(np.uint8)
    raise _errors.InvalidArgument(
        f"array element type (code={code}, bits={bits}, lanes={lanes}) has no NumPy dtype"
    )


def put_object(queue: Channel, obj: Any, timeout: Optional[float]) -> None:
    """Sends ``obj`` on ``queue`` (or publishes it on a topic) in the format that fits it.

    The extension sends bytes, arrays of the built-in numeric types and
    objects whose pickle (plain pickle, protocol 5) has no buffer of
    OUT_OF_BAND_MIN_BYTES or more itself (``queue.put_object``, one call); the
    rest is encoded here: other arrays, large buffers out of band, cloudpickle.
    """
    if queue.put_object(obj, timeout):
        return
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        _put_array(queue, obj, timeout)
    elif isinstance(obj, (bytes, bytearray)):
        queue.put_bytes(obj, KIND_BYTES, timeout)
    elif isinstance(obj, memoryview):
        queue.put_bytes(obj if obj.contiguous else obj.tobytes(), KIND_BYTES, timeout)
    else:
        _put_pickled(queue, obj, timeout)


def _put_array(queue: Channel, array: np.ndarray, timeout: Optional[float]) -> None:
    code, bits, lanes, typestr = dtype_fields(array.dtype)
    owner = _arrays.owner_of(array)
    if isinstance(queue, (_core.Queue, _core.Topic)) and _by_reference_read_only(array, owner):
        _put_pickled(queue, array, timeout)
        return
    # Other views of a store value (small, not contiguous) and arrays published to a
    # store (an array value C++ readers can read) are copied.
    if owner is not None and not isinstance(owner, _arrays.STORE_OWNERS) and array.size > 0:
        loan = _loan_by_reference(queue, array, owner, (code, bits, lanes, typestr))
        if loan is not None:
            queue.put_loan(loan, timeout)
            return
    fortran = bool(array.flags.f_contiguous and not array.flags.c_contiguous)
    loan = queue.loan_array(code, bits, lanes, typestr, list(array.shape), fortran)
    # One copy, straight into shared memory, whatever the source's strides.
    target = np.ndarray(
        array.shape,
        array.dtype,
        buffer=memoryview(loan),
        offset=loan.data_offset,
        order="F" if fortran else "C",
    )
    np.copyto(target, array, casting="no")
    del target
    queue.put_loan(loan, timeout)


def _by_reference_read_only(array: np.ndarray, owner: Any) -> bool:
    """True for an array that must reach the receiver by reference and read-only: a view of
    a store value, or a read-only view of other hakobu memory, contiguous and large enough
    for its pickle to carry its elements out of band (else it is copied as any array)."""
    if owner is None or array.nbytes < OUT_OF_BAND_MIN_BYTES:
        return False
    if not isinstance(owner, _arrays.STORE_OWNERS) and array.flags.writeable:
        return False
    return bool(array.flags.c_contiguous or array.flags.f_contiguous)


def _loan_by_reference(
    queue: Channel, array: np.ndarray, owner: Any, fields: tuple[int, int, int, str]
) -> Optional[_core.Loan]:
    """A message referring to ``array``'s memory in ``owner``, or None to copy instead."""
    start = array.__array_interface__["data"][0] - owner.address
    extents = [(n - 1) * s for n, s in zip(array.shape, array.strides)]
    low = start + sum(e for e in extents if e < 0)
    high = start + sum(e for e in extents if e > 0) + array.itemsize
    if low < 0 or high > owner.nbytes:
        return None  # not inside that memory after all (e.g. a strange as_strided view)
    code, bits, lanes, typestr = fields
    loan = queue.loan_array_ref(code, bits, lanes, typestr, list(array.shape), list(array.strides), start)
    return loan if loan.attach(owner) else None  # another domain: copy


def _put_pickled(queue: Channel, obj: Any, timeout: Optional[float]) -> None:
    large: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: let pickle copy it in-band
            return True
        if view.nbytes < OUT_OF_BAND_MIN_BYTES:
            return True
        large.append(view)
        return False

    stream = _dumps(obj, out_of_band)
    if not large:
        queue.put_pickle(stream, timeout)  # header and stream written in one call
        return
    sources = [_shared_source(view) for view in large]
    header = _OBJECT_HEADER.pack(_OBJECT_MAGIC, len(sources))
    loan = queue.loan(
        len(header) + len(sources) * _OBJECT_ENTRY.size + len(stream), KIND_OBJECT, len(sources)
    )
    # Attached first, in order (attachment k is the k-th attach): a store value's
    # block says where in it the buffer lies only once attached.
    entries = []
    for index, (owner, where, view, read_only) in enumerate(sources):
        flag = READ_ONLY if read_only else 0
        if isinstance(owner, _arrays.STORE_OWNERS):
            attached = owner.attach_to(loan, where, view.nbytes)
            if attached is not None:
                entries.append(_OBJECT_ENTRY.pack(attached[0] | flag, attached[1], view.nbytes))
                continue
            owner, where = _copied(view), 0  # another domain than the queue: one copy, writable
            flag = 0
        if not loan.attach(owner):
            raise _errors.InvalidArgument(
                "a buffer of the object lives in another hakobu domain than the queue"
            )
        entries.append(_OBJECT_ENTRY.pack(index | flag, where, view.nbytes))
    table = b"".join(entries)
    payload = memoryview(loan)
    payload[: len(header)] = header
    payload[len(header) : len(header) + len(table)] = table
    payload[len(header) + len(table) :] = stream
    payload.release()
    queue.put_loan(loan, timeout)


def _shared_source(view: memoryview) -> tuple[Any, int, memoryview, bool]:
    """(owner, where, view, read only): the hakobu memory holding ``view``, copied there if
    needed. ``where`` is the offset in the owner's memory, or for a store value the
    address (its block is found when attached). Read only: a store value, or a read-only
    view of hakobu memory; a copy is the receiver's own, writable."""
    exporter = view.obj
    owner = _arrays.owner_of(exporter) if isinstance(exporter, np.ndarray) else None
    if owner is not None:
        address = np.frombuffer(view, np.uint8).ctypes.data
        if isinstance(owner, _arrays.STORE_OWNERS):
            return owner, address, view, True
        offset = address - owner.address
        if offset >= 0 and offset + view.nbytes <= owner.nbytes:
            return owner, offset, view, view.readonly  # already shared: no copy
    return _copied(view), 0, view, False


def _copied(view: memoryview) -> Any:
    """A copy of ``view``'s bytes in hakobu shared memory."""
    copy = _core.allocate(view.nbytes)
    target = memoryview(copy)
    target[:] = view.cast("B")
    target.release()
    return copy


def _dumps(obj: Any, buffer_callback: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)
    except (pickle.PicklingError, AttributeError, TypeError):
        stream: bytes = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)
        return stream


# What a queue with allow_pickle=False accepts in an object message. Their pickles name
# no global (protocol 5) or only these types themselves (older protocols, complex):
# calling a plain type with any arguments builds data and runs nothing else.
PLAIN_TYPES = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    list,
    tuple,
    dict,
    set,
    frozenset,
)
_PLAIN_GLOBALS = frozenset(("builtins", kind.__name__) for kind in PLAIN_TYPES if kind is not type(None))


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain built-in types only: every global the stream names is checked here,
    and a pickle can call nothing it did not name, so nothing else can run."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS:
            return getattr(builtins, name)
        raise _errors.UnpicklingRefused(
            f"refused an object message that needs {module}.{name}: this queue was opened with "
            "allow_pickle=False and takes only plain built-in types (None, bool, int, float, complex, str, "
            "bytes, bytearray, list, tuple, dict, set, frozenset), arrays and bytes; the message was dropped"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise _errors.UnpicklingRefused(
            "refused an object message with a persistent id (allow_pickle=False); the message was dropped"
        )


def _plain_loads(stream: memoryview, buffers: list[memoryview]) -> Any:
    """``stream`` unpickled with _PlainUnpickler; out-of-band buffers arrive as ``bytes``
    (copied only when the stream reaches them: a refused message costs no copy)."""

    def copies() -> Iterator[bytes]:
        for view in buffers:
            yield bytes(view)

    try:
        return _PlainUnpickler(io.BytesIO(stream), buffers=copies()).load()
    except _errors.UnpicklingRefused:
        raise
    except Exception as error:
        raise _errors.UnpicklingRefused(
            f"refused an object message that is not a plain pickle ({type(error).__name__}: {error}); "
            "the message was dropped"
        ) from error


def _loads_object(message: _core.Message, allow_pickle: bool) -> Any:
    payload = memoryview(message)
    try:
        if len(payload) < _OBJECT_HEADER.size:
            raise _errors.Corrupt("object message shorter than its header")
        magic, count = _OBJECT_HEADER.unpack_from(payload)
        if magic != _OBJECT_MAGIC or count > message.attachment_count:
            raise _errors.Corrupt("object message with a damaged header")
        entries_end = _OBJECT_HEADER.size + count * _OBJECT_ENTRY.size
        if entries_end > len(payload):
            raise _errors.Corrupt("object message shorter than its buffer table")
        buffers = []
        for k in range(count):
            index, offset, length = _OBJECT_ENTRY.unpack_from(
                payload, _OBJECT_HEADER.size + k * _OBJECT_ENTRY.size
            )
            attachment = message.attachment(index & ~READ_ONLY)
            if offset + length > attachment.nbytes:
                raise _errors.Corrupt("object message: a buffer lies outside its attachment")
            buffer = memoryview(attachment)[offset : offset + length]
            buffers.append(buffer.toreadonly() if index & READ_ONLY else buffer)
        if not allow_pickle:
            return _plain_loads(payload[entries_end:], buffers)
        return pickle.loads(payload[entries_end:], buffers=buffers)
    finally:
        payload.release()


def decode(message: _core.Message, allow_pickle: bool = True) -> Any:
    """The Python object a received message carries.

    Queue.get decodes most messages in the extension (``get_object``); this
    decodes what it hands back: exotic dtypes, large or restricted pickles,
    pickles with out-of-band buffers.

    ``allow_pickle=False``: an object message must hold plain built-in types
    only (PLAIN_TYPES), else UnpicklingRefused; arrays and bytes are unaffected.
    """
    kind = message.kind
    if kind == KIND_ARRAY:
        layout = message.array_layout()
        assert layout is not None
        code, bits, lanes, typestr, shape, strides, offset, source = layout
        dtype = dtype_from_fields(code, bits, lanes, typestr)
        if dtype.itemsize != lanes * ((bits + 7) // 8):
            raise _errors.Corrupt(f"array message: type {dtype} does not match its element size")
        buffer = message if source == 0 else message.attachment(source - 1)
        return np.ndarray(
            tuple(shape), dtype, buffer=memoryview(buffer), offset=offset, strides=tuple(strides)
        )
    if kind == KIND_BYTES:
        return bytes(memoryview(message))
    if kind == KIND_OBJECT:
        return _loads_object(message, allow_pickle)
    raise _errors.Corrupt(f"message of unknown kind {kind}")
