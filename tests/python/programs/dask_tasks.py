"""Functions the Dask pool tests run in Dask workers (imported there by name: the test puts this
directory on sys.path before the cluster starts, and its spawned workers inherit it)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

_state: dict[str, Any] = {"initialized": 0}


def square(x: int) -> int:
    return x * x


def add(a: int, b: int, scale: int = 1) -> int:
    return (a + b) * scale


def fail(message: str) -> None:
    raise ValueError(message)


def return_lock() -> Any:
    """A result that cannot be pickled to travel back."""
    import threading

    return threading.Lock()


def initialize(tag: str) -> None:
    """The pool's initializer: counts its runs in this process."""
    _state["initialized"] += 1
    _state["tag"] = tag


def initialized(_: object) -> tuple[int, str, int]:
    """(this process's pid, the initializer's tag, how often it ran here)."""
    return os.getpid(), _state.get("tag", ""), _state["initialized"]


def failing_initializer() -> None:
    raise RuntimeError("no licence for this worker")


def scaled(array: np.ndarray, factor: float) -> np.ndarray:
    return array * factor


def checksum(array: np.ndarray) -> float:
    return float(array.sum())


def threads_now(_: object) -> int:
    """The BLAS/OpenMP threads threadpoolctl sees while the task runs (0 without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return 0
    return max((pool["num_threads"] for pool in threadpool_info()), default=0)


def wait_for(path: str, value: int) -> int:
    """``value`` once ``path`` exists (the test creates it; 60 s watchdog)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return value


def wait_for_item(item: tuple[str, int]) -> int:
    """wait_for with one argument, for imap."""
    return wait_for(*item)


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def die_once(directory: str, x: int, victim: int = 0) -> int:
    """x * x; for ``x == victim``, the first run announces its pid and waits (60 s watchdog) to be
    killed, and a later run (on another worker) returns at once."""
    mark = os.path.join(directory, f"started-{x}")
    if x != victim or os.path.exists(mark):
        return x * x
    with open(mark + ".tmp", "w") as out:
        out.write(str(os.getpid()))
    os.rename(mark + ".tmp", mark)
    time.sleep(60)
    raise TimeoutError("the test never killed this worker")


def die_every_time(directory: str) -> None:
    """Notes this run (a file per run), then kills its own worker process: a poison task."""
    with open(os.path.join(directory, f"run-{os.getpid()}-{time.monotonic_ns()}"), "w"):
        pass
    os.kill(os.getpid(), 9)
