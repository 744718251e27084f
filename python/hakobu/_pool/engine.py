"""The engine under hakobu.Pool and hakobu.Executor: worker processes, dispatch, deaths.

Both front-ends (pool.py) are thin: they turn calls into Tasks, hand them to
an Engine, and receive each task's outcome through its Sink. Everything about
processes lives here, once.

Design
------
* Workers are fresh interpreters (``python -m hakobu._pool.worker``, see
  _worker.py), each in its own process group. Each has an inbox queue;
  all share one results queue. The parent creates every queue (names
  ``pool-<pid>-<token>-in-<n>`` and ``-out``) and removes them when a worker
  dies, when the pool ends, and at interpreter exit.
* A task is pickled once, when it is submitted, in the submitting thread
  (what cannot be pickled fails its own result there, as in multiprocessing).
  Whoever finds a worker with room sends it work: the submitting thread
  itself when a worker is idle (a lone task goes straight to a worker, no
  thread in between), else the manager thread as results free workers up.
  Tasks waiting by then travel together: one message carries a batch of
  them, sized by how long the worker's recent tasks took (a batch lasts about
  BATCH_SECONDS; short tasks only) and shared out between the workers with
  room.
* One manager thread per engine starts the workers, reads the results queue
  and notices deaths. Nothing wakes it but workers' messages (results,
  READY, BYE when a worker leaves), the removal of the results queue (how
  terminate() reaches it at once) and its poll timer: submitting threads
  never wake it, they dispatch themselves.
* It keeps at most IN_FLIGHT_PER_WORKER messages in each worker's inbox. A
  worker sends the results of a batch together (at most RESULT_BATCH per
  message, none held longer than RESULT_HOLD_SECONDS) and notes in a
  progress slot, two integers of shared memory the engine reads after its
  death, which task it started and which it finished last. So the engine
  knows what a dead worker held: the task it was running fails with
  WorkerLost (or runs again when ``retries`` allow); the tasks after it
  never started, and those before it finished but their results died with
  the worker: both go back to the front of the pending queue.
* A second message goes to a busy worker (prefetch) only when sending takes a
  noticeable share of a task's time (big arguments) or tasks are short: then
  the worker starts it the moment it finishes the first. Long tasks go one
  at a time, to whichever worker is free, so a task never waits behind a long
  one while another worker idles (multiprocessing's shared queue gives that).
* It waits on the results queue for at most POLL_SECONDS, then polls the worker
  processes (waitpid): a dead worker is noticed within that time, whatever it
  was doing. Before judging a dead worker it drains the results queue, where
  whatever the worker finished before dying already is.

Pickling
--------
Objects are pickled (protocol 5) with their large buffers apart: the buffers
ride the hakobu queue out of band, by reference when they already live in
hakobu memory, so a task's big arrays are never pickled. Plain pickle first
(fast), cloudpickle for what it cannot do (lambdas, local functions).

Functions and classes of the parent's main script go by reference when the
workers can find them there, as multiprocessing's "spawn" does, so that they
may use module state that cannot be pickled (a lock, a connection): a worker
then runs the script once, as module ``__mp_main__`` (its ``if __name__ ==
"__main__":`` block does not run), the first time it needs such a name. That
holds when the script is a file with a main guard, the name is bound at its
top level outside the guard, and so are the globals the function (or the
class's methods) uses (_MainScript). Anything else of the main script (no
file: ``python -c``, a notebook, exec'd code; no guard; a lambda; a function
defined or using names defined under the guard) travels by value, with
cloudpickle, as before: such scripts are never run again by the workers.

Messages
--------
Parent -> worker, on the worker's own inbox:

* Its progress slot: an int64 array in hakobu memory, alone in its message
  so that it travels by reference (the worker writes the parent's memory).
* ``(HELLO, sys_path, argv, main_script, init_stream, init_buffers)``: once;
  the worker takes the parent's sys.path and argv, learns where the main
  script is (or None), runs the initializer and answers READY or
  INIT_FAILED.
* A TASKS frame (below): functions the worker lacks, keys it may forget, and a
  batch of tasks, each a function key, a mode and a chunk of items.
* A STOP frame: finish what came before, say BYE and exit.

Worker -> parent, on the pool's results queue: READY, BYE, INIT_FAILED (one
record: the error) and DONE (one record per finished task, in order: a
stream of the chunk's list of results, or of (traceback text, exception)).

A frame is ``bytes`` (a raw queue message: no pickle around it), or, when
some of its records have out-of-band buffers, a ``(bytes, [buffers])`` object
message. Layout (little-endian; see the struct formats below): a header
(tag, sender or counts), then fixed-size record headers each followed by its
inline stream. A record's stream is inline unless it is large (>=
OUT_OF_BAND_MIN_BYTES), in which case it is the first of the record's
buffers: it is copied once, into shared memory. Every length and count read
from a frame is checked against the frame (shared memory is untrusted).

Locking rules
-------------
``_lock`` guards the engine's state: ``_pending``, ``_state``, ``_broken``,
``_feeders``, ``_workers`` and every worker handle's bookkeeping (what it
holds, its function cache mirror) and sending to inboxes. Any thread may
dispatch, holding it. Processes are started and waited for, results are
unpickled and sinks are called without it (user callbacks run on the manager
thread, as multiprocessing and concurrent.futures run them on their result
threads: they should return quickly; they may submit more work).
"""

from __future__ import annotations

import ast
import atexit
import builtins
import collections
import dis
import hashlib
import io
import itertools
import os
import pickle
import secrets
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import types
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import cloudpickle
import numpy as np

from .. import _codec, _core, _errors
from .._arrays import zeros
from .._queue import Queue

# Frame tags (see "Messages" above). HELLO is the first element of a tuple, the others a frame's first byte.
HELLO, TASKS, STOP, READY, INIT_FAILED, DONE, BYE = 1, 2, 3, 4, 5, 6, 7

# How a task's items become calls.
MODE_ARG = 0  # f(item)                   map, imap
MODE_STAR = 1  # f(*item)                 starmap, Executor.map
MODE_CALL = 2  # f(*args, **kwargs)        apply, submit: item = (args, kwargs)

