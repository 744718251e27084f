"""hakobu's Python queue measured beside its baselines, in the same run.

Method
------
* Two processes: this one and a peer started as a separate interpreter
  (``python queue_bench.py --peer ...``) that attaches to the queues by name.
  The multiprocessing.Pipe baseline uses a multiprocessing child with the same
  echo loop.
* Round trips: this process sends, the peer receives and sends the object
  back, this process receives. One way = round trip / 2. Medians and 99th
  percentiles over many trips, after a warm-up.
* Small arrays: a float64 array of 16 elements (128 B) and of 1 KiB,
  hakobu.Queue vs multiprocessing.Pipe (both pickle-free paths of their kind:
  the Pipe pickles, hakobu sends the array natively).
* Hand-off: an array built with hakobu.empty (in shared memory) is sent and
  sent back; the peer forwards the very array it received, so no byte is
  copied on the way. Target (DESIGN.md): <= 100 us, flat from 1 KiB to 1 GiB.
* put of an ordinary (private) array: q.put(a) (one copy into a recycled,
  already faulted block) vs one np.copyto into a preallocated array, one
  process, median of several. Target: <= 1.3x.
The machine (CPU, cores, kernel, /dev/shm) is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

import hakobu

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


def machine() -> dict[str, Any]:
    """The machine, as `hakobu bench` records it, plus the versions these figures depend on."""
    from hakobu.bench.report import machine as described

    return {**described(), "numpy": np.__version__, "hakobu": hakobu.__version__}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def one_way_times(round_trip: Callable[[], None], trips: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        round_trip()
    times = []
    for _ in range(trips):
        start = time.perf_counter()
        round_trip()
        times.append((time.perf_counter() - start) / 2)
    return times


# --- peers ------------------------------------------------------------------------


def hakobu_echo(inbox: str, outbox: str) -> None:
    """Receives and sends back every message until None arrives."""
    source, target = hakobu.Queue(inbox), hakobu.Queue(outbox)
    while True:
        item = source.get()
        target.put(item)
        if item is None:
            return


def pipe_echo(connection: Any) -> None:
    while True:
        item = connection.recv()
        connection.send(item)
        if item is None:
            return


# --- measurements -----------------------------------------------------------------


def small_arrays(quick: bool) -> list[dict[str, Any]]:
    trips, warmup = (500, 100) if quick else (5000, 500)
    rows = []
    ping, pong = f"bench-ping-{os.getpid()}", f"bench-pong-{os.getpid()}"
    to_peer, from_peer = hakobu.Queue(ping, capacity=4), hakobu.Queue(pong, capacity=4)
    peer = subprocess.Popen([sys.executable, __file__, "--peer", ping, pong])
    parent, child = multiprocessing.Pipe()
    pipe_peer = multiprocessing.get_context("spawn").Process(target=pipe_echo, args=(child,))
    pipe_peer.start()
    try:
        for elements in (16, 128):
            array = np.arange(elements, dtype=np.float64)

            def through_hakobu() -> None:
                to_peer.put(array)
                from_peer.get()

            def through_pipe() -> None:
                parent.send(array)
                parent.recv()

            hakobu_times = one_way_times(through_hakobu, trips, warmup)
            pipe_times = one_way_times(through_pipe, trips, warmup)
            rows.append(
                {
                    "bytes": array.nbytes,
                    "hakobu_median_us": statistics.median(hakobu_times) * 1e6,
                    "hakobu_p99_us": percentile(hakobu_times, 99) * 1e6,
                    "pipe_median_us": statistics.median(pipe_times) * 1e6,
                    "pipe_p99_us": percentile(pipe_times, 99) * 1e6,
                    "speedup": statistics.median(pipe_times) / statistics.median(hakobu_times),
                }
            )
    finally:
        to_peer.put(None)
        parent.send(None)
        peer.wait(timeout=60)
        pipe_peer.join(timeout=60)
        to_peer.unlink()
        from_peer.unlink()
    return rows


def hand_off(quick: bool) -> list[dict[str, Any]]:
    sizes = [KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB] + ([] if quick else [256 * MIB, GIB])
    trips, warmup = (200, 20) if quick else (1000, 50)
    ping, pong = f"bench-handoff-ping-{os.getpid()}", f"bench-handoff-pong-{os.getpid()}"
    to_peer, from_peer = hakobu.Queue(ping, capacity=4), hakobu.Queue(pong, capacity=4)
    peer = subprocess.Popen([sys.executable, __file__, "--peer", ping, pong])
    rows = []
    try:
        for size in sizes:
            array = hakobu.empty(size, np.uint8)
            array[:: 4096] = 1  # touch every page once, outside the measurement
            copy_target = np.empty(size, np.uint8)
            copy_target[:] = 0
            start = time.perf_counter()
            np.copyto(copy_target, array)
            memcpy_seconds = time.perf_counter() - start

            def hop() -> None:
                to_peer.put(array)  # by reference: the array lives in shared memory
                from_peer.get()

            times = one_way_times(hop, trips if size < 256 * MIB else trips // 4, warmup)
            rows.append(
                {
                    "bytes": size,
                    "median_us": statistics.median(times) * 1e6,
                    "p99_us": percentile(times, 99) * 1e6,
                    "one_copy_us": memcpy_seconds * 1e6,
                }
            )
            del array, copy_target
    finally:
        to_peer.put(None)
        peer.wait(timeout=60)
        to_peer.unlink()
        from_peer.unlink()
    return rows


def put_ordinary(quick: bool) -> dict[str, Any]:
    size = 64 * MIB if quick else GIB
    repeats = 5
    q = hakobu.Queue(f"bench-put-{os.getpid()}", capacity=2)
    try:
        source = np.ones(size // 8)
        target = np.empty_like(source)
        target[:] = 0
        q.put(source)  # warm-up: the first block is fresh memory to fault in
        q.get()
        put_times, copy_times = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            q.put(source)
            put_times.append(time.perf_counter() - start)
            del_received = q.get()
            del del_received
            start = time.perf_counter()
            np.copyto(target, source)
            copy_times.append(time.perf_counter() - start)
        put_median, copy_median = statistics.median(put_times), statistics.median(copy_times)
        return {"bytes": size, "put_ms": put_median * 1e3, "copyto_ms": copy_median * 1e3, "ratio": put_median / copy_median}
    finally:
        q.unlink()


def human(size: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few trips (about 15 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--peer", nargs=2, metavar=("INBOX", "OUTBOX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        hakobu_echo(*args.peer)
        return 0

    results: dict[str, Any] = {"machine": machine(), "method": __doc__}
    print(f"machine: {results['machine']}")
    print("\n1. small arrays, one way (round trip / 2), hakobu.Queue vs multiprocessing.Pipe")
    results["small_arrays"] = small_arrays(args.quick)
    print(f"   {'size':>8} {'hakobu median/p99':>22} {'Pipe median/p99':>22} {'speed-up':>9}")
    for row in results["small_arrays"]:
        print(
            f"   {human(row['bytes']):>8} {row['hakobu_median_us']:9.1f} /{row['hakobu_p99_us']:8.1f} us"
            f" {row['pipe_median_us']:9.1f} /{row['pipe_p99_us']:8.1f} us {row['speedup']:8.2f}x"
        )

    print("\n2. hand-off of an array built with hakobu.empty (sent and forwarded back by reference)")
    results["hand_off"] = hand_off(args.quick)
    print(f"   {'size':>8} {'median':>10} {'p99':>10} {'one np.copyto':>14}")
    for row in results["hand_off"]:
        print(f"   {human(row['bytes']):>8} {row['median_us']:8.1f} us {row['p99_us']:8.1f} us {row['one_copy_us']:11.1f} us")
    rows = results["hand_off"]
    worst = max(row["median_us"] for row in rows)
    # Flat in size: the largest message costs no more than twice the smallest.
    growth = rows[-1]["median_us"] / rows[0]["median_us"]
    results["hand_off_target_met"] = worst <= 100 and growth <= 2
    print(f"   target <= 100 us at every size and flat: worst {worst:.1f} us, "
          f"{human(rows[-1]['bytes'])} vs {human(rows[0]['bytes'])}: {growth:.2f}x: "
          f"{'met' if results['hand_off_target_met'] else 'NOT MET'}")

    print("\n3. put of an ordinary array (one copy into shared memory) vs one np.copyto")
    row = results["put_ordinary"] = put_ordinary(args.quick)
    results["put_target_met"] = row["ratio"] <= 1.3
    print(f"   {human(row['bytes'])}: put {row['put_ms']:.1f} ms, np.copyto {row['copyto_ms']:.1f} ms, "
          f"ratio {row['ratio']:.2f}x (target <= 1.3x: {'met' if results['put_target_met'] else 'NOT MET'})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
