"""Runs the round trips: every chosen method, every chosen shape, validated bit for bit.

For each method the runner starts its channel once (the peer is a separately
started process), then for each shape makes the array to send outside the
timing, does ``warmup`` untimed and ``repeat`` timed round trips, and checks
every array that comes back against a private reference. Each trip writes a
new value into the first element, so a stale or replayed answer is caught
too. A watchdog kills a peer that does not answer in time, so a broken method
fails instead of hanging the run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ._channel import Channel, PeerFailed, Serializer, StampBoard, monotonic_ns
from .methods import all_methods


@dataclass(frozen=True)
class Shape:
    """One workload: an array of ``dims`` and ``dtype``; ``repeat`` timed trips by default."""

    name: str
    dims: tuple[int, ...]
    dtype: str
    repeat: int
    quick_repeat: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.dims) * np.dtype(self.dtype).itemsize


SHAPES = [
    Shape("64B", (8,), "float64", 1000, 50),  # latency: a 64-byte message
    Shape("1x3x224x224", (1, 3, 224, 224), "float64", 50, 5),
    Shape("2x1024x16x16", (2, 1024, 16, 16), "float64", 50, 5),
    Shape("2x3x16x224x224", (2, 3, 16, 224, 224), "float64", 10, 3),
    Shape("mnist-70000x784", (70000, 784), "float32", 5, 2),
    Shape("128x1024x1024", (128, 1024, 1024), "float64", 3, 1),
]
QUICK_SHAPES = ("64B", "1x3x224x224", "2x1024x16x16")


def parse_shape(text: str) -> Shape:
    """A known shape name, or AxBxC[:dtype] (float64 by default)."""
    for shape in SHAPES:
        if shape.name == text:
            return shape
    match = re.fullmatch(r"(\d+(?:x\d+)*)(?::(\w+))?", text)
    if not match:
        known = ", ".join(s.name for s in SHAPES)
        raise ValueError(f"unknown shape '{text}': use one of {known}, or AxBxC[:dtype]")
    dtype = match.group(2) or "float64"
    np.dtype(dtype)  # raises TypeError for an unknown dtype
    dims = tuple(int(n) for n in match.group(1).split("x"))
    return Shape(text, dims, dtype, 10, 3)


@dataclass(frozen=True)
class Settings:
    """How a run measures: trips per shape, encoding, limits."""

    repeat: Optional[int] = None  # timed trips per shape (None: the shape's default)
    warmup: Optional[int] = None  # untimed trips first (None: 1, or 5 for tiny messages)
    quick: bool = False  # the shapes' quick repeat counts
    serialize: Optional[str] = None  # None, or a _channel.SERIALIZERS entry
    no_limits: bool = False  # run methods on arrays above their max_bytes

    def repeats(self, shape: Shape) -> int:
        return (
            self.repeat if self.repeat is not None else (shape.quick_repeat if self.quick else shape.repeat)
        )

    def warmups(self, shape: Shape) -> int:
        if self.warmup is not None:
            return self.warmup
        return (
            5 if shape.nbytes < 4096 and not self.quick else 1
        )  # the latency workload warms caches and wakeups more

    def trips(self, shapes: Sequence[Shape]) -> int:
        """Round trips one method makes over ``shapes`` (for the progress bar)."""
        return sum(self.repeats(s) + self.warmups(s) for s in shapes)


@dataclass
class Result:
    """The figures of one method on one shape (times in nanoseconds, one per timed trip)."""

    method: str
    shape: str
    nbytes: int
    send: list[int] = field(default_factory=list)
    rebuild: list[int] = field(default_factory=list)
    back: list[int] = field(default_factory=list)  # "return": the answer back and rebuilt in the sender
    total: list[int] = field(default_factory=list)
    validated: int = 0  # arrays that came back bit for bit equal (warm-up trips included)
    error: Optional[str] = None  # the method failed on this shape
    skipped: Optional[str] = None  # the method did not run this shape, and why (not a failure)

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None and bool(self.total)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def median(self, phase: str) -> float:
        values: list[int] = getattr(self, phase)
        return float(statistics.median(values)) if values else math.nan

    def summary(self) -> dict[str, Any]:
        phases: dict[str, Any] = {}
        for phase, key in (("send", "send"), ("rebuild", "rebuild"), ("back", "return"), ("total", "total")):
            values = getattr(self, phase)
            if values:
                ordered = sorted(values)
                phases[key] = {
                    "median_us": statistics.median(values) / 1e3,
                    "min_us": ordered[0] / 1e3,
                    "mean_us": statistics.fmean(values) / 1e3,
                    "p90_us": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] / 1e3,
                    "all_us": [v / 1e3 for v in values],
                }
        return {
            "method": self.method,
            "shape": self.shape,
            "bytes": self.nbytes,
            "repeat": len(self.total),
            "validated": self.validated,
            "error": self.error,
            "skipped": self.skipped,
            **phases,
        }


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


Progress = Callable[[str, int], None]  # (what is running, trips done since the last call)
Record = Callable[[Result], None]  # takes each Result as soon as its shape starts


def make_array(shape: Shape, seed: int = 2024) -> np.ndarray:
    """Random contents (every bit pattern matters for validation), the same in every method."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(shape.dtype)
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return rng.random(shape.dims, dtype=dtype)
    raw = rng.integers(0, 256, shape.nbytes, dtype=np.uint8)
    return raw.view(dtype).reshape(shape.dims)


def _stamp_value(array: np.ndarray, trip: int) -> np.ndarray:
    """A value for the first element that differs on every trip."""
    return np.array(trip % 251 + 1).astype(array.dtype)


