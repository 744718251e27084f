"""The MPI job of the ``mpi`` bench method (see ``mpi.py``), one process per rank:

    mpiexec -n 2 [options] python -m hakobu_bench.methods._mpi_program CONFIG_JSON

Rank 1 is the peer: the standard echo loop (``serve_peer``) over MPI. Rank 0
is the sender: it reads the job (shapes, settings) from its stdin, which
mpiexec forwards from the bench, runs ``measure_trips`` over MPI and reports
on stdout, one ``LINE_PREFIX`` + JSON line each: ``ready``, ``start`` (a shape's
Result as it starts), ``progress`` ([what, trips], at most every 0.1 s),
``result`` (the shape's final Result), ``done``, or ``error``.

Importing this module does nothing (the registry imports every module of the
package): MPI starts in ``main``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..channel import PeerFailed, StampBoard, measure_trips, parent_watch, rebuild_frame, serve_peer
from ..workload import Result, Settings, Shape
from .mpi import LINE_PREFIX, PEER, Mpi, MpiPeer, receive_array, send_array

if TYPE_CHECKING:
    from mpi4py import MPI

_PROGRESS_EVERY = 0.1  # s: progress lines are batched, so reporting stays out of the trips' way


def _library() -> str:
    """The first line of the MPI library's version (without the C string's NUL)."""
    from mpi4py import MPI

    version: str = MPI.Get_library_version()  # typed as str even when mpi4py (and so its types) is missing
    return version.replace("\0", "").strip().splitlines()[0]


class RankZero(Mpi):
    """The sender's end in rank 0; ``measure_trips`` drives it like any channel.

    ``receive`` is a plain blocking ``comm.Recv``: when rank 1 dies, mpiexec
    aborts the whole job, and when it hangs, the bench's watchdog kills the job.
    """

    def __init__(self, workdir: Path, stamps: StampBoard, serialize: Optional[str], comm: MPI.Comm) -> None:
        super().__init__(workdir, stamps, serialize)
        self.comm = comm

    def start(self) -> None:
        """Nothing to start: mpiexec started both ranks."""

    def send(self, array: np.ndarray) -> None:
        send_array(self.comm, array, PEER)

    def receive(self) -> np.ndarray:
        frame = receive_array(self.comm, PEER)
        if frame is None:
            raise PeerFailed("rank 1 sent a stop message")
        return rebuild_frame(frame)

    def close(self) -> None:
        send_array(self.comm, None, PEER)  # rank 1 leaves its loop


class Reporter:
    """Rank 0's lines to the bench, on stdout (mpiexec forwards them)."""

    def __init__(self) -> None:
        self.current: Optional[Result] = None
        self.what = ""
        self.trips = 0
        self.last = time.monotonic()
        self.finished = False  # the job is over: the bench may close stdin

    def line(self, **report: Any) -> None:
        sys.stdout.write(LINE_PREFIX + json.dumps(report) + "\n")
        sys.stdout.flush()

    def record(self, result: Result) -> None:
        self.finish_shape()
        self.current = result
        self.line(start=dataclasses.asdict(result))

    def progress(self, what: str, trips: int) -> None:
        if what != self.what:
            self.flush_progress()
            self.what = what
        self.trips += trips
        if time.monotonic() - self.last >= _PROGRESS_EVERY:
            self.flush_progress()

    def flush_progress(self) -> None:
        if self.trips:
            self.line(progress=[self.what, self.trips])
            self.trips = 0
        self.last = time.monotonic()

    def finish_shape(self) -> None:
        self.flush_progress()
        if self.current is not None:
            self.line(result=dataclasses.asdict(self.current))
            self.current = None


def _exit_at_end_of_stdin(reporter: Reporter) -> None:
    """Ends rank 0 (and so the job) when the bench closes stdin before the job is over.

    The bench closes it in ``close`` after a failure, or dies: either way the job must go.
    """

    def watch() -> None:
        sys.stdin.read()
        if not reporter.finished:
            os._exit(3)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _sender(config: dict[str, Any], comm: MPI.Comm) -> None:
    parent_watch()  # mpiexec gone: this rank goes too
    reporter = Reporter()
    reporter.line(ready={"library": _library()})
    line = sys.stdin.readline()
    stamps = StampBoard(Path(config["stamps"]), create=False)
    channel = RankZero(Path(config["workdir"]), stamps, config.get("serialize"), comm)
    try:
        if line:  # empty: the bench closed stdin without a job
            _exit_at_end_of_stdin(reporter)
            job = json.loads(line)
            pending = [Shape(**{**shape, "dims": tuple(shape["dims"])}) for shape in job["pending"]]
            arrays: dict[str, np.ndarray] = {}

            def record(result: Result) -> None:
                arrays.clear()  # no other method reuses them here: keep only the running shape's array
                reporter.record(result)

            # measure_trips itself: Mpi.measure is the bench side, which hands the work to this rank.
            measure_trips(
                channel, pending, Settings(**job["settings"]), arrays, record, None, reporter.progress
            )
            reporter.finish_shape()
    finally:
        channel.close()
        stamps.close()
    reporter.finished = True
    reporter.line(done=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: mpiexec -n 2 python -m hakobu_bench.methods._mpi_program CONFIG_JSON", file=sys.stderr)
        return 2
    config = json.loads(argv[0])
    import mpi4py

    mpi4py.rc.thread_level = "funneled"  # only the main thread calls MPI (the others watch)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        # Each process is a job of its own when mpi4py loaded another MPI library than the
        # one of the mpiexec that started it.
        message = (
            f"the job has {comm.Get_size()} rank(s), not 2: is mpi4py's MPI library "
            f"({_library()}) the one of mpiexec? "
            "(MPI4PY_LIBMPI chooses it)"
        )
        print(message, file=sys.stderr)
        if comm.Get_rank() == 0:
            Reporter().line(error=message)
        return 1
    try:
        comm.Barrier()  # both ranks are up (rank 0 then reports ready)
        if comm.Get_rank() == PEER:
            serve_peer(MpiPeer, config)
        else:
            _sender(config, comm)
    except BaseException:  # noqa: BLE001 - whatever it is, the other rank must not wait forever
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
