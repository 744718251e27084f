"""The interface every IPC method implements, and what the methods share.

A method is one module in ``hakobu_bench.methods`` that defines a ``Channel``
subclass (the sender's end, in the bench process) and a ``PeerEnd`` subclass
(the other end, in a separately started interpreter: ``python -m
hakobu_bench.peer METHOD CONFIG``). ``measure_trips`` drives a round trip as

    sender:  t0 = now; channel.send(array)          ... channel.receive(); t3 = now
    peer:              raw = end.receive_raw(); t1 = now; a = end.rebuild(raw); t2 = now;
                       end.send_back(a)

so ``send`` = t1 - t0 (the bytes are in the peer's hands), ``rebuild`` =
t2 - t1 (the peer has an ndarray), ``return`` = t3 - t2 (back, rebuilt, in
the sender). Both processes read CLOCK_MONOTONIC (``time.monotonic_ns``), one
clock for the whole machine on Linux. The peer writes t1 and t2 into a small
memory-mapped "stamp board" file, so the timestamps never travel on (or slow
down) the channel under test; the reply happens after the write, so the
sender reads them after its receive.
"""

from __future__ import annotations

import abc
import importlib
import json
import mmap
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Optional, Protocol

import numpy as np

from .workload import (
    Progress,
    Record,
    Result,
    Settings,
    Shape,
    make_array,
    same_bits,
    stamp_value,
    trip_limit,
)

# --- timestamps ------------------------------------------------------------------------------

_STAMPS = struct.Struct("<QQQ")  # trip number, t1, t2


class StampBoard:
    """Three u64 in a mapped file: the peer writes (trip, t1, t2), the sender reads them."""

    def __init__(self, path: Path, create: bool) -> None:
        self.path = path
        if create:
            path.write_bytes(bytes(mmap.PAGESIZE))
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), mmap.PAGESIZE)

    def write(self, trip: int, received: int, rebuilt: int) -> None:
        _STAMPS.pack_into(self._map, 0, trip, received, rebuilt)

    def read(self) -> tuple[int, int, int]:
        trip, received, rebuilt = _STAMPS.unpack_from(self._map, 0)
        return int(trip), int(received), int(rebuilt)

    def close(self) -> None:
        self._map.close()


# --- peers -----------------------------------------------------------------------------------


class PeerProcess(Protocol):
    """What the sender needs of its peer, whichever way it was started."""

    def alive(self) -> bool: ...

    def stop(self, timeout: float) -> Optional[int]:
        """Waits up to ``timeout`` s for the peer to exit, then kills it; returns its exit code."""
        ...

    def kill(self) -> None: ...


