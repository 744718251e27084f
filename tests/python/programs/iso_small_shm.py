"""Runs inside `unshare -m` with a small tmpfs mounted on /dev/shm (argv[1] MiB).

Checks, as a user with a nearly full /dev/shm would meet it:
* opening an existing large queue (create-or-attach) needs no room for a second one;
* a message larger than the free space is OutOfSharedMemory with numbers, and
  the queue keeps what it held;
Prints one line of JSON with what it saw.
"""

import json
import subprocess
import sys

import numpy as np

import hakobu

size_mib = int(sys.argv[1])
seen: dict[str, object] = {}
# A queue of 32 MiB (131072 slots of 256 bytes) in a tmpfs of 48 MiB.
q = hakobu.Queue("big", capacity=131072)
q.put(np.arange(1000, dtype=np.float64))
opener = subprocess.run(
    [sys.executable, "-c", "import hakobu; q = hakobu.Queue('big', capacity=131072); print(q.qsize())"],
    capture_output=True,
    text=True,
)
seen["second_open"] = {"code": opener.returncode, "out": opener.stdout.strip(), "err": opener.stderr[-400:]}
try:
    q.put(np.zeros((size_mib << 20) // 8, np.float64))
    seen["too_big"] = "accepted"
except hakobu.OutOfSharedMemory as error:
    seen["too_big"] = str(error)
first = q.get(timeout=5)
seen["kept"] = bool(np.array_equal(first, np.arange(1000, dtype=np.float64)))
seen["left"] = q.qsize()
q.unlink()
del q, first
print(json.dumps(seen), flush=True)
