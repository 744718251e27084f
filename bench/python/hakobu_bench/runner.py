"""Runs the round trips: every chosen method, every chosen shape, validated bit for bit.

For each method the runner starts its channel once (the peer is a separately
started process), then for each shape makes the array to send outside the
timing, does ``warmup`` untimed and ``repeat`` timed round trips, and checks
every array that comes back against a private reference. Each trip writes a
new value into the first element, so a stale or replayed answer is caught
too. A watchdog kills a peer that does not answer in time, so a broken method
fails instead of hanging the run. The round trips themselves are
``channel.measure_trips``; the shapes and figures are in ``workload``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .channel import Channel, Serializer, StampBoard, Watchdog, fail_rest, failure_message
from .methods import all_methods
from .workload import Progress, Result, Settings, Shape


@dataclass
class Skipped:
    method: str
    label: str
    reason: str


@dataclass
class Run:
    """Everything one `hakobu bench` measured."""

    methods: list[type[Channel]]
    shapes: list[Shape]
    settings: Settings = field(default_factory=Settings)
    results: list[Result] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    def result(self, method: str, shape: str) -> Optional[Result]:
        return next((r for r in self.results if r.method == method and r.shape == shape), None)


def run(
    method_names: Sequence[str],
    shapes: Sequence[Shape],
    *,
    repeat: Optional[int] = None,
    quick: bool = False,
    warmup: Optional[int] = None,
    serialize: Optional[str] = None,
    no_limits: bool = False,
    progress: Optional[Progress] = None,
) -> Run:
    """Measures ``method_names`` on ``shapes``; methods whose dependency is missing are skipped."""
    known = all_methods()
    unknown = [m for m in method_names if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(known)}")
    Serializer(serialize)  # rejects an unknown encoding before anything starts
    settings = Settings(repeat, warmup, quick, serialize, no_limits)
    outcome = Run([known[m] for m in method_names], list(shapes), settings)
    started = time.monotonic()
    arrays: dict[str, np.ndarray] = {}
    watchdog = Watchdog()
    try:
        for method in outcome.methods:
            reason = method.missing()
            if reason is not None:
                outcome.skipped.append(Skipped(method.name, method.label, reason))
                if progress:
                    progress(f"{method.label}: skipped", settings.trips(shapes))
                continue
            _run_method(method, outcome, arrays, watchdog, progress)
    finally:
        watchdog.close()
    outcome.seconds = time.monotonic() - started
    return outcome


def _run_method(
    method: type[Channel],
    outcome: Run,
    arrays: dict[str, np.ndarray],
    watchdog: Watchdog,
    progress: Optional[Progress],
) -> None:
    """Starts ``method``'s channel, measures every shape it takes, closes it."""
    settings = outcome.settings
    pending: list[Shape] = []
    for shape in outcome.shapes:
        reason = method.refuses(shape.nbytes, settings.serialize, settings.no_limits)
        if reason is None:
            pending.append(shape)
            continue
        outcome.results.append(Result(method.name, shape.name, shape.nbytes, skipped=reason))
        if progress:
            progress(f"{method.label}: skipped {shape.name}", settings.trips([shape]))
    if not pending:
        return
    workdir = Path(tempfile.mkdtemp(prefix=f"hakobu-bench-{method.name}-"))
    stamps = StampBoard(workdir / "stamps", create=True)
    channel = method(workdir, stamps, settings.serialize)
    channel.largest_message = max(Serializer(settings.serialize).encoded_size(s.nbytes) for s in pending)
    mine: list[Result] = []

    def record(result: Result) -> None:
        mine.append(result)
        outcome.results.append(result)

    try:
        watchdog.arm(channel, 60.0)
        channel.start()
        watchdog.disarm()
        channel.measure(pending, settings, arrays, record, watchdog, progress)
    except Exception as error:  # noqa: BLE001 - a failed start; measure reports its own failures
        fail_rest(method, pending, failure_message(error, watchdog, channel), record, settings, progress)
    finally:
        watchdog.disarm()
        watchdog.fired = False
        try:
            channel.close()
        except Exception as error:  # noqa: BLE001 - reported on the method's last result, the run goes on
            if mine and mine[-1].error is None:
                mine[-1].error = f"closing failed: {type(error).__name__}: {error}"
        finally:
            stamps.close()
            shutil.rmtree(workdir, ignore_errors=True)
