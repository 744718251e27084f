"""argv: QUEUE send|receive GIB. Moves one float64 array of GIB GiB and prints its checksum."""

import sys

import numpy as np

import hakobu

name, role, gib = sys.argv[1], sys.argv[2], float(sys.argv[3])
queue = hakobu.Queue(name)
if role == "send":
    array = np.arange(int(gib * 2**30) // 8, dtype=np.float64)
    queue.put(array)
else:
    array = queue.get(timeout=120)
print(array.shape, float(array[::4099].sum()), float(array[-1]), flush=True)