KEY_BYTES = 16  # a function's key: a digest of its pickle

# TASKS frame: header (tag, keys to forget, functions, tasks, first task's id), then the keys to forget, then
# each function (key, stream length, buffers; stream), then each task (id, key, mode, stream
# length, buffers; stream).
TASKS_HEADER = struct.Struct("<BHHIQ")
FUNCTION_RECORD = struct.Struct(f"<{KEY_BYTES}sII")
TASK_RECORD = struct.Struct(f"<Q{KEY_BYTES}sBII")
# Worker -> parent frames: header (tag, worker number, records), then each record (task id,
# ok, stream length, buffers; stream). READY and BYE have no record, INIT_FAILED one.
RESULTS_HEADER = struct.Struct("<BII")
RESULT_RECORD = struct.Struct("<QBII")
# A record's stream length when the stream is its first buffer (sent out of band).
STREAM_OUT_OF_BAND = 0xFFFFFFFF

Packed = tuple[Any, list[Any]]  # (stream, out-of-band buffers)


# --- the main script: what the workers may import of it --------------------------------------------


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either way round)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [side for side in sides if isinstance(side, ast.Name) and side.id == "__name__"]
    constants = [side for side in sides if isinstance(side, ast.Constant) and side.value == "__main__"]
    return len(names) == 1 and len(constants) == 1


def _bound_at_top(statements: list[ast.stmt], names: set[str]) -> bool:
    """Adds the names ``statements`` bind when the script is imported (the guard's body
    excluded, its ``else`` included); True if one of them is a main guard."""
    guarded = False
    for node in statements:
        if _is_main_guard(node):
            guarded = True
            assert isinstance(node, ast.If)
            _bound_at_top(node.orelse, names)
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*" and isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    module = sys.modules.get(node.module)
                    exported = getattr(module, "__all__", None) or [
                        n for n in dir(module) if not n.startswith("_")
                    ]
                    names.update(exported)
                elif alias.name != "*":
                    names.add(alias.asname or alias.name.split(".")[0])
            continue
        bodies = [getattr(node, field, None) for field in ("body", "orelse", "finalbody")]
        bodies += [handler.body for handler in getattr(node, "handlers", [])]
        if isinstance(node, ast.Try) or any(isinstance(body, list) for body in bodies):
            for body in bodies:
                if isinstance(body, list):
                    guarded |= _bound_at_top(body, names)
            for handler in getattr(node, "handlers", []):
                if handler.name:
                    names.add(handler.name)
            heads = [getattr(node, field, None) for field in ("target", "test", "iter", "items")]
        else:
            heads = [node]
        for head in heads:
            for part in head if isinstance(head, list) else [head]:
                if part is None:
                    continue
                for child in ast.walk(part):
                    if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                        names.add(child.id)
    return guarded


@dataclass(frozen=True)
class _MainScript:
    """The parent's main script, when workers may run it to find its names by reference."""

    path: str
    module: Optional[str]  # its module name when started with ``python -m``
    names: frozenset[str]  # bound at its top level, outside the main guard


_main_script_cache: list[Optional[_MainScript]] = []


def main_script() -> Optional[_MainScript]:
    """The main script if it is a file with a main guard (see "Pickling"), else None."""
    if _main_script_cache:
        return _main_script_cache[0]
    found: Optional[_MainScript] = None
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if isinstance(path, str) and path.endswith(".py") and os.path.isfile(path):
        try:
            with open(path, "rb") as source:
                tree = ast.parse(source.read(), path)
            names: set[str] = set()
            if _bound_at_top(tree.body, names):
                module = getattr(spec, "name", None)
                found = _MainScript(
                    os.path.abspath(path), module if isinstance(module, str) else None, frozenset(names)
                )
        except (OSError, SyntaxError, ValueError):
            found = None
    _main_script_cache.append(found)
    return found


def _global_names(code: types.CodeType) -> set[str]:
    """Global names a code object (and the functions defined in it) reads or writes."""
    names = {
        instruction.argval
        for instruction in dis.get_instructions(code)
        if instruction.opname in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL")
    }
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def _functions_of(obj: Any) -> list[types.FunctionType]:
    if isinstance(obj, types.FunctionType):
        return [obj]
    found = []
    for value in vars(obj).values():
        for inner in (
            value,
            getattr(value, "__func__", None),
            getattr(value, "fget", None),
            getattr(value, "fset", None),
        ):
            if isinstance(inner, types.FunctionType):
                found.append(inner)
    return found


_by_reference: weakref.WeakKeyDictionary[Any, Optional[str]] = weakref.WeakKeyDictionary()
_by_reference_lock = threading.Lock()


def _main_reference(obj: Any) -> Optional[str]:
    """The qualified name by which workers find ``obj`` (a function or class of the main
    script) in their import of the script; None when it must travel by value."""
    module = getattr(obj, "__module__", None)
    if module == "__mp_main__":  # in a worker: the script it imported; the parent has it as __main__
        return _lookup_name(sys.modules.get("__mp_main__"), obj)
    if module != "__main__" or _main_loader is not None:  # in a worker, __main__ is a by-value copy
        return None
    with _by_reference_lock:
        try:
            return _by_reference[obj]
        except KeyError:
            pass
        except TypeError:  # not weakly referenceable
            return None
    script = main_script()
    reference = None
    if script is not None:
        reference = _lookup_name(sys.modules.get("__main__"), obj)
        if reference is not None and reference.split(".")[0] not in script.names:
            reference = None
        if reference is not None:
            for function in _functions_of(obj):
                if function.__globals__ is not vars(sys.modules["__main__"]):
                    continue  # from elsewhere: its own module's globals
                if any(
                    name not in script.names and not hasattr(builtins, name)
                    for name in _global_names(function.__code__)
                ):
                    reference = None
                    break
    with _by_reference_lock:
        _by_reference[obj] = reference
    return reference


