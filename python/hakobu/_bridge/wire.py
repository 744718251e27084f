"""The bridge's frame format, and the checks of everything the network brings.

Every ZeroMQ message between two bridges is a multipart message whose first
frame is a header: ``b"HKBR"``, a version byte (VERSION), a type byte, two
zero bytes, then fixed fields by type (little-endian):

* HELLO (sending end -> receiving end): session (16 bytes), acked (u64): the
  sender's presence, sent every HEARTBEAT_SECONDS; ``acked`` is the last
  sequence number the receiving end confirmed to this session (a receiving end
  that restarted learns where the session stands from it).
* DATA (sending end -> receiving end): session, seq (u64), acked (u64), kind
  (u8), then a meta frame (JSON, at most MAX_META_BYTES) and the payload frames:
  bytes: the bytes as chunks (empty meta); array: the elements in C or Fortran
  order as chunks, meta ``{"t": typestr, "s": shape, "o": "C"|"F"}``; object: the
  pickle stream, then each out-of-band buffer, each piece as exact chunks, meta
  ``{"s": stream bytes, "b": [[read_only, nbytes], ...]}``. Chunks: consecutive
  frames of at most CHUNK bytes each (the sender cuts at CHUNK; an empty payload
  is one empty frame), whose total is the payload's size, at most size // CHUNK +
  CHUNK_SLACK of them; an object's pieces are cut exactly (every frame of a piece
  CHUNK bytes but its last), so that the meta frame alone says which frames make
  which piece. Large frames cost the receiving side a fresh mapping (page faults)
  per message in libzmq; chunks reuse its buffers, and each is copied straight to
  its offset in the local block. No frame is larger than CHUNK, so a receiving
  end has ZeroMQ refuse much larger ones (LARGEST_FRAME) before it allocates them.
  Other kinds are not forwarded (the core refuses them as Corrupt; counted as rejected).
* END (sending end -> receiving end): session, seq, acked, failed (u8): the
  local stream ended (``failed``: SendersLost); numbered like DATA, so it is
  delivered after every message before it.
* STATUS (receiving end -> sending end): receiver id (16 bytes), session, last
  (u64), flags (u8: BUSY, GAP, ENDED), lane port (u16, 0: none): the
  acknowledgement (every message of the session up to ``last`` is in the
  receiving end's local queue), also sent as a heartbeat.

The data lane (lane.py): a receiving end that binds without keys also listens on
a plain TCP port (STATUS's lane port), and a sending end that reaches it carries
its numbered messages (DATA and END) there instead of through ZeroMQ, so that the
receiving end reads each payload straight into the block it puts in its queue
(ZeroMQ would receive it into a buffer of its own first: one copy more). The
connection opens with a lane hello: ``b"HKBL"``, the version byte, three zero
bytes, the session and the receiver id the sending end heard in STATUS. Each
message on it is a prefix, ``b"HKBM"``, the frame count (u32) and the frames'
total size (u64), then each frame's size (u32 each), then the frames themselves:
the same frames as the message would have in ZeroMQ, checked the same way.

Nothing here trusts the peer: lengths are checked against the header before
anything is allocated, the meta frame is bounded before it is parsed, and a
dtype must be one this side would send itself (no object dtypes).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .. import _codec, _errors

MAGIC = b"HKBR"
# 2: bytes and arrays as chunks of at most CHUNK bytes; 3: an object's pieces too; 4: the data lane.
VERSION = 4

HELLO = 1
DATA = 2
END = 3
STATUS = 4

# STATUS flags.
# BUSY: the receiving end waits for room in its local queue, or a message is on its way on the
# lane (a slow link): no acknowledgement is overdue.
BUSY = 1
GAP = 2  # a message arrived after a missing one (lost with a connection): send again from last + 1
ENDED = 4  # the session's end was delivered

_HEADER = struct.Struct("<4sBBxx")
_HELLO = struct.Struct("<16sQ")
_DATA = struct.Struct("<16sQQB")
_END = struct.Struct("<16sQQB")
_STATUS = struct.Struct("<16s16sQBH")
_LANE_HELLO = struct.Struct("<4sB3x16s16s")
_LANE_PREFIX = struct.Struct("<4sIQ")
LANE_MAGIC = b"HKBL"
LANE_MESSAGE = b"HKBM"

MAX_META_BYTES = 64 * 1024
MAX_BUFFERS = 4096  # out-of-band buffers of one object message
MAX_FRAMES = MAX_BUFFERS + 3  # header, meta, stream, buffers (each at least one frame)
CHUNK = 1 << 20  # the largest payload frame
CHUNK_SLACK = 4  # chunk frames allowed beyond size // CHUNK
# What a receiving end lets ZeroMQ take in one frame: no bridge sends more than CHUNK, so a
# larger frame is bad input; up to this size it arrives, is refused and counted (and warned
# about), beyond it ZeroMQ drops the peer's connection before allocating the frame.
LARGEST_FRAME = 4 * CHUNK


def max_frames(limit: int) -> int:
    """The most frames a message within ``limit`` bytes can have: an object's pieces take one
    frame each, and one more per CHUNK bytes."""
    return MAX_FRAMES + limit // CHUNK + CHUNK_SLACK


def piece_sizes(nbytes: int) -> list[int]:
    """The frames' sizes of a piece of ``nbytes`` cut exactly into chunks (one empty frame for 0)."""
    full, rest = divmod(nbytes, CHUNK)
    return [CHUNK] * full + ([rest] if rest or not full else [])


