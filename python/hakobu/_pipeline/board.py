"""Where running pipelines and served stages show what they do: ``Pipeline.stats()``,
``hakobu top`` (from any process of the user).

A pipeline called NAME publishes two named objects in its domain, both called
``NAME.pipeline`` (a store and a shared array may share a name):

* the store holds one immutable value, ``"description"``: a dict with ``name``,
  ``pid`` (the process that runs it), ``started`` (``time.time()``), ``stages``
  (a list of dicts: ``name``, ``workers``, ``input`` and ``output`` queue names,
  ``first_row``) and ``results`` (the queue the outputs arrive on, or None);
* the array (float64, one row per worker slot, columns FIELDS) holds each
  worker's live counters, written by that worker alone (no lock: one writer per
  row, readers take a snapshot and tolerate a row caught mid-update).

Both go when the pipeline closes (``Board.remove``). A board whose ``pid`` is no
longer alive was left by a killed program: readers show it as such, and
``hakobu rm NAME.pipeline`` removes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import numpy as np

from .. import _core, _errors
from .._processes import process_exists
from .._store import Store
from .._sync import Array

SUFFIX = ".pipeline"
FIELDS = (
    "stage",  # index of the worker's stage
    "pid",  # the worker's process id (0: the slot was never used)
    "items",  # inputs the worker finished (whatever came of them)
    "errors",  # inputs whose function raised
    "compute_seconds",  # in the stage's function
    "input_wait_seconds",  # waiting for an input
    "output_wait_seconds",  # waiting for room in the next queue
    "state",  # WAITING_INPUT, COMPUTING, WAITING_OUTPUT or EXITED
    "updated",  # time.time() of the last change
)
COLUMN = {field: index for index, field in enumerate(FIELDS)}
WAITING_INPUT, COMPUTING, WAITING_OUTPUT, EXITED = 0.0, 1.0, 2.0, 3.0
STATE_NAMES = {
    WAITING_INPUT: "waiting for input",
    COMPUTING: "computing",
    WAITING_OUTPUT: "waiting for room",
    EXITED: "exited",
}


class StageInfo(NamedTuple):
    """A stage as the board describes it."""

    name: str
    workers: int
    input: str
    output: Optional[str]


def board_name(pipeline: str) -> str:
    """The name of the store and the array that describe pipeline ``pipeline``."""
    return pipeline + SUFFIX


class Board:
    """The publishing side: made by the process that runs the pipeline."""

    def __init__(self, name: str, stages: Sequence[StageInfo], results: Optional[str], domain: str) -> None:
        self.name = name
        self.domain = domain
        rows = sum(stage.workers for stage in stages)
        described: list[dict[str, Any]] = []
        first_row = 0
        for stage in stages:
            described.append({**stage._asdict(), "first_row": first_row})
            first_row += stage.workers
        self._array = Array(
            board_name(name), np.float64, (max(rows, 1), len(FIELDS)), create=True, domain=domain
        )
        try:
            self._store = Store(board_name(name), 4, create=True, domain=domain)
        except BaseException:
            self._array.unlink()
            raise
        description = {
            "name": name,
            "pid": os.getpid(),
            "started": time.time(),
            "stages": described,
            "results": results,
        }
        self._store["description"] = description
        self.description = description

    @property
    def rows(self) -> np.ndarray:
        """The live counters: one row per worker slot, columns FIELDS."""
        return self._array.array

    def remove(self) -> None:
        """Removes the board's store and array (the pipeline ends)."""
        for thing in (self._store, self._array):
            try:
                thing.unlink()
            except _errors.HakobuError:
                pass  # already removed (hakobu rm)


class WorkerRow:
    """One worker's row, written by that worker alone."""

    def __init__(self, pipeline: str, row: int, stage: int, domain: str) -> None:
        self._array = Array(
            board_name(pipeline), np.float64, _shape_of(pipeline, domain), create=False, domain=domain
        )
        self._row = self._array.array[row]
        self._row[:] = 0.0
        self._row[COLUMN["stage"]] = stage
        self._row[COLUMN["pid"]] = os.getpid()
        self._since = time.perf_counter()
        self._set_state(WAITING_INPUT)

    def _set_state(self, state: float) -> None:
        row = self._row
        row[COLUMN["state"]] = state
        row[COLUMN["updated"]] = time.time()

    def _charge(self, column: str) -> None:
        now = time.perf_counter()
        self._row[COLUMN[column]] += now - self._since
        self._since = now

    def computing(self) -> None:
        """The worker got an input (the wait for it ends) and calls the function."""
        self._charge("input_wait_seconds")
        self._set_state(COMPUTING)

    def sending(self, failed: bool) -> None:
        """The function returned (or raised: ``failed``); the worker sends what came of it."""
        self._charge("compute_seconds")
        if failed:
            self._row[COLUMN["errors"]] += 1
        self._set_state(WAITING_OUTPUT)

    def waiting(self) -> None:
        """What came of the input was sent; the worker waits for the next input."""
        self._charge("output_wait_seconds")
        self._row[COLUMN["items"]] += 1
        self._set_state(WAITING_INPUT)

    def exited(self) -> None:
        self._set_state(EXITED)


def _shape_of(pipeline: str, domain: str) -> tuple[int, int]:
    """The shape the pipeline's array was made with (from its description)."""
    with Store(board_name(pipeline), 4, create=False, domain=domain) as store:
        stages = store["description"]["stages"]
    return (max(sum(int(stage["workers"]) for stage in stages), 1), len(FIELDS))


def running(domain: str) -> list[dict[str, Any]]:
    """The boards of ``domain``: each description with ``alive`` (its process runs) and
    ``workers`` (a list of dicts, one per worker slot, FIELDS as keys, a snapshot)."""
    boards: list[dict[str, Any]] = []
    for _path, kind, name in _core.domain_files(domain):
        if kind != "store" or not name.endswith(SUFFIX):
            continue
        pipeline = name[: -len(SUFFIX)]
        try:
            with Store(name, 4, create=False, domain=domain) as store:
                description = dict(store["description"])
            array = Array(name, np.float64, _shape_of(pipeline, domain), create=False, domain=domain)
        except (_errors.HakobuError, KeyError):
            continue  # removed meanwhile, or being made
        snapshot = np.array(array.array, copy=True)
        description["alive"] = process_exists(int(description.get("pid", 0)))
        description["workers"] = [dict(zip(FIELDS, (float(x) for x in row))) for row in snapshot]
        boards.append(description)
    return boards
