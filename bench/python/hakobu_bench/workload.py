"""What a bench run measures: the shapes, the settings, the figures of one method on one shape,
the arrays sent and how an answer is checked against them.

The lowest layer of the package (NumPy only): the channels, the runner, the
report and the MPI program all build on it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np


@dataclass(frozen=True)
class Shape:
    """One workload: an array of ``dims`` and ``dtype``; ``repeat`` timed trips by default."""

    name: str
    dims: tuple[int, ...]
    dtype: str
    repeat: int
    quick_repeat: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.dims) * np.dtype(self.dtype).itemsize


SHAPES = [
    Shape("64B", (8,), "float64", 1000, 50),  # latency: a 64-byte message
    Shape("1x3x224x224", (1, 3, 224, 224), "float64", 50, 5),
    Shape("2x1024x16x16", (2, 1024, 16, 16), "float64", 50, 5),
    Shape("2x3x16x224x224", (2, 3, 16, 224, 224), "float64", 10, 3),
    Shape("mnist-70000x784", (70000, 784), "float32", 5, 2),
    Shape("128x1024x1024", (128, 1024, 1024), "float64", 3, 1),
]
QUICK_SHAPES = ("64B", "1x3x224x224", "2x1024x16x16")


def parse_shape(text: str) -> Shape:
    """A known shape name, or AxBxC[:dtype] (float64 by default)."""
    for shape in SHAPES:
        if shape.name == text:
            return shape
    match = re.fullmatch(r"(\d+(?:x\d+)*)(?::(\w+))?", text)
    if not match:
        known = ", ".join(s.name for s in SHAPES)
        raise ValueError(f"unknown shape '{text}': use one of {known}, or AxBxC[:dtype]")
    dtype = match.group(2) or "float64"
    np.dtype(dtype)  # raises TypeError for an unknown dtype
    dims = tuple(int(n) for n in match.group(1).split("x"))
    return Shape(text, dims, dtype, 10, 3)


@dataclass(frozen=True)
class Settings:
    """How a run measures: trips per shape, encoding, limits."""

    repeat: Optional[int] = None  # timed trips per shape (None: the shape's default)
    warmup: Optional[int] = None  # untimed trips first (None: 1, or 5 for tiny messages)
    quick: bool = False  # the shapes' quick repeat counts
    serialize: Optional[str] = None  # None, or a channel.SERIALIZERS entry
    no_limits: bool = False  # run methods on arrays above their max_bytes

    def repeats(self, shape: Shape) -> int:
        return (
            self.repeat if self.repeat is not None else (shape.quick_repeat if self.quick else shape.repeat)
        )

    def warmups(self, shape: Shape) -> int:
        if self.warmup is not None:
            return self.warmup
        return (
            5 if shape.nbytes < 4096 and not self.quick else 1
        )  # the latency workload warms caches and wakeups more

    def trips(self, shapes: Sequence[Shape]) -> int:
        """Round trips one method makes over ``shapes`` (for the progress bar)."""
        return sum(self.repeats(s) + self.warmups(s) for s in shapes)


@dataclass
class Result:
    """The figures of one method on one shape (times in nanoseconds, one per timed trip)."""

    method: str
    shape: str
    nbytes: int
    send: list[int] = field(default_factory=list)
    rebuild: list[int] = field(default_factory=list)
    back: list[int] = field(default_factory=list)  # "return": the answer back and rebuilt in the sender
    total: list[int] = field(default_factory=list)
    validated: int = 0  # arrays that came back bit for bit equal (warm-up trips included)
    error: Optional[str] = None  # the method failed on this shape
    skipped: Optional[str] = None  # the method did not run this shape, and why (not a failure)

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None and bool(self.total)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def median(self, phase: str) -> float:
        values: list[int] = getattr(self, phase)
        return float(statistics.median(values)) if values else math.nan

    def summary(self) -> dict[str, Any]:
        phases: dict[str, Any] = {}
        for phase, key in (("send", "send"), ("rebuild", "rebuild"), ("back", "return"), ("total", "total")):
            values = getattr(self, phase)
            if values:
                ordered = sorted(values)
                phases[key] = {
                    "median_us": statistics.median(values) / 1e3,
                    "min_us": ordered[0] / 1e3,
                    "mean_us": statistics.fmean(values) / 1e3,
                    "p90_us": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] / 1e3,
                    "all_us": [v / 1e3 for v in values],
                }
        return {
            "method": self.method,
            "shape": self.shape,
            "bytes": self.nbytes,
            "repeat": len(self.total),
            "validated": self.validated,
            "error": self.error,
            "skipped": self.skipped,
            **phases,
        }


Progress = Callable[[str, int], None]  # (what is running, trips done since the last call)
Record = Callable[[Result], None]  # takes each Result as soon as its shape starts


def make_array(shape: Shape, seed: int = 2024) -> np.ndarray:
    """Random contents (every bit pattern matters for validation), the same in every method."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(shape.dtype)
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return rng.random(shape.dims, dtype=dtype)
    raw = rng.integers(0, 256, shape.nbytes, dtype=np.uint8)
    return raw.view(dtype).reshape(shape.dims)


def stamp_value(array: np.ndarray, trip: int) -> np.ndarray:
    """A value for the first element that differs on every trip."""
    return np.array(trip % 251 + 1).astype(array.dtype)


def same_bits(received: np.ndarray, expected: np.ndarray, chunk: int = 16 << 20) -> Optional[str]:
    """None when ``received`` is ``expected`` bit for bit (dtype, shape, bytes), else what differs."""
    if not isinstance(received, np.ndarray):
        return f"got a {type(received).__name__}, not an ndarray"
    if received.dtype != expected.dtype or received.shape != expected.shape:
        return f"got {received.dtype}{list(received.shape)}, sent {expected.dtype}{list(expected.shape)}"
    a = np.ascontiguousarray(received).reshape(-1).view(np.uint8)
    b = np.ascontiguousarray(expected).reshape(-1).view(np.uint8)
    for start in range(0, len(a), chunk):  # in chunks: no temporary as large as the array
        if not np.array_equal(a[start : start + chunk], b[start : start + chunk]):
            where = start + int(np.argmax(a[start : start + chunk] != b[start : start + chunk]))
            return f"byte {where} of {len(a)} differs (got {a[where]:#04x}, sent {b[where]:#04x})"
    return None


def trip_limit(nbytes: int) -> float:
    """Seconds a round trip may take before the watchdog steps in: generous, never a measure."""
    return 60.0 + nbytes * 200e-9  # 200 ns per byte: slow methods (JSON) on 1 GiB still fit


def as_dict(shape: Shape) -> dict[str, Any]:
    return {**dataclasses.asdict(shape), "bytes": shape.nbytes}
