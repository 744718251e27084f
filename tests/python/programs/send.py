"""Sends every case of cases.py on queue argv[1], then an end marker."""

import sys

from cases import cases

import hakobu

with hakobu.Queue(sys.argv[1]) as queue:
    for label, obj in cases():
        queue.put((label, obj) if not hasattr(obj, "dtype") else label)
        if hasattr(obj, "dtype"):
            queue.put(obj)  # arrays travel natively, on their own
    queue.put("END")
