"""One big read-only array, several reader programs: hakobu.Store, Event and Lock by name.

    python examples/python/store_readers.py [READERS] [MIB]

This program publishes a float64 array of MIB MiB (default 256) in a store and
starts READERS (default 3) reader programs: this file again, with --reader,
each a separate interpreter that finds everything by name. A reader waits for
the "published" event, takes a read-only view of the array (no copy: all of
them read the same memory), sums it, and appends its sum to a file under a
named lock. The publisher checks every sum and removes what it made.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

import hakobu


def reader(name: str, log_path: str) -> None:
    store = hakobu.Store(name)
    hakobu.Event(f"{name}-published").wait(timeout=120)
    features = store["X"]  # a read-only view of shared memory
    meta = store["meta"]  # any picklable object
    total = float(features.sum())
    with hakobu.Lock(f"{name}-log"), open(log_path, "a") as log:  # one writer at a time
        log.write(f"{os.getpid()} {meta['rows']} {total!r}\n")
    store.close()


def publisher(readers: int, mib: int) -> int:
    name = f"features-{os.getpid()}"
    store = hakobu.Store(name)
    published = hakobu.Event(f"{name}-published")
    with tempfile.TemporaryDirectory() as scratch:
        log_path = os.path.join(scratch, "sums.txt")
        programs = [
            subprocess.Popen([sys.executable, __file__, "--reader", name, log_path]) for _ in range(readers)
        ]
        rows = mib * 2**20 // (8 * 1024)
        features = hakobu.empty((rows, 1024))  # built in shared memory: published without a copy
        features[:] = np.arange(rows, dtype=np.float64)[:, None]
        store["X"] = features
        store["meta"] = {"rows": rows, "columns": 1024}
        published.set()  # every reader waiting wakes now
        failed = sum(program.wait() != 0 for program in programs)
        with open(log_path) as log:
            sums = [float(line.split()[2]) for line in log]
    expected = float(features.sum())
    print(f"{len(sums)} readers summed {mib} MiB each from one copy in shared memory: {sums[:3]}…")
    store.unlink()
    published.unlink()
    hakobu.Lock.remove(f"{name}-log")
    if failed or len(sums) != readers or any(s != expected for s in sums):
        print(f"expected {readers} sums of {expected}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reader"]:
        reader(sys.argv[2], sys.argv[3])
    else:
        sys.exit(
            publisher(
                int(sys.argv[1]) if len(sys.argv) > 1 else 3, int(sys.argv[2]) if len(sys.argv) > 2 else 256
            )
        )
