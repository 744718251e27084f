"""Pickling for the pool: the one way tasks, functions, results and errors are prepared for its queues.

Objects are pickled (protocol 5) with their large buffers apart (pack): the
buffers ride the hakobu queue out of band, by reference when they already live
in hakobu memory, so a task's big arrays are never pickled. Plain pickle first
(fast), cloudpickle for what it cannot do (lambdas, local functions). The main
script's functions and classes go by reference when workers can find them
there (main_script.py), unless the caller says the workers cannot run the
script (``main_by_reference=False``: a Dask cluster's workers, maybe on other
hosts): then they travel by value. A function is pickled once (Function, function()); an
exception travels with its traceback text (pack_error, rebuild_error). The
engine and the workers both use this module.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
import traceback
import types
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import cloudpickle

from .. import _codec, _errors
from .main_script import main_global, main_reference
from .protocol import KEY_BYTES, Packed


class _ByValue(Exception):
    """Raised by _Pickler for what only cloudpickle can send (the main script's, by value)."""


def _in_main(obj: Any) -> bool:
    """A function or class of the main script (or of the script a worker ran as __mp_main__)."""
    return isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) in (
        "__main__",
        "__mp_main__",
    )


class _Pickler(pickle.Pickler):
    """Plain pickle, with the main script's functions and classes by reference (main_script.py),
    or handed to cloudpickle when ``main_by_reference`` is False."""

    main_by_reference = True

    def reducer_override(self, obj: Any) -> Any:
        if _in_main(obj):
            reference = main_reference(obj) if self.main_by_reference else None
            if reference is None:
                raise _ByValue
            return main_global, (reference,)
        return NotImplemented


class _CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with the main script's names by reference where workers can find them."""

    main_by_reference = True

    def reducer_override(self, obj: Any) -> Any:
        if self.main_by_reference and _in_main(obj):
            reference = main_reference(obj)
            if reference is not None:
                return main_global, (reference,)
        return super().reducer_override(obj)


def dumps(obj: Any, buffers: Optional[list[Any]], *, main_by_reference: bool = True) -> tuple[bytes, bool]:
    """(stream, by value): ``obj`` pickled, its large buffers appended to ``buffers`` (None:
    every buffer in the stream).

    ``by value``: cloudpickle was needed (the stream holds code, not only names).
    ``main_by_reference``: False when the workers cannot run the main script.
    """

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            size = buffer.raw().nbytes
        except BufferError:  # not contiguous: pickle copies it in-band
            return True
        if size < _codec.OUT_OF_BAND_MIN_BYTES:
            return True
        assert buffers is not None
        buffers.append(buffer)
        return False

    callback = None if buffers is None else out_of_band
    first = 0 if buffers is None else len(buffers)
    file = io.BytesIO()
    try:
        plain = _Pickler(file, 5, buffer_callback=callback)
        plain.main_by_reference = main_by_reference
        plain.dump(obj)
        return file.getvalue(), False
    except (_ByValue, pickle.PicklingError, AttributeError, TypeError):
        if buffers is not None:
            del buffers[first:]
    file = io.BytesIO()
    cloud = _CloudPickler(file, 5, buffer_callback=callback)
    cloud.main_by_reference = main_by_reference
    cloud.dump(obj)
    return file.getvalue(), True


def pack(obj: Any, *, main_by_reference: bool = True) -> Packed:
    """(stream, buffers): ``obj`` pickled with its large buffers apart (``main_by_reference``:
    see dumps)."""
    buffers: list[Any] = []
    stream, _ = dumps(obj, buffers, main_by_reference=main_by_reference)
    return stream, buffers


def unpack(stream: Any, buffers: Sequence[Any]) -> Any:
    """The object ``pack`` made; its large arrays are (writable) views of shared memory."""
    return pickle.loads(stream, buffers=buffers)


def describe_exception(error: BaseException) -> str:
    """'module.Type: text', safe even when str(error) fails."""
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
        text = "<str() failed>"
    return f"{name}: {text}" if text else name


def pack_error(error: BaseException) -> Packed:
    """An exception raised here, for the parent: (traceback text, exception) pickled.

    An exception that cannot be pickled, or not unpickled again, is replaced by
    a RemoteError that says what it was.
    """
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        stream, buffers = pack((text, error))
        unpack(stream, list(buffers))  # the parent must be able to rebuild it
    except Exception as why:  # noqa: BLE001 - any failure means: send a substitute
        substitute = _errors.RemoteError(
            f"the task raised {describe_exception(error)}, which cannot be sent to the parent as itself "
            f"({describe_exception(why)}); its traceback is in the cause of this error"
        )
        stream, buffers = pack((text, substitute))
    return stream, buffers


def pack_result(
    results: Any, function: Any, *, to: str, main_by_reference: bool = True
) -> tuple[bool, Packed]:
    """A task's ``results`` packed to travel ``to`` the caller (True), or, when they cannot
    be pickled, the EncodingError that says so, packed (False)."""
    try:
        return True, pack(results, main_by_reference=main_by_reference)
    except Exception as why:  # noqa: BLE001 - the result cannot travel: say so
        name = getattr(function, "__qualname__", None) or repr(function)
        unsendable = _errors.EncodingError(
            f"the result of {name} cannot be pickled to travel back to {to} "
            f"({describe_exception(why)}); return arrays, plain data or picklable objects"
        )
        unsendable.__cause__ = why
        return False, pack_error(unsendable)


def rebuild_error(stream: Any, buffers: Sequence[Any]) -> BaseException:
    """The exception a worker sent, with its traceback as ``__cause__`` (as multiprocessing does)."""
    error: BaseException
    text = ""
    try:
        text, sent = unpack(stream, buffers)
    except Exception as why:  # noqa: BLE001 - a class the parent lacks, say
        sent = _errors.RemoteError(
            f"a task raised an exception the parent cannot rebuild ({describe_exception(why)}); "
            "its traceback is in the cause of this error"
        )
    if isinstance(sent, BaseException):
        error = sent
    else:
        error = _errors.RemoteError(f"a worker sent {type(sent).__name__} instead of an exception")
    error.__cause__ = _errors.RemoteTraceback(f'\n"""\n{text}"""')
    return error


# --- functions, pickled once --------------------------------------------------------------------


@dataclass(eq=False)
class Function:
    """A callable pickled once; workers cache it by ``key`` (a digest of the pickle)."""

    key: bytes
    blob: bytes
    name: str


# Functions pickled by reference (a name: the pickle never changes), by function object.
_functions: weakref.WeakKeyDictionary[Any, Function] = weakref.WeakKeyDictionary()
_functions_lock = threading.Lock()


def function(fn: Callable[..., Any], *, main_by_reference: bool = True) -> Function:
    """``fn`` pickled for the workers: by reference when they can import it, else by value
    (``main_by_reference``: see dumps).

    A function pickled by reference is pickled once per process; one pickled by
    value (a closure, a lambda) at every call, so that the workers see the
    values it captures now.
    """
    cached = None
    if main_by_reference or not _in_main(fn):  # the cache holds the main script's by reference
        with _functions_lock:
            try:
                cached = _functions.get(fn)
            except TypeError:  # not weakly referenceable, or not hashable
                cached = None
    if cached is not None:
        return cached
    blob, by_value = dumps(fn, None, main_by_reference=main_by_reference)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    pickled = Function(hashlib.blake2b(blob, digest_size=KEY_BYTES).digest(), blob, str(name))
    if not by_value and isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type)):
        with _functions_lock:
            try:
                _functions[fn] = pickled
            except TypeError:
                pass
    return pickled