def chunks(data: Any) -> list[Any]:
    """``data`` (a 1-D bytes-like of unsigned bytes) as frames of at most CHUNK bytes: views of
    it, no copy; an empty ``data`` is one empty frame."""
    size = len(data)
    if size <= CHUNK:
        return [data]
    return [data[start : start + CHUNK] for start in range(0, size, CHUNK)]


def check_chunks(sizes: list[int], nbytes: int, what: str) -> None:
    """Chunk frames (given by their ``sizes``) whose total is ``nbytes``: each at most CHUNK
    bytes, at least one, at most nbytes // CHUNK + CHUNK_SLACK of them."""
    count = len(sizes)
    if not 1 <= count <= nbytes // CHUNK + CHUNK_SLACK:
        raise Rejected(
            f"{what} of {nbytes} bytes in {count} payload frames (1 to {nbytes // CHUNK + CHUNK_SLACK})"
        )
    if max(sizes) > CHUNK:
        raise Rejected(f"{what} with a payload frame of {max(sizes)} bytes (at most {CHUNK})")
    if sum(sizes) != nbytes:
        raise Rejected(f"{what} of {nbytes} bytes with payload frames of {sum(sizes)} bytes in all")


MAX_DIMENSIONS = 64
MAX_TYPESTR = 4096
KNOWN_KINDS = (_codec.KIND_BYTES, _codec.KIND_ARRAY, _codec.KIND_OBJECT)


class Rejected(Exception):
    """What the peer sent is malformed; the text says how (the bridge drops it and warns)."""


def _header(kind: int) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, kind)


def hello(session: bytes, acked: int) -> bytes:
    return _header(HELLO) + _HELLO.pack(session, acked)


def data_header(session: bytes, seq: int, acked: int, kind: int) -> bytes:
    return _header(DATA) + _DATA.pack(session, seq, acked, kind)


def end(session: bytes, seq: int, acked: int, failed: bool) -> bytes:
    return _header(END) + _END.pack(session, seq, acked, int(failed))


def status(receiver: bytes, session: bytes, last: int, flags: int, lane_port: int = 0) -> bytes:
    return _header(STATUS) + _STATUS.pack(receiver, session, last, flags, lane_port)


LANE_HELLO_BYTES = _LANE_HELLO.size
LANE_PREFIX_BYTES = _LANE_PREFIX.size


def lane_hello(session: bytes, receiver: bytes) -> bytes:
    return _LANE_HELLO.pack(LANE_MAGIC, VERSION, session, receiver)


