"""hakobu.Store beside the standard ways to share one read-only array by name (one run).

For each array size, a separately started reader program gets a view of an
array another program published:

* publish -> view: the reader is already running and waiting; the time from the
  publisher's publish (after the array is filled) until the reader holds a view
  of it and has read an element. hakobu: the reader sleeps in ``store.wait(key)``
  and the publisher publishes an array made with ``hakobu.empty`` (no copy).
  Baselines: the publisher filled a ``multiprocessing.shared_memory`` segment /
  a ``/dev/shm`` file, and tells the waiting reader its name through a pipe; the
  reader attaches (``SharedMemory(name)`` / ``np.memmap``) and reads an element.
* attach + view: in the reader, the mean time to open the object by name and get
  a view again (``hakobu.Store(name)[key]`` / ``SharedMemory(name)`` + ndarray /
  ``np.memmap``), then let go of it.

Times are medians of REPEATS runs (monotonic clock, shared by the processes).
Run under `flock -x /tmp/hakobu-cpu.lock` on a shared machine:

    python bench/store_views.py [SIZES_MIB...]      # default: 64 1024
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from multiprocessing import resource_tracker, shared_memory

import numpy as np

REPEATS = 5
ATTACHES = 200
# A domain of its own (inherited by the readers), gone when the run ends.
os.environ.setdefault("HAKOBU_DOMAIN", f"bench{os.getpid()}")


# --- readers (separate programs) ------------------------------------------------------------


def reader(method: str, name: str, count: int) -> None:
    print("ready", flush=True)
    if method == "hakobu":
        import hakobu

        store = hakobu.Store(name)
        x = store.wait("X", timeout=60)
        float(x[-1])
        arrived = time.monotonic_ns()
        start = time.perf_counter()
        for _ in range(ATTACHES):
            with hakobu.Store(name) as reopened:
                float(reopened["X"][-1])
        attach = (time.perf_counter() - start) / ATTACHES
        del x
        store.close()
    elif method == "shared_memory":
        segment = sys.stdin.readline().strip()
        shm = shared_memory.SharedMemory(segment)
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]  # the publisher owns it
        x = np.ndarray((count,), np.float64, buffer=shm.buf)
        float(x[-1])
        arrived = time.monotonic_ns()
        del x
        start = time.perf_counter()
        for _ in range(ATTACHES):
            again = shared_memory.SharedMemory(segment)
            resource_tracker.unregister(again._name, "shared_memory")  # type: ignore[attr-defined]
            y = np.ndarray((count,), np.float64, buffer=again.buf)
            float(y[-1])
            del y
            again.close()
        attach = (time.perf_counter() - start) / ATTACHES
        shm.close()
    else:  # memmap
        path = sys.stdin.readline().strip()
        x = np.memmap(path, np.float64, mode="r", shape=(count,))
        float(x[-1])
        arrived = time.monotonic_ns()
        del x
        start = time.perf_counter()
        for _ in range(ATTACHES):
            y = np.memmap(path, np.float64, mode="r", shape=(count,))
            float(y[-1])
            del y
        attach = (time.perf_counter() - start) / ATTACHES
    print(arrived, attach, flush=True)


# --- the publisher (this program) --------------------------------------------------------------


def run_once(method: str, size_mib: int, run: int) -> tuple[float, float]:
    """(publish -> view seconds, attach + view seconds) of one run."""
    count = (size_mib << 20) // 8
    name = f"bench-store-{os.getpid()}-{run}"
    peer = subprocess.Popen(
        [sys.executable, __file__, "--reader", method, name, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert peer.stdin is not None and peer.stdout is not None
    assert peer.stdout.readline() == "ready\n"
    cleanup = []
    if method == "hakobu":
        import hakobu

        store = hakobu.Store(name)
        array = hakobu.empty(count)
        array[:] = 1.0
        time.sleep(0.3)  # the reader is asleep in wait() by now (not part of the measure)
        published = time.monotonic_ns()
        store["X"] = array
        cleanup.append(store.unlink)
    elif method == "shared_memory":
        shm = shared_memory.SharedMemory(name, create=True, size=count * 8)
        np.ndarray((count,), np.float64, buffer=shm.buf)[:] = 1.0
        time.sleep(0.3)
        published = time.monotonic_ns()
        peer.stdin.write(shm.name + "\n")
        peer.stdin.flush()
        cleanup += [shm.unlink, shm.close]
    else:
        path = f"/dev/shm/{name}"
        written = np.memmap(path, np.float64, mode="w+", shape=(count,))
        written[:] = 1.0
        written.flush()
        del written
        time.sleep(0.3)
        published = time.monotonic_ns()
        peer.stdin.write(path + "\n")
        peer.stdin.flush()
        cleanup.append(lambda: os.unlink(path))
    line = peer.stdout.readline().split()
    peer.wait(60)
    for step in cleanup:
        step()
    return (int(line[0]) - published) / 1e9, float(line[1])


def main(sizes: list[int]) -> None:
    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    )
    print(
        f"method: median of {REPEATS} runs; reader = a separately started Python program; attach + view: mean of {ATTACHES}"
    )
    print(f"{'size':>9} {'method':>14} {'publish->view':>14} {'attach+view':>12}   time / hakobu's")
    for size in sizes:
        results = {}
        for method in ("hakobu", "shared_memory", "memmap"):
            runs = [run_once(method, size, r) for r in range(REPEATS)]
            results[method] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        base = results["hakobu"]
        for method, (latency, attach) in results.items():
            ratio = "" if method == "hakobu" else f"{latency / base[0]:.1f}x, {attach / base[1]:.1f}x"
            print(f"{size:>5} MiB {method:>14} {latency * 1e6:>11.0f} us {attach * 1e6:>9.1f} us   {ratio}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reader"]:
        reader(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main([int(s) for s in sys.argv[1:]] or [64, 1024])