def _lookup_name(module: Any, obj: Any) -> Optional[str]:
    qualname = getattr(obj, "__qualname__", None)
    if module is None or not isinstance(qualname, str) or "<" in qualname:
        return None
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return qualname if found is obj else None


# Set in a worker: imports the parent's main script (once) for main_global.
_main_loader: Optional[Callable[[], types.ModuleType]] = None


def main_global(qualname: str) -> Any:
    """Unpickles a name of the main script: in a worker, of its import of the script; in the
    parent, of ``__main__``."""
    module = _main_loader() if _main_loader is not None else sys.modules["__main__"]
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


# --- pickling: the one way objects are prepared for a pool's queues ------------------------


class _ByValue(Exception):
    """Raised by _Pickler for what only cloudpickle can send (the main script's, by value)."""


class _Pickler(pickle.Pickler):
    """Plain pickle, with the main script's functions and classes by reference (see "Pickling")."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) in (
            "__main__",
            "__mp_main__",
        ):
            reference = _main_reference(obj)
            if reference is None:
                raise _ByValue
            return main_global, (reference,)
        return NotImplemented


class _CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with the main script's names by reference where workers can find them."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) in (
            "__main__",
            "__mp_main__",
        ):
            reference = _main_reference(obj)
            if reference is not None:
                return main_global, (reference,)
        return super().reducer_override(obj)


def dumps(obj: Any, buffers: Optional[list[Any]]) -> tuple[bytes, bool]:
    """(stream, by value): ``obj`` pickled, its large buffers appended to ``buffers`` (None:
    every buffer in the stream).

    ``by value``: cloudpickle was needed (the stream holds code, not only names).
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
        _Pickler(file, 5, buffer_callback=callback).dump(obj)
        return file.getvalue(), False
    except (_ByValue, pickle.PicklingError, AttributeError, TypeError):
        if buffers is not None:
            del buffers[first:]
    file = io.BytesIO()
    _CloudPickler(file, 5, buffer_callback=callback).dump(obj)
    return file.getvalue(), True


def pack(obj: Any) -> Packed:
    """(stream, buffers): ``obj`` pickled with its large buffers apart."""
    buffers: list[Any] = []
    stream, _ = dumps(obj, buffers)
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


# --- frames ---------------------------------------------------------------------------------------


def append_record(
    parts: list[bytes], buffers: list[Any], header: bytes, stream: bytes, own: list[Any]
) -> None:
    """Appends a record's header (already packed, its stream length and buffer count last) and
    stream to ``parts``, its buffers to ``buffers``; see "Messages"."""
    parts.append(header)
    parts.append(stream)
    buffers.extend(own)


def record_fields(stream: bytes, own: list[Any]) -> tuple[int, int, bytes, list[Any]]:
    """(stream length field, buffer count, inline stream, buffers) of a record."""
    if len(stream) >= _codec.OUT_OF_BAND_MIN_BYTES:
        return STREAM_OUT_OF_BAND, len(own) + 1, b"", [pickle.PickleBuffer(stream), *own]
    return len(stream), len(own), stream, own


def send_frame(queue: Queue, parts: list[bytes], buffers: list[Any]) -> None:
    """Puts a frame without waiting (a full queue is the sender's bug: Full is raised)."""
    frame = b"".join(parts)
    queue.put((frame, buffers) if buffers else frame, block=False)


class FrameReader:
    """Reads a received frame's fields, checking every length against the frame."""

    def __init__(self, message: Any) -> None:
        if isinstance(message, bytes):
            self.frame: memoryview = memoryview(message)
            self.buffers: list[Any] = []
        elif (
            isinstance(message, tuple)
            and len(message) == 2
            and isinstance(message[0], bytes)
            and isinstance(message[1], list)
        ):
            self.frame, self.buffers = memoryview(message[0]), message[1]
        else:
            raise _errors.Corrupt(f"a pool message of an unexpected type ({type(message).__name__})")
        self.offset = 0
        self.buffer_index = 0

    def fields(self, layout: struct.Struct) -> tuple[Any, ...]:
        if self.offset + layout.size > len(self.frame):
            raise _errors.Corrupt("a pool message shorter than its records")
        values = layout.unpack_from(self.frame, self.offset)
        self.offset += layout.size
        return values

    def raw(self, length: int) -> memoryview:
        if self.offset + length > len(self.frame):
            raise _errors.Corrupt("a pool message shorter than its records")
        view = self.frame[self.offset : self.offset + length]
        self.offset += length
        return view

    def payload(self, length: int, count: int) -> Packed:
        """A record's (stream, buffers), given its stream length and buffer count fields."""
        if self.buffer_index + count > len(self.buffers):
            raise _errors.Corrupt("a pool message with fewer buffers than its records name")
        own = self.buffers[self.buffer_index : self.buffer_index + count]
        self.buffer_index += count
        if length == STREAM_OUT_OF_BAND:
            if not own:
                raise _errors.Corrupt("a pool message record without its stream")
            return own[0], own[1:]
        return self.raw(length), own


def results_frame(
    tag: int, number: int, records: list[tuple[int, bool, Packed]]
) -> tuple[list[bytes], list[Any]]:
    """(parts, buffers) of a worker's frame: ``records`` are (task id, ok, (stream, buffers))."""
    parts = [RESULTS_HEADER.pack(tag, number, len(records))]
    buffers: list[Any] = []
    for task_id, ok, (stream, own) in records:
        length, count, inline, own = record_fields(stream, own)
        append_record(parts, buffers, RESULT_RECORD.pack(task_id, ok, length, count), inline, own)
    return parts, buffers


