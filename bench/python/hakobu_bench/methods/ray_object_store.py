"""Ray: ``ray.put`` the array into Ray's shared-memory object store, an actor echoes it back.

The bench process starts a private local Ray instance (``ray.init``: GCS,
raylet, plasma object store) and one actor, a worker process started by
Ray. Each trip does what Ray users write: ``ref = ray.put(array)`` (the array
is copied into the object store), ``ray.get(actor.echo.remote(ref))``. Ray
hands the actor the argument as a read-only ndarray viewing the object store
(no copy: the rebuild is the identity); the actor returns it, Ray copies the
return value into the object store (values under 100 KiB travel inline in the
task's reply instead), and ``ray.get`` in the sender gives a read-only ndarray
viewing it, which is returned as is (validation only reads).

The send time includes Ray's task submission and the resolution of the
argument in the actor, since that is how Ray moves data between processes.
Ray's start (a few seconds) happens once per run, outside the timed trips; its
session directory is in the method's work directory, so nothing is left in
/tmp/ray, and ``ray.shutdown`` stops every process Ray started.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..channel import Channel, PeerEnd, PeerFailed, Serializer, StampBoard, StampingEcho, corrupt_answers

_POLL = 1.0  # s: ray.get wakes up this often to check that the actor lives
_MARGIN = 256 << 20  # object store bytes beyond the arrays (Ray's own objects, fragmentation)
_MINIMUM = 128 << 20  # Ray refuses object stores below 75 MiB


def _ray() -> Any:
    """The ``ray`` module (imported only when the method runs: it is large and optional)."""
    import ray

    return ray


def object_store_bytes(largest: int) -> int:
    """How large to make the object store for messages of up to ``largest`` bytes.

    A trip holds the argument and the answer in the store, and the previous
    trip's objects may not be freed yet: three messages and a margin. Capped by
    what /dev/shm has free: beyond it Ray would put the store in /tmp, a disk,
    and measure something else.
    """
    wanted = 3 * largest + _MARGIN
    try:
        shm = os.statvfs("/dev/shm")
        wanted = min(wanted, int(shm.f_bavail * shm.f_frsize * 0.9))
    except OSError:
        pass
    return max(wanted, _MINIMUM)


class RayEchoActor(PeerEnd):
    """The peer: a Ray actor (``ray.remote(RayEchoActor)``), run by Ray in its own worker process.

    It stamps and answers with ``StampingEcho`` like every other peer, writing the
    same stamp board file. ``HAKOBU_BENCH_CORRUPT`` reaches it because Ray's
    workers inherit the environment of the process that called ``ray.init``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.stamps = StampBoard(Path(config["stamps"]), create=False)
        self.stamper = StampingEcho(self.stamps, Serializer(config.get("serialize")), corrupt_answers())

    def pid(self) -> int:
        return os.getpid()

    def echo(self, array: np.ndarray) -> np.ndarray:
        """One trip: Ray resolved ``array`` (a read-only view of the object store) before the call."""
        self.stamper.arrived()
        return self.stamper.answer(array)  # rebuild is the identity: Ray delivers an ndarray

    def serve(self, echo: Any) -> None:
        raise NotImplementedError("the Ray peer is an actor started by Ray, not by hakobu_bench.peer")

    def close(self) -> None:
        self.stamps.close()


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not reaped, is not alive)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


class RayActorPeer:
    """The actor as a ``PeerProcess``: alive while Ray runs and the actor's worker process lives."""

    def __init__(self, actor: Any, pid: int) -> None:
        self.actor = actor
        self.pid = pid

    def alive(self) -> bool:
        return bool(_ray().is_initialized()) and _process_alive(self.pid)

    def stop(self, timeout: float) -> Optional[int]:
        self.kill()
        deadline = time.monotonic() + timeout
        while _process_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return None

    def kill(self) -> None:
        ray = _ray()
        if ray.is_initialized():
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone, or Ray is shutting down
                pass


