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
* Tiny tasks: 5000 calls of a function that returns its argument (an int),
  submitted one by one in a loop, then every result waited for:
  ``Pool.apply_async`` beside multiprocessing.Pool's (default start method),
  ``Executor.submit`` beside concurrent.futures.ProcessPoolExecutor's, 2
  workers each, warmed up by a first round; the figure is the median of the
  rounds, from the first call to the last result in hand. Also one task's
  round trip (``apply``, a lone task on idle workers): the median of 200.
  Pools are measured one after the other, alternating, in the same run.
* Store values: ``map`` over 20 tasks, each given the same 256
  MiB float64 array, the task reading two of its elements (so the figure is
  what reaching the array costs, not work on it): the array read from a
  ``hakobu.Store`` (sent by reference: the task gets a read-only view of the
  stored version, nothing is copied), the same array as a plain NumPy array
  (copied into shared memory by hakobu), and multiprocessing.Pool (pickled
  through a pipe). Both copy once per chunk of tasks, not per task (pickle's
  memo sends an object given twice in a chunk once; default chunking makes 7
  chunks of 20 tasks on 2 workers). 2 workers,
  default chunking, warmed up by a first map; the median of 3 maps, from the
  call to the last result; per task = map time / 20.
* Targets: the big-array map >= 10x faster than
  multiprocessing.Pool and >= 2x Ray; tiny tasks: ``apply_async`` at least as
  fast as multiprocessing.Pool, ``Executor.submit`` >= 1.5x faster than
  ProcessPoolExecutor; SVD speed-up >= 1.9x with 2 workers on 2 cores.
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
from functools import partial
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

import hakobu

from ..machine import with_versions as machine

MIB = 1 << 20

WORKERS = 2


def identity(x: int) -> int:
    return x


def double(a: np.ndarray) -> np.ndarray:
    return a * 2


def edges(a: np.ndarray) -> float:
    return float(a[0] + a[-1])


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
        measure(
            "hakobu.Pool.map, inputs in hakobu memory",
            "hakobu.array: sent by reference",
            partial(pool.map, double, shared),
        )
        del shared
    context = multiprocessing.get_context()
    with context.Pool(WORKERS) as mp_pool:
        measure(
            "multiprocessing.Pool.map",
            f"start method {context.get_start_method()}",
            lambda: mp_pool.map(double, arrays),
        )
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
        measure(
            "ray (remote tasks)",
            "object store 2 GiB",
            lambda: ray.get([remote_double.remote(a) for a in arrays]),
        )
    finally:
        ray.shutdown()


# --- tiny tasks --------------------------------------------------------------------------------


TINY_TASKS = 5000


