"""The engine under ``hakobu.Pool(engine="dask")`` and ``hakobu.Executor(client=...)``.

Like hakobu._pool.engine.Engine, it is an EngineCore (hakobu._pool.core:
the interface the front-ends in hakobu.pool call, its front-end half and the
process-wide hooks), so that a front-end only chooses which engine to start;
the front-ends' Tasks, Sinks and pickling are the same. What is this
engine's own is how tasks reach the cluster and how outcomes and deaths are
learned.

Design
------
* Where the work runs: a ``distributed.Client`` given by the caller (used,
  never closed), or one connected to ``address`` (closed at the end), or a
  ``LocalCluster`` of ``workers`` processes with one thread each, which the
  engine starts and closes. The cluster the engine starts gets
  ``allowed_failures=retries`` (how often the scheduler runs a task again
  whose worker died) and a worker saturation of 1.0, so that a worker holds
  only the task it runs and a death fails (or re-runs) only that task, as in
  the local engine. On a cluster the caller runs, its scheduler's
  ``distributed.scheduler.allowed-failures`` governs, and ``retries`` adds
  runs after the scheduler gave up (see _lost).
* What travels: a task's function and items are pickled by the front-end
  (pickling.py), with the main script's functions and classes by value, as a
  Dask worker, maybe on another host, cannot run the script. The pickled
  items keep their large buffers apart (pickle protocol 5), and Dask pickles
  the Work holding them with protocol 5 too: the buffers become frames of
  Dask's messages, never copied into a pickle stream, and never put into
  this host's shared memory. Work larger than SCATTER_BYTES goes to a worker
  with ``Client.scatter`` first, so that the scheduler never holds it (and
  Dask does not warn about a large graph). A result comes back the same way:
  the worker pickles the list of results (run_task), a failure as the
  exception with its traceback text (pickling.pack_error), so that errors
  arrive as themselves, exactly as from a local worker.
* Flow: one manager thread per engine submits pending tasks to the cluster
  (at most ``window`` at once: WINDOW_PER_THREAD per thread of the cluster,
  so that each worker has its next tasks at hand, and WINDOW_BYTES of
  arguments, so that the workers' memory stays bounded; the rest waits in the
  pool, where cancel_pending can still cancel it),
  receives finished futures (Dask's done-callbacks only put them into a
  queue the manager reads) and gives each outcome to its task's sink. Only
  the manager talks to the client after start-up; the front-ends' threads
  append to ``_pending`` and wake it.
* Initializer: each task carries the pickled ``(initializer, initargs)``; a
  worker process runs it before its first task of this pool and remembers
  that by the pool's name (_initialized), so it runs once per worker process
  (a restarted worker is a new process: it runs it again). An initializer
  that raises breaks the pool (BrokenPool), as with the local engine.

Locking rules
-------------
Besides what hakobu._pool.core's rules say, ``_lock`` guards ``_running``.
Sinks are called without it, on the manager thread (callbacks should return
quickly, as with the local engine).
"""

from __future__ import annotations

import collections
import os
import pickle
import queue
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .. import _errors
from .._pool import core
from .._pool.pickling import pack, pack_error, pack_result, rebuild_error, unpack
from .._pool.protocol import Packed, call
from .._pool.tasks import CLOSE, TERMINATE, Task
from .._pool.tasks import Outcome as TaskOutcome

try:
    import distributed as _distributed
except ImportError as missing:  # the extra is not installed
    raise ImportError(
        'hakobu.Pool(engine="dask") needs Dask\'s distributed scheduler: pip install "hakobu[dask]"'
    ) from missing

# Dask's API is only partly typed (its Client's methods are not): used as Any here, and the tests
# check the calls against the real thing.
distributed: Any = _distributed

# Work whose pickled items hold more out-of-band bytes than this goes to a worker before its task
# (Client.scatter): the scheduler then never holds it.
SCATTER_BYTES = 1 << 20
# Tasks on the cluster at once, per worker thread: enough that each worker's next tasks are at hand
# while results travel back (Dask's round trip is milliseconds), few enough to bound memory.
WINDOW_PER_THREAD = 16
# ... and at most this many bytes of pickled items (big ones wait in the pool, not on the workers).
WINDOW_BYTES = 256 << 20
# How long the manager waits for a finished future before it looks at its state again.
POLL_SECONDS = 0.1
# Functions a worker process keeps unpickled, per process (the most recently used).
FUNCTION_CACHE_SIZE = 64
# Seconds between two looks at the cluster's size (it may grow or shrink): the window follows it.
RESIZE_SECONDS = 2.0
# How long close() lets the client and the cluster the engine made take to close.
CLOSE_SECONDS = 30.0