# Messages in a worker's inbox at once: one running, one ready to start the moment it finishes.
IN_FLIGHT_PER_WORKER = 2
# Prefetch (see the module's docstring) for tasks shorter than this, or than
# PREFETCH_SEND_SHARE times the time it took to send them.
PREFETCH_BELOW_SECONDS = 0.02
PREFETCH_SEND_SHARE = 10
# A batch of short tasks lasts about this long (by the worker's recent tasks); at most
# MAX_BATCH tasks, and at most MAX_BATCH_BYTES of inline streams.
BATCH_SECONDS = 0.002
MAX_BATCH = 256
MAX_BATCH_BYTES = 1 << 20
# A worker sends its results together while a batch runs: at most this many in a message,
# none held longer than this.
RESULT_BATCH = 64
RESULT_HOLD_SECONDS = 0.002
# Functions a worker keeps unpickled (the engine mirrors each worker's cache).
FUNCTION_CACHE_SIZE = 32
# Longest wait on the results queue before the worker processes are polled.
POLL_SECONDS = 0.1
# How long workers told to stop may take before they are killed.
STOP_GRACE_SECONDS = 10.0
# Workers that die one after another before being ready: the pool cannot start workers.
START_FAILURES_TO_BREAK = 3
# Messages read in one go before the manager looks at anything else.
DRAIN_BATCH = 256
# Room in a worker's inbox: its progress slot, the hello, the messages in flight, the stop message.
INBOX_CAPACITY = 8
# Room in the results queue: a worker reports each task; it waits when the manager lags.
RESULTS_CAPACITY = 512

# The thread-count variables of OpenMP and the usual BLAS and numeric libraries.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "TBB_NUM_THREADS",
)

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

# True in a worker while it runs the parent's main script (see "Pickling"): a pool made then
# would start workers from workers; the script must make its pools under its main guard.
importing_main = False


def available_cores() -> int:
    """CPUs this process may run on (its affinity, not the machine's count)."""
    counter = getattr(os, "process_cpu_count", None)
    if counter is not None:
        count: Optional[int] = counter()
        return count or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


class Sink(Protocol):
    """Where a task's outcome goes (a pool result, a future)."""

    def start(self) -> bool:
        """The task goes to a worker; False when it was cancelled meanwhile (it is dropped)."""

    def finish(self, ok: bool, value: Any) -> None:
        """The list of the chunk's results (ok), or the exception."""

    def cancel(self, error: BaseException) -> None:
        """The task will never start (the pool was terminated, or pending work cancelled)."""


@dataclass(eq=False)
class Function:
    """A callable pickled once; workers cache it by ``key`` (a digest of the pickle)."""

    key: bytes
    blob: bytes
    name: str


# Functions pickled by reference (a name: the pickle never changes), by function object.
_functions: weakref.WeakKeyDictionary[Any, Function] = weakref.WeakKeyDictionary()
_functions_lock = threading.Lock()


def function(fn: Callable[..., Any]) -> Function:
    """``fn`` pickled for the workers: by reference when they can import it, else by value.

    A function pickled by reference is pickled once per process; one pickled by
    value (a closure, a lambda) at every call, so that the workers see the
    values it captures now.
    """
    with _functions_lock:
        try:
            cached = _functions.get(fn)
        except TypeError:  # not weakly referenceable, or not hashable
            cached = None
    if cached is not None:
        return cached
    blob, by_value = dumps(fn, None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    pickled = Function(hashlib.blake2b(blob, digest_size=KEY_BYTES).digest(), blob, str(name))
    if not by_value and isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type)):
        with _functions_lock:
            try:
                _functions[fn] = pickled
            except TypeError:
                pass
    return pickled


@dataclass(eq=False)
class Task:
    """One call, or a chunk of calls: ``function`` applied to each of the pickled items."""

    function: Function
    mode: int  # MODE_*
    payload: Packed  # the list of items, pickled
    sink: Sink
    label: str  # says which calls these are, in error messages
    id: int = 0
    attempts: int = 0  # runs that ended with the worker's death
    started: bool = False


def make_task(fn: Function, mode: int, items: list[Any], sink: Sink, label: str) -> Optional[Task]:
    """A task for ``items``; None, with the error given to the sink, if they cannot be pickled."""
    try:
        payload = pack(items)
    except Exception as error:  # noqa: BLE001 - as multiprocessing: the result carries the error
        sink.finish(False, error)
        return None
    return Task(fn, mode, payload, sink, label)


Outcome = tuple[Task, bool, Any]  # a task, and what its sink gets: (ok, value)


