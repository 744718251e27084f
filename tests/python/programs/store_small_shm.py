"""Runs inside `unshare -m` with a small tmpfs mounted on /dev/shm (argv[1] MiB to publish).

Checks, as a user with a nearly full /dev/shm would meet it: a store value larger
than the free space is OutOfSharedMemory with numbers, and the key keeps its old
value. Prints one line of JSON with what it saw.
"""

import json
import sys

import numpy as np

import hakobu

size_mib = int(sys.argv[1])
seen: dict[str, object] = {}
store = hakobu.Store("features")
old = np.arange(1000, dtype=np.float64)
seen["old_version"] = store.put("X", old)
try:
    store["X"] = np.ones((size_mib << 20) // 8, np.float64)
    seen["too_big"] = "accepted"
except hakobu.OutOfSharedMemory as error:
    seen["too_big"] = str(error)
try:
    store["blob"] = b"\x01" * (size_mib << 20)
    seen["too_big_bytes"] = "accepted"
except hakobu.OutOfSharedMemory as error:
    seen["too_big_bytes"] = str(error)
x = store["X"]
seen["kept"] = bool(np.array_equal(x, old))
seen["keys"] = sorted(store)
del x
store.unlink()
print(json.dumps(seen), flush=True)