class RayObjectStore(Channel):
    name = "ray"
    label = "Ray (put/get, object store)"
    order = 70
    description = (
        "a local Ray instance: ray.put(array) into the plasma object store, ray.get(actor.echo.remote(ref));"
        " the actor (a Ray worker process) gets a read-only view and returns it through the store"
    )
    requires = ("ray",)
    install = "pip install ray   (or hakobu-bench's peers extra: pip install './bench/python[peers]')"
    peer_end = RayEchoActor
    actor: Any = None
    pending: Any = None  # the ObjectRef of the answer of the trip under way
    own_dir: Optional[Path] = None  # Ray's session directory when the work directory's path is too long

    def start(self) -> None:
        self.start_ray(object_store_bytes(self.largest_message))

    def start_ray(self, object_store_memory: int) -> None:
        """Starts a private local Ray instance and the echo actor; waits until the actor answers."""
        ray = _ray()
        # No usage-statistics report or prompt from a benchmark (set before ray.init reads it).
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(
            address="local",  # a new instance, never a cluster named by RAY_ADDRESS
            num_cpus=2,
            object_store_memory=object_store_memory,
            include_dashboard=False,
            log_to_driver=False,  # the workers' output is not copied to the bench's terminal
            logging_level=logging.ERROR,
            configure_logging=True,
            _temp_dir=str(self.ray_dir()),  # the session files go with the work directory
        )
        actor = ray.remote(RayEchoActor).remote(self.peer_config({}))
        pid = self.wait_for(actor.pid.remote(), "starting the actor", timeout=60.0, checking=False)
        self.actor = actor
        self.peer = RayActorPeer(actor, int(pid))

    def ray_dir(self) -> Path:
        """Where Ray keeps its session: in the work directory, unless its path is too long.

        Ray's sockets are DIR/session_<date>_<time>_<pid>/sockets/plasma_store, 67
        characters more, and a socket path has at most 107.
        """
        if len(str(self.workdir / "ray")) + 67 <= 107:
            return self.workdir / "ray"
        self.own_dir = Path(tempfile.mkdtemp(prefix="hb-ray-", dir="/tmp"))
        return self.own_dir

    def wait_for(self, ref: Any, what: str, timeout: Optional[float] = None, checking: bool = True) -> Any:
        """``ray.get(ref)``, waking up every second to check that the actor lives."""
        ray = _ray()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return ray.get(ref, timeout=_POLL)
            except ray.exceptions.GetTimeoutError:
                if checking:
                    self.check_peer()
                if deadline is not None and time.monotonic() > deadline:
                    raise PeerFailed(f"{what}: no answer from the Ray actor within {timeout} s") from None
            except ray.exceptions.RayError as error:  # the actor died, or its method raised
                lines = str(error).strip().splitlines() or [
                    ""
                ]  # Ray's message is a page: its first and last lines
                reason = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
                raise PeerFailed(f"the Ray actor failed ({what}): {reason}") from None

    def send(self, array: np.ndarray) -> None:
        ray = _ray()
        ref = ray.put(array)
        self.pending = self.actor.echo.remote(ref)
        del ref  # Ray keeps the argument until the call is done, then frees it

    def receive(self) -> np.ndarray:
        pending, self.pending = self.pending, None
        received = self.wait_for(pending, "a round trip")
        if not isinstance(received, np.ndarray):
            raise PeerFailed(f"the Ray actor answered a {type(received).__name__}")
        return received  # read-only, backed by the object store until the caller drops it

    def peer_errors(self) -> str:
        return "its worker process is gone (killed, or crashed)" if self.actor is not None else "not started"

    def close(self) -> None:
        self.pending = None
        ray = _ray()
        try:
            if ray.is_initialized():
                try:
                    if self.peer is not None:
                        self.peer.stop(10.0)  # ray.kill, then wait for the worker process to exit
                finally:
                    self.actor = None
                    ray.shutdown()  # stops the raylet, GCS and object store this process started
        finally:
            if self.own_dir is not None:
                shutil.rmtree(self.own_dir, ignore_errors=True)


METHOD = RayObjectStore