class _Worker:
    """The engine's handle on one worker process (guarded by the engine's lock)."""

    def __init__(
        self, number: int, process: subprocess.Popen[bytes], inbox: Queue, progress: np.ndarray
    ) -> None:
        self.number = number
        self.process = process
        self.inbox = inbox
        self.progress = progress  # shared with the worker: [started task id, finished task id]
        self.outstanding: collections.OrderedDict[int, Task] = collections.OrderedDict()  # in the order sent
        self.in_flight: collections.deque[list[float]] = collections.deque()  # [tasks unreported, sent at]
        self.known: collections.OrderedDict[bytes, None] = collections.OrderedDict()  # its function cache
        self.ready = False
        self.sent = 0
        self.stopping = False  # told to exit once its inbox is done
        self.last_done = 0.0  # when its last result arrived
        self.service_seconds: Optional[float] = None  # how long its recent tasks took (unknown at first)
        self.send_seconds = 0.0  # how long sending its last message took

    def has_room(self) -> bool:
        """Room for another message: 1 in flight, or 2 when sending takes a noticeable share of
        a task (see the module's docstring)."""
        limit = 1
        service = self.service_seconds
        if service is not None and (
            service < PREFETCH_BELOW_SECONDS or service < PREFETCH_SEND_SHARE * self.send_seconds
        ):
            limit = IN_FLIGHT_PER_WORKER
        return len(self.in_flight) < limit

    def batch_size(self, pending: int, sharing: int, max_tasks: Optional[int]) -> int:
        """Tasks for its next message: short ones share the pending tasks out, a batch lasting
        about BATCH_SECONDS; otherwise one."""
        size = 1
        service = self.service_seconds
        if service is not None and service < PREFETCH_BELOW_SECONDS:
            share = -(-pending // max(1, sharing))
            size = max(1, min(share, int(BATCH_SECONDS / max(service, 1e-7)), MAX_BATCH))
        if max_tasks is not None:
            size = max(1, min(size, max_tasks - self.sent))
        return size

    def done(self, count: int) -> None:
        """Notes that its ``count`` oldest unreported tasks ended (one message of results): they
        started when their message was sent or when the results before them came."""
        now = time.monotonic()
        took = (now - max(self.in_flight[0][1], self.last_done)) / count
        # A slow task counts at once (no more prefetch, no more batches); fast ones bring the
        # figure down gradually, so a single hiccup does not make batches short for long.
        previous = self.service_seconds
        self.service_seconds = took if previous is None or took > previous else 0.5 * (previous + took)
        self.last_done = now
        while count and self.in_flight:
            head = self.in_flight[0]
            taken = min(count, int(head[0]))
            head[0] -= taken
            count -= taken
            if head[0] <= 0:
                self.in_flight.popleft()

    def how_it_ended(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"


_live_engines: set[Engine] = set()
_live_lock = threading.Lock()


class Engine:
    """Worker processes running Tasks; see the module's docstring."""

    def __init__(
        self,
        workers: int,
        initializer: Optional[Callable[..., Any]],
        initargs: Sequence[Any],
        max_tasks_per_worker: Optional[int],
        retries: int,
        threads_per_worker: Optional[int],
        *,
        drain_at_exit: bool,
        description: str = "",
    ) -> None:
        if importing_main:
            raise RuntimeError(
                "a pool was made while a pool worker ran the main script to find a function of it: make pools "
                'under the script\'s `if __name__ == "__main__":` guard (workers run the script without it)'
            )
        self.workers = workers
        self._max_tasks = max_tasks_per_worker
        self._retries = retries
        self._threads_per_worker = threads_per_worker
        self.drain_at_exit = drain_at_exit
        self.description = description
        self.owner_pid = os.getpid()
        self._domain = _core.default_domain()
        self._prefix = f"pool-{os.getpid()}-{secrets.token_hex(4)}"
        self._init = pack((initializer, tuple(initargs)))
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._pending: collections.deque[Task] = collections.deque()
        self._state = RUN
        self._broken: Optional[_errors.BrokenPool] = None
        self._task_ids = itertools.count(1)
        self._worker_numbers = itertools.count(1)
        self._workers: dict[int, _Worker] = {}
        self._start_failures = 0
        self._feeders = 0  # lazy producers (imap) still submitting: a closing engine waits for them
        # Messages and tasks both ways, for stats(): how well tasks and results are batched.
        self._counts = {"task_messages": 0, "tasks": 0, "result_messages": 0, "results": 0}
        capacity = max(RESULTS_CAPACITY, 8 * workers)
        results = Queue(f"{self._prefix}-out", capacity, create=True, domain=self._domain)
        self._results_name = results.name
        # Dropped when the engine ends: a finished pool keeps no handle (nor the domain) open.
        self._results: Optional[Queue] = results
        self._thread = threading.Thread(target=self._run, name=f"hakobu-{self._prefix}", daemon=True)
        with _live_lock:
            _live_engines.add(self)
        self._thread.start()

    # --- what the front-ends call (any thread) -------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def name(self) -> str:
        """The prefix of the engine's queue names (and of its workers' command lines)."""
        return self._prefix

    def submit(self, tasks: Sequence[Task], *, feeding: bool = False) -> bool:
        """Queues ``tasks`` and sends what workers have room for; False once the engine takes
        no more work. Raises BrokenPool.

        ``feeding``: from a lazy producer started while the engine ran, which
        may go on after close() (as multiprocessing's imap does).
        """
        if os.getpid() != self.owner_pid:
            raise RuntimeError(
                "a pool made before os.fork() cannot be used in the child: make a new pool there"
            )
        with self._lock:
            if self._broken is not None:
                raise self._broken_error()
            if self._state != RUN and not (feeding and self._state == CLOSE):
                return False
            for task in tasks:
                task.id = next(self._task_ids)
                self._pending.append(task)
            failed = self._dispatch()
        self._finish_all(failed)
        return True

    def stats(self) -> dict[str, int]:
        """Messages sent to workers and tasks in them; messages of results and results in them."""
        with self._lock:
            return dict(self._counts)

    def open_feed(self) -> None:
        """A lazy producer (imap) starts submitting; a closing engine waits for its end."""
        with self._lock:
            self._feeders += 1

    def close_feed(self) -> None:
        with self._lock:
            self._feeders -= 1
            failed = self._dispatch()  # a closing engine may now stop its workers
        self._finish_all(failed)

    def wait_for_room(self) -> None:
        """Waits while enough tasks wait for a worker (lazy producers need not read ahead):
        enough for the messages in flight, batches of short tasks included."""
        with self._room:
            while self._state != TERMINATE and self._broken is None:
                batch = max((w.batch_size(MAX_BATCH, 1, None) for w in self._workers.values()), default=1)
                if len(self._pending) < self.workers * IN_FLIGHT_PER_WORKER * batch:
                    return
                self._room.wait()

    def close(self) -> None:
        """Takes no more work; finishes what was submitted, then the workers exit."""
        with self._lock:
            if self._state == RUN:
                self._state = CLOSE
            self._room.notify_all()
            failed = self._dispatch()  # idle workers are told to stop now
        self._finish_all(failed)

    def terminate(self) -> None:
        """Kills the workers now; unfinished tasks fail with PoolTerminated (never started: cancelled)."""
        on_manager = threading.current_thread() is self._thread
        with self._lock:
            self._state = TERMINATE
            self._room.notify_all()
            if not on_manager and self._results is not None:
                try:
                    self._results.unlink()  # wakes the manager at once (Closed/Unlinked in its get)
                except _errors.HakobuError:
                    pass
        if not on_manager:  # from a callback: the manager sees the state
            self._thread.join()

    def join(self, timeout: Optional[float] = None) -> None:
        """Waits until the manager has stopped the workers and removed the queues."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a pool cannot be joined from one of its own callbacks")
        self._thread.join(timeout)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def cancel_pending(self) -> None:
        """Cancels the tasks no worker has started (Executor.shutdown(cancel_futures=True))."""
        with self._lock:
            cancelled = [task for task in self._pending if not task.started]
            kept = [task for task in self._pending if task.started]
            self._pending.clear()
            self._pending.extend(kept)
            self._room.notify_all()
            failed = self._dispatch()
        for task in cancelled:
            self._cancel(task, _errors.PoolTerminated("cancelled before it started"))
        self._finish_all(failed)

    # --- dispatch (any thread, the lock held) -----------------------------------------------

    def _dispatch(self) -> list[Outcome]:
        """Sends pending tasks to workers with room; stops idle workers of a closing engine.
        Returns the tasks that could not be sent, for their sinks (called without the lock)."""
        failed: list[Outcome] = []
        before = len(self._pending)
        while self._pending:
            with_room = [w for w in self._workers.values() if w.ready and not w.stopping and w.has_room()]
            if not with_room:
                break
            worker = min(with_room, key=lambda w: len(w.in_flight))
            size = worker.batch_size(len(self._pending), len(with_room), self._max_tasks)
            batch: list[Task] = []
            inline = 0
            while self._pending and len(batch) < size and inline < MAX_BATCH_BYTES:
                task = self._pending.popleft()
                if not task.started:
                    if not task.sink.start():
                        continue  # cancelled while it waited
                    task.started = True
                batch.append(task)
                inline += len(task.payload[0])
            if batch:
                failed += self._send(worker, batch)
        if len(self._pending) != before:
            self._room.notify_all()
        if self._state == CLOSE and not self._pending and not self._feeders:
            for worker in self._workers.values():
                if not worker.stopping:
                    self._retire(worker)
        return failed

    def _send(self, worker: _Worker, batch: list[Task]) -> list[Outcome]:
        """One TASKS frame to ``worker`` (see "Messages"); the tasks fail if it cannot be sent."""
        used = {task.function.key for task in batch}
        new: dict[bytes, Function] = {}
        for task in batch:
            if task.function.key not in worker.known:
                new.setdefault(task.function.key, task.function)
        evict = max(0, len(worker.known) + len(new) - FUNCTION_CACHE_SIZE)
        forget = list(itertools.islice((key for key in worker.known if key not in used), evict))
        parts = [TASKS_HEADER.pack(TASKS, len(forget), len(new), len(batch), batch[0].id), *forget]
        buffers: list[Any] = []
        for key, fn in new.items():
            length, count, inline, own = record_fields(fn.blob, [])
            append_record(parts, buffers, FUNCTION_RECORD.pack(key, length, count), inline, own)
        for task in batch:
            length, count, inline, own = record_fields(*task.payload)
            append_record(
                parts,
                buffers,
                TASK_RECORD.pack(task.id, task.function.key, task.mode, length, count),
                inline,
                own,
            )
        sending = time.monotonic()
        try:
            send_frame(worker.inbox, parts, buffers)
        except Exception as error:  # noqa: BLE001 - e.g. /dev/shm full: the worker never saw the tasks
            return [(task, False, error) for task in batch]
        now = time.monotonic()
        worker.send_seconds = now - sending
        worker.in_flight.append([len(batch), now])
        for key in forget:
            del worker.known[key]
        for key in used:
            worker.known[key] = None
            worker.known.move_to_end(key)
        for task in batch:
            worker.outstanding[task.id] = task
        worker.sent += len(batch)
        self._counts["task_messages"] += 1
        self._counts["tasks"] += len(batch)
        if self._max_tasks is not None and worker.sent >= self._max_tasks:
            self._retire(worker)  # a fresh worker replaces it at once (_replenish)
        return []

    def _retire(self, worker: _Worker) -> None:
        """Tells ``worker`` to exit once its inbox is done (it says BYE)."""
        worker.stopping = True
        try:
            worker.inbox.put(bytes((STOP,)), block=False)
        except _errors.HakobuError:
            _kill(worker)  # cannot tell it: it dies, and its tasks with it

    # --- the manager thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as error:  # noqa: BLE001 - a fault here must fail tasks, never hang them
            failure = _errors.BrokenPool(
                f"the pool's manager thread failed ({describe_exception(error)}); every pending task fails"
            )
            failure.__cause__ = error
            self._break(failure)
            self._stop_workers(kill=True)
        finally:
            self._release()

    def _serve(self) -> None:
        next_poll = 0.0
        while True:
            with self._lock:
                state, broken = self._state, self._broken is not None
            if state == TERMINATE:
                self._terminate_now()
                return
            if broken:
                self._stop_workers(kill=True)
                return
            if time.monotonic() >= next_poll:
                self._reap()
                next_poll = time.monotonic() + POLL_SECONDS
                if self._broken is not None:
                    continue
            self._replenish(state)
            with self._lock:
                failed = self._dispatch()
                finished = state == CLOSE and self._idle()
            self._finish_all(failed)
            if finished:
                self._stop_workers(kill=False)
                return
            if not self._receive(POLL_SECONDS):
                with self._lock:
                    state = self._state
                if state != TERMINATE:
                    self._break(
                        _errors.BrokenPool(f"the pool's results queue {self._results_name!r} was removed")
                    )

    def _idle(self) -> bool:
        """Nothing left to run (the lock held)."""
        if self._pending or self._feeders:
            return False
        return not any(worker.outstanding for worker in self._workers.values())

    def _manager_results(self) -> Queue:
        """The results queue, which exists as long as the manager thread runs."""
        assert self._results is not None
        return self._results

    def _receive(self, timeout: float) -> bool:
        """Handles a message (waiting at most ``timeout``), then what else has arrived; False
        when the results queue is gone (terminate() removes it to wake the manager)."""
        results = self._manager_results()
        for count in range(DRAIN_BATCH):
            try:
                message = results.get(timeout=timeout if count == 0 else 0.0)
            except _errors.Empty:
                return True
            except (_errors.Closed, _errors.Unlinked):
                return False
            self._handle(message)
        return True

    def _drain(self) -> None:
        while True:
            try:
                message = self._manager_results().get(block=False)
            except (_errors.Empty, _errors.Closed, _errors.Unlinked):
                return
            self._handle(message)

    def _handle(self, message: Any) -> None:
        reader = FrameReader(message)
        tag, number, count = reader.fields(RESULTS_HEADER)
        records = []
        for _ in range(count):
            task_id, ok, length, buffers = reader.fields(RESULT_RECORD)
            records.append((task_id, ok, reader.payload(length, buffers)))
        if tag == DONE:
            done: list[tuple[Task, bool, Packed]] = []
            with self._lock:
                self._counts["result_messages"] += 1
                self._counts["results"] += len(records)
                worker = self._workers.get(number)
                for task_id, ok, payload in records:
                    task = worker.outstanding.pop(task_id, None) if worker is not None else None
                    if task is None:
                        continue  # it failed already (the pool broke)
                    done.append((task, ok, payload))
                if done:
                    assert worker is not None
                    worker.done(len(done))
                failed = self._dispatch()  # the worker has room again: send before unpickling
            for task, ok, (stream, buffers) in done:
                if ok:
                    try:
                        value = unpack(stream, buffers)
                    except Exception as why:  # noqa: BLE001 - the task fails, the pool goes on
                        value = _errors.RemoteError(
                            f"the result of task {task.id} ({task.label}) cannot be rebuilt in the parent "
                            f"({describe_exception(why)})"
                        )
                        value.__cause__ = why
                        ok = False
                else:
                    value = rebuild_error(stream, buffers)
                self._finish(task, bool(ok), value)
            self._finish_all(failed)
        elif tag == READY:
            with self._lock:
                worker = self._workers.get(number)
                if worker is not None:
                    worker.ready = True
                self._start_failures = 0
                failed = self._dispatch()
            self._finish_all(failed)
        elif tag == INIT_FAILED and records:
            cause = rebuild_error(*records[0][2])
            error = _errors.BrokenPool(
                f"the pool's initializer failed in worker {number}: {describe_exception(cause)}; "
                "every pending task fails: fix the initializer and make a new pool"
            )
            error.__cause__ = cause
            self._break(error)
        # BYE: a worker leaves as told; it is buried when its process has exited (_reap).

    def _replenish(self, state: str) -> None:
        """Starts workers up to the pool's size while there is or may be work."""
        with self._lock:
            wanted = state == RUN or bool(self._pending) or self._feeders > 0
            active = sum(1 for worker in self._workers.values() if not worker.stopping)
        if not wanted or self._broken is not None:
            return
        for _ in range(self.workers - active):
            try:
                self._spawn()
            except Exception as error:  # noqa: BLE001 - e.g. no more processes allowed
                failure = _errors.BrokenPool(
                    f"cannot start a worker process ({describe_exception(error)}); every pending task fails"
                )
                failure.__cause__ = error
                self._break(failure)
                return

    def _spawn(self) -> None:
        number = next(self._worker_numbers)
        inbox = Queue(f"{self._prefix}-in-{number}", INBOX_CAPACITY, create=True, domain=self._domain)
        try:
            threads, environment = self._worker_environment()
            # The interpreter's options (-I, -O, -X ...), passed on as multiprocessing does.
            flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
            command = [
                sys.executable,
                *flags,
                "-m",
                "hakobu._pool.worker",
                inbox.name,
                self._results_name,
                str(number),
                str(os.getpid()),
                str(threads),
            ]
            # Its own process group: Ctrl-C in a terminal goes to the parent alone.
            if sys.version_info >= (3, 11):
                process = subprocess.Popen(
                    command, env=environment, stdin=subprocess.DEVNULL, process_group=0
                )
            else:
                process = subprocess.Popen(
                    command, env=environment, stdin=subprocess.DEVNULL, start_new_session=True
                )
            script = main_script()
            where = None if script is None else (script.path, script.module)
            # An array message of its own: sent by reference, so the worker writes this memory.
            progress = zeros(2, np.int64, domain=self._domain)
            inbox.put(progress, block=False)
            inbox.put((HELLO, list(sys.path), list(sys.argv), where, *self._init), block=False)
        except BaseException:
            _discard(inbox)
            raise
        with self._lock:
            self._workers[number] = _Worker(number, process, inbox, progress)

    def _worker_environment(self) -> tuple[int, dict[str, str]]:
        """(threads to set with threadpoolctl, or 0; the worker's environment).

        By default each worker gets max(1, cores / workers) threads for OpenMP
        and BLAS, through the variables the user has not set (and through
        threadpoolctl when the user set none); ``threads_per_worker`` sets all.
        """
        environment = dict(os.environ)
        environment["HAKOBU_DOMAIN"] = self._domain
        if self._threads_per_worker is not None:
            environment.update({name: str(self._threads_per_worker) for name in THREAD_VARIABLES})
            return self._threads_per_worker, environment
        cap = max(1, available_cores() // self.workers)
        user_set = any(name in os.environ for name in THREAD_VARIABLES)
        for name in THREAD_VARIABLES:
            environment.setdefault(name, str(cap))
        return (0 if user_set else cap), environment

    def _reap(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        exited = [worker for worker in workers if worker.process.poll() is not None]
        if exited:
            self._drain()  # what they finished before dying is in the queue already
            for worker in exited:
                self._bury(worker)

    def _bury(self, worker: _Worker) -> None:
        """Forgets an exited worker: its queue goes; its tasks run again or fail."""
        with self._lock:
            self._workers.pop(worker.number, None)
            tasks = list(worker.outstanding.values())
            worker.outstanding.clear()
            worker.in_flight.clear()
        _discard(worker.inbox)
        if worker.stopping and worker.process.returncode == 0 and not tasks:
            return  # retired, or stopped as asked
        _core.collect_garbage(self._domain)  # what it held in shared memory comes back
        if not worker.ready and not worker.stopping:
            self._start_failures += 1
            if self._start_failures >= START_FAILURES_TO_BREAK:
                self._break(
                    _errors.BrokenPool(
                        f"worker processes exit before they are ready (worker {worker.number}, pid "
                        f"{worker.process.pid}, {worker.how_it_ended()}); see their error output above. "
                        "Check that `python -m hakobu._pool.worker` runs in this environment"
                    )
                )
        if not tasks:
            return
        running, again = _what_died(tasks, int(worker.progress[0]), int(worker.progress[1]))
        if running is not None:
            running.attempts += 1
        with self._lock:
            self._pending.extendleft(reversed(again))  # first in line again
            if running is not None and running.attempts <= self._retries:
                self._pending.appendleft(running)
                return
        if running is not None:
            self._finish(running, False, self._lost(worker, running))

    def _lost(self, worker: _Worker, task: Task) -> _errors.WorkerLost:
        code = worker.process.returncode
        message = (
            f"worker {worker.number} (pid {worker.process.pid}) {worker.how_it_ended()} while running task "
            f"{task.id} ({task.label}); the pool replaced the worker"
        )
        if code == -signal.SIGKILL:
            message += "; SIGKILL is also how the kernel's out-of-memory killer ends a process (see `dmesg`)"
        if self._retries:
            message += f"; the task was run {task.attempts} times (retries={self._retries})"
        else:
            message += "; pass retries=N to run such tasks again"
        return _errors.WorkerLost(
            message,
            worker=worker.number,
            pid=worker.process.pid,
            signal=-code if code is not None and code < 0 else None,
            exit_code=code if code is not None and code >= 0 else None,
            task=task.id,
        )

    def _finish(self, task: Task, ok: bool, value: Any) -> None:
        try:
            task.sink.finish(ok, value)
        except BaseException:  # noqa: BLE001 - a user callback raised: report it, keep serving
            _report_callback_error()

    def _finish_all(self, outcomes: list[Outcome]) -> None:
        for task, ok, value in outcomes:
            self._finish(task, ok, value)

    def _cancel(self, task: Task, error: BaseException) -> None:
        try:
            if task.started:
                task.sink.finish(False, error)
            else:
                task.sink.cancel(error)
        except BaseException:  # noqa: BLE001
            _report_callback_error()

    def _break(self, error: _errors.BrokenPool) -> None:
        """Nothing more can run: every task fails with ``error``, new ones are refused."""
        with self._lock:
            if self._broken is not None:
                return
            self._broken = error
            tasks = list(self._pending)
            self._pending.clear()
            self._room.notify_all()
            for worker in self._workers.values():
                tasks.extend(worker.outstanding.values())
                worker.outstanding.clear()
                worker.in_flight.clear()
        for task in tasks:
            self._finish(task, False, self._broken_error())

    def _broken_error(self) -> _errors.BrokenPool:
        """A fresh copy of the error that broke the pool (one exception object per task)."""
        assert self._broken is not None
        error = _errors.BrokenPool(*self._broken.args)
        error.__cause__ = self._broken.__cause__
        return error

    def _terminate_now(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            _kill(worker)
        for worker in workers:
            worker.process.wait()
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
            running = [task for worker in workers for task in worker.outstanding.values()]
            for worker in workers:
                worker.outstanding.clear()
        for worker in workers:
            self._bury(worker)
        for task in running + pending:
            self._cancel(
                task,
                _errors.PoolTerminated(
                    f"the pool was terminated before task {task.id} ({task.label}) finished"
                ),
            )

    def _stop_workers(self, kill: bool) -> None:
        """Stops every worker (they finish their inbox first unless ``kill``) and forgets them."""
        with self._lock:
            workers = list(self._workers.values())
            for worker in workers:
                if kill:
                    _kill(worker)
                elif not worker.stopping:
                    self._retire(worker)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(worker)
                worker.process.wait()
        self._drain()
        for worker in workers:
            self._bury(worker)

    def _release(self) -> None:
        """The manager's last act: no worker, no queue left."""
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:  # only after a fault of the engine itself
            _kill(worker)
            worker.process.wait()
            self._bury(worker)
        with self._lock:
            results, self._results = self._results, None
        if results is not None:
            _discard(results)
        with _live_lock:
            _live_engines.discard(self)


def _what_died(tasks: list[Task], started: int, finished: int) -> tuple[Optional[Task], list[Task]]:
    """(the task a dead worker was running, or None; the tasks to run again) from the tasks it
    had not reported, in the order sent, and its progress slot.

    Those before the running one finished, but their results were held and died
    with the worker: they run again, like those that never started. The slot
    is shared memory: an id that is not among ``tasks`` means none of them
    started (the task before them was reported).
    """
    for index, task in enumerate(tasks):
        if task.id == started:
            if finished == started:  # it finished too: it died between tasks
                return None, tasks
            return task, tasks[:index] + tasks[index + 1 :]
    return None, tasks


def _kill(worker: _Worker) -> None:
    """Kills a worker on purpose (SIGKILL: it cannot be caught); its exit is then expected."""
    worker.stopping = True
    try:
        worker.process.kill()
    except ProcessLookupError:
        pass


def _discard(queue: Queue) -> None:
    """Removes a queue the engine created; its messages are freed when the last holder lets go."""
    try:
        queue.unlink()
    except _errors.HakobuError:
        pass  # already removed (a worker whose parent... was us, removing it at our death)
    try:
        queue.close()
    except _errors.HakobuError:
        pass


def _report_callback_error() -> None:
    print("Exception in a callback of a hakobu pool (the pool goes on):", file=sys.stderr)
    traceback.print_exc()


def _at_exit() -> None:
    """At interpreter exit: Executors finish their work (as concurrent.futures does), Pools are
    terminated, with a ResourceWarning for one still running (as multiprocessing's Pool warns)."""
    with _live_lock:
        engines = [engine for engine in _live_engines if engine.owner_pid == os.getpid()]
    for engine in engines:
        if engine.drain_at_exit:
            engine.close()
            engine.join()
        else:
            if engine.state == RUN:
                warnings.warn(f"unclosed running pool {engine.description}", ResourceWarning, stacklevel=1)
            engine.terminate()


def _forget_in_child() -> None:
    # A forked child has the engines' objects but not their threads or workers.
    _live_engines.clear()


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
