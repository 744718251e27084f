"""The pool's wire protocol: what the engine and its workers say to each other, and how.

Both sides import this module and nothing of each other: the engine
(engine.py) writes tasks and reads results, a worker (worker.py) reads tasks
and writes results, with the same tags, record layouts and checks.

Messages
--------
Parent -> worker, on the worker's own inbox:

* Its progress slot (progress_slot): an int64 array in hakobu memory, alone
  in its message so that it travels by reference (the worker writes the
  parent's memory): which task it started, which it finished last.
* ``(HELLO, sys_path, argv, main_script, init_stream, init_buffers)``: once
  (hello_message / read_hello); the worker takes the parent's sys.path and
  argv, learns where the main script is (or None), runs the initializer and
  answers READY or INIT_FAILED.
* A TASKS frame (tasks_frame): functions the worker lacks, keys it may
  forget, and a batch of tasks, each a function key, a mode and a chunk of
  items.
* A STOP frame (STOP_FRAME): finish what came before, say BYE and exit.

Worker -> parent, on the pool's results queue (results_frame): READY, BYE,
INIT_FAILED (one record: the error) and DONE (one record per finished task, in
order: a stream of the chunk's list of results, or of (traceback text,
exception)).

A frame is ``bytes`` (a raw queue message: no pickle around it), or, when
some of its records have out-of-band buffers, a ``(bytes, [buffers])`` object
message. Layout (little-endian; see the struct formats below): a header
(tag, sender or counts), then fixed-size record headers each followed by its
inline stream. A record's stream is inline unless it is large (>=
OUT_OF_BAND_MIN_BYTES), in which case it is the first of the record's
buffers: it is copied once, into shared memory. Every length and count read
from a frame is checked against the frame (FrameReader: shared memory is
untrusted).
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from .. import _codec, _errors
from .._arrays import zeros

# Frame tags (see "Messages" above). HELLO is the first element of a tuple, the others a frame's first byte.
HELLO, TASKS, STOP, READY, INIT_FAILED, DONE, BYE = 1, 2, 3, 4, 5, 6, 7

# How a task's items become calls (see call()).
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

# The whole STOP frame: its tag alone.
STOP_FRAME = bytes((STOP,))

Packed = tuple[Any, list[Any]]  # (stream, out-of-band buffers)


def call(function: Callable[..., Any], mode: int, items: list[Any]) -> list[Any]:
    """Runs a task: ``function`` on each of its items, as its mode says."""
    if mode == MODE_ARG:
        return [function(item) for item in items]
    if mode == MODE_STAR:
        return [function(*item) for item in items]
    return [function(*args, **kwargs) for args, kwargs in items]


# --- the first two messages -------------------------------------------------------------------------


def progress_slot(domain: str) -> np.ndarray:
    """A new progress slot: [started task id, finished task id], written by the worker."""
    return zeros(2, np.int64, domain=domain)


def progress_view(message: Any) -> Optional[memoryview]:
    """The worker's view of its progress slot (its first message); None if it is not one."""
    if not isinstance(message, np.ndarray) or message.dtype != np.int64 or message.shape != (2,):
        return None
    return memoryview(message.view(np.uint8)).cast("q")  # type: ignore[arg-type]


class Hello(NamedTuple):
    """The worker's second message: what it needs of the parent before the first task."""

    sys_path: list[str]
    argv: list[str]
    main_script: Optional[tuple[str, Optional[str]]]  # (path, module name), or None
    init_stream: Any  # (initializer, initargs) packed
    init_buffers: list[Any]


def hello_message(
    sys_path: list[str], argv: list[str], main_script: Optional[tuple[str, Optional[str]]], init: Packed
) -> tuple[Any, ...]:
    """The HELLO message (see "Messages")."""
    return (HELLO, sys_path, argv, main_script, *init)


def read_hello(message: Any) -> Optional[Hello]:
    """The HELLO message's fields; None if ``message`` is not one (the pool stopped first)."""
    if not isinstance(message, tuple) or len(message) != 6 or message[0] != HELLO:
        return None
    return Hello(*message[1:])


# --- frames ---------------------------------------------------------------------------------------


def _record(stream: bytes, own: list[Any]) -> tuple[int, int, bytes, list[Any]]:
    """(stream length field, buffer count, inline stream, buffers) of a record: a large stream
    goes out of band, as the record's first buffer."""
    if len(stream) >= _codec.OUT_OF_BAND_MIN_BYTES:
        return STREAM_OUT_OF_BAND, len(own) + 1, b"", [pickle.PickleBuffer(stream), *own]
    return len(stream), len(own), stream, own


def frame_message(parts: list[bytes], buffers: list[Any]) -> Any:
    """The queue message of a frame: raw bytes, or (bytes, buffers) when it has buffers."""
    frame = b"".join(parts)
    return (frame, buffers) if buffers else frame


def tasks_frame(
    forget: Sequence[bytes],
    functions: Sequence[tuple[bytes, bytes]],
    tasks: Sequence[tuple[int, bytes, int, Packed]],
) -> tuple[list[bytes], list[Any]]:
    """(parts, buffers) of a TASKS frame: the function keys the worker may forget, the functions
    it lacks as (key, pickle), and the tasks as (id, function key, mode, (stream, buffers))."""
    parts = [TASKS_HEADER.pack(TASKS, len(forget), len(functions), len(tasks), tasks[0][0]), *forget]
    buffers: list[Any] = []
    # Each record: its header (its stream length and buffer count last), its inline stream.
    for key, blob in functions:
        length, count, inline, own = _record(blob, [])
        parts += (FUNCTION_RECORD.pack(key, length, count), inline)
        buffers += own
    for task_id, key, mode, (stream, own) in tasks:
        length, count, inline, own = _record(stream, own)
        parts += (TASK_RECORD.pack(task_id, key, mode, length, count), inline)
        buffers += own
    return parts, buffers


def results_frame(
    tag: int, number: int, records: list[tuple[int, bool, Packed]]
) -> tuple[list[bytes], list[Any]]:
    """(parts, buffers) of a worker's frame: ``records`` are (task id, ok, (stream, buffers))."""
    parts = [RESULTS_HEADER.pack(tag, number, len(records))]
    buffers: list[Any] = []
    for task_id, ok, (stream, own) in records:
        length, count, inline, own = _record(stream, own)
        parts += (RESULT_RECORD.pack(task_id, ok, length, count), inline)
        buffers += own
    return parts, buffers


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

    def tag(self) -> int:
        """The frame's tag (its first byte), read without moving on."""
        if len(self.frame) < 1:
            raise _errors.Corrupt("a pool message shorter than its records")
        return int(self.frame[0])

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
