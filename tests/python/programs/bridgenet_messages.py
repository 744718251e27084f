"""The streams the two-host bridge tests send, and their checks (imported by bridgenet_produce.py
and bridgenet_consume.py: the consumer rebuilds what the producer sent and compares).

* "variety": every kind of message, message k made from k alone: arrays of many dtypes, shapes and
  orders (a 64 MiB one among them), bytes of several sizes, objects (with and without large
  buffers, an instance of a class of this module). The k-th message received must equal the k-th
  made (kind, dtype, shape, contiguity, every byte): one lost, doubled or swapped shows.
* "numbered": messages that carry their number (an int64 array filled with it, bytes starting with
  it, a dict holding it), of about 100 KiB, for the fault tests, where the consumer reports the
  numbers it saw and the test judges them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass
class Point:
    """A user's class: travels pickled, unpickled by the final consumer only."""

    x: float
    y: float
    label: str


def _rng(k: int) -> np.random.Generator:
    return np.random.default_rng(1000 + k)


def _array(dtype: Any, shape: tuple[int, ...], order: str = "C") -> Callable[[int], np.ndarray]:
    def make(k: int) -> np.ndarray:
        dt = np.dtype(dtype)
        raw = _rng(k).integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
        if dt.kind == "f" or dt.kind == "c":  # random bytes may be NaNs, which compare unequal: use values
            values = _rng(k).standard_normal(int(np.prod(shape)) * (2 if dt.kind == "c" else 1))
            flat = values.view(np.complex128) if dt.kind == "c" else values
            return np.asarray(flat.astype(dt).reshape(shape), order=order)
        return np.asarray(raw.view(dt).reshape(shape), order=order)

    return make


def _strided(k: int) -> np.ndarray:
    return np.arange(200, dtype=np.int32)[::3] * (k + 1)  # neither C nor F contiguous: arrives C


def _big(k: int) -> np.ndarray:
    array = np.empty((4096, 4096), dtype=np.float32)  # 64 MiB
    array[...] = np.arange(4096, dtype=np.float32)[:, None] + k
    return array


VARIETY: list[Callable[[int], Any]] = [
    _array(np.float64, (1000,)),
    _array(np.int8, (3, 5, 7)),
    lambda k: bytes(_rng(k).integers(0, 256, size=100, dtype=np.uint8)),
    _array(np.uint16, (256, 256)),
    lambda k: {"k": k, "text": "héllo wörld", "nested": [1, 2.5, None, (True, b"x")]},
    _array(np.complex64, (17,)),
    _array(np.bool_, (100,)),
    lambda k: b"",
    _array(np.float32, (64, 48), "F"),
    _array(np.int64, ()),
    _array(np.float16, (0,)),
    lambda k: Point(k / 3, -k, f"point {k}"),
    _array(np.dtype([("a", "<i4"), ("b", "<f8", (2,))]), (10,)),
    _array(">i4", (50,)),
    _array("datetime64[ns]", (5,)),
    lambda k: bytes(_rng(k).integers(0, 256, size=300_000, dtype=np.uint8)),
    _strided,
    lambda k: {"k": k, "weights": _rng(k).standard_normal(200_000)},  # a large out-of-band buffer
    _array("U8", (4,)),
    _big,
    _array(np.uint64, (3, 1, 2)),
]


def variety(k: int) -> Any:
    return VARIETY[k % len(VARIETY)](k)


def same(got: Any, expected: Any) -> str:
    """'' when ``got`` is ``expected`` as a bridge must deliver it, else what differs."""
    if isinstance(expected, np.ndarray):
        if not isinstance(got, np.ndarray):
            return f"a {type(got).__name__}, not an array"
        if got.dtype != expected.dtype or got.shape != expected.shape:
            return f"{got.dtype} {got.shape}, not {expected.dtype} {expected.shape}"
        if expected.flags.f_contiguous and not expected.flags.c_contiguous and not got.flags.f_contiguous:
            return "not Fortran-contiguous as sent"
        if not expected.flags.f_contiguous and not got.flags.c_contiguous:
            return "not C-contiguous"
        if np.ascontiguousarray(got).tobytes() != np.ascontiguousarray(expected).tobytes():
            return "other values"
        return ""
    if isinstance(expected, dict) and isinstance(got, dict) and set(got) == set(expected):
        for key, value in expected.items():
            differs = same(got[key], value) if isinstance(value, np.ndarray) else got[key] != value
            if differs:
                return f"key {key!r} differs: {differs}"
        return ""
    if type(got) is not type(expected) or got != expected:
        return f"{type(got).__name__} {str(got)[:80]!r}, not {type(expected).__name__} {str(expected)[:80]!r}"
    return ""


def numbered(k: int) -> Any:
    if k % 3 == 0:
        return np.full(12_800, k, dtype=np.int64)  # 100 KiB
    if k % 3 == 1:
        return b"%012d" % k + bytes(100_000)
    return {"k": k, "pad": bytes(100_000)}


def number_of(message: Any) -> int:
    """The number a "numbered" message carries (checking that the rest of it is whole)."""
    if isinstance(message, np.ndarray):
        if message.shape != (12_800,) or not (message == message[0]).all():
            raise ValueError(f"a damaged numbered array: {message.shape} {message[:4]}")
        return int(message[0])
    if isinstance(message, bytes):
        if len(message) != 100_012 or any(message[12:]):
            raise ValueError(f"damaged numbered bytes of {len(message)}")
        return int(message[:12])
    if isinstance(message, dict) and set(message) == {"k", "pad"} and message["pad"] == bytes(100_000):
        return int(message["k"])
    raise ValueError(f"not a numbered message: {type(message).__name__}")
