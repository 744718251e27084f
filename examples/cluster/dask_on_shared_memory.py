"""Dask workers of one machine exchanging arrays through shared memory: ``protocol="hakobu"``.

Run it: ``python examples/cluster/dask_on_shared_memory.py`` (needs ``pip install "hakobu[dask]"``).

A LocalCluster of 2 worker processes. Each worker makes a 256 MiB block of a
matrix; a task on the other worker needs both, so Dask moves one block
between the processes: over hakobu:// it is copied once into shared memory
and read there in place, instead of crossing a TCP socket. The same program
with ``protocol="tcp"`` computes the same result; only the transport differs.

Between machines, keep tcp:// (hakobu:// refuses an address of another host).
To run the cluster from the command line instead:

    dask scheduler --protocol hakobu --port 8786      # prints hakobu://<ip>:8786
    dask worker hakobu://<ip>:8786                      # as many as you like, on this machine
    python -c 'from distributed import Client; print(Client("hakobu://<ip>:8786"))'
"""

from __future__ import annotations

import time

import numpy as np
from distributed import Client, LocalCluster, wait

ROWS = 4096  # 4096 x 8192 float64: 256 MiB per block


def block(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((ROWS, 2 * ROWS))


def column_sums(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return top.sum(axis=0) + bottom.sum(axis=0)


def main() -> None:
    for protocol in ("hakobu", "tcp"):
        with (
            LocalCluster(
                protocol=protocol, n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            first, second = sorted(client.scheduler_info()["workers"])
            # Twice: the first transfer of a new cluster also pays for touching fresh memory
            # (shared memory for hakobu://, socket and receive buffers for tcp://).
            for attempt in ("first", "second"):
                top = client.submit(block, 1, workers=[first], pure=False)
                bottom = client.submit(block, 2, workers=[second], pure=False)
                wait([top, bottom])  # both made, each on its worker; now only the transfer is left
                started = time.perf_counter()
                sums = client.submit(column_sums, top, bottom, workers=[second], pure=False).result()
                elapsed = time.perf_counter() - started
                print(
                    f"{cluster.scheduler_address:<28} {attempt} transfer: {elapsed * 1e3:5.0f} ms"
                    f"  sums[:3]={np.round(sums[:3], 3)}"
                )
                del top, bottom


if __name__ == "__main__":
    main()