def parse_lane_hello(data: Any) -> tuple[bytes, bytes]:
    """(session, receiver id) of a lane hello, or Rejected."""
    magic, version, session, receiver = _LANE_HELLO.unpack(data)
    if magic != LANE_MAGIC:
        raise Rejected(f"a lane connection that is not a hakobu bridge's (starts with {bytes(magic)!r})")
    if version != VERSION:
        raise Rejected(f"a lane of protocol version {version}, this bridge speaks version {VERSION}")
    return session, receiver


def lane_prefix(sizes: list[int]) -> bytes:
    """What goes before a message's frames on the lane: their count, total size and sizes."""
    return _LANE_PREFIX.pack(LANE_MESSAGE, len(sizes), sum(sizes)) + struct.pack(f"<{len(sizes)}I", *sizes)


def parse_lane_prefix(data: Any) -> tuple[int, int]:
    """(frame count, total bytes) of a lane message's prefix, or Rejected (the lane is then
    out of step: its connection is closed)."""
    magic, count, total = _LANE_PREFIX.unpack(data)
    if magic != LANE_MESSAGE:
        raise Rejected(f"a lane message that does not start with {LANE_MESSAGE!r} ({bytes(magic)!r})")
    if count < 1:
        raise Rejected("a lane message of no frames")
    return count, total


def parse_lane_sizes(data: Any, count: int, total: int) -> list[int]:
    """The frame sizes of a lane message, checked against its prefix's total (Rejected: the
    lane is out of step)."""
    sizes = list(struct.unpack(f"<{count}I", data))
    if sum(sizes) != total:
        raise Rejected(f"a lane message whose frame sizes add up to {sum(sizes)}, not {total}")
    return sizes


@dataclass
class Header:
    """A checked header frame."""

    type: int
    session: bytes = b""
    seq: int = 0
    acked: int = 0
    kind: int = 0
    failed: bool = False
    receiver: bytes = b""
    last: int = 0
    flags: int = 0
    lane_port: int = 0


def parse_header(frame: memoryview) -> Header:
    """The header frame's fields, or Rejected saying what is wrong with it."""
    if len(frame) < _HEADER.size:
        raise Rejected(f"a header frame of {len(frame)} bytes (at least {_HEADER.size} expected)")
    magic, version, kind = _HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise Rejected(f"a frame that is not a hakobu bridge header (starts with {bytes(magic)!r})")
    if version != VERSION:
        raise Rejected(
            f"protocol version {version}, this bridge speaks version {VERSION} (run the same hakobu version on both ends)"
        )
    body = frame[_HEADER.size :]
    layouts = {HELLO: _HELLO, DATA: _DATA, END: _END, STATUS: _STATUS}
    layout = layouts.get(kind)
    if layout is None:
        raise Rejected(f"an unknown message type {kind}")
    if len(body) != layout.size:
        raise Rejected(f"a type-{kind} header of {len(frame)} bytes ({_HEADER.size + layout.size} expected)")
    fields = layout.unpack(body)
    if kind == HELLO:
        return Header(kind, session=fields[0], acked=fields[1])
    if kind == DATA:
        return Header(kind, session=fields[0], seq=fields[1], acked=fields[2], kind=fields[3])
    if kind == END:
        return Header(kind, session=fields[0], seq=fields[1], acked=fields[2], failed=bool(fields[3]))
    return Header(
        kind, receiver=fields[0], session=fields[1], last=fields[2], flags=fields[3], lane_port=fields[4]
    )


# --- the sending end: a received local message as frames -----------------------------------


# Meta frames of the last array layouts sent / received (a stream repeats a few): what is
# made or parsed and checked again for every small message otherwise. Bounded: emptied when full.
MEMO_ENTRIES = 64
_sent_metas: dict[tuple[str, tuple[int, ...], str], bytes] = {}
_received_metas: dict[bytes, tuple[np.dtype, tuple[int, int, int, str], tuple[int, ...], bool, int, int]] = {}


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= MEMO_ENTRIES:
        memo.clear()
    memo[key] = value


