"""hakobu.Pool measured beside multiprocessing.Pool, ProcessPoolExecutor, joblib and Ray, in the same run.

Method
------
* Big arrays: ``map`` over 64 tasks, each an 8 MiB float64 array (1 Mi
  elements, private memory of this process, random values); the task is
  ``a * 2``, which returns a new 8 MiB array, so 512 MiB go to the workers and
  512 MiB come back. Every pool has 2 workers (this machine's cores) and uses
  its default chunking: multiprocessing.Pool and hakobu.Pool about four
  chunks per worker, ProcessPoolExecutor one item per task, joblib (loky
  backend, its default memmapping of inputs over 1 MB) batches as it sees fit,
  Ray one remote call per array (``ray.get([f.remote(a) for a in arrays])``,
  its object store set to 2 GiB). Also hakobu.Pool with inputs built by
  ``hakobu.array`` (already in shared memory, sent by reference). Workers are
  started and warmed up (a first map) before the clock starts; the figure is
  the median of the repeats of a whole map, from the call to the last result
  in hand. Every result is checked.
* SVD: 16 float64 matrices 1000x1000, ``np.linalg.svd`` (u, s and vh come
  back), with 1 and 2 hakobu workers capped at one BLAS thread each
  (``threads_per_worker=1``: the speed-up is that of the pool, not of BLAS
  threads); also with the default caps (cores / workers threads each), in this
  process with one BLAS thread, and multiprocessing.Pool(2), whose workers
  inherit this process's uncapped BLAS threads. A first whole run warms each
  pool up (its shared-memory blocks are then recycled, not faulted in anew).
* Targets (DESIGN.md): the big-array map >= 10x faster than multiprocessing.Pool;
  SVD speed-up >= 1.9x with 2 workers on 2 cores.
The machine (CPU, cores, kernel, /dev/shm) is printed with the results.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

import hakobu

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from queue_bench import MIB, machine  # noqa: E402 - the house's machine description

WORKERS = 2


def double(a: np.ndarray) -> np.ndarray:
    return a * 2


def svd(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vh = np.linalg.svd(m)
    return u, s, vh


def timed(run: Callable[[], Any], repeats: int, check: Callable[[Any], None]) -> float:
    """Median seconds of ``repeats`` runs; each run's result is checked, then dropped."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        check(result)
        del result
    return statistics.median(times)


# --- big arrays --------------------------------------------------------------------------------


def big_arrays(quick: bool) -> list[dict[str, Any]]:
    count, repeats = (32, 3) if quick else (64, 5)
    rng = np.random.default_rng(0)
    arrays = [rng.random(MIB) for _ in range(count)]  # 8 MiB each
    first, last = arrays[0][:4] * 2, arrays[-1][-4:] * 2

    def check(results: Any) -> None:
        results = list(results)
        assert len(results) == count
        assert np.array_equal(results[0][:4], first) and np.array_equal(results[-1][-4:], last)

    rows: list[dict[str, Any]] = []

    def measure(name: str, note: str, run: Callable[[], Any]) -> None:
        run()  # warm-up: workers started, imports done, memory faulted in
        seconds = timed(run, repeats, check)
        rows.append({"method": name, "note": note, "seconds": seconds})
        print(f"   {name:<44} {seconds * 1e3:9.1f} ms   {note}", flush=True)

    with hakobu.Pool(WORKERS) as pool:
        measure("hakobu.Pool.map", "default chunksize", lambda: pool.map(double, arrays))
        shared = [hakobu.array(a) for a in arrays]
        measure("hakobu.Pool.map, inputs in hakobu memory", "hakobu.array: sent by reference", lambda: pool.map(double, shared))
        del shared
    context = multiprocessing.get_context()
    with context.Pool(WORKERS) as mp_pool:
        measure("multiprocessing.Pool.map", f"start method {context.get_start_method()}", lambda: mp_pool.map(double, arrays))
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as executor:
        measure("ProcessPoolExecutor.map", "chunksize 1", lambda: list(executor.map(double, arrays)))
    try:
        import joblib
    except ImportError:
        print("   joblib: not installed (pip install joblib)")
    else:
        with joblib.Parallel(n_jobs=WORKERS, backend="loky") as parallel:
            measure(
                "joblib.Parallel (loky)",
                "inputs memmapped by joblib",
                lambda: parallel(joblib.delayed(double)(a) for a in arrays),
            )
    ray_row(arrays, measure)
    return rows


