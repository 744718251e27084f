"""Stage functions the pipeline tests run in workers (imported there by reference, by name).

Kept apart from the test module so that a worker importing them imports
nothing else of the tests (conftest sets the domain from its own pid).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

import hakobu

WATCHDOG = 60.0


def wait_for_file(path: str) -> None:
    """Returns once ``path`` exists; the test creates it (a watchdog against deadlock)."""
    deadline = time.monotonic() + WATCHDOG
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def double(x: int) -> int:
    return 2 * x


def increment(x: Any) -> Any:
    return x + 1


def increment_in_place(a: np.ndarray) -> np.ndarray:
    """``a += 1`` on the received array (shared memory) and returns it."""
    a += 1
    return a


def where(a: np.ndarray) -> tuple[bool, int]:
    """Whether the worker received ``a`` in hakobu memory, and its first element."""
    return hakobu.is_shared(a), int(a.flat[0])


def fan_out(x: int) -> Any:
    """x % 3: 0 -> [x, x + 0.5] (two items), 1 -> SKIP, 2 -> x; other values as they are."""
    if x % 3 == 0:
        return [x, x + 0.5]
    if x % 3 == 1:
        return hakobu.SKIP
    return x


def empty_list(x: int) -> list[int]:
    return []


def explode(x: int) -> list[int]:
    """x copies of x."""
    return [x] * x


def tag(x: Any) -> tuple[int, Any]:
    return (os.getpid(), x)


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"three is not allowed ({x})")
    return x


def slow_by_value(x: int) -> int:
    """Later inputs finish first: input x sleeps (10 - x) ms."""
    time.sleep(max(0, 10 - x) / 1000)
    return x


def ticket(item: tuple[str, int]) -> int:
    """Announces the item (a file ``<dir>/took-<n>-<pid>``) and waits for ``<dir>/go-<n>``."""
    directory, number = item
    with open(os.path.join(directory, f"took-{number}-{os.getpid()}"), "w"):
        pass
    wait_for_file(os.path.join(directory, f"go-{number}"))
    return number


def once_then_ok(item: tuple[str, int]) -> int:
    """The first run of each item announces itself (``<dir>/took-<n>-<pid>``) and hangs (the
    test kills the worker); later runs return the number."""
    directory, number = item
    marker = os.path.join(directory, f"ran-{number}")
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        with open(os.path.join(directory, f"took-{number}-{os.getpid()}"), "w"):
            pass
        time.sleep(WATCHDOG)
    return number


def make_block(x: int) -> np.ndarray:
    """A 64 KiB array (one block of the domain once it travels)."""
    return np.full(8192, x, dtype=np.float64)


def pid_of_worker(x: Any) -> int:
    return os.getpid()


def same(x: Any) -> Any:
    return x


def gated(path: str, x: Any) -> Any:
    """Returns ``x`` once ``path`` exists (with functools.partial: a stage that holds up)."""
    wait_for_file(path)
    return x
