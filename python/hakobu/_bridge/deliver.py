"""Frames back into a local message: what the receiving end puts into its queue or publishes
on its topic (and what the sending end puts back into its queue when it closes).

Each kind is rebuilt in the same message format the codec writes (_codec.py), from
frames that wire.py checked first: so sizes are known before anything is allocated.
The one copy is here, from ZeroMQ's buffer into a block of the local heap. An object
message is rebuilt from its pickle stream and buffers without unpickling it: the final
consumer does that, as its queue's ``allow_pickle`` says.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Optional

from .. import _codec, _core
from . import wire

_OBJECT_HEADER = struct.Struct("<4sI")
_OBJECT_ENTRY = struct.Struct("<IQQ")

# put(timeout): sends the rebuilt message; raises hakobu.Full when no room came in time (the
# message is then still whole, to try again).
Put = Callable[[Optional[float]], None]


def rebuild(channel: Any, kind: int, meta: memoryview, payload: list[memoryview], limit: int) -> Put:
    """The message that ``kind``, ``meta`` and ``payload`` describe, ready to put on
    ``channel`` (a queue's or a topic's core); raises wire.Rejected if they do not fit."""
    if kind == _codec.KIND_BYTES:
        wire.check_raw(meta, payload, kind, limit)
        size = sum(len(frame) for frame in payload)
        if size <= 224:
            small = b"".join(payload)
            return lambda timeout: channel.put_bytes(small, _codec.KIND_BYTES, timeout)
        loan = channel.loan(size, _codec.KIND_BYTES, 0)
        target = memoryview(loan)
        _copy_chunks(target, 0, payload)
        target.release()
        return lambda timeout: channel.put_loan(loan, timeout)
    if kind == _codec.KIND_ARRAY:
        plan = wire.check_array(meta, payload, limit)
        code, bits, lanes, typestr = plan.fields
        loan = channel.loan_array(code, bits, lanes, typestr, plan.shape, plan.fortran)
        if plan.nbytes:
            target = memoryview(loan)
            start = loan.data_offset
            _copy_chunks(target, start, payload)
            target.release()
        return lambda timeout: channel.put_loan(loan, timeout)
    if kind == _codec.KIND_OBJECT:
        pieces = wire.check_object(meta, payload, limit)
        if not pieces.buffers:
            small_stream = b"".join(pieces.stream)
            return lambda timeout: channel.put_pickle(small_stream, timeout)
        return _object_loan(channel, pieces)
    raise wire.Rejected(f"a message of unknown kind {kind} (1 bytes, 2 array, 3 object expected)")


def _copy_chunks(target: memoryview, start: int, payload: list[memoryview]) -> None:
    """Each chunk straight to its offset (wire.check_chunks made sure they fill the block)."""
    for frame in payload:
        end = start + len(frame)
        target[start:end] = frame
        start = end


def _object_loan(channel: Any, plan: wire.ObjectPlan) -> Put:
    header = _OBJECT_HEADER.pack(b"HKP1", len(plan.buffers))
    stream_bytes = sum(len(frame) for frame in plan.stream)
    size = len(header) + len(plan.buffers) * _OBJECT_ENTRY.size + stream_bytes
    loan = channel.loan(size, _codec.KIND_OBJECT, len(plan.buffers))
    entries = []
    for index, (read_only, nbytes, frames) in enumerate(plan.buffers):
        block = _core.allocate(max(nbytes, 1), channel.domain)
        target = memoryview(block)
        _copy_chunks(target, 0, frames)
        target.release()
        if not loan.attach(block):
            raise wire.Rejected("an object buffer that cannot be attached (another domain)")
        entries.append(_OBJECT_ENTRY.pack(index | (_codec.READ_ONLY if read_only else 0), 0, nbytes))
    table = b"".join(entries)
    out = memoryview(loan)
    out[: len(header)] = header
    out[len(header) : len(header) + len(table)] = table
    _copy_chunks(out, len(header) + len(table), plan.stream)
    out.release()
    return lambda timeout: channel.put_loan(loan, timeout)
