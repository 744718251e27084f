"""The cross-language check format of topic test messages (shared with tests/cpp/topic_peer.cpp).

* bytes message ``seq`` of size S (S >= 16): bytes 0..7 = seq (little-endian u64), bytes
  8..15 = S (little-endian u64), byte i >= 16 = (seq * 31 + i) & 0xFF.
* array message ``seq`` of shape (rows, cols), float64, C order: [r, c] = seq * 1e6 + r * cols + c.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

_HEADER = struct.Struct("<QQ")


def bytes_message(seq: int, size: int) -> bytes:
    assert size >= _HEADER.size
    tail = (seq * 31 + np.arange(_HEADER.size, size, dtype=np.uint64)) & 0xFF
    return _HEADER.pack(seq, size) + tail.astype(np.uint8).tobytes()


def fill_array(out: np.ndarray, seq: int) -> np.ndarray:
    """Writes array message ``seq`` into ``out`` (float64, 2-D, C order) and returns it."""
    rows, cols = out.shape
    out[...] = np.arange(rows * cols, dtype=np.float64).reshape(rows, cols)
    out += seq * 1e6
    return out


def array_message(seq: int, rows: int, cols: int) -> np.ndarray:
    return fill_array(np.empty((rows, cols)), seq)


def check(message: Any) -> int:
    """The sequence number of a bytes or array message, after checking every byte or element;
    AssertionError for a torn or damaged one."""
    if isinstance(message, bytes):
        assert len(message) >= _HEADER.size, f"a bytes message of {len(message)} bytes"
        seq, size = _HEADER.unpack_from(message)
        assert size == len(message), f"message {seq} says {size} bytes, has {len(message)}"
        expected = bytes_message(seq, size)
        assert message == expected, f"bytes message {seq} differs from its pattern"
        return int(seq)
    assert isinstance(message, np.ndarray), f"unexpected message {type(message)}"
    assert message.dtype == np.float64 and message.ndim == 2, (message.dtype, message.shape)
    seq = int(message[0, 0] // 1e6) if message.size else 0
    rows, cols = message.shape
    expected = np.arange(rows * cols, dtype=np.float64).reshape(rows, cols) + seq * 1e6
    assert np.array_equal(message, expected), f"array message {seq} differs from its pattern"
    return seq
