"""Frames back into a local message: what the receiving end puts into its queue or publishes
on its topic (and what the sending end puts back into its queue when it closes).

Each kind is rebuilt in the same message format the codec writes (_codec.py), in two steps:
``land`` checks the kind, the meta frame and the payload frames' sizes (wire.py) and only
then allocates the message, returning where its payload goes (``Landing.regions``: the
block's memory, in order); the payload is then written there, copied from ZeroMQ's frames
(``scatter``) or read from the data lane's socket straight into it. That is the one copy.
An object message is rebuilt from its pickle stream and buffers without unpickling it: the
final consumer does that, as its queue's ``allow_pickle`` says.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Optional

from .. import _codec, _core
from . import wire

_OBJECT_HEADER = struct.Struct("<4sI")
_OBJECT_ENTRY = struct.Struct("<IQQ")
SMALL_BYTES = 224  # bytes messages up to this size ride inside the queue's slot (no block)

# put(timeout): sends the rebuilt message; raises hakobu.Full when no room came in time (the
# message is then still whole, to try again).
Put = Callable[[Optional[float]], None]


class Landing:
    """A message allocated from checked sizes, waiting for its payload: ``regions`` (writable
    memoryviews, in payload order, whose sizes add up to the payload's) are filled, then
    ``seal()`` lets go of them and returns the put."""

    def __init__(self, regions: list[memoryview], put: Put) -> None:
        self.regions = regions
        self._put = put

    def seal(self) -> Put:
        for region in self.regions:
            region.release()
        self.regions = []
        return self._put


def land(channel: Any, kind: int, meta: memoryview, sizes: list[int], limit: int) -> Landing:
    """The message that ``kind``, ``meta`` and the payload frames' ``sizes`` describe, allocated
    on ``channel`` (a queue's or a topic's core) with its payload still to be written; raises
    wire.Rejected if they do not fit."""
    if kind == _codec.KIND_BYTES:
        size = wire.check_raw(meta, sizes, kind, limit)
        if size <= SMALL_BYTES:
            small = bytearray(size)
            return Landing(
                [memoryview(small)], lambda timeout: channel.put_bytes(small, _codec.KIND_BYTES, timeout)
            )
        loan = channel.loan(size, _codec.KIND_BYTES, 0)
        return Landing([memoryview(loan)], lambda timeout: channel.put_loan(loan, timeout))
    if kind == _codec.KIND_ARRAY:
        plan = wire.check_array(meta, sizes, limit)
        code, bits, lanes, typestr = plan.fields
        loan = channel.loan_array(code, bits, lanes, typestr, plan.shape, plan.fortran)
        start = loan.data_offset
        return Landing(
            [memoryview(loan)[start : start + plan.nbytes]], lambda timeout: channel.put_loan(loan, timeout)
        )
    if kind == _codec.KIND_OBJECT:
        pieces = wire.check_object(meta, sizes, limit)
        if not pieces.buffers:
            stream = bytearray(pieces.stream)
            return Landing([memoryview(stream)], lambda timeout: channel.put_pickle(stream, timeout))
        return _object_landing(channel, pieces)
    raise wire.Rejected(f"a message of unknown kind {kind} (1 bytes, 2 array, 3 object expected)")


def _object_landing(channel: Any, plan: wire.ObjectPlan) -> Landing:
    header = _OBJECT_HEADER.pack(b"HKP1", len(plan.buffers))
    table_end = len(header) + len(plan.buffers) * _OBJECT_ENTRY.size
    loan = channel.loan(table_end + plan.stream, _codec.KIND_OBJECT, len(plan.buffers))
    out = memoryview(loan)
    regions = [out[table_end:]]
    entries = []
    for index, (read_only, nbytes) in enumerate(plan.buffers):
        block = _core.allocate(max(nbytes, 1), channel.domain)
        if not loan.attach(block):
            raise wire.Rejected("an object buffer that cannot be attached (another domain)")
        regions.append(memoryview(block)[:nbytes])
        entries.append(_OBJECT_ENTRY.pack(index | (_codec.READ_ONLY if read_only else 0), 0, nbytes))
    out[: len(header)] = header
    out[len(header) : table_end] = b"".join(entries)
    out.release()
    return Landing(regions, lambda timeout: channel.put_loan(loan, timeout))


def scatter(frames: list[memoryview], regions: list[memoryview]) -> None:
    """Copies ``frames`` in order over ``regions`` in order (both add up to the same size:
    the checks of land() made sure of it), each byte once."""
    targets = iter(regions)
    target, filled = next(targets, memoryview(b"")), 0
    for frame in frames:
        taken = 0
        while taken < len(frame):
            while filled == len(target):
                target, filled = next(targets), 0
            step = min(len(frame) - taken, len(target) - filled)
            target[filled : filled + step] = frame[taken : taken + step]
            taken += step
            filled += step


def rebuild(channel: Any, kind: int, meta: memoryview, payload: list[memoryview], limit: int) -> Put:
    """The message that ``kind``, ``meta`` and the payload frames make, ready to put."""
    landing = land(channel, kind, meta, [len(frame) for frame in payload], limit)
    scatter(payload, landing.regions)
    return landing.seal()
