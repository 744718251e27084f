"""Threads in the workers: how many each worker's OpenMP and BLAS thread pools may use.

By default each worker gets max(1, cores / workers) threads, so that the
workers together do not oversubscribe the cores the parent may run on: the
engine sets the libraries' thread-count variables the user has not set in
each worker's environment (worker_threads), and the worker caps the pools
already loaded through threadpoolctl when it is installed (limit_threads).
``threads_per_worker`` sets them all.
"""

from __future__ import annotations

import os
from typing import Optional

# The thread-count variables of OpenMP and the usual BLAS and numeric libraries.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "TBB_NUM_THREADS",
)


def available_cores() -> int:
    """CPUs this process may run on (its affinity, not the machine's count)."""
    counter = getattr(os, "process_cpu_count", None)
    if counter is not None:
        count: Optional[int] = counter()
        return count or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def worker_threads(environment: dict[str, str], workers: int, threads_per_worker: Optional[int]) -> int:
    """Sets the thread-count variables in a worker's ``environment`` (a copy of the parent's);
    returns the threads the worker sets through threadpoolctl, or 0 to leave them.

    ``threads_per_worker`` sets every variable and the cap; by default the
    variables the user has not set get max(1, cores / workers), and the cap
    is set only when the user set none of them.
    """
    if threads_per_worker is not None:
        environment.update({name: str(threads_per_worker) for name in THREAD_VARIABLES})
        return threads_per_worker
    cap = max(1, available_cores() // workers)
    user_set = any(name in os.environ for name in THREAD_VARIABLES)
    for name in THREAD_VARIABLES:
        environment.setdefault(name, str(cap))
    return 0 if user_set else cap


def limit_threads(threads: int) -> None:
    """In a worker: caps the OpenMP/BLAS thread pools already loaded (the environment caps those
    loaded later); nothing for 0, or without threadpoolctl."""
    if threads <= 0:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=threads)
