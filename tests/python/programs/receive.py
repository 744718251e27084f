"""Receives cases on queue argv[1] until the end marker; prints a fingerprint per case."""

import sys

from cases import fingerprint

import hakobu

with hakobu.Queue(sys.argv[1]) as queue:
    while True:
        item = queue.get(timeout=60)
        if isinstance(item, str):
            if item == "END":
                break
            label, obj = item, queue.get(timeout=60)
        else:
            label, obj = item
        print(label, "|", fingerprint(obj), flush=True)