def array_frames(array: np.ndarray) -> tuple[bytes, list[Any]]:
    """(meta, [elements]) of ``array``: its memory itself when contiguous (no copy), else a
    contiguous copy (a strided view sent by reference)."""
    if array.flags.c_contiguous:
        order, flat = "C", array
    elif array.flags.f_contiguous:
        order, flat = "F", array.T  # C-contiguous, the same bytes
    else:
        order, flat = "C", np.ascontiguousarray(array)
    # Bytes of the elements without a copy: a uint8 view of the same memory.
    elements = flat.reshape(-1).view(np.uint8) if flat.size else b""
    # dtype.str says all of a dtype without fields or subarrays (the memo's key); others are described anew.
    simple = array.dtype.names is None and array.dtype.subdtype is None
    key = (array.dtype.str, array.shape, order)
    meta = _sent_metas.get(key) if simple else None
    if meta is None:
        typestr = _codec.dtype_fields(array.dtype)[3]
        meta = json.dumps({"t": typestr, "s": list(array.shape), "o": order}).encode()
        if simple:
            _remember(_sent_metas, key, meta)
    return meta, chunks(elements)


def object_frames(payload: memoryview, attachments: list[memoryview]) -> tuple[bytes, list[Any]]:
    """(meta, [stream, buffers...]) of an object message: its payload (``b"HKP1"``, the buffer
    table, the pickle stream) and its attachments, checked (shared memory is untrusted too).
    Nothing is unpickled: the stream travels as bytes."""
    header_size = struct.calcsize("<4sI")
    entry = struct.Struct("<IQQ")
    if len(payload) < header_size:
        raise Rejected("an object message shorter than its header")
    magic, count = struct.unpack_from("<4sI", payload)
    if magic != b"HKP1" or count > len(attachments) or count > MAX_BUFFERS:
        raise Rejected("an object message with a damaged header")
    table_end = header_size + count * entry.size
    if table_end > len(payload):
        raise Rejected("an object message shorter than its buffer table")
    stream = payload[table_end:]
    frames: list[Any] = chunks(stream)
    described = []
    for k in range(count):
        index, offset, length = entry.unpack_from(payload, header_size + k * entry.size)
        attachment = index & ~_codec.READ_ONLY
        if attachment >= len(attachments) or offset + length > len(attachments[attachment]):
            raise Rejected("an object message whose buffer lies outside its attachment")
        frames += chunks(attachments[attachment][offset : offset + length])
        described.append([1 if index & _codec.READ_ONLY else 0, length])
    meta = json.dumps({"s": len(stream), "b": described}).encode()
    return meta, frames


# --- the receiving end: frames checked against their meta ----------------------------------


def _meta(frame: memoryview) -> Any:
    if len(frame) > MAX_META_BYTES:
        raise Rejected(f"a meta frame of {len(frame)} bytes (at most {MAX_META_BYTES})")
    try:
        return json.loads(bytes(frame))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise Rejected(f"an unreadable meta frame ({type(error).__name__})") from None


@dataclass
class ArrayPlan:
    dtype: np.dtype
    fields: tuple[int, int, int, str]
    shape: list[int]
    fortran: bool
    nbytes: int


def check_array(meta_frame: memoryview, payload: list[int], limit: int) -> ArrayPlan:
    """What an array message must become, checked against its payload frames' sizes (chunks)."""
    key = bytes(meta_frame)
    known = _received_metas.get(key)
    if known is None:
        known = _array_layout(meta_frame)
        _remember(_received_metas, key, known)
    dtype, fields, shape, fortran, nbytes, extent = known
    if nbytes > limit or extent >= 2**62:
        raise Rejected(
            f"an array of {max(nbytes, extent)} bytes by its shape, more than max_message_bytes={limit}"
        )
    check_chunks(payload, nbytes, "an array (by its shape and type)")
    return ArrayPlan(dtype, fields, list(shape), fortran, nbytes)


