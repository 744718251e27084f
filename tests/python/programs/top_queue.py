"""Traffic on queue argv[1] for `hakobu top` (tests/python/test_cli_top.py): puts argv[2] arrays of
argv[3] bytes and leaves them queued, says "ready", then puts one and gets one every 10 ms (so the
queue holds argv[2] or argv[2] + 1 messages) until a line (or end of file) arrives on stdin."""

import signal
import sys
import threading
import time

import numpy as np

import hakobu

signal.alarm(300)  # a forgotten program ends

name, held, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
stop = threading.Event()


def wait_for_stdin() -> None:
    sys.stdin.readline()
    stop.set()


threading.Thread(target=wait_for_stdin, daemon=True).start()
payload = np.zeros(size, np.uint8)
with hakobu.Queue(name, capacity=64) as queue:
    for _ in range(held):
        queue.put(payload)
    print("ready", flush=True)
    while not stop.is_set():
        queue.put(payload)
        queue.get(timeout=60)
        time.sleep(0.01)
print("done", flush=True)
