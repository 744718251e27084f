"""Pool tasks of tests/python/test_store_ref.py: they report what they were given on a
hakobu queue and wait to be told to go on (every wait bounded by a 60 s watchdog)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np

import hakobu

WATCHDOG = 60.0


def describe(array: np.ndarray) -> dict[str, Any]:
    """What a task can tell of the array it received."""
    return {
        "sum": float(array.sum()),
        "shape": tuple(array.shape),
        "writeable": bool(array.flags.writeable),
        "shared": hakobu.is_shared(array),
        "address": int(array.__array_interface__["data"][0]),
    }


def report_then_wait(array: np.ndarray, started: str, go: str) -> dict[str, Any]:
    """Puts (pid, describe(array)) on ``started``, waits for a message on ``go``, then
    returns describe(array) again: the same view, after whatever happened meanwhile."""
    hakobu.Queue(started).put((os.getpid(), describe(array)))
    hakobu.Queue(go).get(timeout=WATCHDOG)
    return describe(array)


def try_to_write(array: np.ndarray) -> str:
    """The error a write to ``array`` raises (a read-only view refuses it)."""
    try:
        array[0] = -1
    except ValueError as error:
        return str(error)
    return "written"


def describe_nested(args: dict[str, Any]) -> dict[str, Any]:
    """describe() of the arrays in a dict holding a tuple."""
    return {"whole": describe(args["whole"]), "part": describe(args["inside"][0])}


def report_then_die(array: np.ndarray, started: str) -> None:
    """Reports its pid with the array held, then waits to be SIGKILLed (by itself after the watchdog)."""
    hakobu.Queue(started).put((os.getpid(), describe(array)))
    time.sleep(WATCHDOG)
    os.kill(os.getpid(), signal.SIGKILL)
