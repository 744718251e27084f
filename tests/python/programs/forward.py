"""Receives COUNT arrays on queue argv[1] and forwards every other row of each,
reversed, to queue argv[2] — without copying them (the view is sent by reference)."""

import sys

import hakobu

source, target, count = hakobu.Queue(sys.argv[1]), hakobu.Queue(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    array = source.get(timeout=60)
    assert hakobu.is_shared(array)
    target.put(array[::-2])
