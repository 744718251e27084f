"""Lock round trips between two programs, and uncontended acquire+release, hakobu.Lock beside its baselines.

Method
------
* Round trip between two programs, each side waiting for the other. Three locks
  A, B, C and a strict hand-off: this program starts holding A and B, the peer
  holds C. A step of either side releases the lock it took longest ago and then
  acquires the next one in the cycle A -> B -> C -> A, which the other side
  holds: it sleeps until the other side's next release. So the two sides
  alternate, and every step of this program is one round trip: its release
  wakes the peer (which was blocked acquiring that lock), the peer releases the
  lock this program waits for, and this program wakes. Two lock hand-offs, each
  a wake-up of a blocked process. (Two locks cannot force alternation with
  owned locks: a side may take its own lock back before the other woke.) The
  same protocol runs on every method:
    - hakobu.Lock, between two separately started interpreters
      (``python -m hakobu_bench.micro.lock --peer hakobu ...``);
    - multiprocessing.Lock, between this program and a child it starts
      (multiprocessing's locks reach only children: that is all it can do);
    - fcntl.lockf (POSIX record locks on three bytes of one file), between two
      separately started interpreters.
  Median and 99th percentile of a step over many steps after a warm-up; the
  methods take turns within each round (several rounds), each peer started
  fresh for its turn, so a noisy spell of the machine falls on all of them.
* Uncontended acquire + release in one Python program, per pair of calls
  (``lock.acquire(); lock.release()`` in a loop; the median of several runs):
  hakobu.Lock, threading.Lock, multiprocessing.Lock, fcntl.lockf on a file.
* The other kinds, uncontended, in one Python program: one operation in a loop
  (the median of several runs), each hakobu object beside the threading and
  multiprocessing objects that do the same: RLock and (Bounded)Semaphore
  acquire + release, Condition ``with c: c.notify()``, Barrier(1).wait(), and
  a shared 64-bit counter's increment (hakobu.Value.add, and ``with
  v.get_lock(): v.value += 1`` on hakobu.Value and multiprocessing.Value).
  Barrier waits run in the main thread, where hakobu starts a helper thread
  per wait so that Ctrl-C can interrupt it (bindings/python/sync.cpp): that
  thread start is most of what the row measures.
The ratio column is each method's median divided by hakobu.Lock's of the same
table (above 1: hakobu is faster). The machine is printed with the results.

Run: python -m hakobu_bench.micro.lock [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import hakobu

from ..machine import with_versions as machine

MODULE = "hakobu_bench.micro.lock"  # the peers run this module again (python -m)
LOCKS = 3


class Handle(Protocol):
    def acquire(self) -> Any: ...
    def release(self) -> None: ...


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# --- the protocol, the same for every method --------------------------------------------------


class Baton:
    """One side of the three-lock hand-off: holds `held` (oldest first); a step releases the
    oldest and acquires the next lock of the cycle after the last one acquired."""

    def __init__(self, locks: list[Handle], held: list[int]) -> None:
        self.locks = locks
        self.held = list(held)

    def take_first(self, index: int) -> None:
        self.locks[index].acquire()
        self.held.append(index)

    def step(self) -> None:
        oldest = self.held.pop(0)
        following = (self.held[-1] + 1) % LOCKS
        self.locks[oldest].release()
        self.locks[following].acquire()
        self.held.append(following)

    def release_all(self) -> None:
        while self.held:
            self.locks[self.held.pop(0)].release()


def run_peer(locks: list[Handle], steps: int, ready: Callable[[], None]) -> None:
    """The peer's side: holds C, says it is ready, takes A (released by the first step of the
    measuring side), then steps until the measuring side's last step is answered."""
    baton = Baton(locks, [])
    baton.take_first(2)
    ready()
    baton.take_first(0)
    for _ in range(steps - 1):
        baton.step()
    baton.release_all()


def run_measuring_side(locks: list[Handle], steps: int, warmup: int) -> list[float]:
    """This program's side (it holds A and B before the peer starts): times each step."""
    baton = Baton(locks, [0, 1])
    for _ in range(warmup):
        baton.step()
    times = []
    for _ in range(steps - warmup):
        start = time.perf_counter()
        baton.step()
        times.append(time.perf_counter() - start)
    baton.release_all()
    return times


# --- locks of each method ----------------------------------------------------------------------


class FileLock:
    """An fcntl.lockf record lock on one byte of a file."""

    def __init__(self, fd: int, byte: int) -> None:
        self.fd = fd
        self.byte = byte

    def acquire(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, self.byte)

    def release(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self.byte)


def hakobu_locks(name: str, domain: Optional[str]) -> list[Handle]:
    return [hakobu.Lock(f"{name}-{i}", domain=domain) for i in range(LOCKS)]


def file_locks(path: str) -> list[Handle]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    return [FileLock(fd, i) for i in range(LOCKS)]


def say_ready() -> None:
    print("ready", flush=True)


