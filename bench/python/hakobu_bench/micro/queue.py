"""hakobu's Python queue measured beside its baselines, in the same run.

Method
------
* Two processes: this one and a peer started as a separate interpreter
  (``python -m hakobu_bench.micro.queue --peer ...``) that attaches to the queues by name.
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
  copied on the way. Target: <= 100 us, flat from 1 KiB to 1 GiB.
* Copies at every alignment (one process, all methods taking turns, medians):
  sources starting 0, 16, 64 and 2048 bytes past a page (views into one
  page-aligned buffer) and an array NumPy allocated itself (16 past a page on
  glibc). In: q.put(a) (one copy into a recycled, already faulted block) vs one
  np.copyto of the same array into a private array at the same page offset.
  Out: np.array(received) vs np.array of a private array (both allocate and
  fault a fresh array), and np.copyto of the received array into a
  preallocated NumPy array vs the same from a private array. Plus a
  multiprocessing.shared_memory hand-off of the same array (create a segment,
  copy in, attach it by name, view it, close, unlink: what users write by hand,
  both ends in this process). A copy whose destination sits a little after its
  source modulo 4 KiB runs into 4K aliasing on some cores, hence the offsets.
  Targets: put <= 1.1x np.copyto at every offset, copy-out as fast, and
  >= 10x faster than the shared_memory hand-off.
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
from functools import partial
from typing import Any, Callable

import numpy as np

import hakobu

from ..machine import with_versions as machine

MODULE = "hakobu_bench.micro.queue"  # the peer runs this module again (python -m)

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


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
    peer = subprocess.Popen([sys.executable, "-m", MODULE, "--peer", ping, pong])
    parent, child = multiprocessing.Pipe()
    pipe_peer = multiprocessing.get_context("spawn").Process(target=pipe_echo, args=(child,))
    pipe_peer.start()
    try:
        for elements in (16, 128):
            array = np.arange(elements, dtype=np.float64)

            def through_hakobu(array: np.ndarray = array) -> None:
                to_peer.put(array)
                from_peer.get()

            def through_pipe(array: np.ndarray = array) -> None:
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
    peer = subprocess.Popen([sys.executable, "-m", MODULE, "--peer", ping, pong])
    rows = []
    try:
        for size in sizes:
            array = hakobu.empty(size, np.uint8)
            array[::4096] = 1  # touch every page once, outside the measurement
            copy_target = np.empty(size, np.uint8)
            copy_target[:] = 0
            start = time.perf_counter()
            np.copyto(copy_target, array)
            memcpy_seconds = time.perf_counter() - start

            def hop(array: np.ndarray = array) -> None:
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


PAGE = 4096
SOURCE_OFFSETS: tuple[int | None, ...] = (0, 16, 64, 2048, None)  # None: an array NumPy allocated itself


def at_page_offset(nbytes: int, offset: int) -> np.ndarray:
    """A float64 array of `nbytes` whose data starts `offset` bytes past a page, filled."""
    raw = np.empty(nbytes + 2 * PAGE, np.uint8)
    start = (-raw.ctypes.data) % PAGE + offset
    array = raw[start : start + nbytes].view(np.float64)
    array[:] = 1.0
    return array


def shared_memory_hand_off(source: np.ndarray) -> None:
    """The hand-off users write with multiprocessing.shared_memory, both ends here."""
    from multiprocessing import shared_memory

    segment = shared_memory.SharedMemory(create=True, size=source.nbytes)
    try:
        np.copyto(np.ndarray(source.shape, source.dtype, buffer=segment.buf), source)
        other = shared_memory.SharedMemory(name=segment.name)  # the receiver attaches by name
        received = np.ndarray(source.shape, source.dtype, buffer=other.buf)
        float(received[-1])  # and looks at it
        del received
        other.close()
    finally:
        segment.close()
        segment.unlink()


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def copies(size: int, repeats: int) -> dict[str, Any]:
    q = hakobu.Queue(f"bench-put-{os.getpid()}", capacity=2)
    rows = []
    try:
        private = at_page_offset(size, 16)  # an ordinary array to copy out of, for the baselines
        receiver = np.empty(size // 8)  # a preallocated array, where NumPy puts it (16 past a page)
        receiver[:] = 0
        for offset in SOURCE_OFFSETS:
            if offset is None:
                source = np.ones(size // 8)
                target = np.empty_like(source)
            else:
                source = at_page_offset(size, offset)
                target = at_page_offset(size, offset)
            q.put(source)  # warm-up: the first block of this size is fresh memory to fault in
            del_received = q.get()
            del del_received
            times: dict[str, list[float]] = {
                k: [] for k in ("put", "copyto", "array_out", "array_private", "copyto_out", "copyto_private")
            }
            for _ in range(repeats):
                times["copyto"].append(timed(partial(np.copyto, target, source)))
                times["put"].append(timed(partial(q.put, source)))
                received = q.get()
                times["array_out"].append(timed(partial(np.array, received)))
                times["copyto_out"].append(timed(partial(np.copyto, receiver, received)))
                del received
                times["array_private"].append(timed(lambda: np.array(private)))
                times["copyto_private"].append(timed(lambda: np.copyto(receiver, private)))
            medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rows.append(
                {
                    "source_offset": "numpy" if offset is None else offset,
                    "address_mod_4096": source.ctypes.data % PAGE,
                    **{f"{k}_ms": v for k, v in medians.items()},
                    "put_ratio": medians["put"] / medians["copyto"],
                    "array_out_ratio": medians["array_out"] / medians["array_private"],
                    "copyto_out_ratio": medians["copyto_out"] / medians["copyto_private"],
                }
            )
            del source, target
        source = np.ones(size // 8)

        def hakobu_hand_off() -> None:
            q.put(source)
            q.get()  # the receiver's view, released at once: its block is recycled

        hand_offs, puts = [], []
        for _ in range(repeats):
            hand_offs.append(timed(lambda: shared_memory_hand_off(source)))
            puts.append(timed(hakobu_hand_off))
        shm_ms, put_get_ms = statistics.median(hand_offs) * 1e3, statistics.median(puts) * 1e3
    finally:
        q.unlink()
    return {
        "bytes": size,
        "repeats": repeats,
        "rows": rows,
        "shared_memory_hand_off_ms": shm_ms,
        "put_get_ms": put_get_ms,
        "shared_memory_speedup": shm_ms / put_get_ms,
    }


def human(size: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def main() -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few trips (about 15 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument(
        "--only",
        action="append",
        choices=("small", "handoff", "copies"),
        help="run only this section (repeatable)",
    )
    parser.add_argument(
        "--copy-size",
        type=int,
        metavar="MIB",
        help="array size of the copies section in MiB (default: 1024; --quick: 64)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the copies section (default 5)")
    parser.add_argument("--peer", nargs=2, metavar=("INBOX", "OUTBOX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        hakobu_echo(*args.peer)
        return 0

    results: dict[str, Any] = {"machine": machine(), "method": __doc__}
    print(f"machine: {results['machine']}")
    sections = set(args.only or ("small", "handoff", "copies"))
    if "small" in sections:
        print("\n1. small arrays, one way (round trip / 2), hakobu.Queue vs multiprocessing.Pipe")
        results["small_arrays"] = small_arrays(args.quick)
        print(f"   {'size':>8} {'hakobu median/p99':>22} {'Pipe median/p99':>22} {'speed-up':>9}")
        for row in results["small_arrays"]:
            print(
                f"   {human(row['bytes']):>8} {row['hakobu_median_us']:9.1f} /{row['hakobu_p99_us']:8.1f} us"
                f" {row['pipe_median_us']:9.1f} /{row['pipe_p99_us']:8.1f} us {row['speedup']:8.2f}x"
            )

    if "handoff" in sections:
        print("\n2. hand-off of an array built with hakobu.empty (sent and forwarded back by reference)")
        results["hand_off"] = hand_off(args.quick)
        print(f"   {'size':>8} {'median':>10} {'p99':>10} {'one np.copyto':>14}")
        for row in results["hand_off"]:
            print(
                f"   {human(row['bytes']):>8} {row['median_us']:8.1f} us {row['p99_us']:8.1f} us {row['one_copy_us']:11.1f} us"
            )
        rows = results["hand_off"]
        worst = max(row["median_us"] for row in rows)
        # Flat in size: the largest message costs no more than twice the smallest.
        growth = rows[-1]["median_us"] / rows[0]["median_us"]
        results["hand_off_target_met"] = worst <= 100 and growth <= 2
        print(
            f"   target <= 100 us at every size and flat: worst {worst:.1f} us, "
            f"{human(rows[-1]['bytes'])} vs {human(rows[0]['bytes'])}: {growth:.2f}x: "
            f"{'met' if results['hand_off_target_met'] else 'NOT MET'}"
        )

    if "copies" in sections:
        size = args.copy_size * MIB if args.copy_size else (64 * MIB if args.quick else GIB)
        print(
            f"\n3. copies of an ordinary {human(size)} float64 array at every alignment (one process, medians of "
            f"{args.repeats}; baselines in the same run)"
        )
        result = results["copies"] = copies(size, args.repeats)
        print(
            f"   {'source':>7} {'put':>9} {'np.copyto':>9} {'ratio':>6} | {'np.array(recv)':>14} "
            f"{'np.array(priv)':>14} {'ratio':>6} | {'copyto(recv)':>12} {'copyto(priv)':>12} {'ratio':>6}"
        )
        for row in result["rows"]:
            print(
                f"   {row['source_offset']!s:>7} {row['put_ms']:6.1f} ms {row['copyto_ms']:6.1f} ms "
                f"{row['put_ratio']:5.2f}x | {row['array_out_ms']:11.1f} ms {row['array_private_ms']:11.1f} ms "
                f"{row['array_out_ratio']:5.2f}x | {row['copyto_out_ms']:9.1f} ms {row['copyto_private_ms']:9.1f} ms "
                f"{row['copyto_out_ratio']:5.2f}x"
            )
        worst_in = max(row["put_ratio"] for row in result["rows"])
        worst_out = max(max(row["array_out_ratio"], row["copyto_out_ratio"]) for row in result["rows"])
        results["put_target_met"] = worst_in <= 1.1
        results["copy_out_target_met"] = worst_out <= 1.1
        results["shared_memory_target_met"] = result["shared_memory_speedup"] >= 10
        print(
            f"   (source: bytes past a page; numpy: np.ones, at {result['rows'][-1]['address_mod_4096']} past one)"
        )
        print(
            f"   multiprocessing.shared_memory hand-off {result['shared_memory_hand_off_ms']:.1f} ms, "
            f"hakobu put + get {result['put_get_ms']:.1f} ms: {result['shared_memory_speedup']:.1f}x faster"
        )
        print(
            f"   target put <= 1.1x np.copyto at every alignment: worst {worst_in:.2f}x "
            f"{'met' if results['put_target_met'] else 'NOT MET'}; copy-out as fast (<= 1.1x): worst "
            f"{worst_out:.2f}x {'met' if results['copy_out_target_met'] else 'NOT MET'}; >= 10x the shared_memory "
            f"hand-off: {'met' if results['shared_memory_target_met'] else 'NOT MET'}"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