# Outcomes of run_task.
DONE, FAILED, INIT_FAILED = "done", "failed", "init-failed"


# --- the worker's side (runs in Dask worker processes) -------------------------------------


@dataclass(eq=False)
class Work:
    """A task as it travels to a Dask worker: who asks (the pool's name), its function, its items."""

    pool: str
    init: Packed  # (initializer, initargs), pickled
    threads: Optional[int]  # threads_per_worker
    key: bytes  # the function's digest (pickling.Function)
    blob: bytes  # the function, pickled
    mode: int  # protocol.MODE_*
    items: Packed  # the items, pickled with their large buffers apart

    def __sizeof__(self) -> int:  # what Dask's memory accounting counts (dask.sizeof falls back to this)
        return _packed_size(self.items) + len(self.blob) + _packed_size(self.init)

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickled inside Dask's task graph: buffers out of band with protocol 5, else as bytes."""
        fields = (self.pool, _in_band(self.init, protocol), self.threads, self.key, self.blob, self.mode)
        return Work, (*fields, _in_band(self.items, protocol))


@dataclass(eq=False)
class Outcome:
    """What run_task returns: DONE with the pickled results, else the pickled exception."""

    kind: str
    packed: Packed

    def __sizeof__(self) -> int:
        return _packed_size(self.packed)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return Outcome, (self.kind, _in_band(self.packed, protocol))


def _in_band(packed: Packed, protocol: Any) -> Packed:
    """``packed`` as it can be pickled with ``protocol``: PickleBuffers need 5, else bytes (a copy)."""
    if isinstance(protocol, int) and protocol >= 5:
        return packed
    stream, buffers = packed
    return stream, [bytes(_bytes_view(buffer)) for buffer in buffers]


# Dask's own serialization for both (its "dask" family): the pickle stream and each large buffer
# become frames of Dask's message as they are, whatever pickle protocol the connection uses.


def _to_frames(packed: Packed) -> list[Any]:
    stream, buffers = packed
    return [stream, *map(_bytes_view, buffers)]


def _bytes_view(buffer: Any) -> Any:
    """A buffer as Dask sends a frame: flat bytes (a PickleBuffer's raw view keeps Fortran order)."""
    if isinstance(buffer, pickle.PickleBuffer):
        return buffer.raw()
    return memoryview(buffer).cast("B")


def _dump_work(work: Work) -> tuple[dict[str, Any], list[Any]]:
    init = _to_frames(work.init)
    header = {"pool": work.pool, "threads": work.threads, "mode": work.mode, "init": len(init)}
    return header, [work.key, work.blob, *init, *_to_frames(work.items)]


def _load_work(header: dict[str, Any], frames: list[Any]) -> Work:
    split = 2 + _field(header, "init", int)
    if not 3 <= split < len(frames):
        raise _errors.Corrupt(
            f"a hakobu task from the network has {len(frames)} frames, its header says {split} come "
            "before its items: a peer of another hakobu version, or a damaged message"
        )
    _field(header, "pool", str)
    _field(header, "mode", int)
    if header.get("threads") is not None:
        _field(header, "threads", int)
    init, items = frames[2:split], frames[split:]
    return Work(
        header["pool"],
        (init[0], init[1:]),
        header["threads"],
        bytes(frames[0]),
        bytes(frames[1]),
        header["mode"],
        (items[0], items[1:]),
    )


def _dump_outcome(outcome: Outcome) -> tuple[dict[str, Any], list[Any]]:
    return {"kind": outcome.kind}, _to_frames(outcome.packed)


def _load_outcome(header: dict[str, Any], frames: list[Any]) -> Outcome:
    kind = _field(header, "kind", str)
    if kind not in (DONE, FAILED, INIT_FAILED) or not frames:
        raise _errors.Corrupt(
            f"a hakobu result from the network is of kind {kind!r} with {len(frames)} frames: a peer of "
            "another hakobu version, or a damaged message"
        )
    return Outcome(kind, (frames[0], frames[1:]))