def peer_main(args: argparse.Namespace) -> None:
    locks = hakobu_locks(args.name, args.domain) if args.peer == "hakobu" else file_locks(args.path)
    run_peer(locks, args.steps, say_ready)


def mp_child(locks: list[Handle], steps: int, ready: Any) -> None:
    run_peer(locks, steps, ready.set)


def round_trip(method: str, steps: int, warmup: int, scratch: Path) -> list[float]:
    """One method's turn: set up its locks, start its peer, time the steps, stop the peer."""
    if method == "multiprocessing.Lock (parent, child)":
        context = multiprocessing.get_context("spawn")
        mp_locks: list[Handle] = [context.Lock() for _ in range(LOCKS)]
        mp_locks[0].acquire()
        mp_locks[1].acquire()
        ready = context.Event()
        child = context.Process(target=mp_child, args=(mp_locks, steps, ready))
        child.start()
        ready.wait()
        times = run_measuring_side(mp_locks, steps, warmup)
        child.join()
        return times
    if method.startswith("hakobu"):
        name = f"bench-lock-{os.getpid()}"
        locks = hakobu_locks(name, None)
        extra = ["--peer", "hakobu", "--name", name]
    else:
        path = str(scratch / "locks")
        locks = file_locks(path)
        extra = ["--peer", "fcntl", "--path", path]
    locks[0].acquire()
    locks[1].acquire()
    peer = subprocess.Popen(
        [sys.executable, "-m", MODULE, *extra, "--steps", str(steps)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert peer.stdout is not None
        if peer.stdout.readline() != "ready\n":
            raise RuntimeError(f"the {method} peer did not start")
        times = run_measuring_side(locks, steps, warmup)
        if peer.wait(timeout=60) != 0:
            raise RuntimeError(f"the {method} peer failed")
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        if method.startswith("hakobu"):
            for i in range(LOCKS):
                hakobu.Lock.remove(f"{name}-{i}")
    return times


ROUND_TRIP_METHODS = (
    "hakobu.Lock (two programs)",
    "multiprocessing.Lock (parent, child)",
    "fcntl.lockf (two programs)",
)


# --- uncontended -------------------------------------------------------------------------------


def per_pair(lock: Handle, pairs: int) -> float:
    """Seconds per acquire+release pair, no other process or thread in the way."""
    acquire, release = lock.acquire, lock.release
    start = time.perf_counter()
    for _ in range(pairs):
        acquire()
        release()
    return (time.perf_counter() - start) / pairs


def uncontended(pairs: int, runs: int, scratch: Path) -> dict[str, dict[str, float]]:
    name = f"bench-uncontended-{os.getpid()}"
    hakobu_lock = hakobu.Lock(name)
    fd = os.open(scratch / "uncontended", os.O_RDWR | os.O_CREAT, 0o600)
    methods: dict[str, Handle] = {
        "hakobu.Lock": hakobu_lock,
        "threading.Lock": threading.Lock(),
        "multiprocessing.Lock": multiprocessing.Lock(),
        "fcntl.lockf": FileLock(fd, 0),
    }
    samples: dict[str, list[float]] = {label: [] for label in methods}
    try:
        for _ in range(runs):  # interleaved, as the round trips are
            for label, lock in methods.items():
                samples[label].append(per_pair(lock, pairs))
    finally:
        os.close(fd)
        hakobu.Lock.remove(name)
    base = statistics.median(samples["hakobu.Lock"])
    return {
        label: {
            "ns_per_pair": statistics.median(values) * 1e9,
            "ratio_to_hakobu": statistics.median(values) / base,
        }
        for label, values in samples.items()
    }


def other_kinds(ops: int, runs: int) -> dict[str, dict[str, dict[str, float]]]:
    """The other kinds' uncontended operations: {group: {method: figures}}, hakobu first in each group."""
    tag = f"bench-kinds-{os.getpid()}"
    made: list[Any] = []

    def keep(obj: Any) -> Any:
        made.append(obj)
        return obj

    def pair(lock: Any) -> Callable[[], None]:
        acquire, release = lock.acquire, lock.release

        def op() -> None:
            acquire()
            release()

        return op

    def notify(cond: Any) -> Callable[[], None]:
        def op() -> None:
            with cond:
                cond.notify()

        return op

    def locked_increment(value: Any) -> Callable[[], None]:
        def op() -> None:
            with value.get_lock():
                value.value += 1

        return op

    h_value = keep(hakobu.Value(f"{tag}-value", "q"))
    groups: dict[str, dict[str, Callable[[], Any]]] = {
        "RLock acquire + release": {
            "hakobu.RLock": pair(keep(hakobu.RLock(f"{tag}-rlock"))),
            "threading.RLock": pair(threading.RLock()),
            "multiprocessing.RLock": pair(multiprocessing.RLock()),
        },
        "Semaphore acquire + release": {
            "hakobu.Semaphore": pair(keep(hakobu.Semaphore(f"{tag}-sem", 1))),
            "threading.Semaphore": pair(threading.Semaphore(1)),
            "multiprocessing.Semaphore": pair(multiprocessing.Semaphore(1)),
        },
        "BoundedSemaphore acquire + release": {
            "hakobu.BoundedSemaphore": pair(keep(hakobu.BoundedSemaphore(f"{tag}-bsem", 1))),
            "threading.BoundedSemaphore": pair(threading.BoundedSemaphore(1)),
            "multiprocessing.BoundedSemaphore": pair(multiprocessing.BoundedSemaphore(1)),
        },
        "Condition: with c: c.notify()": {
            "hakobu.Condition": notify(keep(hakobu.Condition(f"{tag}-cond"))),
            "threading.Condition": notify(threading.Condition()),
            "multiprocessing.Condition": notify(multiprocessing.Condition()),
        },
        "Barrier(1).wait()": {
            "hakobu.Barrier": keep(hakobu.Barrier(f"{tag}-barrier", 1)).wait,
            "threading.Barrier": threading.Barrier(1).wait,
            "multiprocessing.Barrier": multiprocessing.Barrier(1).wait,
        },
        "64-bit counter += 1": {
            "hakobu.Value.add(1)": h_value.add,
            "hakobu.Value under get_lock()": locked_increment(h_value),
            "multiprocessing.Value under get_lock()": locked_increment(multiprocessing.Value("q", 0)),
        },
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for group, methods in groups.items():
            samples: dict[str, list[float]] = {label: [] for label in methods}
            # Barrier waits cost more (see Barrier in bindings/python/sync.cpp): fewer of them.
            count = ops // 20 if group.startswith("Barrier") else ops
            for _ in range(runs):  # interleaved, as the lock tables are
                for label, op in methods.items():
                    start = time.perf_counter()
                    for _ in range(count):
                        op()
                    samples[label].append((time.perf_counter() - start) / count)
            base = statistics.median(next(iter(samples.values())))
            results[group] = {
                label: {
                    "ns_per_op": statistics.median(v) * 1e9,
                    "ratio_to_hakobu": statistics.median(v) / base,
                }
                for label, v in samples.items()
            }
    finally:
        for obj in made:
            obj.unlink()
    return results


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the round-trip table")
    parser.add_argument("--steps", type=int, help="round trips per method and round (after the warm-up)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    for option in ("--name", "--domain", "--path"):
        parser.add_argument(option, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        peer_main(args)
        return 0

    rounds, steps, warmup, pairs, runs = (1, 300, 50, 20_000, 3) if args.quick else (3, 2000, 200, 200_000, 5)
    rounds = args.rounds or rounds
    steps = args.steps or steps
    results: dict[str, Any] = {"machine": machine(), "method": __doc__}
    print(f"machine: {results['machine']}")
    print(
        f"method: three-lock hand-off, {rounds} interleaved round(s) x {steps} round trips "
        f"(after {warmup} warm-up) per method; uncontended: median of {runs} runs of {pairs} pairs"
    )
    samples: dict[str, list[float]] = {method: [] for method in ROUND_TRIP_METHODS}
    with tempfile.TemporaryDirectory(prefix="hakobu-bench-lock-") as directory:
        scratch = Path(directory)
        for _ in range(rounds):
            for method in ROUND_TRIP_METHODS:
                samples[method] += round_trip(method, steps + warmup, warmup, scratch)
        rows: dict[str, dict[str, float]] = {}
        base = statistics.median(samples[ROUND_TRIP_METHODS[0]])
        for method, times in samples.items():
            rows[method] = {
                "median_us": statistics.median(times) * 1e6,
                "p99_us": percentile(times, 99) * 1e6,
                "ratio_to_hakobu": statistics.median(times) / base,
            }
        title = "lock round trip between two programs (each side waits for the other)"
        print(f"\n{title}")
        print(f"  {'method':<40} {'median us':>10} {'p99 us':>10} {'x hakobu':>9}")
        for method, row in rows.items():
            print(
                f"  {method:<40} {row['median_us']:>10.1f} {row['p99_us']:>10.1f} {row['ratio_to_hakobu']:>8.2f}x"
            )
        results[title] = rows

        flat = uncontended(pairs, runs, scratch)
        title = "uncontended acquire + release, one Python program"
        print(f"\n{title}")
        print(f"  {'method':<40} {'ns/pair':>10} {'x hakobu':>9}")
        for method, row in flat.items():
            print(f"  {method:<40} {row['ns_per_pair']:>10.0f} {row['ratio_to_hakobu']:>8.2f}x")
        results[title] = flat

    kinds = other_kinds(pairs // 2, runs)
    title = "other kinds, uncontended, one Python program (x hakobu: the group's first row)"
    print(f"\n{title}")
    for group, rows_of_group in kinds.items():
        print(f"  {group}")
        print(f"    {'method':<38} {'ns/op':>10} {'x hakobu':>9}")
        for method, row in rows_of_group.items():
            print(f"    {method:<38} {row['ns_per_op']:>10.0f} {row['ratio_to_hakobu']:>8.2f}x")
    results[title] = kinds
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
