"""Receives COUNT messages on queue argv[1] and sends each back on queue argv[2];
prints the type and shape of each received array."""

import sys

import hakobu

source, target, count = hakobu.Queue(sys.argv[1]), hakobu.Queue(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    array = source.get(timeout=60)
    print(array.dtype.str, array.shape, flush=True)
    target.put(array)
