"""The engine under hakobu.Pool and hakobu.Executor: worker processes, dispatch, deaths.

Both front-ends (pool.py) are thin: they turn calls into Tasks, hand them to
an Engine, and receive each task's outcome through its Sink. Everything about
processes lives here, once.

Design
------
* Workers are fresh interpreters (``python -m hakobu._worker``, see
  _worker.py), each in its own process group. Each has an inbox queue;
  all share one results queue. The parent creates every queue (names
  ``pool-<pid>-<token>-in-<n>`` and ``-out``) and removes them when a worker
  dies, when the pool ends, and at interpreter exit.
* One manager thread per engine owns the workers: it alone starts them, sends
  them tasks, reads the results queue and notices deaths. It keeps at most
  IN_FLIGHT_PER_WORKER tasks in each worker's inbox, so it always knows which
  tasks a dead worker held: the oldest was running (it fails with WorkerLost,
  or runs again when ``retries`` allow), the others never started and go back
  to the front of the pending queue.
* A second task goes to a busy worker (prefetch) only when sending takes a
  noticeable share of a task's time (big arguments) or tasks are short: then
  the worker starts it the moment it finishes the first. Long tasks go one
  at a time, to whichever worker is free, so a task never waits behind a long
  one while another worker idles (multiprocessing's shared queue gives that).
* It waits on the results queue for at most POLL_SECONDS, then polls the worker
  processes (waitpid): a dead worker is noticed within that time, whatever it
  was doing. Before judging a dead worker it drains the results queue, where
  whatever the worker finished before dying already is.

Messages
--------
Messages travel on hakobu queues, so the buffers of arguments and results
(arrays inside tuples, dicts, dataclasses) move through shared memory. An
object is packed as a cloudpickle stream plus its large buffers as
``pickle.PickleBuffer`` objects; the queue's codec sends those out of band, by
reference when they already live in hakobu memory, so a task's big arrays are
never pickled. Cloudpickle, not pickle, so that classes and functions defined
in the parent's ``__main__`` arrive by value.

Parent -> worker, on the worker's own inbox:

* ``(HELLO, sys_path, init_stream, init_buffers)``: first, once; the worker
  takes the parent's sys.path, runs the initializer and answers READY or
  INIT_FAILED.
* ``(TASK, task_id, function_key, function_blob_or_None, forget, mode, stream,
  buffers)``: run the function on each item of a chunk. The worker caches
  functions by key; the engine sends a blob only to a worker that lacks it and
  lists in ``forget`` the keys it evicted from its mirror of the cache.
* ``None``: finish and exit (sent after the last task a worker may run, with
  ``maxtasksperchild``, and when the pool closes).

Worker -> parent, on the pool's results queue:

* ``(READY, number)``, ``(INIT_FAILED, number, traceback_text, stream, buffers)``
* ``(DONE, number, task_id, True, stream, buffers)``: the chunk's list of results
* ``(DONE, number, task_id, False, (traceback_text, stream, buffers))``: the exception

Locking rules
-------------
``_lock`` guards ``_pending``, ``_state``, ``_broken`` and
``_wake_sent``; user threads touch nothing else. Worker handles belong to the
manager thread alone. User threads wake the manager by putting an empty
``bytes`` on the results queue (at most one outstanding, ``_wake_sent``).
Sinks are called by the manager thread without the lock held (user
callbacks run there, as multiprocessing and concurrent.futures run them on
their result threads: they should return quickly).
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import itertools
import os
import pickle
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence

import cloudpickle

from . import _codec, _core, _errors
from ._queue import Queue

# Message tags (see "Messages" above).
HELLO, TASK, READY, INIT_FAILED, DONE = 1, 2, 3, 4, 5

# How a task's items become calls.
MODE_ARG = 0  # f(item)                   map, imap
MODE_STAR = 1  # f(*item)                 starmap, Executor.map
MODE_CALL = 2  # f(*args, **kwargs)        apply, submit: item = (args, kwargs)

Packed = tuple[Any, list[pickle.PickleBuffer]]


# --- packing: the one way objects are prepared for a pool's queues -------------------------


def pack(obj: Any) -> Packed:
    """(stream, buffers): ``obj`` as cloudpickle protocol 5 with its large buffers apart.

    The buffers (PickleBuffer) ride the hakobu queue out of band, in shared
    memory; a large stream does too.
    """
    buffers: list[pickle.PickleBuffer] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            size = buffer.raw().nbytes
        except BufferError:  # not contiguous: pickle copies it in-band
            return True
        if size < _codec.OUT_OF_BAND_MIN_BYTES:
            return True
        buffers.append(buffer)
        return False

    stream: bytes = cloudpickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
    if len(stream) >= _codec.OUT_OF_BAND_MIN_BYTES:
        return pickle.PickleBuffer(stream), buffers  # one copy into shared memory, not two
    return stream, buffers


def unpack(stream: Any, buffers: list[Any]) -> Any:
    """The object ``pack`` made; its large arrays are (writable) views of shared memory."""
    return pickle.loads(stream, buffers=buffers)


def describe_exception(error: BaseException) -> str:
    """'module.Type: text', safe even when str(error) fails."""
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
        text = "<str() failed>"
    return f"{name}: {text}" if text else name


def pack_error(error: BaseException) -> tuple[str, Any, list[pickle.PickleBuffer]]:
    """(traceback text, stream, buffers) of an exception raised here, for the parent.

    An exception that cannot be pickled, or not unpickled again, is replaced by
    a RemoteError that says what it was.
    """
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        stream, buffers = pack(error)
        unpack(stream, list(buffers))  # the parent must be able to rebuild it
    except Exception as why:  # noqa: BLE001 - any failure means: send a substitute
        substitute = _errors.RemoteError(
            f"the task raised {describe_exception(error)}, which cannot be sent to the parent as itself "
            f"({describe_exception(why)}); its traceback is in the cause of this error"
        )
        stream, buffers = pack(substitute)
    return text, stream, buffers


def rebuild_error(text: str, stream: Any, buffers: list[Any]) -> BaseException:
    """The exception a worker sent, with its traceback as ``__cause__`` (as multiprocessing does)."""
    error: BaseException
    try:
        sent = unpack(stream, buffers)
    except Exception as why:  # noqa: BLE001 - a class the parent lacks, say
        sent = _errors.RemoteError(
            f"a task raised an exception the parent cannot rebuild ({describe_exception(why)}); "
            "its traceback is in the cause of this error"
        )
    if isinstance(sent, BaseException):
        error = sent
    else:
        error = _errors.RemoteError(f"a worker sent {type(sent).__name__} instead of an exception")
    error.__cause__ = _errors.RemoteTraceback(f'\n"""\n{text}"""')
    return error


# Tasks in a worker's inbox at once: one running, one ready to start the moment it finishes.
IN_FLIGHT_PER_WORKER = 2
# Prefetch (see the module's docstring) for tasks shorter than this, or than
# PREFETCH_SEND_SHARE times the time it took to send them.
PREFETCH_BELOW_SECONDS = 0.02
PREFETCH_SEND_SHARE = 10
# Functions a worker keeps unpickled (the engine mirrors each worker's cache).
FUNCTION_CACHE_SIZE = 32
# Longest wait on the results queue before the worker processes are polled.
POLL_SECONDS = 0.1
# How long workers told to stop may take before they are killed.
STOP_GRACE_SECONDS = 10.0
# Workers that die one after another before being ready: the pool cannot start workers.
START_FAILURES_TO_BREAK = 3
# Results read in one go before the manager looks at anything else.
DRAIN_BATCH = 256
# Room in a worker's inbox: the hello, the tasks in flight, the stop message.
INBOX_CAPACITY = 8

# The thread-count variables of OpenMP and the usual BLAS and numeric libraries.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "TBB_NUM_THREADS",
)

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"


def available_cores() -> int:
    """CPUs this process may run on (its affinity, not the machine's count)."""
    counter = getattr(os, "process_cpu_count", None)
    if counter is not None:
        count: Optional[int] = counter()
        return count or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


class Sink(Protocol):
    """Where a task's outcome goes (a pool result, a future)."""

    def start(self) -> bool:
        """The task goes to a worker; False when it was cancelled meanwhile (it is dropped)."""

    def finish(self, ok: bool, value: Any) -> None:
        """The list of the chunk's results (ok), or the exception."""

    def cancel(self, error: BaseException) -> None:
        """The task will never start (the pool was terminated, or pending work cancelled)."""


@dataclass(eq=False)
class Function:
    """A callable pickled once; workers cache it by ``key`` (a digest of the pickle)."""

    key: bytes
    blob: bytes
    name: str


def function(fn: Callable[..., Any]) -> Function:
    """``fn`` pickled for the workers: by reference when importable, else by value (cloudpickle)."""
    blob: bytes = cloudpickle.dumps(fn, protocol=5)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return Function(hashlib.blake2b(blob, digest_size=16).digest(), blob, str(name))


@dataclass(eq=False)
class Task:
    """One message to a worker: ``function`` applied to each item of a chunk."""

    function: Function
    mode: int  # MODE_*
    items: Packed
    sink: Sink
    label: str  # says which calls these are, in error messages
    id: int = 0
    attempts: int = 0  # runs that ended with the worker's death
    started: bool = False


def make_task(fn: Function, mode: int, items: list[Any], sink: Sink, label: str) -> Optional[Task]:
    """A task for ``items``; None, with the error given to the sink, if they cannot be pickled."""
    try:
        packed = pack(items)
    except Exception as error:  # noqa: BLE001 - as multiprocessing: the result carries the error
        sink.finish(False, error)
        return None
    return Task(fn, mode, packed, sink, label)


class _Worker:
    """The manager's handle on one worker process."""

    def __init__(self, number: int, process: subprocess.Popen[bytes], inbox: Queue) -> None:
        self.number = number
        self.process = process
        self.inbox = inbox
        self.outstanding: collections.OrderedDict[int, Task] = collections.OrderedDict()
        self.known: collections.OrderedDict[bytes, None] = collections.OrderedDict()  # its function cache
        self.ready = False
        self.sent = 0
        self.stopping = False  # told to exit once its inbox is done
        self.sent_at: dict[int, float] = {}  # task id -> when it was in the inbox
        self.last_done = 0.0  # when its last result arrived
        self.service_seconds: Optional[float] = None  # how long its last task took (unknown at first)
        self.send_seconds = 0.0  # how long sending its last task took

    def in_flight_limit(self) -> int:
        """1, or 2 when sending takes a noticeable share of a task (see the module's docstring)."""
        service = self.service_seconds
        if service is None:
            return 1
        if service < PREFETCH_BELOW_SECONDS or service < PREFETCH_SEND_SHARE * self.send_seconds:
            return IN_FLIGHT_PER_WORKER
        return 1

    def done(self, task_id: int) -> None:
        """Notes when a task ended: it started when it was sent or when the one before it ended."""
        now = time.monotonic()
        started = max(self.sent_at.pop(task_id, now), self.last_done)
        self.service_seconds = now - started
        self.last_done = now

    def how_it_ended(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"


_live_engines: set["Engine"] = set()
_live_lock = threading.Lock()


class Engine:
    """Worker processes running Tasks; see the module's docstring."""

    def __init__(
        self,
        workers: int,
        initializer: Optional[Callable[..., Any]],
        initargs: Sequence[Any],
        max_tasks_per_worker: Optional[int],
        retries: int,
        threads_per_worker: Optional[int],
        *,
        drain_at_exit: bool,
    ) -> None:
        self.workers = workers
        self._max_tasks = max_tasks_per_worker
        self._retries = retries
        self._threads_per_worker = threads_per_worker
        self.drain_at_exit = drain_at_exit
        self.owner_pid = os.getpid()
        self._domain = _core.default_domain()
        self._prefix = f"pool-{os.getpid()}-{secrets.token_hex(4)}"
        self._init = pack((initializer, tuple(initargs)))
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._pending: collections.deque[Task] = collections.deque()
        self._state = RUN
        self._broken: Optional[_errors.BrokenPool] = None
        self._wake_sent = False
        self._task_ids = itertools.count(1)
        self._worker_numbers = itertools.count(1)
        self._workers: dict[int, _Worker] = {}
        self._start_failures = 0
        self._feeders = 0  # lazy producers (imap) still submitting: a closing engine waits for them
        results = Queue(f"{self._prefix}-out", max(64, 8 * workers), create=True, domain=self._domain)
        self._results_name = results.name
        # Dropped when the engine ends: a finished pool keeps no handle (nor the domain) open.
        self._results: Optional[Queue] = results
        self._thread = threading.Thread(target=self._run, name=f"hakobu-{self._prefix}", daemon=True)
        with _live_lock:
            _live_engines.add(self)
        self._thread.start()

    # --- what the front-ends call (any thread) -------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def name(self) -> str:
        """The prefix of the engine's queue names (and of its workers' command lines)."""
        return self._prefix

    def submit(self, tasks: Sequence[Task], *, feeding: bool = False) -> bool:
        """Queues ``tasks``; False once the engine takes no more work. Raises BrokenPool.

        ``feeding``: from a lazy producer started while the engine ran, which
        may go on after close() (as multiprocessing's imap does).
        """
        if os.getpid() != self.owner_pid:
            raise RuntimeError("a pool made before os.fork() cannot be used in the child: make a new pool there")
        with self._lock:
            if self._broken is not None:
                raise self._broken_error()
            if self._state != RUN and not (feeding and self._state == CLOSE):
                return False
            for task in tasks:
                task.id = next(self._task_ids)
                self._pending.append(task)
        self._wake()
        return True

    def open_feed(self) -> None:
        """A lazy producer (imap) starts submitting; a closing engine waits for its end."""
        with self._lock:
            self._feeders += 1

    def close_feed(self) -> None:
        with self._lock:
            self._feeders -= 1
        self._wake()

    def wait_for_room(self) -> None:
        """Waits while enough tasks wait for a worker (lazy producers need not read ahead)."""
        limit = self.workers * IN_FLIGHT_PER_WORKER
        with self._room:
            while len(self._pending) >= limit and self._state != TERMINATE and self._broken is None:
                self._room.wait()

    def close(self) -> None:
        """Takes no more work; finishes what was submitted, then the workers exit."""
        with self._lock:
            if self._state == RUN:
                self._state = CLOSE
            self._room.notify_all()
        self._wake()

    def terminate(self) -> None:
        """Kills the workers now; unfinished tasks fail with PoolTerminated (never started: cancelled)."""
        with self._lock:
            self._state = TERMINATE
            self._room.notify_all()
        self._wake()
        if threading.current_thread() is not self._thread:  # from a callback: the manager sees the state
            self._thread.join()

    def join(self, timeout: Optional[float] = None) -> None:
        """Waits until the manager has stopped the workers and removed the queues."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a pool cannot be joined from one of its own callbacks")
        self._thread.join(timeout)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def cancel_pending(self) -> None:
        """Cancels the tasks no worker has started (Executor.shutdown(cancel_futures=True))."""
        with self._lock:
            cancelled = [task for task in self._pending if not task.started]
            kept = [task for task in self._pending if task.started]
            self._pending.clear()
            self._pending.extend(kept)
            self._room.notify_all()
        for task in cancelled:
            self._cancel(task, _errors.PoolTerminated("cancelled before it started"))

    # --- the manager thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as error:  # noqa: BLE001 - a fault here must fail tasks, never hang them
            failure = _errors.BrokenPool(
                f"the pool's manager thread failed ({describe_exception(error)}); every pending task fails"
            )
            failure.__cause__ = error
            self._break(failure)
            self._stop_workers(kill=True)
        finally:
            self._release()

    def _serve(self) -> None:
        next_poll = 0.0
        while True:
            with self._lock:
                state, broken = self._state, self._broken is not None
            if state == TERMINATE:
                self._terminate_now()
                return
            if broken:
                self._stop_workers(kill=True)
                return
            if time.monotonic() >= next_poll:
                self._reap()
                next_poll = time.monotonic() + POLL_SECONDS
                if self._broken is not None:
                    continue
            self._replenish(state)
            self._dispatch()
            if state == CLOSE and self._idle():
                self._stop_workers(kill=False)
                return
            self._receive(POLL_SECONDS)

    def _idle(self) -> bool:
        with self._lock:
            if self._pending or self._feeders:
                return False
        return not any(worker.outstanding for worker in self._workers.values())

    def _manager_results(self) -> Queue:
        """The results queue, which exists as long as the manager thread runs."""
        assert self._results is not None
        return self._results

    def _receive(self, timeout: float) -> None:
        """Handles a message (waiting at most ``timeout``), then what else has arrived."""
        if self._receive_one(timeout):
            for _ in range(DRAIN_BATCH):
                if not self._receive_one(0.0):
                    return

    def _receive_now(self) -> bool:
        return self._receive_one(0.0)

    def _receive_one(self, timeout: float) -> bool:
        try:
            message = self._manager_results().get(timeout=timeout)
        except _errors.Empty:
            return False
        self._handle(message)
        return True

    def _drain(self) -> None:
        while self._receive_now():
            pass

    def _handle(self, message: Any) -> None:
        if isinstance(message, bytes):  # a wake-up from another thread
            with self._lock:
                self._wake_sent = False
            return
        tag, number = message[0], message[1]
        worker = self._workers.get(number)
        if tag == DONE:
            task = worker.outstanding.pop(message[2], None) if worker is not None else None
            if task is None:
                return  # it failed already (the pool broke)
            assert worker is not None
            worker.done(task.id)
            if message[3]:
                try:
                    ok, value = True, unpack(message[4], message[5])
                except Exception as why:  # noqa: BLE001 - the task fails, the pool goes on
                    value = _errors.RemoteError(
                        f"the result of task {task.id} ({task.label}) cannot be rebuilt in the parent "
                        f"({describe_exception(why)})"
                    )
                    value.__cause__ = why
                    ok = False
            else:
                ok, value = False, rebuild_error(*message[4])
            self._finish(task, ok, value)
        elif tag == READY:
            if worker is not None:
                worker.ready = True
            self._start_failures = 0
        elif tag == INIT_FAILED:
            cause = rebuild_error(*message[2:5])
            error = _errors.BrokenPool(
                f"the pool's initializer failed in worker {number}: {describe_exception(cause)}; "
                "every pending task fails: fix the initializer and make a new pool"
            )
            error.__cause__ = cause
            self._break(error)

    def _replenish(self, state: str) -> None:
        """Starts workers up to the pool's size while there is or may be work."""
        with self._lock:
            wanted = state == RUN or bool(self._pending) or self._feeders > 0
        if not wanted or self._broken is not None:
            return
        active = sum(1 for worker in self._workers.values() if not worker.stopping)
        for _ in range(self.workers - active):
            try:
                self._spawn()
            except Exception as error:  # noqa: BLE001 - e.g. no more processes allowed
                failure = _errors.BrokenPool(
                    f"cannot start a worker process ({describe_exception(error)}); every pending task fails"
                )
                failure.__cause__ = error
                self._break(failure)
                return

    def _spawn(self) -> None:
        number = next(self._worker_numbers)
        inbox = Queue(f"{self._prefix}-in-{number}", INBOX_CAPACITY, create=True, domain=self._domain)
        try:
            threads, environment = self._worker_environment()
            # The interpreter's options (-I, -O, -X ...), passed on as multiprocessing does.
            flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
            command = [
                sys.executable,
                *flags,
                "-m",
                "hakobu._worker",
                inbox.name,
                self._results_name,
                str(number),
                str(os.getpid()),
                str(threads),
            ]
            # Its own process group: Ctrl-C in a terminal goes to the parent alone.
            if sys.version_info >= (3, 11):
                process = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL, process_group=0)
            else:
                process = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL, start_new_session=True)
            inbox.put((HELLO, list(sys.path), *self._init), block=False)
        except BaseException:
            _discard(inbox)
            raise
        self._workers[number] = _Worker(number, process, inbox)

    def _worker_environment(self) -> tuple[int, dict[str, str]]:
        """(threads to set with threadpoolctl, or 0; the worker's environment).

        By default each worker gets max(1, cores / workers) threads for OpenMP
        and BLAS, through the variables the user has not set (and through
        threadpoolctl when the user set none); ``threads_per_worker`` sets all.
        """
        environment = dict(os.environ)
        environment["HAKOBU_DOMAIN"] = self._domain
        if self._threads_per_worker is not None:
            environment.update({name: str(self._threads_per_worker) for name in THREAD_VARIABLES})
            return self._threads_per_worker, environment
        cap = max(1, available_cores() // self.workers)
        user_set = any(name in os.environ for name in THREAD_VARIABLES)
        for name in THREAD_VARIABLES:
            environment.setdefault(name, str(cap))
        return (0 if user_set else cap), environment

    def _dispatch(self) -> None:
        while True:
            worker = self._worker_with_room()
            if worker is None:
                return
            with self._lock:
                if not self._pending:
                    return
                task = self._pending.popleft()
                self._room.notify_all()
            if not task.started:
                if not task.sink.start():
                    continue  # cancelled while it waited
                task.started = True
            self._send(worker, task)

    def _worker_with_room(self) -> Optional[_Worker]:
        best: Optional[_Worker] = None
        for worker in self._workers.values():
            if worker.ready and not worker.stopping and len(worker.outstanding) < worker.in_flight_limit():
                if best is None or len(worker.outstanding) < len(best.outstanding):
                    best = worker
        return best

    def _send(self, worker: _Worker, task: Task) -> None:
        key = task.function.key
        known = key in worker.known
        evict = 0 if known else max(0, len(worker.known) + 1 - FUNCTION_CACHE_SIZE)
        forget = list(itertools.islice(worker.known, evict))
        blob: Any = None
        if not known:  # a large function (a closure over big data) travels out of band: one copy
            blob = task.function.blob
            if len(blob) >= _codec.OUT_OF_BAND_MIN_BYTES:
                blob = pickle.PickleBuffer(blob)
        sending = time.monotonic()
        try:
            worker.inbox.put((TASK, task.id, key, blob, forget, task.mode, *task.items), block=False)
        except Exception as error:  # noqa: BLE001 - e.g. /dev/shm full: the worker never saw the task
            self._finish(task, False, error)
            return
        worker.sent_at[task.id] = now = time.monotonic()
        worker.send_seconds = now - sending
        if known:
            worker.known.move_to_end(key)
        else:
            for old in forget:
                del worker.known[old]
            worker.known[key] = None
        worker.outstanding[task.id] = task
        worker.sent += 1
        if self._max_tasks is not None and worker.sent >= self._max_tasks:
            self._retire(worker)  # a fresh worker replaces it at once (_replenish)

    def _retire(self, worker: _Worker) -> None:
        """Tells ``worker`` to exit once its inbox is done."""
        worker.stopping = True
        try:
            worker.inbox.put(None, block=False)
        except _errors.HakobuError:
            _kill(worker)  # cannot tell it: it dies, and its tasks with it

    def _reap(self) -> None:
        exited = [worker for worker in self._workers.values() if worker.process.poll() is not None]
        if exited:
            self._drain()  # what they finished before dying is in the queue already
            for worker in exited:
                self._bury(worker)

    def _bury(self, worker: _Worker) -> None:
        """Forgets an exited worker: its queue goes; its tasks run again or fail."""
        del self._workers[worker.number]
        _discard(worker.inbox)
        tasks = list(worker.outstanding.values())
        worker.outstanding.clear()
        if worker.stopping and worker.process.returncode == 0 and not tasks:
            return  # retired, or stopped as asked
        _core.collect_garbage(self._domain)  # what it held in shared memory comes back
        if not worker.ready and not worker.stopping:
            self._start_failures += 1
            if self._start_failures >= START_FAILURES_TO_BREAK:
                self._break(
                    _errors.BrokenPool(
                        f"worker processes exit before they are ready (worker {worker.number}, pid "
                        f"{worker.process.pid}, {worker.how_it_ended()}); see their error output above. "
                        "Check that `python -m hakobu._worker` runs in this environment"
                    )
                )
        if not tasks:
            return
        running, waiting = tasks[0], tasks[1:]
        running.attempts += 1
        with self._lock:
            self._pending.extendleft(reversed(waiting))  # never started: first in line again
            if running.attempts <= self._retries:
                self._pending.appendleft(running)
                return
        self._finish(running, False, self._lost(worker, running))

    def _lost(self, worker: _Worker, task: Task) -> _errors.WorkerLost:
        code = worker.process.returncode
        message = (
            f"worker {worker.number} (pid {worker.process.pid}) {worker.how_it_ended()} while running task "
            f"{task.id} ({task.label}); the pool replaced the worker"
        )
        if code == -signal.SIGKILL:
            message += "; SIGKILL is also how the kernel's out-of-memory killer ends a process (see `dmesg`)"
        if self._retries:
            message += f"; the task was run {task.attempts} times (retries={self._retries})"
        else:
            message += "; pass retries=N to run such tasks again"
        return _errors.WorkerLost(
            message,
            worker=worker.number,
            pid=worker.process.pid,
            signal=-code if code is not None and code < 0 else None,
            exit_code=code if code is not None and code >= 0 else None,
            task=task.id,
        )

    def _finish(self, task: Task, ok: bool, value: Any) -> None:
        try:
            task.sink.finish(ok, value)
        except BaseException:  # noqa: BLE001 - a user callback raised: report it, keep serving
            _report_callback_error()

    def _cancel(self, task: Task, error: BaseException) -> None:
        try:
            if task.started:
                task.sink.finish(False, error)
            else:
                task.sink.cancel(error)
        except BaseException:  # noqa: BLE001
            _report_callback_error()

    def _break(self, error: _errors.BrokenPool) -> None:
        """Nothing more can run: every task fails with ``error``, new ones are refused."""
        with self._lock:
            if self._broken is not None:
                return
            self._broken = error
            tasks = list(self._pending)
            self._pending.clear()
            self._room.notify_all()
        for worker in self._workers.values():
            tasks.extend(worker.outstanding.values())
            worker.outstanding.clear()
        for task in tasks:
            self._finish(task, False, self._broken_error())

    def _broken_error(self) -> _errors.BrokenPool:
        """A fresh copy of the error that broke the pool (one exception object per task)."""
        assert self._broken is not None
        error = _errors.BrokenPool(*self._broken.args)
        error.__cause__ = self._broken.__cause__
        return error

    def _terminate_now(self) -> None:
        for worker in self._workers.values():
            _kill(worker)
        for worker in self._workers.values():
            worker.process.wait()
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
        running = [task for worker in self._workers.values() for task in worker.outstanding.values()]
        for worker in list(self._workers.values()):
            worker.outstanding.clear()
            self._bury(worker)
        for task in running + pending:
            self._cancel(task, _errors.PoolTerminated(f"the pool was terminated before task {task.id} ({task.label}) finished"))

    def _stop_workers(self, kill: bool) -> None:
        """Stops every worker (they finish their inbox first unless ``kill``) and forgets them."""
        for worker in self._workers.values():
            if kill:
                _kill(worker)
            elif not worker.stopping:
                self._retire(worker)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in self._workers.values():
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(worker)
                worker.process.wait()
        self._drain()
        for worker in list(self._workers.values()):
            self._bury(worker)

    def _release(self) -> None:
        """The manager's last act: no worker, no queue left."""
        for worker in list(self._workers.values()):  # only after a fault of the engine itself
            _kill(worker)
            worker.process.wait()
            self._bury(worker)
        results, self._results = self._results, None
        if results is not None:
            _discard(results)
        with _live_lock:
            _live_engines.discard(self)

    # --- waking the manager -------------------------------------------------------------------

    def _wake(self) -> None:
        with self._lock:
            if self._wake_sent:
                return
            self._wake_sent = True
        results = self._results
        if results is None:  # the engine has ended
            return
        try:
            results.put(b"", block=False)
        except _errors.HakobuError:  # full (the manager has work anyway) or already removed
            with self._lock:
                self._wake_sent = False


def _kill(worker: _Worker) -> None:
    """Kills a worker on purpose (SIGKILL: it cannot be caught); its exit is then expected."""
    worker.stopping = True
    try:
        worker.process.kill()
    except ProcessLookupError:
        pass


def _discard(queue: Queue) -> None:
    """Removes a queue the engine created; its messages are freed when the last holder lets go."""
    try:
        queue.unlink()
    except _errors.HakobuError:
        pass  # already removed (a worker whose parent... was us, removing it at our death)
    try:
        queue.close()
    except _errors.HakobuError:
        pass


def _report_callback_error() -> None:
    print("Exception in a callback of a hakobu pool (the pool goes on):", file=sys.stderr)
    traceback.print_exc()


def _at_exit() -> None:
    """At interpreter exit: Executors finish their work (as concurrent.futures does), Pools are terminated."""
    with _live_lock:
        engines = [engine for engine in _live_engines if engine.owner_pid == os.getpid()]
    for engine in engines:
        if engine.drain_at_exit:
            engine.close()
            engine.join()
        else:
            engine.terminate()


def _forget_in_child() -> None:
    # A forked child has the engines' objects but not their threads or workers.
    _live_engines.clear()


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