def same_bits(received: np.ndarray, expected: np.ndarray, chunk: int = 16 << 20) -> Optional[str]:
    """None when ``received`` is ``expected`` bit for bit (dtype, shape, bytes), else what differs."""
    if not isinstance(received, np.ndarray):
        return f"got a {type(received).__name__}, not an ndarray"
    if received.dtype != expected.dtype or received.shape != expected.shape:
        return f"got {received.dtype}{list(received.shape)}, sent {expected.dtype}{list(expected.shape)}"
    a = np.ascontiguousarray(received).reshape(-1).view(np.uint8)
    b = np.ascontiguousarray(expected).reshape(-1).view(np.uint8)
    for start in range(0, len(a), chunk):  # in chunks: no temporary as large as the array
        if not np.array_equal(a[start : start + chunk], b[start : start + chunk]):
            where = start + int(np.argmax(a[start : start + chunk] != b[start : start + chunk]))
            return f"byte {where} of {len(a)} differs (got {a[where]:#04x}, sent {b[where]:#04x})"
    return None


class Watchdog:
    """Kills the peer of a round trip that passed its deadline (the blocked sender then fails)."""

    def __init__(self) -> None:
        self.deadline: Optional[float] = None
        self.channel: Optional[Channel] = None
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bench-watchdog", daemon=True)
        self._thread.start()

    def arm(self, channel: Channel, seconds: float) -> None:
        self.channel, self.deadline = channel, time.monotonic() + seconds

    def disarm(self) -> None:
        self.deadline = None

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            deadline, channel = self.deadline, self.channel
            if deadline is not None and channel is not None and time.monotonic() > deadline:
                if channel.peer is not None:
                    self.fired = True
                    channel.peer.kill()
                self.deadline = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def trip_limit(nbytes: int) -> float:
    """Seconds a round trip may take before the watchdog steps in: generous, never a measure."""
    return 60.0 + nbytes * 200e-9  # 200 ns per byte: slow methods (JSON) on 1 GiB still fit


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
        _fail_rest(method, pending, _failure(error, watchdog), record, settings, progress)
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


def measure(
    channel: Channel,
    pending: list[Shape],
    settings: Settings,
    arrays: dict[str, np.ndarray],
    record: Record,
    watchdog: Optional[Watchdog],
    progress: Optional[Progress],
) -> None:
    """The timed, validated round trips of ``channel`` (started) over ``pending``, which it empties.

    Every shape gets a Result, passed to ``record`` when the shape starts; when
    the channel fails, the shape that was running and those left get the error.
    This is ``Channel.measure``; a sender that runs in another process (MPI's
    rank 0) calls it there.
    """
    serializer = Serializer(settings.serialize)
    stamps = channel.stamps
    current: Optional[Result] = None
    trip = 0
    try:
        while pending:
            shape = pending.pop(0)
            current = Result(channel.name, shape.name, shape.nbytes)
            record(current)
            if shape.name not in arrays:
                arrays[shape.name] = make_array(shape)
            reference = arrays[shape.name]
            to_send = channel.prepare(reference)  # outside the timing (hakobu.empty for zero-copy)
            expected = reference.copy()
            first_expected = expected.reshape(-1)[:1]
            warm, timed = settings.warmups(shape), settings.repeats(shape)
            for index in range(warm + timed):
                trip += 1
                if reference.size:
                    to_send.reshape(-1)[:1] = first_expected[:] = _stamp_value(reference, trip)
                if watchdog is not None:
                    watchdog.arm(channel, trip_limit(shape.nbytes))
                t0 = monotonic_ns()
                channel.send(serializer.encode(to_send))
                received = serializer.decode(channel.receive())
                t3 = monotonic_ns()
                if watchdog is not None:
                    watchdog.disarm()
                stamped_trip, t1, t2 = stamps.read()
                if stamped_trip != trip:
                    raise PeerFailed(f"the peer stamped trip {stamped_trip}, expected {trip}")
                problem = same_bits(received, expected)
                del received  # hakobu memory goes back to the heap before the next trip
                if problem is not None:
                    current.error = f"wrong data came back on trip {index + 1}: {problem}"
                    break
                current.validated += 1
                if index >= warm:
                    current.send.append(t1 - t0)
                    current.rebuild.append(t2 - t1)
                    current.back.append(t3 - t2)
                    current.total.append(t3 - t0)
                if progress:
                    progress(f"{channel.label} · {shape.name}", 1)
            del to_send, expected, first_expected
            if current.error is not None:
                _fail_rest(
                    type(channel), pending, "not run: an earlier shape failed", record, settings, progress
                )
    except Exception as error:  # noqa: BLE001 - one method's failure is reported, the run goes on
        message = _failure(error, watchdog)
        if current is not None and current.error is None:
            current.error = message
        _fail_rest(type(channel), pending, message, record, settings, progress)


def _failure(error: Exception, watchdog: Optional[Watchdog]) -> str:
    message = f"{type(error).__name__}: {error}"
    if watchdog is not None and watchdog.fired:
        message = f"no answer within the watchdog's limit ({message})"
    return message


def _fail_rest(
    method: type[Channel],
    pending: list[Shape],
    message: str,
    record: Record,
    settings: Settings,
    progress: Optional[Progress],
) -> None:
    """Records the shapes a failed method did not get to, each with the failure."""
    if not pending:
        return
    for shape in pending:
        record(Result(method.name, shape.name, shape.nbytes, error=message))
    if progress:
        progress(f"{method.label}: failed", settings.trips(pending))
    pending.clear()


def as_dict(shape: Shape) -> dict[str, Any]:
    return {**dataclasses.asdict(shape), "bytes": shape.nbytes}
