"""Fills store argv[1] with argv[2] uint8 arrays of argv[3] bytes (keys k0, k1...) for `hakobu top`
(tests/python/test_cli_top.py), says "ready", and keeps it open until a line (or end of file)
arrives on stdin."""

import signal
import sys

import numpy as np

import hakobu

signal.alarm(300)  # a forgotten program ends

with hakobu.Store(sys.argv[1], 64, create=True) as store:
    for k in range(int(sys.argv[2])):
        store[f"k{k}"] = np.full(int(sys.argv[3]), k, np.uint8)
    print("ready", flush=True)
    sys.stdin.readline()
print("done", flush=True)
