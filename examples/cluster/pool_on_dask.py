"""hakobu.Pool on a Dask cluster: the same Pool code as on one machine, run by Dask workers.

    python examples/cluster/pool_on_dask.py                  # a LocalCluster of 2 worker processes
    python examples/cluster/pool_on_dask.py --workers 4
    python examples/cluster/pool_on_dask.py --address tcp://scheduler:8786   # a running cluster
    python examples/cluster/pool_on_dask.py --compare        # hakobu.Pool beside Dask's client.map

A cluster on several machines: ``dask scheduler`` on one, ``dask worker
tcp://scheduler:8786`` on each of the others (with hakobu and NumPy installed),
then this script with ``--address``. Needs ``pip install "hakobu[dask]"``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

import hakobu


def smooth(image: np.ndarray) -> np.ndarray:
    """A 3x3 box blur: defined in this script, so it travels to the workers by value."""
    padded = np.pad(image, 1, mode="edge")
    rows, columns = image.shape
    return sum(padded[i : i + rows, j : j + columns] for i in range(3) for j in range(3)) / 9.0


def tiny(x: int) -> int:
    return x + 1


def compare(workers: int, images: list[np.ndarray], repeats: int) -> None:
    """The same work through hakobu.Pool and through Dask's own client.map/gather, on one cluster in
    one run: what the Pool front-end costs on top of Dask (median of ``repeats`` runs each)."""
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    with (
        cluster,
        distributed.Client(cluster, set_as_default=False) as client,
        hakobu.Pool(client=client) as pool,
    ):
        numbers = list(range(2000))
        workloads = {
            f"{len(images)} x {images[0].nbytes >> 20} MiB images, smooth": (
                smooth,
                images,
            ),
            f"{len(numbers)} tiny calls, one per task": (tiny, numbers),
        }
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"Dask {distributed.__version__}; LocalCluster of {workers} processes x 1 thread"
        )
        for label, (function, items) in workloads.items():
            timings: dict[str, list[float]] = {"hakobu.Pool.map": [], "client.map + gather": []}
            for _ in range(repeats):
                started = time.perf_counter()
                pool.map(function, items, chunksize=1)
                timings["hakobu.Pool.map"].append(time.perf_counter() - started)
                started = time.perf_counter()
                client.gather(client.map(function, items, pure=False))
                timings["client.map + gather"].append(time.perf_counter() - started)
            hakobu_s = statistics.median(timings["hakobu.Pool.map"])
            dask_s = statistics.median(timings["client.map + gather"])
            print(
                f"{label}: hakobu.Pool.map {hakobu_s * 1e3:.0f} ms, Dask client.map {dask_s * 1e3:.0f} ms, "
                f"ratio {dask_s / hakobu_s:.2f}x (>1: hakobu faster), median of {repeats}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", help="a running Dask scheduler (default: start a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    parser.add_argument("--retries", type=int, default=1, help="runs again of a task whose worker died")
    parser.add_argument("--compare", action="store_true", help="time hakobu.Pool beside Dask's client.map")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each method with --compare")
    options = parser.parse_args()

    rng = np.random.default_rng(0)
    images = [rng.random((512, 512)) for _ in range(16)]  # 2 MiB each
    if options.compare:
        compare(options.workers, images, options.repeats)
        return 0

    if options.address:
        pool = hakobu.Pool(engine="dask", address=options.address)  # retries: the scheduler's setting
    else:
        pool = hakobu.Pool(options.workers, engine="dask", retries=options.retries)
    with pool:
        started = time.perf_counter()
        smoothed = pool.map(smooth, images)
        seconds = time.perf_counter() - started
        pool.close()
        pool.join()

    correct = sum(np.allclose(result, smooth(image)) for image, result in zip(images, smoothed))
    print(f"{len(images)} images smoothed on Dask in {seconds:.2f} s")
    print(f"all {correct} results correct" if correct == len(images) else f"only {correct} results correct")
    return 0 if correct == len(images) else 1


if __name__ == "__main__":
    raise SystemExit(main())