def tiny_tasks(quick: bool) -> list[dict[str, Any]]:
    rounds = 3 if quick else 7

    def pool_round(pool: Any) -> float:
        start = time.perf_counter()
        results = [pool.apply_async(identity, (k,)) for k in range(TINY_TASKS)]
        values = [result.get() for result in results]
        seconds = time.perf_counter() - start
        assert values == list(range(TINY_TASKS))
        return seconds

    def executor_round(executor: Any) -> float:
        start = time.perf_counter()
        futures = [executor.submit(identity, k) for k in range(TINY_TASKS)]
        values = [future.result() for future in futures]
        seconds = time.perf_counter() - start
        assert values == list(range(TINY_TASKS))
        return seconds

    def lone(pool: Any) -> float:
        times = []
        for k in range(200):
            start = time.perf_counter()
            assert pool.apply(identity, (k,)) == k
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    context = multiprocessing.get_context()
    makers: list[tuple[str, str, Callable[[], Any], Callable[[Any], float]]] = [
        ("hakobu.Pool.apply_async", "2 workers", lambda: hakobu.Pool(WORKERS), pool_round),
        (
            "multiprocessing.Pool.apply_async",
            f"start method {context.get_start_method()}",
            lambda: context.Pool(WORKERS),
            pool_round,
        ),
        ("hakobu.Executor.submit", "2 workers", lambda: hakobu.Executor(WORKERS), executor_round),
        (
            "ProcessPoolExecutor.submit",
            f"start method {context.get_start_method()}",
            lambda: concurrent.futures.ProcessPoolExecutor(WORKERS),
            executor_round,
        ),
        ("hakobu.Pool.apply (one task)", "round trip", lambda: hakobu.Pool(WORKERS), lone),
        ("multiprocessing.Pool.apply (one task)", "round trip", lambda: context.Pool(WORKERS), lone),
    ]
    # The forking baselines start (and warm up) first: a process forked while a hakobu pool
    # starts a worker holds that start's error pipe open, and with it the pool's manager.
    order = sorted(range(len(makers)), key=lambda index: makers[index][0].startswith("hakobu"))
    pools: list[Any] = [None] * len(makers)
    try:
        for index in order:
            pools[index] = makers[index][2]()
            makers[index][3](pools[index])  # warm-up: workers started, functions cached
        times: list[list[float]] = [[] for _ in makers]
        for _ in range(rounds):  # alternating, so that a noisy moment hits them all alike
            for index, (pool, (_, _, _, measure)) in enumerate(zip(pools, makers)):
                times[index].append(measure(pool))
    finally:
        for pool in pools:
            if pool is None:
                continue
            if isinstance(pool, concurrent.futures.Executor):
                pool.shutdown()
            else:
                pool.terminate()
                pool.join()
    rows = []
    for (name, note, _, _), measured in zip(makers, times):
        seconds = statistics.median(measured)
        rows.append({"method": name, "note": note, "seconds": seconds, "rounds": measured})
        unit = f"{seconds * 1e6:9.1f} us" if "one task" in name else f"{seconds * 1e3:9.1f} ms"
        print(f"   {name:<44} {unit}   {note}", flush=True)
    return rows


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
            measure(
                f"hakobu.Pool({workers}), default caps ({threads} per worker)",
                workers,
                lambda: pool.map(svd, matrices),
            )
    with multiprocessing.get_context().Pool(WORKERS) as mp_pool:
        # Oversubscribed, it is slow and steady: one timed run.
        measure(
            f"multiprocessing.Pool({WORKERS}), threads not capped",
            WORKERS,
            lambda: mp_pool.map(svd, matrices),
            1,
        )
    return rows


# --- store values by reference -----------------------------------------------------------------

STORE_TASKS = 20
STORE_MIB = 256


