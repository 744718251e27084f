"""The other end of a benchmarked method, run as its own interpreter.

    python -m hakobu.bench.peer METHOD CONFIG_JSON

Receives an array, rebuilds it, stamps the times (see ``_channel``) and sends
it back, until the sender says stop. ``HAKOBU_BENCH_CORRUPT=1`` in the
environment makes it flip one byte of every array it sends back: the tests use
it to check that the sender's validation catches a wrong answer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._channel import Serializer, StampBoard, monotonic_ns, parent_watch
from .methods import all_methods


class Echo:
    """What the peer does with every message: stamp t1 and t2, decode, answer (``_channel.Echo``)."""

    def __init__(self, stamps: StampBoard, serializer: Serializer, corrupt: bool) -> None:
        self.stamps = stamps
        self.serializer = serializer
        self.corrupt = corrupt
        self.trip = 0
        self.received = 0

    def arrived(self) -> None:
        self.received = monotonic_ns()

    def answer(self, array: np.ndarray) -> np.ndarray:
        array = self.serializer.decode(array)
        rebuilt = monotonic_ns()
        self.trip += 1
        self.stamps.write(self.trip, self.received, rebuilt)
        if self.corrupt:
            array = _flip_a_byte(array)
        return self.serializer.encode(array)


def serve(method: str, config: dict[str, Any]) -> None:
    """Runs ``method``'s peer until the stop message (or the end of the channel)."""
    parent_watch()
    end = all_methods()[method].peer_end(config)
    stamps = StampBoard(Path(config["stamps"]), create=False)
    echo = Echo(stamps, Serializer(config.get("serialize")), os.environ.get("HAKOBU_BENCH_CORRUPT") == "1")
    try:
        end.serve(echo)
    finally:
        end.close()
        stamps.close()


def _flip_a_byte(array: np.ndarray) -> np.ndarray:
    wrong = np.array(array)
    if wrong.nbytes:
        flat = wrong.reshape(-1).view(np.uint8)
        flat[len(flat) // 2] ^= 0x10
    return wrong


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m hakobu.bench.peer METHOD CONFIG_JSON", file=sys.stderr)
        return 2
    serve(argv[0], json.loads(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
