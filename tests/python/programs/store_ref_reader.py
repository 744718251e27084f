"""Reads one array from a hakobu queue and prints it described as one line of JSON
(tests/python/test_store_ref.py): sum, shape, writeable, is_shared; then reads a line of
stdin and prints the sum again (the same view, after whatever the test did meanwhile).

Usage: store_ref_reader.py QUEUE
"""

from __future__ import annotations

import json
import signal
import sys

import hakobu

signal.alarm(300)  # a forgotten reader ends


def main(queue_name: str) -> None:
    array = hakobu.Queue(queue_name).get(timeout=60)
    print(
        json.dumps(
            {
                "sum": float(array.sum()),
                "shape": list(array.shape),
                "writeable": bool(array.flags.writeable),
                "shared": hakobu.is_shared(array),
            }
        ),
        flush=True,
    )
    sys.stdin.readline()
    print(json.dumps({"sum": float(array.sum())}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
