"""Small messages from Python: what one put + get costs, hakobu beside its baselines in the same run.

Method
------
* One process: ``q.put(x); q.get()`` on one queue, repeated, for
  - a 64-byte float64 array (8 elements),
  - 64 ``bytes``,
  - a small object (a dict of a few plain values),
  beside the baseline ``pickle.loads(pickle.dumps(x, protocol=5))`` of the same
  array. Each figure is the median over REPEATS batches of BATCH calls (after a
  warm-up); per call = batch time / BATCH.
* Two programs: this one and a peer started as a separate interpreter
  (``python -m hakobu_bench.micro.small --echo ...``) that receives on one queue and sends
  what it received back on another. A round trip = put here, get there, put
  there, get here. Arrays and bytes alternate in batches of the same run, so
  both see the same machine load; the median round trip of each is printed
  with the ratio (target: array <= 1.5x bytes). Waiting (spin, then futex) is
  the queue's default.
* The machine (CPU, cores, kernel) and versions are printed with the results.

Run: ``python -m hakobu_bench.micro.small`` (about 20 s; ``--json FILE`` also
writes the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np

import hakobu

from ..machine import with_versions as machine

MODULE = "hakobu_bench.micro.small"  # the peer runs this module again (python -m)

REPEATS = 15
BATCH = 2000


def per_call(step: Callable[[], None], batch: int = BATCH, repeats: int = REPEATS) -> float:
    """Median seconds per call of ``step`` over ``repeats`` batches of ``batch`` calls."""
    for _ in range(batch // 4):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(batch):
            step()
        times.append((time.perf_counter() - started) / batch)
    return statistics.median(times)


def one_process(domain: str) -> dict[str, float]:
    array = np.arange(8, dtype=np.float64)
    raw = bytes(64)
    small = {"step": 1, "loss": 0.25, "tag": "train"}
    out: dict[str, float] = {}
    with hakobu.Queue("small-bench-local", domain=domain) as q:
        try:
            for label, obj in (("array_64B", array), ("bytes_64B", raw), ("object_small", small)):

                def put_get(obj: object = obj) -> None:
                    q.put(obj)
                    q.get()

                out[label] = per_call(put_get)
        finally:
            q.unlink()
    out["pickle_array_64B"] = per_call(lambda: pickle.loads(pickle.dumps(array, protocol=5)))
    return out


def echo(domain: str, inbox: str, outbox: str) -> None:
    """The peer: sends back everything it receives until it receives None."""
    with (
        hakobu.Queue(inbox, domain=domain, create=False) as source,
        hakobu.Queue(outbox, domain=domain, create=False) as target,
    ):
        while True:
            obj = source.get(timeout=120)
            target.put(obj)
            if obj is None:
                return


def two_programs(domain: str, rounds: int, trips: int) -> dict[str, float]:
    array = np.arange(8, dtype=np.float64)
    raw = bytes(64)
    times: dict[str, list[float]] = {"array_64B": [], "bytes_64B": []}
    with (
        hakobu.Queue("small-bench-ping", domain=domain, create=True) as ping,
        hakobu.Queue("small-bench-pong", domain=domain, create=True) as pong,
    ):
        peer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                MODULE,
                "--echo",
                domain,
                "small-bench-ping",
                "small-bench-pong",
            ]
        )
        try:
            for _ in range(50):  # the peer is up and warm
                ping.put(raw)
                pong.get(timeout=60)
            for _ in range(rounds):
                for label, obj in (("array_64B", array), ("bytes_64B", raw)):
                    started = time.perf_counter()
                    for _ in range(trips):
                        ping.put(obj)
                        pong.get(timeout=60)
                    times[label].append((time.perf_counter() - started) / trips)
            ping.put(None)
            pong.get(timeout=60)
            peer.wait(timeout=60)
        finally:
            if peer.poll() is None:
                peer.kill()
                peer.wait()
            ping.unlink()
            pong.unlink()
    return {label: statistics.median(values) for label, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("--echo", nargs=3, metavar=("DOMAIN", "INBOX", "OUTBOX"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=20, help="alternating batches per kind (two programs)")
    parser.add_argument("--trips", type=int, default=500, help="round trips per batch (two programs)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.echo:
        echo(*args.echo)
        return
    domain = f"smallbench{os.getpid()}"
    local = one_process(domain)
    remote = two_programs(domain, args.rounds, args.trips)
    us = 1e6
    print("small messages from Python (hakobu", hakobu.__version__ + ")")
    print("machine:", json.dumps(machine()))
    print(f"method: one process, put + get on one queue, median of {REPEATS} batches of {BATCH}")
    print(f"  put+get 64-byte float64 array : {local['array_64B'] * us:7.2f} us")
    print(
        f"  put+get 64 bytes              : {local['bytes_64B'] * us:7.2f} us"
        f"   array/bytes = {local['array_64B'] / local['bytes_64B']:.2f}x"
    )
    print(f"  put+get small dict            : {local['object_small'] * us:7.2f} us")
    print(
        f"  pickle dumps+loads, same array: {local['pickle_array_64B'] * us:7.2f} us"
        f"   hakobu/pickle = {local['array_64B'] / local['pickle_array_64B']:.2f}x"
    )
    print(
        f"method: two programs (echo peer started as a separate interpreter), median of {args.rounds} "
        f"alternating batches of {args.trips} round trips"
    )
    print(f"  round trip 64-byte array      : {remote['array_64B'] * us:7.2f} us")
    print(
        f"  round trip 64 bytes           : {remote['bytes_64B'] * us:7.2f} us"
        f"   array/bytes = {remote['array_64B'] / remote['bytes_64B']:.2f}x (goal <= 1.5x)"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine(), "one_process": local, "two_programs": remote}, out, indent=2)


if __name__ == "__main__":
    main()