def store_rows() -> list[dict[str, Any]]:
    plain = np.arange(STORE_MIB * MIB // 8, dtype=np.float64)
    expected = float(plain[0] + plain[-1])

    def check(results: Any) -> None:
        assert list(results) == [expected] * STORE_TASKS

    rows: list[dict[str, Any]] = []

    def measure(name: str, note: str, run: Callable[[], Any]) -> None:
        run()  # warm-up: workers started, shared memory mapped
        seconds = timed(run, 3, check)
        rows.append({"method": name, "note": note, "seconds": seconds, "per_task": seconds / STORE_TASKS})
        print(f"   {name:<44} {seconds / STORE_TASKS * 1e3:9.2f} ms/task   {note}", flush=True)

    store = hakobu.Store(f"bench-store-ref-{os.getpid()}")
    try:
        store["X"] = plain
        stored = store["X"]
        with hakobu.Pool(WORKERS) as pool:
            measure(
                "hakobu.Pool.map, a hakobu.Store array",
                "by reference, read-only",
                partial(pool.map, edges, [stored] * STORE_TASKS),
            )
            measure(
                "hakobu.Pool.map, the same plain NumPy array",
                "copied into shared memory, once per chunk",
                lambda: pool.map(edges, [plain] * STORE_TASKS),
            )
        del stored
    finally:
        store.unlink()
        store.close()
    context = multiprocessing.get_context()
    with context.Pool(WORKERS) as mp_pool:
        measure(
            "multiprocessing.Pool.map, plain NumPy array",
            f"pickled once per chunk, start method {context.get_start_method()}",
            lambda: mp_pool.map(edges, [plain] * STORE_TASKS),
        )
    return rows


def store_section(args: argparse.Namespace, results: dict[str, Any]) -> None:
    print(
        f"\n4. map over {STORE_TASKS} tasks each given the same {STORE_MIB} MiB float64 array "
        f"(task reads 2 elements), {WORKERS} workers"
    )
    rows = results["store_values"] = store_rows()
    by_ref = rows[0]["seconds"]
    print(f"\n   {'method':<44} {'per task':>12}   {'vs by reference':>15}")
    for row in rows:
        row["ratio_to_by_reference"] = row["seconds"] / by_ref
        print(
            f"   {row['method']:<44} {row['per_task'] * 1e3:9.2f} ms   {row['ratio_to_by_reference']:14.1f}x"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hakobu_bench.micro.pool", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="half the tasks, fewer repeats")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument(
        "--only",
        choices=("arrays", "tiny", "svd", "store"),
        action="append",
        help="run only these sections (repeatable)",
    )
    args = parser.parse_args()
    sections = set(args.only or ("arrays", "tiny", "svd", "store"))

    results: dict[str, Any] = {"machine": machine(), "method": __doc__}
    print(f"machine: {results['machine']}")
    if "arrays" in sections:
        array_section(args, results)
    if "tiny" in sections:
        tiny_section(args, results)
    if "svd" in sections:
        svd_section(args, results)
    if "store" in sections:
        store_section(args, results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


def tiny_section(args: argparse.Namespace, results: dict[str, Any]) -> None:
    print(f"\n2. tiny tasks: {TINY_TASKS} calls submitted one by one, then every result; {WORKERS} workers")
    rows = results["tiny_tasks"] = tiny_tasks(args.quick)
    by_name = {row["method"]: row["seconds"] for row in rows}
    apply_ratio = by_name["multiprocessing.Pool.apply_async"] / by_name["hakobu.Pool.apply_async"]
    submit_ratio = by_name["ProcessPoolExecutor.submit"] / by_name["hakobu.Executor.submit"]
    lone_ratio = by_name["multiprocessing.Pool.apply (one task)"] / by_name["hakobu.Pool.apply (one task)"]
    results["apply_async_target_met"] = apply_ratio >= 1.0
    results["submit_target_met"] = submit_ratio >= 1.5
    print(
        f"   apply_async: hakobu {apply_ratio:.2f}x as fast as multiprocessing.Pool (target >= 1x: "
        f"{'met' if results['apply_async_target_met'] else 'NOT MET'})"
    )
    print(
        f"   submit: hakobu {submit_ratio:.2f}x as fast as ProcessPoolExecutor (target >= 1.5x: "
        f"{'met' if results['submit_target_met'] else 'NOT MET'})"
    )
    print(f"   one task's round trip: hakobu {lone_ratio:.2f}x as fast as multiprocessing.Pool")


def array_section(args: argparse.Namespace, results: dict[str, Any]) -> None:
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
    print(
        f"   target: >= 10x faster than multiprocessing.Pool: {speedup:.1f}x: "
        f"{'met' if results['map_target_met'] else 'NOT MET'}"
    )
    ray = next((row for row in rows if row["method"].startswith("ray")), None)
    if ray is not None:
        results["ray_target_met"] = ray["seconds"] / hakobu_seconds >= 2
        print(
            f"   target: >= 2x faster than Ray: {ray['seconds'] / hakobu_seconds:.1f}x: "
            f"{'met' if results['ray_target_met'] else 'NOT MET'}"
        )


def svd_section(args: argparse.Namespace, results: dict[str, Any]) -> None:
    print(f"\n3. SVD of {16 if not args.quick else 8} float64 matrices 1000x1000 (u, s, vh back)")
    rows = results["svd"] = svd_rows(args.quick)
    one = next(row for row in rows if row["method"].startswith("hakobu.Pool(1), 1 thread"))
    two = next(row for row in rows if row["method"].startswith(f"hakobu.Pool({WORKERS}), 1 thread"))
    scaling = one["seconds"] / two["seconds"]
    results["svd_speedup"] = scaling
    results["svd_target_met"] = scaling >= 1.9
    print(
        f"   speed-up of {WORKERS} workers over 1 (1 thread each): {scaling:.2f}x "
        f"(target >= 1.9x: {'met' if results['svd_target_met'] else 'NOT MET'})"
    )


if __name__ == "__main__":
    sys.exit(main())