def _field(header: dict[str, Any], name: str, kind: type) -> Any:
    """``header[name]``, which must be a ``kind``: else Corrupt, saying what was wrong."""
    value = header.get(name) if isinstance(header, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _errors.Corrupt(
            f"a hakobu message from the network has {name}={value!r} where a {kind.__name__} belongs: "
            "a peer of another hakobu version, or a damaged message"
        )
    return value


# Registered by call, not as decorators: Dask's dispatch is untyped.
distributed.protocol.dask_serialize.register(Work)(_dump_work)
distributed.protocol.dask_deserialize.register(Work)(_load_work)
distributed.protocol.dask_serialize.register(Outcome)(_dump_outcome)
distributed.protocol.dask_deserialize.register(Outcome)(_load_outcome)


def _packed_size(packed: Packed) -> int:
    stream, buffers = packed
    size = len(stream)
    for buffer in buffers:
        try:
            size += memoryview(buffer).nbytes
        except TypeError:
            pass
    return size


_worker_lock = threading.Lock()
_initialized: dict[str, Optional[Packed]] = {}  # pool name: None (ran), or its error, pickled
_functions: collections.OrderedDict[bytes, Any] = collections.OrderedDict()


def run(work: Work) -> Outcome:
    """What Dask runs: one task, the pool's initializer first if this process has not run it;
    never raises (the outcome says how the task ended)."""
    with _worker_lock:  # a worker with several threads runs the initializer once
        if work.pool not in _initialized:
            try:
                initializer, initargs = unpack(*work.init)
                if initializer is not None:
                    initializer(*initargs)
                _initialized[work.pool] = None
            except BaseException as error:  # noqa: BLE001 - the pool breaks with it
                _initialized[work.pool] = pack_error(error)
        failure = _initialized[work.pool]
        if failure is not None:
            return Outcome(INIT_FAILED, failure)
        function = _functions.get(work.key)
        if function is None:
            try:
                function = unpack(work.blob, [])
            except BaseException as error:  # noqa: BLE001 - this task fails with it
                return Outcome(FAILED, pack_error(error))
            _functions[work.key] = function
            while len(_functions) > FUNCTION_CACHE_SIZE:
                _functions.popitem(last=False)
        _functions.move_to_end(work.key)
    mode, threads, packed = work.mode, work.threads, work.items
    del work  # the items' buffers go once the task is done with them
    try:
        items = unpack(*packed)
        del packed
        results = _call_limited(function, mode, items, threads)
        del items
    except BaseException as error:  # noqa: BLE001 - as concurrent.futures: SystemExit too
        return Outcome(FAILED, pack_error(error))
    sent, packed_results = pack_result(results, function, to="the pool", main_by_reference=False)
    return Outcome(DONE if sent else FAILED, packed_results)


def _call_limited(
    function: Callable[..., Any], mode: int, items: list[Any], threads: Optional[int]
) -> list[Any]:
    """The task's calls, with OpenMP/BLAS threads capped at ``threads`` while they run.

    Scoped (threadpoolctl's context), not for the whole process as a local
    worker does it (threads.limit_threads): a Dask worker process also runs
    other clients' tasks.
    """
    if threads is None:
        return call(function, mode, items)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return call(function, mode, items)
    with threadpool_limits(limits=threads):
        return call(function, mode, items)


# --- the pool's side ---------------------------------------------------------------------------


class DaskEngine(core.EngineCore):
    """Tasks of a hakobu.Pool or hakobu.Executor run on a Dask cluster; see the module's docstring."""

    def __init__(
        self,
        workers: Optional[int],
        initializer: Optional[Callable[..., Any]],
        initargs: Sequence[Any],
        retries: int,
        threads_per_worker: Optional[int],
        *,
        drain_at_exit: bool,
        description: str = "",
        address: Optional[str] = None,
        client: Any = None,  # a distributed.Client
    ) -> None:
        super().__init__(
            f"hakobu-pool-{os.getpid()}-{secrets.token_hex(4)}",
            drain_at_exit=drain_at_exit,
            description=description,
        )
        self._retries = retries
        self._threads_per_worker = threads_per_worker
        self._init = pack((initializer, tuple(initargs)), main_by_reference=False)
        self._cluster: Any = None  # the LocalCluster this engine started, if any
        self._own_client = client is None
        if client is not None:
            self._client = client
        elif address is not None:
            self._client = distributed.Client(address, set_as_default=False)
        else:
            self._cluster = _local_cluster(workers or 1, retries)
            try:
                self._client = distributed.Client(self._cluster, set_as_default=False)
            except BaseException:
                self._cluster.close()
                raise
        self.workers = max(1, workers or 0) if self._cluster is not None else max(1, self._threads())
        self._window = WINDOW_PER_THREAD * self.workers
        self._resized = _now()
        self._running: dict[str, tuple[Task, Any]] = {}  # Dask key: (task, its Dask future)
        # Tasks sent to the cluster, results received, tasks scattered first, tasks sent again (stats()).
        self._counts = {"tasks": 0, "results": 0, "scattered": 0, "resubmitted": 0}
        self._events: queue.SimpleQueue[Optional[str]] = queue.SimpleQueue()  # finished keys; None: look
        self._start(self._prefix)

    # --- what the front-ends call (any thread); the rest is EngineCore's ---------------------

    @property
    def client(self) -> Any:
        """The distributed.Client the engine uses."""
        return self._client

    # --- EngineCore's hooks (the lock held) ---------------------------------------------------

    def _poke(self) -> list[TaskOutcome]:
        """Only the manager talks to the client: it is woken."""
        self._events.put(None)
        return []

    def _interrupt(self, on_manager: bool) -> None:
        self._events.put(None)

    def _room_limit(self) -> int:
        """A window's worth of tasks waits already: imap reads its input no further."""
        return self._window

    def _cancellable(self, task: Task) -> bool:
        return True  # every task not yet sent to the cluster

    def _take_on_break(self) -> list[Task]:
        """None: the manager, woken, fails them (_terminate_now)."""
        self._events.put(None)
        return []

    # --- the manager thread --------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._lock:
                state, broken = self._state, self._broken is not None
            if state == TERMINATE or broken:
                self._terminate_now()
                return
            self._dispatch()
            with self._lock:
                if state == CLOSE and not self._pending and not self._feeders and not self._running:
                    return
            keys: list[str] = []
            try:
                key = self._events.get(timeout=POLL_SECONDS)
                while True:
                    if key is not None:
                        keys.append(key)
                    key = self._events.get_nowait()
            except queue.Empty:
                pass
            if keys:
                self._collect(keys)

    def _dispatch(self) -> None:
        """Sends pending tasks to the cluster while fewer than ``window`` run there."""
        if _now() - self._resized > RESIZE_SECONDS and self._cluster is None:
            self._resized = _now()
            self._window = WINDOW_PER_THREAD * max(1, self._threads())
        with self._lock:
            room = self._window - len(self._running)
            room_bytes = WINDOW_BYTES - sum(_packed_size(task.payload) for task, _ in self._running.values())
            batch: list[Task] = []
            while self._pending and len(batch) < room:
                size = _packed_size(self._pending[0].payload)
                if size > room_bytes and (batch or self._running):
                    break  # one task always goes, however big
                room_bytes -= size
                task = self._start_next()
                if task is None:
                    continue  # cancelled while it waited
                batch.append(task)
            if batch:
                self._room.notify_all()
        if batch:
            self._send(batch)

    def _send(self, batch: list[Task]) -> None:
        works: list[Any] = []
        big: list[int] = []  # where in ``works`` the ones to scatter first are
        for task in batch:
            work = Work(
                self._prefix,
                self._init,
                self._threads_per_worker,
                task.function.key,
                task.function.blob,
                task.mode,
                task.payload,
            )
            if _packed_size(task.payload) > SCATTER_BYTES:
                big.append(len(works))
            works.append(work)
        if big:
            # Straight to the workers, in one exchange (each task then runs where its data is).
            scattered = self._client.scatter([works[index] for index in big], hash=False)
            for index, future in zip(big, scattered):
                works[index] = future
            self._counts["scattered"] += len(big)
        keys = [_key(self._prefix, task) for task in batch]
        futures = self._client.map(run, works, key=keys, pure=False)
        with self._lock:
            for task, key, future in zip(batch, keys, futures):
                self._running[key] = (task, future)
            self._counts["tasks"] += len(batch)
        for future in futures:
            future.add_done_callback(self._done)

    def _done(self, future: Any) -> None:
        """Dask's callback thread: hands the finished key to the manager (nothing else, as the
        thread is shared by every future of the process)."""
        self._events.put(future.key)

    def _collect(self, keys: list[str]) -> None:
        """Gives the outcomes of finished futures to their sinks."""
        with self._lock:
            found = [self._running.pop(key) for key in keys if key in self._running]
        finished = [(task, future) for task, future in found if future.status == "finished"]
        values: list[Any] = []
        if finished:
            try:
                values = self._client.gather([future for _, future in finished])
            except Exception:  # noqa: BLE001 - one of them failed meanwhile: one at a time
                values = [_one_result(future) for _, future in finished]
        outcomes = dict(zip((task.id for task, _ in finished), values))
        for task, future in found:
            if task.id in outcomes:
                self._deliver(task, outcomes[task.id])
            elif future.status == "cancelled":
                self._lost(task, None)
            else:
                self._deliver(task, _one_result(future))  # Dask's error (or it finished meanwhile)
            future.release()
        with self._lock:
            self._counts["results"] += len(found)

    def _deliver(self, task: Task, value: Any) -> None:
        """One task's outcome as it came from the cluster (an Outcome, or Dask's exception)."""
        if isinstance(value, Outcome):
            if value.kind == DONE:
                self._finish(task, *self._rebuilt(task, value.packed, "here"))
            elif value.kind == INIT_FAILED:
                self._initializer_failed(value.packed, "in a Dask worker")
                self._finish(task, False, self._broken_error())
            else:
                self._finish(task, False, rebuild_error(*value.packed))
        elif isinstance(value, distributed.KilledWorker):
            self._lost(task, value)
        elif isinstance(value, BaseException):
            # Dask itself failed the task (e.g. hakobu missing on the worker): as it said.
            self._finish(task, False, value)
        else:
            error = _errors.RemoteError(
                f"a Dask worker returned {type(value).__name__} instead of an outcome"
            )
            self._finish(task, False, error)

    def _lost(self, task: Task, killed: Optional[BaseException]) -> None:
        """The task's worker died. ``killed``: Dask's KilledWorker, the scheduler's allowed failures
        used up; None: the task vanished, the work it needed (scattered) lost with its worker.

        On the cluster the engine started, the scheduler already ran a killed
        task ``retries`` times more: it fails. Otherwise the engine sends it
        again while ``retries`` allow (on a given cluster, after the
        scheduler's own runs). Then it fails with WorkerLost.
        """
        task.attempts += 1
        scheduler_retried = killed is not None and self._cluster is not None
        with self._lock:
            if (
                not scheduler_retried
                and task.attempts <= self._retries
                and self._state != TERMINATE
                and self._broken is None
            ):
                self._pending.appendleft(task)
                self._counts["resubmitted"] += 1
                return
        # Dask's text says on how many workers it ran, and the last one.
        where = (
            str(killed).rstrip(".") if killed is not None else "its data was lost with the worker holding it"
        )
        message = f"task {task.id} ({task.label}) failed: the Dask worker running it died ({where})"
        if self._cluster is None:
            message += (
                "; on this cluster its scheduler's distributed.scheduler.allowed-failures says how often such "
                f"a task runs again, then the pool's retries (now {self._retries}) add runs"
            )
        elif self._retries:
            message += f"; retries={self._retries} were used up"
        else:
            message += "; pass retries=N to run such tasks again"
        error = _errors.WorkerLost(message, task=task.id)
        if killed is not None:
            error.__cause__ = killed
        self._finish(task, False, error)

    def _terminate_now(self) -> None:
        """Fails what is left (PoolTerminated, or the error that broke the pool) and cancels it."""
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
            running = list(self._running.values())
            self._running.clear()
            broken = self._broken is not None
        if running:
            try:
                self._client.cancel([future for _, future in running])
            except Exception:  # noqa: BLE001 - the cluster went away: nothing left to cancel
                pass
        for task, _ in running:
            self._finish(task, False, self._ending_error(task, broken))
        for task in pending:
            self._cancel(task, self._ending_error(task, broken))

    def _ending_error(self, task: Task, broken: bool) -> BaseException:
        if broken:
            return self._broken_error()
        return _errors.PoolTerminated(
            f"the pool was terminated before task {task.id} ({task.label}) finished"
        )

    def _release(self) -> None:
        """The manager's last act: the client and the cluster it made are closed."""
        try:
            if self._own_client:
                self._client.close(timeout=CLOSE_SECONDS)
            if self._cluster is not None:
                self._cluster.close(timeout=CLOSE_SECONDS)
        except Exception:  # noqa: BLE001 - closing is best effort; the processes die with ours
            pass

    def _threads(self) -> int:
        """The cluster's worker threads now (0 while it has no worker)."""
        try:
            return sum(self._client.nthreads().values())
        except Exception:  # noqa: BLE001 - the scheduler is unreachable a moment: keep the window
            return self._window // WINDOW_PER_THREAD


def _one_result(future: Any) -> Any:
    """A finished future's value, or the exception that ended it."""
    try:
        return future.result()
    except BaseException as error:  # noqa: BLE001 - the caller decides what it means
        return error


def _key(prefix: str, task: Task) -> str:
    """The Dask key of a task: its function's name first, as Dask's dashboard groups keys by prefix."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in task.function.name)[:40] or "task"
    return f"{name}-{prefix}-{task.id}-{task.attempts}"


def _local_cluster(workers: int, retries: int) -> Any:
    """A LocalCluster of ``workers`` processes with one thread each (see the module's docstring)."""
    import dask

    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        return distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: several pools may run at once
            scheduler_kwargs={"allowed_failures": retries},
        )


def _now() -> float:
    return time.monotonic()


# At interpreter exit, the pools' hook (hakobu._pool.core._at_exit) must run before Dask's own exit
# hooks close the clients under the engines: installed again now, after Dask's.
core.install_at_exit()
