"""One big read-only array, several reader programs: hakobu.Store, Barrier, Lock and Value by name.

    python examples/python/store_readers.py [READERS] [MIB]

This program starts READERS (default 3) reader programs: this file again, with
--reader, each a separate interpreter that finds everything by name. Once all
of them are ready (a barrier), it publishes a float64 array of MIB MiB (default
256) in a store. Each reader takes a read-only view of the array as soon as it
is published (no copy: all of them read the same memory), sums it, appends its
sum to a file under a named lock and counts itself in a shared value. The
publisher checks every sum and removes what it made.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

import hakobu


def reader(name: str, readers: int, log_path: str) -> None:
    store = hakobu.Store(name)
    hakobu.Barrier(f"{name}-ready", parties=readers + 1).wait(timeout=120)  # all readers and the publisher
    features = store.wait("X", timeout=120)  # a read-only view of shared memory, once published
    meta = store["meta"]  # any picklable object
    total = float(features.sum())
    with hakobu.Lock(f"{name}-log"), open(log_path, "a") as log:  # one writer at a time
        log.write(f"{os.getpid()} {meta['rows']} {total!r}\n")
    hakobu.Value(f"{name}-done", "q").add(1)  # atomic between programs
    store.close()


def publisher(readers: int, mib: int) -> int:
    name = f"features-{os.getpid()}"
    store = hakobu.Store(name)
    ready = hakobu.Barrier(f"{name}-ready", parties=readers + 1)
    done = hakobu.Value(f"{name}-done", "q")
    with tempfile.TemporaryDirectory() as scratch:
        log_path = os.path.join(scratch, "sums.txt")
        command = [sys.executable, __file__, "--reader", name, str(readers), log_path]
        programs = [subprocess.Popen(command) for _ in range(readers)]
        rows = mib * 2**20 // (8 * 1024)
        features = hakobu.empty((rows, 1024))  # built in shared memory: published without a copy
        features[:] = np.arange(rows, dtype=np.float64)[:, None]
        ready.wait(timeout=120)  # every reader is running and waits for the key
        store["meta"] = {"rows": rows, "columns": 1024}
        store["X"] = features  # the waiting readers wake now
        failed = sum(program.wait() != 0 for program in programs)
        with open(log_path) as log:
            sums = [float(line.split()[2]) for line in log]
    expected = float(features.sum())
    print(f"{done.value} readers summed {mib} MiB each from one copy in shared memory: {sums[:3]}…")
    counted = done.value
    for shared in (store, ready, done):
        shared.unlink()
    hakobu.Lock.remove(f"{name}-log")
    if failed or counted != readers or len(sums) != readers or any(s != expected for s in sums):
        print(f"expected {readers} sums of {expected}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reader"]:
        reader(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(
            publisher(
                int(sys.argv[1]) if len(sys.argv) > 1 else 3, int(sys.argv[2]) if len(sys.argv) > 2 else 256
            )
        )
