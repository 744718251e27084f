"""hakobu.Pool on a Dask cluster: the same Pool code as on one machine, run by Dask workers.

    python examples/cluster/pool_on_dask.py                  # a LocalCluster of 2 worker processes
    python examples/cluster/pool_on_dask.py --workers 4
    python examples/cluster/pool_on_dask.py --address tcp://scheduler:8786   # a running cluster

A cluster on several machines: ``dask scheduler`` on one, ``dask worker
tcp://scheduler:8786`` on each of the others (with hakobu and NumPy installed),
then this script with ``--address``. Needs ``pip install "hakobu[dask]"``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import hakobu


def smooth(image: np.ndarray) -> np.ndarray:
    """A 3x3 box blur: defined in this script, so it travels to the workers by value."""
    padded = np.pad(image, 1, mode="edge")
    rows, columns = image.shape
    return sum(padded[i : i + rows, j : j + columns] for i in range(3) for j in range(3)) / 9.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", help="a running Dask scheduler (default: start a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    parser.add_argument("--retries", type=int, default=1, help="runs again of a task whose worker died")
    options = parser.parse_args()

    rng = np.random.default_rng(0)
    images = [rng.random((512, 512)) for _ in range(16)]  # 2 MiB each

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
