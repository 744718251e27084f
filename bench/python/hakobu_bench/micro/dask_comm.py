"""Dask workers of one machine exchanging 64 MiB arrays: the hakobu:// comm beside Dask's TCP comm,
in the same run.

The situation
-------------
A ``LocalCluster`` of 2 worker processes (one thread each, no dashboard) on this
machine, first with ``protocol="tcp"``, then with ``protocol="hakobu"`` (the
order alternates between repeats, so that neither always runs on a warmer
machine). Worker A makes N float64 arrays of 64 MiB (``numpy.full``, untimed,
waited for). Then, timed:

* **worker to worker**: one task on worker B takes all N arrays as arguments and
  returns the sum of their first elements, so Dask moves every array from A to
  B (its ``gather_dep`` path: worker B's comm reads what worker A's comm writes)
  before the task runs; the time from ``submit`` to the result.
* **to the client**: ``client.gather`` of the N arrays from worker A into this
  process, which checks each array's first and last values.

Throughput is N × 64 MiB ÷ that time. Each repeat makes N new arrays (so that
B holds none of them yet) and releases them after; the first repeat of each
protocol is a warm-up and not counted (it touches the memory of the comm's
buffers and of the shared-memory heap). The figures are the median over the
repeats, and the ratio is hakobu's throughput over TCP's.

What differs
------------
TCP: Dask writes each frame to a socket (the kernel copies it into its
buffers) and the reader reads it into a new buffer (a second copy), in pieces
as the socket allows; same-host connections skip compression either way.
hakobu://: a large frame is copied once into a block of shared memory and the
reader gets a view of that block: one copy, no socket. Both pay Dask's
serialization (NumPy arrays are passed as buffers, without pickling their
data) and its task and transfer bookkeeping.

The machine (CPU, cores, kernel, /dev/shm) is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from ..machine import with_versions as machine

MIB = 1 << 20
ARRAY_BYTES = 64 * MIB
PROTOCOLS = ("tcp", "hakobu")


def make_array(index: int, elements: int) -> np.ndarray:
    """Worker A's data: ``index`` in every element (so each array is checked)."""
    return np.full(elements, float(index))


def first_elements(*arrays: np.ndarray) -> float:
    """Worker B's task: needs every array here, reads one element of each."""
    return float(sum(array[0] for array in arrays))


def run_protocol(protocol: str, count: int, elements: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per repeat for both transfers, on a fresh 2-worker cluster of ``protocol``."""
    import distributed

    dask: Any = distributed  # distributed's API is untyped: one Any instead of an ignore per call

    times: dict[str, list[float]] = {"worker_to_worker": [], "to_client": []}
    with (
        dask.LocalCluster(
            protocol=protocol,
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        ) as cluster,
        dask.Client(cluster) as client,
    ):
        worker_a, worker_b = sorted(client.scheduler_info()["workers"])
        expected = float(sum(range(count)))
        for repeat in range(repeats + 1):  # repeat 0: the warm-up
            arrays = [
                client.submit(make_array, index, elements, workers=[worker_a], pure=False)
                for index in range(count)
            ]
            dask.wait(arrays)
            started = time.perf_counter()
            total = client.submit(first_elements, *arrays, workers=[worker_b], pure=False).result()
            moved = time.perf_counter() - started
            if total != expected:
                raise AssertionError(f"{protocol}: worker B summed {total}, expected {expected}")
            started = time.perf_counter()
            gathered = client.gather(arrays)
            fetched = time.perf_counter() - started
            for index, array in enumerate(gathered):
                if array.shape != (elements,) or array[0] != index or array[-1] != index:
                    raise AssertionError(f"{protocol}: array {index} arrived wrong")
            del gathered, arrays
            if repeat:
                times["worker_to_worker"].append(moved)
                times["to_client"].append(fetched)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hakobu_bench.micro.dask_comm", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--arrays", type=int, default=8, help="arrays moved per repeat (default 8)")
    parser.add_argument("--mib", type=int, default=64, help="MiB per array (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per protocol (default 3)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args()
    if args.arrays < 1 or args.mib < 1 or args.repeats < 1:
        parser.error("--arrays, --mib and --repeats must be at least 1")
    elements = args.mib * MIB // 8
    total_bytes = args.arrays * elements * 8

    results: dict[str, Any] = {"machine": machine(), "method": __doc__}
    print(f"machine: {results['machine']}")
    print(
        f"\nDask LocalCluster, 2 worker processes: {args.arrays} arrays of {args.mib} MiB per repeat, "
        f"{args.repeats} repeats (median) after a warm-up"
    )
    times: dict[str, dict[str, list[float]]] = {protocol: {} for protocol in PROTOCOLS}
    # Alternate the order: one round tcp first, the next hakobu first.
    order = [PROTOCOLS if round_ % 2 == 0 else PROTOCOLS[::-1] for round_ in range(2)]
    for round_, protocols in enumerate(order):
        for protocol in protocols:
            repeats = (args.repeats + 1) // 2 if round_ == 0 else args.repeats // 2
            if repeats == 0:
                continue
            measured = run_protocol(protocol, args.arrays, elements, repeats)
            for kind, seconds in measured.items():
                times[protocol].setdefault(kind, []).extend(seconds)
    rows = []
    print(f"\n   {'transfer':<20} {'tcp://':>12} {'hakobu://':>12} {'hakobu / tcp':>13}")
    for kind, label in (("worker_to_worker", "worker to worker"), ("to_client", "worker to client")):
        rate = {
            protocol: total_bytes / statistics.median(times[protocol][kind]) / MIB for protocol in PROTOCOLS
        }
        ratio = rate["hakobu"] / rate["tcp"]
        rows.append(
            {
                "transfer": kind,
                "mib_per_s": rate,
                "ratio": ratio,
                "seconds": {p: times[p][kind] for p in PROTOCOLS},
            }
        )
        print(f"   {label:<20} {rate['tcp']:8.0f} MiB/s {rate['hakobu']:8.0f} MiB/s {ratio:12.2f}x")
    results["rows"] = rows
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
