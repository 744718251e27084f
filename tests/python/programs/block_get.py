"""Blocks in get() on queue argv[1]; exits 3 on KeyboardInterrupt (Ctrl-C)."""

import sys

import hakobu

queue = hakobu.Queue(sys.argv[1])
print("waiting", flush=True)
try:
    queue.get()
except KeyboardInterrupt:
    print("interrupted", queue.qsize(), flush=True)
    sys.exit(3)
print("got a message", flush=True)
