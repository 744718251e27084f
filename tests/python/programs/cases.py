"""The objects the cross-process tests send, and how to fingerprint them.

Both the sending and the receiving program import this module, so each side
can describe what it has; the test compares the descriptions.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np


@dataclasses.dataclass
class Sample:
    label: str
    values: np.ndarray


def cases() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    # Every NumPy type code except object, as a small 2-d array.
    for code in np.typecodes["All"]:
        if code in "OMm":
            continue
        dtype = np.dtype(code)
        if dtype.itemsize == 0:  # flexible types need a size
            dtype = np.dtype(f"{code}8")
        data = np.arange(12, dtype=np.uint8).astype(np.uint8).repeat(dtype.itemsize)[: 12 * dtype.itemsize]
        out.append((f"dtype-{dtype.str}", data.view(dtype).reshape(3, 4)))
    for unit in ["Y", "D", "s", "ms", "us", "ns"]:
        out.append((f"datetime-{unit}", np.arange(6).astype(f"M8[{unit}]")))
        out.append((f"timedelta-{unit}", np.arange(6).astype(f"m8[{unit}]")))
    out += [
        ("big-endian", np.arange(10, dtype=">f8")),
        ("structured", np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8", (2,)), ("name", "U5")])),
        ("fortran", np.asfortranarray(np.arange(20.0).reshape(4, 5))),
        ("strided", np.arange(100.0).reshape(10, 10)[::3, ::2]),
        ("reversed", np.arange(10)[::-1]),
        ("0-d", np.array(3.25)),
        ("empty", np.zeros((4, 0, 3), dtype=np.int16)),
        ("large", np.arange(2_000_000, dtype=np.float32).reshape(1000, 2000)),
        ("bytes", b"raw bytes \x00\x01"),
        ("bytearray", bytearray(b"x" * 1000)),
        ("dict-with-arrays", {"a": np.ones(5), "b": [np.zeros((2, 2)), "text"], "n": 7}),
        # Large enough to travel out of band, as attachments in shared memory.
        ("dict-with-large-arrays", {"x": np.arange(100_000.0), "y": [np.ones((300, 300), np.float32)]}),
        ("dataclass", Sample("s", np.arange(4))),
        ("none", None),
        ("text", "日本語 text"),
    ]
    return out


def fingerprint(obj: Any) -> str:
    """A description equal on both sides when the object arrived intact."""
    if isinstance(obj, np.ndarray):
        digest = hashlib.sha1(np.ascontiguousarray(obj).tobytes()).hexdigest()[:16]
        return f"ndarray {obj.dtype.str} {obj.dtype.descr} {obj.shape} {digest}"
    if isinstance(obj, (bytes, bytearray)):
        return f"bytes {hashlib.sha1(bytes(obj)).hexdigest()[:16]}"
    if isinstance(obj, dict):
        return "dict " + ",".join(f"{k}:{fingerprint(v)}" for k, v in sorted(obj.items()))
    if isinstance(obj, list):
        return "list " + ",".join(fingerprint(v) for v in obj)
    if isinstance(obj, Sample):
        return f"Sample {obj.label} {fingerprint(obj.values)}"
    return f"{type(obj).__name__} {obj!r}"
