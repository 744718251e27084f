"""MPI (mpi4py on Open MPI): comm.Send / comm.Recv of the raw bytes, between two ranks of one job.

MPI programs are started by ``mpiexec``, so the sender is not the bench
process: ``start`` launches ``mpiexec -n 2 python -m
hakobu_bench.methods._mpi_program CONFIG``. Rank 0 is the sender: it runs
the same ``measure_trips`` (same arrays, same validation, the same stamp
board) over a channel whose ``send`` is a header message (``encode_header``)
and then the array's bytes with ``comm.Send`` (the buffer interface, no
pickling), and whose ``receive`` is ``comm.Recv`` into ``np.empty``. Rank 1
is the peer: the standard echo loop (``serve_peer``) over the same messages.
Between two ranks on one machine Open MPI moves the bytes through its
shared-memory transport (btl "vader": small messages through a shared
segment, large ones copied once, straight from one process to the other,
with Linux CMA ``process_vm_readv``).

The bench process sends the shapes and settings to rank 0 on mpiexec's
stdin (forwarded to rank 0) and reads on mpiexec's stdout one JSON line per
started shape, per finished shape and every ~0.1 s of progress; it turns them
into the runner's Results. A job that dies or hangs gives failed Results
with mpiexec's stderr; the watchdog kills the whole job.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..channel import (
    HEADER_SIZE,
    Channel,
    PeerEnd,
    PeerFailed,
    PopenPeer,
    Watchdog,
    as_bytes,
    decode_header,
    encode_header,
    fail_rest,
    failure_message,
    rebuild_frame,
)
from ..workload import Progress, Record, Result, Settings, Shape, trip_limit

if TYPE_CHECKING:
    from mpi4py import MPI

SENDER, PEER = 0, 1  # ranks
_HEADER_TAG, _DATA_TAG = 1, 2
# MPI counts are C ints: one message carries at most 2 GiB - 1 bytes (Open MPI 4.1 has no
# MPI-4 large-count calls), so larger arrays go as several messages of 1 GiB.
_CHUNK = 1 << 30
LINE_PREFIX = "@hakobu-mpi "  # marks rank 0's report lines among whatever else reaches stdout
_POLL = 0.5  # s: the bench's reads wake up this often to check that mpiexec lives


# --- the messages, used by both ranks ----------------------------------------------------------


def send_array(comm: MPI.Comm, array: Optional[np.ndarray], dest: int) -> None:
    """A header message (dtype, shape, size; or the stop message), then the bytes."""
    from mpi4py import MPI

    comm.Send([encode_header(array), MPI.BYTE], dest, _HEADER_TAG)
    if array is None:
        return
    data = as_bytes(array)
    for start in range(0, len(data), _CHUNK):
        comm.Send([data[start : start + _CHUNK], MPI.BYTE], dest, _DATA_TAG)


def receive_array(comm: MPI.Comm, source: int) -> Optional[tuple[np.dtype[Any], tuple[int, ...], np.ndarray]]:
    """The header, then the bytes received straight into fresh memory; None for the stop message."""
    from mpi4py import MPI

    header = bytearray(HEADER_SIZE)
    comm.Recv([header, MPI.BYTE], source, _HEADER_TAG)
    decoded = decode_header(bytes(header))
    if decoded is None:
        return None
    dtype, shape, nbytes = decoded
    payload = np.empty(nbytes, np.uint8)
    for start in range(0, nbytes, _CHUNK):
        comm.Recv([payload[start : start + _CHUNK], MPI.BYTE], source, _DATA_TAG)
    return dtype, shape, payload


class MpiPeer(PeerEnd):
    """Rank 1: receives from rank 0 and sends back to it (``serve_peer`` runs the loop)."""

    def __init__(self, config: dict[str, Any]) -> None:
        from mpi4py import MPI

        super().__init__(config)
        self.comm = MPI.COMM_WORLD

    def receive_raw(self) -> Any:
        # A blocking Recv: if the bench or mpiexec goes away, the parent watch ends this rank.
        return receive_array(self.comm, SENDER)

    def rebuild(self, raw: Any) -> np.ndarray:
        return rebuild_frame(raw)

    def send_back(self, array: np.ndarray) -> None:
        send_array(self.comm, array, SENDER)


# --- the bench's side: the job ------------------------------------------------------------------


def _started(pid: int) -> Optional[str]:
    """When ``pid`` started (/proc/PID/stat field 22), or None when it is gone."""
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after "(comm)": state, ppid, pgrp, session...
    return fields[19] if len(fields) > 19 else None


def _session_members(session: int) -> dict[int, str]:
    """The processes of a session (mpiexec leads one), with their start times."""
    members: dict[int, str] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: only mpiexec itself can be killed
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 19 and fields[3] == str(session):
            members[int(entry)] = fields[19]
    return members


class MpiJob(PopenPeer):
    """The mpiexec process; killing it kills the ranks too.

    Open MPI puts every rank in a process group of its own, so killing mpiexec
    alone would leave ranks behind (a stopped one forever). mpiexec is started
    in a session of its own; its members are looked up while mpiexec is not
    reaped (then its pid, the session's id, cannot be another process's) and
    killed by pid only if they still have the same start time.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        super().__init__(process)
        self.members: dict[int, str] = {}

    def remember_members(self) -> None:
        if self.process.returncode is None:  # not reaped yet
            self.members.update(_session_members(self.process.pid))

    def stop(self, timeout: float) -> Optional[int]:
        self.remember_members()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGTERM)  # mpiexec stops the ranks and cleans up
            try:
                return self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.kill()
                self.process.wait()
                return None
        finally:
            self.kill_members()  # a rank that outlived mpiexec

    def kill(self) -> None:
        self.remember_members()
        if self.alive():
            self.process.kill()
        self.kill_members()

    def kill_members(self) -> None:
        for pid, started in self.members.items():
            if pid != self.process.pid and _started(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:  # gone already
                    pass


class _Lines:
    """Rank 0's report lines, read from mpiexec's stdout without blocking for long."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.other: list[str] = []  # lines that were not reports (kept for error messages)

    def next(self, timeout: float) -> Optional[dict[str, Any]]:
        """The next report, None after ``timeout`` s; EOFError when stdout closed."""
        deadline = time.monotonic() + timeout
        prefix = LINE_PREFIX.encode()
        while True:
            newline = self.buffer.find(b"\n")
            if newline >= 0:
                line, self.buffer = self.buffer[:newline], self.buffer[newline + 1 :]
                if line.startswith(prefix):
                    report: dict[str, Any] = json.loads(line[len(prefix) :])
                    return report
                self.other = [*self.other[-9:], line.decode(errors="replace")]
                continue
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self.fd], [], [], wait)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise EOFError
            self.buffer += chunk


def _cma_works() -> bool:
    """Whether this process may call process_vm_readv (container seccomp profiles may forbid it).

    Open MPI's shared-memory transport copies large messages with it (CMA) and
    fails the job when the call is refused; without it, it pipelines the bytes
    through its shared segment instead.
    """

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        source, target = ctypes.create_string_buffer(b"hakobu", 8), ctypes.create_string_buffer(8)
        local = IoVec(ctypes.cast(target, ctypes.c_void_p), 8)
        remote = IoVec(ctypes.cast(source, ctypes.c_void_p), 8)
        copied = libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    except (OSError, AttributeError):
        return False
    return bool(copied == 8 and target.raw == source.raw)


@functools.cache
def _open_mpi_major(mpiexec: str) -> Optional[int]:
    """The major version of Open MPI when ``mpiexec`` is Open MPI's ("mpiexec (OpenRTE) 4.1.4"), else None."""
    try:
        output = subprocess.run(
            [mpiexec, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\((?:OpenRTE|Open MPI)\) (\d+)\.", output)
    return int(match.group(1)) if match else None


class Mpi(Channel):
    name = "mpi"
    label = "MPI (mpi4py, Open MPI)"
    order = 60
    description = (
        "mpi4py on Open MPI, mpiexec -n 2 (shared-memory btl vader): a header message, then the raw bytes "
        "with comm.Send / comm.Recv into np.empty (buffer interface, no pickle); rank 0 sends, rank 1 echoes"
    )
    requires = ("mpi4py",)
    install = "apt-get install openmpi-bin libopenmpi-dev && pip install mpi4py"
    peer_end = MpiPeer
    process: Optional[subprocess.Popen[bytes]] = None
    lines: Optional[_Lines] = None
    job: Optional[MpiJob] = None
    backing: Optional[Path] = None
    finished = False  # rank 0 reported the end of its job
    late_error: Optional[str] = None  # the job failed after the last Result was complete

    @classmethod
    def missing(cls) -> Optional[str]:
        reason = super().missing()
        if reason is not None:
            return reason
        mpiexec = shutil.which("mpiexec")
        if mpiexec is None:
            return f"mpiexec is not on PATH; install Open MPI and mpi4py with: {cls.install}"
        if _open_mpi_major(mpiexec) is None:
            return f"{mpiexec} is not Open MPI's mpiexec (this method passes Open MPI options); install it with: {cls.install}"
        return None

    def command(self, config: dict[str, Any]) -> list[str]:
        """``mpiexec`` with options that work on any single machine, and the program."""
        mpiexec = shutil.which("mpiexec") or "mpiexec"
        shm = "vader" if (_open_mpi_major(mpiexec) or 4) < 5 else "sm"  # the same transport, renamed in 5.0
        command = [mpiexec, "-n", "2"]
        if os.geteuid() == 0:
            command.append(
                "--allow-run-as-root"
            )  # containers and CI run as root; Open MPI refuses it otherwise
        command += [
            # Two ranks even where Open MPI counts fewer slots (one core); it then yields the CPU
            # while waiting instead of spinning.
            "--oversubscribe",
            # No pinning (it fails in restricted cpusets); no other method is pinned either.
            "--bind-to", "none",
            # Shared memory, what a single-machine MPI user gets, chosen explicitly: no probing of
            # InfiniBand / UCX / libfabric / PSM (warnings, slow or stuck starts where the hardware
            # is absent) nor of network interfaces (machines without one).
            "--mca", "pml", "ob1",
            "--mca", "btl", f"self,{shm}",
        ]  # fmt: skip
        if self.backing is not None:
            # The shared segments in a directory of ours on /dev/shm, removed in close: a killed
            # job leaves them behind otherwise.
            command += ["--mca", f"btl_{shm}_backing_directory", str(self.backing)]
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if cpus < 4:
            # The ranks spin while they wait for a message. With fewer CPUs than the two ranks, the
            # bench and mpiexec, any other busy process deschedules a rank for a time slice
            # (milliseconds per message): they yield the CPU while they spin, as Open MPI does
            # itself on oversubscribed machines (~0.5 us more per message on an idle machine).
            command += ["--mca", "mpi_yield_when_idle", "1"]
        if not _cma_works():
            # process_vm_readv is forbidden here (a container's seccomp profile): without this
            # the job would fail on its first large message.
            command += ["--mca", f"btl_{shm}_single_copy_mechanism", "none"]
        return [*command, sys.executable, "-m", "hakobu_bench.methods._mpi_program", json.dumps(config)]

    def start(self) -> None:
        if Path("/dev/shm").is_dir():
            self.backing = Path(tempfile.mkdtemp(prefix=f"hakobu-bench.{os.getpid()}.mpi-", dir="/dev/shm"))
        config = self.peer_config({"workdir": str(self.workdir)})
        with open(self.peer_log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(config),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # see MpiJob; also keeps the terminal's Ctrl-C for the bench
                cwd=self.workdir,  # `python -m` puts it first on the ranks' path: see Channel.spawn_peer
                # Open MPI's session directory (under TMPDIR) inside the work directory: removed
                # with it even when the job had to be killed.
                env={**os.environ, "TMPDIR": str(self.workdir)},
            )
        self.peer = self.job = MpiJob(self.process)
        assert self.process.stdout is not None
        self.lines = _Lines(self.process.stdout.fileno())
        report = self.next_report(deadline=time.monotonic() + 60.0)
        if "ready" not in report:
            raise PeerFailed(f"rank 0 did not report ready: {report}")
        self.job.remember_members()  # both ranks run: known now, even if mpiexec dies first

    def next_report(self, deadline: Optional[float] = None) -> dict[str, Any]:
        """Rank 0's next line; PeerFailed with mpiexec's stderr if the job ends or reports an error."""
        assert self.lines is not None
        while True:
            try:
                report = self.lines.next(_POLL)
            except EOFError:
                self.stop_peer(5.0)  # its stderr is complete once it exited
                self.check_peer()
                raise PeerFailed(f"mpiexec closed its stdout: {self.peer_errors()}") from None
            if report is not None:
                if "error" in report:
                    raise PeerFailed(f"rank 0 failed: {report['error']}")
                return report
            self.check_peer()
            if deadline is not None and time.monotonic() > deadline:
                raise PeerFailed(f"no word from rank 0 of the MPI job: {self.peer_errors()}")

    def check_peer(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise PeerFailed(
                f"the MPI job ended (mpiexec exit code {self.process.returncode}): {self.peer_errors()}"
            )

    def peer_errors(self) -> str:
        text = super().peer_errors()
        if self.lines is not None and self.lines.other:
            text += "\nstdout: " + "\n".join(self.lines.other)
        return text

    def measure(
        self,
        pending: list[Shape],
        settings: Settings,
        arrays: dict[str, np.ndarray],
        record: Record,
        watchdog: Optional[Watchdog],
        progress: Optional[Progress],
    ) -> None:
        """Hands ``pending`` to rank 0, which measures; turns its reports into Results."""
        current: Optional[Result] = None  # started, its final figures not in yet
        limit = trip_limit(max((shape.nbytes for shape in pending), default=0))
        try:
            assert self.process is not None and self.process.stdin is not None
            job = {
                "pending": [dataclasses.asdict(shape) for shape in pending],
                "settings": dataclasses.asdict(settings),
            }
            if watchdog is not None:
                watchdog.arm(self, limit)
            self.process.stdin.write((json.dumps(job) + "\n").encode())
            self.process.stdin.flush()
            while True:
                report = self.next_report()
                if watchdog is not None:  # every report shows the job moves: a new deadline per trip
                    watchdog.arm(self, limit)
                if "start" in report:
                    shape = pending.pop(0)
                    current = Result(**report["start"])
                    if current.shape != shape.name:
                        raise PeerFailed(f"rank 0 started {current.shape}, expected {shape.name}")
                    limit = trip_limit(shape.nbytes)
                    record(current)
                elif "result" in report:
                    if current is None:
                        raise PeerFailed("rank 0 reported a result for no shape")
                    for key, value in report["result"].items():
                        setattr(current, key, value)
                    current = None
                elif "progress" in report:
                    if progress:
                        what, trips = report["progress"]
                        progress(what, trips)
                elif "done" in report:
                    self.finished = True
                    break
            if pending:
                raise PeerFailed(f"rank 0 finished without {', '.join(s.name for s in pending)}")
        except Exception as error:  # noqa: BLE001 - reported like measure_trips does, the run goes on
            message = failure_message(error, watchdog)
            if current is not None and current.error is None:
                current.error = message
            elif current is None and not pending:  # every shape was in: close reports it
                self.late_error = message
            fail_rest(type(self), pending, message, record, settings, progress)

    def send(self, array: np.ndarray) -> None:
        raise NotImplementedError("the MPI sender is rank 0 of the job, not the bench process")

    def receive(self) -> np.ndarray:
        raise NotImplementedError("the MPI sender is rank 0 of the job, not the bench process")

    def close(self) -> None:
        problem, self.late_error = self.late_error, None
        if self.process is not None:
            if self.finished:
                self.stop_peer(10.0)  # rank 0 is done: the ranks finalize and exit by themselves
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()  # before the end of its job, rank 0 takes this as "stop"
            except OSError:  # mpiexec is gone
                pass
            self.stop_peer(10.0)
            if self.finished and problem is None and self.process.returncode != 0:
                problem = f"the MPI job ended with mpiexec exit code {self.process.returncode}: {self.peer_errors()}"
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None
        if self.backing is not None:
            shutil.rmtree(self.backing, ignore_errors=True)
            self.backing = None
        if problem is not None:
            raise PeerFailed(problem)  # the runner adds it to the last Result


METHOD = Mpi
