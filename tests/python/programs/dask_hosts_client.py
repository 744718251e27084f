"""A program on "host 1": hakobu.Pool(engine="dask", address=ADDRESS) over COUNT slow tasks on the
cluster's two workers; prints each result as it arrives, then "done" (see test_dask_pool.py).

Usage: dask_hosts_client.py ADDRESS COUNT SECONDS
"""

from __future__ import annotations

import sys
import time

import distributed

import hakobu


def slow_square(item: tuple[int, float]) -> tuple[int, str]:
    """x * x after ``seconds``, and the address of the Dask worker that computed it."""
    x, seconds = item
    time.sleep(seconds)
    return x * x, distributed.get_worker().address


def main() -> int:
    address, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with distributed.Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        print("workers", " ".join(sorted(client.scheduler_info()["workers"])), flush=True)
    with hakobu.Pool(engine="dask", address=address) as pool:
        for index, (value, worker) in enumerate(pool.imap(slow_square, [(x, seconds) for x in range(count)])):
            print("result", index, value, worker, flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