def _array_layout(
    meta_frame: memoryview,
) -> tuple[np.dtype, tuple[int, int, int, str], tuple[int, ...], bool, int, int]:
    """An array meta frame parsed and checked: (dtype, its fields, shape, Fortran order, bytes,
    extent of its non-zero dimensions). The same bytes always give the same answer."""
    meta = _meta(meta_frame)
    if not isinstance(meta, dict) or set(meta) != {"t", "s", "o"}:
        raise Rejected("an array meta frame without exactly the keys t, s, o")
    typestr, shape, order = meta["t"], meta["s"], meta["o"]
    if not isinstance(typestr, str) or not 0 < len(typestr) <= MAX_TYPESTR:
        raise Rejected("an array type that is not a string of 1 to 4096 characters")
    if order not in ("C", "F"):
        raise Rejected(f"an array order {order!r} (C or F expected)")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMENSIONS
        or not all(type(n) is int and 0 <= n < 2**62 for n in shape)
    ):
        raise Rejected(f"an array shape that is not a list of at most {MAX_DIMENSIONS} sizes >= 0")
    try:
        dtype = _codec.dtype_from_fields(0, 0, 0, typestr)
        fields = _codec.dtype_fields(dtype)
    except (_errors.HakobuError, ValueError, TypeError, RecursionError, MemoryError):
        raise Rejected(f"an array type {typestr[:80]!r} this side cannot read") from None
    if dtype.hasobject or dtype.itemsize == 0 or fields[3] != typestr:
        raise Rejected(
            f"an array type {typestr[:80]!r} that a bridge never sends (objects, empty or altered types)"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    # What the core checks even for an empty array: the extent of its non-zero dimensions
    # (strides, byte size) must fit, so an empty [0, 2**61] is refused here, not at put time.
    extent = math.prod(n for n in shape if n) * dtype.itemsize
    return dtype, fields, tuple(shape), order == "F", nbytes, extent


@dataclass
class ObjectPlan:
    """An object message's pieces: its pickle stream's size, then each out-of-band buffer as
    (read_only, nbytes); the payload frames are these pieces in this order, each cut into chunks."""

    stream: int
    buffers: list[tuple[bool, int]]


def check_object(meta_frame: memoryview, payload: list[int], limit: int) -> ObjectPlan:
    """An object message's pieces, its payload frames' sizes checked against its meta frame:
    the stream's size and each buffer's say how many frames of which sizes each piece has."""
    meta = _meta(meta_frame)
    if not isinstance(meta, dict) or set(meta) != {"s", "b"} or not isinstance(meta["b"], list):
        raise Rejected("an object meta frame without exactly the keys s (an int) and b (a list)")
    stream_bytes, described = meta["s"], meta["b"]
    if type(stream_bytes) is not int or stream_bytes < 0:
        raise Rejected("an object whose stream size is not an int >= 0")
    if len(described) > MAX_BUFFERS:
        raise Rejected(f"an object with {len(described)} buffers (at most {MAX_BUFFERS})")
    buffers = []
    for item in described:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or item[0] not in (0, 1)
            or type(item[1]) is not int
            or item[1] < 0
        ):
            raise Rejected("an object buffer description that is not [read_only 0|1, nbytes >= 0]")
        buffers.append((bool(item[0]), int(item[1])))
    total = stream_bytes + sum(n for _, n in buffers)
    if total > limit:
        raise Rejected(f"an object of {total} bytes by its meta frame, more than max_message_bytes={limit}")
    sizes = [stream_bytes, *(n for _, n in buffers)]
    frame_count = sum(max(1, -(-n // CHUNK)) for n in sizes)  # counted before any list is built
    if len(payload) != frame_count:
        raise Rejected(
            f"an object of {len(buffers)} buffers and {total} bytes in {len(payload)} payload frames "
            f"({frame_count} expected)"
        )
    expected = [size for n in sizes for size in piece_sizes(n)]  # as many as frames came: bounded
    if payload != expected:
        raise Rejected("an object whose payload frames do not have the sizes its meta frame says")
    return ObjectPlan(stream_bytes, buffers)


def check_raw(meta_frame: memoryview, payload: list[int], kind: int, limit: int) -> int:
    """A bytes message: chunks within the limit; returns its size."""
    if len(meta_frame) != 0:
        raise Rejected(f"a kind-{kind} message with a meta frame (none expected)")
    total = sum(payload)
    if total > limit:
        raise Rejected(f"a message of {total} bytes, more than max_message_bytes={limit}")
    check_chunks(payload, total, f"a kind-{kind} message")
    return total


def describe_peer(address: Optional[str]) -> str:
    return f"peer {address}" if address else "a peer"
