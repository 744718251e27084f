"""Functions the pool tests run in workers (imported there by reference, by name).

Kept apart from the test module so that a worker importing them imports
nothing else of the tests (conftest sets the domain from its own pid).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import threading
import time
from typing import Any

import numpy as np

import hakobu

_state: dict[str, Any] = {}


@dataclasses.dataclass
class Frame:
    label: str
    pixels: np.ndarray


def square(x: int) -> int:
    return x * x


def add(a: int, b: int, scale: int = 1) -> int:
    return (a + b) * scale


def pid(*_: object) -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def wait_for(path: str) -> int:
    """Returns (the worker's pid) once ``path`` exists; the test creates it (60 s watchdog)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return os.getpid()


def announce_and_sleep(directory: str, index: int) -> int:
    """Says it runs (a file in ``directory``), then sleeps long: only terminate() ends it."""
    with open(os.path.join(directory, f"running-{index}-{os.getpid()}"), "w"):
        pass
    time.sleep(120)
    return index


class Unpicklable(Exception):
    """An exception that holds a lock: it cannot be pickled."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


class NeedsTwo(Exception):
    """Pickles, but cannot be rebuilt: its __init__ wants two arguments, its args hold one."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


def raise_unpicklable() -> None:
    raise Unpicklable()


def raise_needs_two() -> None:
    raise NeedsTwo("this", "that")


def return_lock() -> Any:
    return threading.Lock()


def kill_self(*_: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def terminate_self(*_: object) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)  # the signal arrives first


def segfault(*_: object) -> None:
    ctypes.string_at(0)


def exit_with(code: int) -> None:
    os._exit(code)


def kill_self_once(marker: str) -> str:
    """Dies by SIGKILL on its first run (marked by a file), succeeds on the next."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    return f"survived in {os.getpid()}"


def kill_self_if(x: int, victim: int) -> int:
    if x == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


def remember(value: Any) -> None:
    """An initializer."""
    _state["value"] = value
    _state["pid"] = os.getpid()


def recall(_: object = None) -> tuple[Any, int]:
    return _state.get("value"), os.getpid()


def failing_initializer() -> None:
    raise RuntimeError("no licence server")


def thread_report() -> dict[str, Any]:
    from threadpoolctl import threadpool_info

    return {
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "pools": [info["num_threads"] for info in threadpool_info()],
    }


def describe_shared(array: np.ndarray, row: int) -> tuple[bool, int, int]:
    """Writes ``row`` into row ``row`` of ``array``; reports (is_shared, live heap bytes, pid)."""
    array[row] = row
    live = hakobu._core.domain_stats()["live_bytes"]
    return hakobu.is_shared(array), live, os.getpid()


def double_frames(batch: dict[str, Any]) -> dict[str, Any]:
    """Arrays inside a dict, a tuple and a dataclass, doubled."""
    pair = batch["pair"]
    frame = batch["frame"]
    return {
        "pair": (pair[0] * 2, pair[1] * 2),
        "frame": Frame(frame.label + "!", frame.pixels * 2),
        "shared": [hakobu.is_shared(pair[0]), hakobu.is_shared(frame.pixels)],
    }


def announce_and_sum(directory: str, array: np.ndarray) -> float:
    """Says it runs (a file in ``directory``, one per worker), then sums ``array`` slowly."""
    with open(os.path.join(directory, f"running-{os.getpid()}"), "w"):
        pass
    time.sleep(0.5)
    return float(array.sum())


def fail_if(item: tuple[int, bool]) -> int:
    """``item`` is (k, failing)."""
    k, failing = item
    if failing:
        raise ValueError(f"item {k}")
    return k


def pid_and_item(item: int) -> tuple[int, int]:
    return os.getpid(), item


def kill_self_at(item: tuple[int, int]) -> int:
    """``item`` is (k, victim): dies by SIGKILL when k is the victim."""
    k, victim = item
    if k == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return k