class PopenPeer:
    """A peer started as ``python -m hakobu_bench.peer METHOD CONFIG``."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float) -> Optional[int]:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()


class PeerFailed(RuntimeError):
    """The peer died, stopped answering, or the channel broke."""


class Channel(abc.ABC):
    """The sender's end of one IPC method; one instance serves every shape of a run.

    Subclasses set the class attributes and implement ``start`` (start the peer,
    connect), ``send``, ``receive`` and ``close``. ``workdir`` is a private
    temporary directory for FIFOs, sockets and files; it is removed after ``close``.
    """

    name: ClassVar[str]  # used in --methods and by the peer
    label: ClassVar[str]  # shown in the table
    order: ClassVar[int]  # position in tables (hakobu first)
    description: ClassVar[str]  # how the method moves an array, for the JSON file
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules the method needs
    install: ClassVar[str] = ""  # the line that installs them
    peer_end: ClassVar[type[PeerEnd]]
    # Arrays above this many bytes are not run by default (--no-limits runs them): for
    # methods that would need minutes and tens of GB per trip (JSON text of 1 GiB of floats).
    max_bytes: ClassVar[Optional[int]] = None
    max_bytes_why: ClassVar[str] = ""
    # False for methods that encode arrays their own way, or whose point is to send an
    # array by reference: with --serialize every message is fresh encoded bytes.
    serializable: ClassVar[bool] = True

    def __init__(self, workdir: Path, stamps: StampBoard, serialize: Optional[str] = None) -> None:
        self.workdir = workdir
        self.stamps = stamps
        self.serialize = serialize  # the peer decodes and encodes with the same Serializer
        # The largest message of the run in bytes, as sent (encoded); set before ``start``
        # for methods that size their buffers or stores up front.
        self.largest_message = 0
        self.peer: Optional[PeerProcess] = None
        self.peer_log = workdir / f"{self.name}-peer.log"

    @classmethod
    def missing(cls) -> Optional[str]:
        """Why the method cannot run here (a module is missing), or None."""
        for module in cls.requires:
            try:
                importlib.import_module(module)
            except ImportError as error:
                return f"{module} is not installed ({error}); install it with: {cls.install}"
        return None

    @classmethod
    def refuses(cls, nbytes: int, serialize: Optional[str], no_limits: bool) -> Optional[str]:
        """Why the method does not run an array of ``nbytes`` in this run, or None."""
        if serialize is not None and not cls.serializable:
            return f"not run with --serialize {serialize}: {cls.label} does not carry pre-encoded bytes meaningfully"
        if cls.max_bytes is not None and nbytes > cls.max_bytes and not no_limits:
            return f"not run above {cls.max_bytes >> 20} MiB by default ({cls.max_bytes_why}); --no-limits runs it"
        return None

    def prepare(self, array: np.ndarray) -> np.ndarray:
        """The array to send, made from ``array`` outside the timed region (a private copy)."""
        return array.copy()

    def measure(
        self,
        pending: list[Shape],
        settings: Settings,
        arrays: dict[str, np.ndarray],
        record: Record,
        watchdog: Optional[Watchdog],
        progress: Optional[Progress],
    ) -> None:
        """The timed round trips over ``pending`` (``measure_trips``), after ``start``.

        A method whose sender must run in another process (MPI programs are
        started by ``mpiexec``) overrides this: its sender calls
        ``measure_trips`` there and reports each Result back.
        """
        measure_trips(self, pending, settings, arrays, record, watchdog, progress)

    @abc.abstractmethod
    def start(self) -> None:
        """Starts the peer and connects to it."""

    @abc.abstractmethod
    def send(self, array: np.ndarray) -> None:
        """Sends ``array`` to the peer."""

    @abc.abstractmethod
    def receive(self) -> np.ndarray:
        """Receives the array the peer sends back, rebuilt as an ndarray owned by the caller."""

    @abc.abstractmethod
    def close(self) -> None:
        """Tells the peer to stop, waits for it, and releases everything the channel made."""

    # --- helpers for subclasses ---------------------------------------------------------

    def spawn_peer(self, config: dict[str, Any], **popen: Any) -> PopenPeer:
        """Starts ``python -m hakobu_bench.peer NAME CONFIG``; its stderr goes to ``peer_log``."""
        command = [sys.executable, "-m", "hakobu_bench.peer", self.name, json.dumps(self.peer_config(config))]
        # `python -m` puts the working directory first on the peer's path: run it in the work
        # directory, so that a user's file named like a module (nt.py, zmq.py) is never imported.
        popen.setdefault("cwd", self.workdir)
        with open(self.peer_log, "ab") as log:
            process = subprocess.Popen(command, stderr=log, **popen)
        self.peer = PopenPeer(process)
        return self.peer

    def peer_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` plus what every peer needs (also for peers started another way)."""
        return {**config, "stamps": str(self.stamps.path), "serialize": self.serialize}

    def peer_alive(self) -> bool:
        return self.peer is not None and self.peer.alive()

    def check_peer(self) -> None:
        """Raises PeerFailed, with the peer's stderr, when the peer has exited."""
        if not self.peer_alive():
            raise PeerFailed(f"the {self.name} peer exited: {self.peer_errors()}")

    def peer_errors(self) -> str:
        try:
            text = self.peer_log.read_text(errors="replace").strip()
        except OSError:
            text = ""
        return text[-2000:] or "(no message)"

    def stop_peer(self, timeout: float = 10.0) -> None:
        """Waits for the peer to exit after it was told to stop (kills it after ``timeout``)."""
        if self.peer is not None:
            self.peer.stop(timeout)

    def wait_until(self, ready: Any, what: str, timeout: float = 30.0) -> Any:
        """Polls ``ready()`` until it returns something other than None, while the peer lives."""
        deadline = time.monotonic() + timeout
        pause = 1e-4
        while True:
            result = ready()
            if result is not None:
                return result
            self.check_peer()
            if time.monotonic() > deadline:
                raise PeerFailed(f"{what}: no answer from the {self.name} peer within {timeout} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


class Echo(Protocol):
    """What a peer does with each message (``StampingEcho``): stamps, decodes, answers."""

    def arrived(self) -> None:
        """Call as soon as a message is in (stamps t1)."""
        ...

    def answer(self, array: np.ndarray) -> np.ndarray:
        """Call with the rebuilt array (stamps t2); returns what to send back."""
        ...


class PeerEnd:
    """The peer's end of a method: receive, rebuild, send back, until told to stop.

    Message-loop methods implement ``receive_raw``, ``rebuild`` and ``send_back``;
    servers (HTTP, WebSocket) override ``serve`` and call ``echo`` from their handlers.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def serve(self, echo: Echo) -> None:
        """Answers messages until the stop message (or the end of the channel)."""
        while True:
            raw = self.receive_raw()
            echo.arrived()
            if raw is None:
                return
            answer = echo.answer(self.rebuild(raw))
            del raw  # let go of received memory before sending (and before the next message)
            self.send_back(answer)
            del answer

    def receive_raw(self) -> Any:
        """Waits for the next message; returns what arrived (bytes, a name...), or None to stop."""
        raise NotImplementedError(f"{type(self).__name__} implements neither receive_raw nor serve")

    def rebuild(self, raw: Any) -> np.ndarray:
        """Makes the ndarray from what arrived (the identity when the channel delivers arrays)."""
        assert isinstance(raw, np.ndarray)
        return raw

    def send_back(self, array: np.ndarray) -> None:
        """Sends ``array`` back to the sender."""
        raise NotImplementedError(f"{type(self).__name__} implements neither send_back nor serve")

    def close(self) -> None:
        """Releases what the end holds."""


class StampingEcho:
    """What every peer does with each message: stamp t1 and t2, decode, answer (an ``Echo``).

    ``corrupt`` (``HAKOBU_BENCH_CORRUPT=1`` in the peer's environment) flips one
    byte of every array sent back: the tests use it to check that the sender's
    validation catches a wrong answer.
    """

    def __init__(self, stamps: StampBoard, serializer: Serializer, corrupt: bool) -> None:
        self.stamps = stamps
        self.serializer = serializer
        self.corrupt = corrupt
        self.trip = 0
        self.received = 0

    def arrived(self) -> None:
        self.received = monotonic_ns()

    def answer(self, array: np.ndarray) -> np.ndarray:
        array = self.serializer.decode(array)
        rebuilt = monotonic_ns()
        self.trip += 1
        self.stamps.write(self.trip, self.received, rebuilt)
        if self.corrupt:
            array = _flip_a_byte(array)
        return self.serializer.encode(array)


def corrupt_answers() -> bool:
    """True when this peer is asked to send wrong answers (``HAKOBU_BENCH_CORRUPT=1``)."""
    return os.environ.get("HAKOBU_BENCH_CORRUPT") == "1"


def serve_peer(end_type: type[PeerEnd], config: dict[str, Any]) -> None:
    """Runs a peer's end of ``end_type`` until the stop message (or the end of the channel)."""
    parent_watch()
    end = end_type(config)
    stamps = StampBoard(Path(config["stamps"]), create=False)
    echo = StampingEcho(stamps, Serializer(config.get("serialize")), corrupt_answers())
    try:
        end.serve(echo)
    finally:
        end.close()
        stamps.close()


def _flip_a_byte(array: np.ndarray) -> np.ndarray:
    wrong = np.array(array)
    if wrong.nbytes:
        flat = wrong.reshape(-1).view(np.uint8)
        flat[len(flat) // 2] ^= 0x10
    return wrong


# --- --serialize: encode every array as the older comparisons did ---------------------------

SERIALIZERS = ("pickle+base64",)


class Serializer:
    """Turns arrays into the bytes a run sends (as a uint8 array) and back.

    ``None`` sends arrays as they are; ``"pickle+base64"`` pickles the array
    (the default protocol, buffers in-band) and base64-encodes the pickle, as
    the comparisons that sent everything as text did. Encoding is timed: the
    sender encodes inside ``send`` and the peer decodes inside ``rebuild``.
    """

    def __init__(self, kind: Optional[str]) -> None:
        if kind is not None and kind not in SERIALIZERS:
            raise ValueError(f"unknown serialization '{kind}'; known: {', '.join(SERIALIZERS)}")
        self.kind = kind

    def encoded_size(self, nbytes: int) -> int:
        """An upper bound of the bytes an array of ``nbytes`` becomes."""
        if self.kind is None:
            return nbytes
        return (nbytes + 4096) * 4 // 3 + 4  # the pickle's header, then base64's 4 bytes per 3

    def encode(self, array: np.ndarray) -> np.ndarray:
        if self.kind is None:
            return array
        import base64
        import pickle

        return np.frombuffer(base64.b64encode(pickle.dumps(array)), np.uint8)

    def decode(self, array: np.ndarray) -> np.ndarray:
        if self.kind is None:
            return array
        import base64
        import pickle

        decoded = pickle.loads(base64.b64decode(as_bytes(array)))
        if not isinstance(decoded, np.ndarray):
            raise PeerFailed(f"decoded a {type(decoded).__name__}, not an ndarray")
        return decoded


# --- byte streams (pipes, FIFOs, sockets) ----------------------------------------------------

# kind (0 data, 1 stop), nbytes, ndim, dtype string, shape
_HEADER = struct.Struct("<IQI16s8q")
_DATA, _STOP = 0, 1
MAX_DIMS = 8


class Stream(Protocol):
    """A reliable byte stream."""

    def write_all(self, data: memoryview) -> None: ...

    def read_into(self, buffer: memoryview) -> int:
        """Reads up to len(buffer) bytes; 0 at end of stream."""
        ...


class FdStream:
    """A stream over file descriptors (pipes, FIFOs)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd

    def write_all(self, data: memoryview) -> None:
        while data:
            data = data[os.write(self.write_fd, data) :]

    def read_into(self, buffer: memoryview) -> int:
        return os.readv(self.read_fd, [buffer])


class SocketStream:
    """A stream over a connected stream socket (TCP, Unix)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def write_all(self, data: memoryview) -> None:
        self.sock.sendall(data)  # loops over partial sends

    def read_into(self, buffer: memoryview) -> int:
        return int(self.sock.recv_into(buffer))


def read_exactly(stream: Stream, buffer: memoryview) -> bool:
    """Fills ``buffer``; False at a clean end of stream before the first byte, PeerFailed mid-way."""
    done = 0
    while done < len(buffer):
        count = stream.read_into(buffer[done:])
        if count == 0:
            if done == 0:
                return False
            raise PeerFailed(f"stream ended after {done} of {len(buffer)} bytes")
        done += count
    return True


def encode_header(array: Optional[np.ndarray]) -> bytes:
    """The frame header for ``array`` (None: the stop message)."""
    if array is None:
        return _HEADER.pack(_STOP, 0, 0, b"", *([0] * MAX_DIMS))
    if array.ndim > MAX_DIMS:
        raise ValueError(f"at most {MAX_DIMS} dimensions")
    shape = list(array.shape) + [0] * (MAX_DIMS - array.ndim)
    return _HEADER.pack(_DATA, array.nbytes, array.ndim, array.dtype.str.encode(), *shape)


def decode_header(data: bytes) -> Optional[tuple[np.dtype[Any], tuple[int, ...], int]]:
    """(dtype, shape, nbytes) from a frame header, or None for the stop message."""
    kind, nbytes, ndim, dtype, *shape = _HEADER.unpack(data)
    if kind == _STOP:
        return None
    return np.dtype(dtype.rstrip(b"\0").decode()), tuple(shape[:ndim]), int(nbytes)


HEADER_SIZE = _HEADER.size


def as_bytes(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy."""
    return np.ascontiguousarray(array).data.cast("B")


def write_frame(stream: Stream, array: Optional[np.ndarray]) -> None:
    """Writes a header and the array's bytes (only the header for the stop message)."""
    stream.write_all(memoryview(encode_header(array)))
    if array is not None and array.nbytes:
        stream.write_all(as_bytes(array))


def read_frame(stream: Stream) -> Optional[tuple[np.dtype[Any], tuple[int, ...], np.ndarray]]:
    """Reads a frame straight into fresh array memory: (dtype, shape, bytes), or None (stop/end)."""
    header = bytearray(HEADER_SIZE)
    if not read_exactly(stream, memoryview(header)):
        return None
    decoded = decode_header(bytes(header))
    if decoded is None:
        return None
    dtype, shape, nbytes = decoded
    payload = np.empty(nbytes, np.uint8)
    if nbytes and not read_exactly(stream, payload.data):
        raise PeerFailed("stream ended between a header and its data")
    return dtype, shape, payload


def rebuild_frame(frame: tuple[np.dtype[Any], tuple[int, ...], np.ndarray]) -> np.ndarray:
    """The array of a received frame: a view of the bytes it was read into (no copy)."""
    dtype, shape, payload = frame
    return payload.view(dtype).reshape(shape)


class FramedPeerEnd(PeerEnd):
    """A peer that reads and writes frames (a fixed header, then the raw bytes) on a byte stream."""

    stream: Stream

    def receive_raw(self) -> Any:
        return read_frame(self.stream)

    def rebuild(self, raw: Any) -> np.ndarray:
        return rebuild_frame(raw)

    def send_back(self, array: np.ndarray) -> None:
        write_frame(self.stream, array)


class FramedChannel(Channel):
    """The sender's end of a byte stream: frames out, frames back, an empty frame to finish.

    A method sets ``stream`` in ``start`` and closes what carries it in ``release_stream``.
    """

    stream: Optional[Stream] = None

    def send(self, array: np.ndarray) -> None:
        assert self.stream is not None
        write_frame(self.stream, array)

    def receive(self) -> np.ndarray:
        assert self.stream is not None
        frame = read_frame(self.stream)
        if frame is None:
            raise PeerFailed(f"the {self.label} peer closed its end: {self.peer_errors()}")
        return rebuild_frame(frame)

    def close(self) -> None:
        if self.stream is not None:
            try:
                if self.peer_alive():
                    write_frame(self.stream, None)  # tells the peer to finish
            except OSError:  # a broken pipe or reset connection: the peer is gone already
                pass
        self.stop_peer()
        if self.stream is not None:
            self.release_stream()
            self.stream = None

    def release_stream(self) -> None:
        """Closes what carries the stream (descriptors, sockets, pipes)."""


def enlarge_pipe(fd: int, size: int = 1 << 20) -> None:
    """Asks for a 1 MiB pipe buffer (Linux F_SETPIPE_SZ) so big writes take fewer wakeups."""
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, size)  # F_SETPIPE_SZ; beyond /proc/sys/fs/pipe-max-size it fails
    except (OSError, ImportError):
        pass


def parent_watch(interval: float = 0.5) -> None:
    """In a peer: exit when the process that started it is gone (no orphan blocked forever)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC, the clock both processes stamp with."""
    return time.monotonic_ns()


# --- the timed round trips -----------------------------------------------------------------


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


def measure_trips(
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
    This is ``Channel.measure``'s default; a sender that runs in another process
    (MPI's rank 0) calls it there.
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
                    to_send.reshape(-1)[:1] = first_expected[:] = stamp_value(reference, trip)
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
                fail_rest(
                    type(channel), pending, "not run: an earlier shape failed", record, settings, progress
                )
    except Exception as error:  # noqa: BLE001 - one method's failure is reported, the run goes on
        message = failure_message(error, watchdog, channel)
        if current is not None and current.error is None:
            current.error = message
        fail_rest(type(channel), pending, message, record, settings, progress)


def failure_message(error: Exception, watchdog: Optional[Watchdog], channel: Optional[Channel] = None) -> str:
    """What a failed method reports. A broken connection (a reset, a broken pipe, a peer gone
    from the mapped file) usually means the peer died: then its log says why, and is added."""
    message = f"{type(error).__name__}: {error}"
    if watchdog is not None and watchdog.fired:
        return f"no answer within the watchdog's limit ({message})"
    if channel is not None and channel.peer is not None:
        deadline = time.monotonic() + 2.0
        while channel.peer_alive() and time.monotonic() < deadline:
            time.sleep(0.02)  # a dead peer's connection breaks a moment before it is reaped
        log = channel.peer_errors()
        if not channel.peer_alive() and log not in message:
            message += f"; the {channel.name} peer exited: {log}"
    return message


def fail_rest(
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