def ray_row(arrays: list[np.ndarray], measure: Callable[[str, str, Callable[[], Any]], None]) -> None:
    try:
        import ray
    except ImportError:
        print("   ray: not installed (pip install ray)")
        return
    ray.init(
        num_cpus=WORKERS,
        object_store_memory=2 << 30,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        remote_double = ray.remote(double)
        measure("ray (remote tasks)", "object store 2 GiB", lambda: ray.get([remote_double.remote(a) for a in arrays]))
    finally:
        ray.shutdown()


# --- SVD ---------------------------------------------------------------------------------------


def svd_rows(quick: bool) -> list[dict[str, Any]]:
    count, repeats = (8, 1) if quick else (16, 3)
    rng = np.random.default_rng(1)
    matrices = [rng.random((1000, 1000)) for _ in range(count)]
    expected = np.linalg.svd(matrices[-1], compute_uv=False)

    def check(results: Any) -> None:
        results = list(results)
        assert len(results) == count and np.allclose(results[-1][1], expected)

    rows: list[dict[str, Any]] = []

    def measure(name: str, workers: int, run: Callable[[], Any], runs: int = repeats) -> None:
        check(run())  # warm-up: workers started, shared memory for every message faulted in
        seconds = timed(run, runs, check)
        rows.append({"method": name, "workers": workers, "seconds": seconds})
        print(f"   {name:<48} {seconds:7.2f} s", flush=True)

    with threadpool_limits(1):
        measure("this process, 1 BLAS thread", 1, lambda: [svd(m) for m in matrices])
    for workers in (1, WORKERS):
        with hakobu.Pool(workers, threads_per_worker=1) as pool:
            measure(f"hakobu.Pool({workers}), 1 thread per worker", workers, lambda: pool.map(svd, matrices))
    for workers in (1, WORKERS):
        with hakobu.Pool(workers) as pool:
            threads = max(1, WORKERS // workers)
            measure(f"hakobu.Pool({workers}), default caps ({threads} per worker)", workers, lambda: pool.map(svd, matrices))
    with multiprocessing.get_context().Pool(WORKERS) as mp_pool:
        # Oversubscribed, it is slow and steady: one timed run.
        measure(f"multiprocessing.Pool({WORKERS}), threads not capped", WORKERS, lambda: mp_pool.map(svd, matrices), 1)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="half the tasks, fewer repeats")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine(), "method": __doc__}
    print(f"machine: {results['machine']}")
    count = 32 if args.quick else 64
    print(f"\n1. map over {count} tasks of 8 MiB float64 arrays, task a * 2 (8 MiB back), {WORKERS} workers")
    rows = results["big_arrays"] = big_arrays(args.quick)
    hakobu_seconds = rows[0]["seconds"]
    print(f"\n   {'method':<44} {'time':>9}   {'vs hakobu.Pool.map':>18}")
    for row in rows:
        row["ratio_to_hakobu"] = row["seconds"] / hakobu_seconds
        print(f"   {row['method']:<44} {row['seconds'] * 1e3:6.1f} ms   {row['ratio_to_hakobu']:17.2f}x")
    baseline = next(row for row in rows if row["method"] == "multiprocessing.Pool.map")
    speedup = baseline["seconds"] / hakobu_seconds
    results["map_target_met"] = speedup >= 10
    print(f"   target: >= 10x faster than multiprocessing.Pool: {speedup:.1f}x: "
          f"{'met' if results['map_target_met'] else 'NOT MET'}")

    print(f"\n2. SVD of {16 if not args.quick else 8} float64 matrices 1000x1000 (u, s, vh back)")
    rows = results["svd"] = svd_rows(args.quick)
    one = next(row for row in rows if row["method"].startswith("hakobu.Pool(1), 1 thread"))
    two = next(row for row in rows if row["method"].startswith(f"hakobu.Pool({WORKERS}), 1 thread"))
    scaling = one["seconds"] / two["seconds"]
    results["svd_speedup"] = scaling
    results["svd_target_met"] = scaling >= 1.9
    print(f"   speed-up of {WORKERS} workers over 1 (1 thread each): {scaling:.2f}x "
          f"(target >= 1.9x: {'met' if results['svd_target_met'] else 'NOT MET'})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
