"""hakobu.Pipeline and hakobu.Stage: functions chained by hakobu queues, each stage in its own
worker processes.

>>> pipe = hakobu.Pipeline(hakobu.Stage(decode), hakobu.Stage(infer, workers=2), hakobu.Stage(post))
>>> for out in pipe.map(inputs):      # in order; ordered=False as they finish
...     ...
>>> pipe.close(); pipe.join()

Design
------
* Queues: stage i takes its items from queue ``<prefix>-i`` and puts what comes
  of them on ``<prefix>-(i+1)``; the last one is the results queue, which the
  parent reads (``prefix`` = ``pipe-<pid>-<token>``, as the pool names its
  queues). Each holds ``capacity`` messages (and ``max_bytes``). The parent
  creates them all and removes them when the pipeline ends; workers remove them
  if the parent dies. The parent also holds every queue as a sender (a second
  handle, ``sends=True``): a stage's input does not end while the pipeline
  runs, whatever happens to the workers before it.
* Workers: fresh interpreters (``python -m hakobu._pipeline.worker``, see
  worker.py), started and replaced by the pipeline's monitor thread (the
  kernel's parent-death signal follows the thread that started a process: it
  must live as long as the workers). Each has a control queue for its first
  messages and a slot of shared memory saying what it holds (wire.py).
* Items: every input gets a sequence number; items carry it with the run
  (``attempt``) and the fan-out path (wire.py), so that the parent tells when an
  input is done (the shares of its branches add up to one), puts the outputs of
  one input together in path order, and releases inputs in order or as they
  finish. Errors and drops go straight to the results queue.
* Backpressure: the queues block a stage whose next queue is full, up to the
  parent's feeders; a feeder admits a new input only while fewer than
  ``window`` (the queues' capacities plus the workers) are in flight and, for a
  lazy call, while the caller has not left that many outcomes untaken. So what
  a pipeline holds is bounded by its capacities, whatever the caller does.
* One monitor thread per pipeline reads the results queue (at most
  POLL_SECONDS at a time), notices dead workers (waitpid), replaces them, runs
  what must run again, and ends the stages' inputs when closing. Items it
  must put itself (a retried input) it puts without waiting, again at
  the next round if there was no room: it never blocks on a queue that it
  alone can drain.
* Closing: once every input is done (so that a retried input still finds
  every stage running) and no feeder is left, the parent closes its sending
  handles of the stages' inputs. The end of stream then flows down: stage 0's
  workers get EndOfStream and leave, which closes their part of stage 1's
  input, whose workers then get EndOfStream, and so on; the monitor waits for
  the workers to leave.

Lost items
----------
A worker that dies HOLDING an item (its slot says which) fails that input with
WorkerLost naming the stage, or runs it again from the first stage with
``retries=N`` (the parent keeps each input until it is done; outputs of the old
run that still arrive are dropped by their attempt number). A worker that dies
WAITING may have taken an item in the few instructions between its get and its
slot's mark: the parent cannot know which. It then pauses feeding until the
pipeline is quiet (every queue empty, nothing being put, every live worker
WAITING with the same count of items taken at two looks POLL_SECONDS apart);
every input still outstanding then is lost, and is failed or retried as above.
A live worker stuck for longer than that in the same few instructions would
make its item count as lost too (it is then run again or failed, and the late
outputs are dropped), never a hang.

Locking rules
-------------
``_lock`` (re-entrant, with its condition ``_room``) guards ``_inputs``, ``_state``,
``_feeders``, ``_putting``, ``_suspect``, ``_broken`` and the worker table.
An input's own fields (outputs, share done) are the monitor thread's alone.
``_put_lock`` serializes puts on the first queue: feeders hold it while they
wait for room; the monitor only ever tries it (it must not wait behind a
feeder that waits for it). Outcomes are delivered without ``_lock``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import itertools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Optional

import numpy as np

from .. import _arrays, _checks, _core, _errors
from .._pool.handle import discard_queue, how_process_ended, start_worker_process
from .._pool.main_script import main_script, running_script
from .._pool.pickling import describe_exception, pack, rebuild_error, unpack
from .._pool.protocol import Packed, hello_message
from .._queue import Queue
from ..pool import ApplyResult
from .board import COLUMN, Board, StageInfo
from .wire import (
    ATTEMPT,
    DROP,
    ERROR,
    EXITED,
    HOLDING,
    ITEM,
    SEQ,
    SLOT_FIELDS,
    STARTING,
    STATE,
    TAKES,
    WAITING,
    Path,
    StageSetup,
    share,
    valid_path,
)

# Longest wait on the results queue before the monitor looks at the workers.
POLL_SECONDS = 0.1
# Records read in one go before the monitor looks at anything else.
DRAIN_BATCH = 256
# Workers that die one after another before taking an item: they cannot start.
START_FAILURES_TO_BREAK = 3
# How long workers told to stop may take before they are killed (close()).
STOP_GRACE_SECONDS = 10.0
# terminate() waits this long for the feeder threads to leave (the removed queues wake them).
FEEDERS_LEAVE_SECONDS = 5.0
# Room in a worker's control queue: its slot, HELLO, its setup.
CONTROL_CAPACITY = 4

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

_live: weakref.WeakSet[Pipeline] = weakref.WeakSet()


def _positive(value: object, what: str) -> int:
    number = _checks.count(value, what)
    if number < 1:
        raise _errors.InvalidArgument(f"{what} must be at least 1, got {number}")
    return number


class Stage:
    """One step of a hakobu.Pipeline: ``fn`` called on each item in ``workers`` processes.

    ``fn`` takes one item and returns one (sent to the next stage), hakobu.SKIP
    (nothing goes on) or a list (each element goes on as an item of its own).
    ``name`` (default: the function's ``__qualname__``) names the stage in
    errors and statistics.
    """

    def __init__(self, fn: Callable[[Any], Any], workers: int = 1, *, name: Optional[str] = None) -> None:
        if not callable(fn):
            raise TypeError(f"a stage runs a function (a callable), got {fn!r}")
        self.fn = fn
        self.workers = _positive(workers, "workers")
        if name is None:
            name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
        if not isinstance(name, str) or not name:
            raise _errors.InvalidArgument(f"a stage's name must be a non-empty str, got {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"hakobu.Stage({self.name}, workers={self.workers})"


# --- one input, one call ----------------------------------------------------------------------


@dataclass(eq=False)
class _Input:
    """An input in flight: where its outcome goes, and what came of it so far (monitor's)."""

    seq: int
    value: Any  # kept to run it again (retries), else None
    deliver: Callable[[bool, Any, bool], None]  # (ok, outputs or error, fanned out)
    attempt: int = 0
    lost_runs: int = 0
    done: Fraction = field(default_factory=Fraction)
    outputs: list[tuple[Path, Any]] = field(default_factory=list)
    fanned: bool = False
    error: Optional[BaseException] = None


class _Call:
    """The outcomes of one map/imap/amap/map_async call, in input order or as they finish.

    Each outcome is (ok, the input's outputs as a list, or its error). Written by
    the monitor (finish) and the feeder (fed, end), read by the caller (take).
    """

    def __init__(self, ordered: bool, window: int, room: threading.Condition) -> None:
        # Re-entrant: abandon() may run from a garbage collection in a thread that holds it.
        self._cond = threading.Condition(threading.RLock())
        self._room = room  # the pipeline's: a take may let a feeder go on
        self.ordered = ordered
        self.window = window
        self._ready: collections.deque[tuple[bool, Any]] = collections.deque()
        self._early: dict[int, tuple[bool, Any]] = {}
        self._next = 0  # ordered: the next index to release
        self._released = 0
        self._taken = 0
        self.fed = 0
        self._total: Optional[int] = None
        self.abandoned = False
        self.wakers: list[Callable[[], None]] = []
        self.on_complete: Optional[Callable[[], None]] = None

    def backlog(self) -> int:
        """Inputs fed whose outcome the caller has not taken."""
        return self.fed - self._taken

    def finish(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            if self.abandoned:
                return
            if self.ordered:
                self._early[index] = (ok, value)
                while self._next in self._early:
                    self._ready.append(self._early.pop(self._next))
                    self._next += 1
                    self._released += 1
            else:
                self._ready.append((ok, value))
                self._released += 1
            self._cond.notify_all()
            complete = self._released == self._total
        self._wake(complete)

    def end(self, total: int) -> None:
        """Feeding ended after ``total`` inputs."""
        with self._cond:
            self._total = total
            self._cond.notify_all()
            complete = self._released == total
        self._wake(complete)

    def _wake(self, complete: bool) -> None:
        for wake in list(self.wakers):
            wake()
        if complete and self.on_complete is not None:
            self.on_complete()

    def take(self, block: bool = True) -> Optional[tuple[bool, Any]]:
        """The next outcome; None when not blocking and none is ready; StopIteration at the end."""
        with self._cond:
            while not self._ready:
                if self._total is not None and self._taken == self._total:
                    raise StopIteration
                if not block:
                    return None
                self._cond.wait()
            self._taken += 1
            outcome = self._ready.popleft()
        with self._room:
            self._room.notify_all()
        return outcome

    def results(self) -> list[tuple[bool, Any]]:
        """Every outcome, once complete (map_async)."""
        with self._cond:
            outcomes = list(self._ready)
            self._ready.clear()
            self._taken += len(outcomes)
            return outcomes

    def abandon(self) -> None:
        """The caller left (Ctrl-C, a closed iterator): outcomes are dropped, feeding stops."""
        with self._cond:
            self.abandoned = True
            self._ready.clear()
            self._early.clear()
            self._cond.notify_all()
        with self._room:
            self._room.notify_all()


class Outputs(Iterator[Any]):
    """The outputs of ``imap``: each input's outputs, one after the other; an input whose
    stage raised raises its error here, and the iterator goes on with the next input."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._pending: collections.deque[Any] = collections.deque()

    def __iter__(self) -> Outputs:
        return self

    def __next__(self) -> Any:
        while not self._pending:
            outcome = self._call.take()
            assert outcome is not None
            ok, value = outcome
            if not ok:
                raise value
            self._pending.extend(value)
        return self._pending.popleft()

    def close(self) -> None:
        """Drops the outcomes still to come (their inputs finish in the pipeline)."""
        self._call.abandon()

    def __del__(self) -> None:
        self._call.abandon()


class AsyncOutputs(AsyncIterator[Any]):
    """The outputs of ``amap`` (``async for``), as Outputs: waits without blocking the loop."""

    def __init__(self, call: _Call, loop: asyncio.AbstractEventLoop) -> None:
        self._call = call
        self._pending: collections.deque[Any] = collections.deque()
        self._event = asyncio.Event()
        self._loop = loop
        call.wakers.append(self._wake)

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:
            pass  # the loop is closed: nobody waits

    def __aiter__(self) -> AsyncOutputs:
        return self

    async def __anext__(self) -> Any:
        while not self._pending:
            self._event.clear()
            try:
                outcome = self._call.take(block=False)
            except StopIteration:
                raise StopAsyncIteration from None
            if outcome is None:
                await self._event.wait()
                continue
            ok, value = outcome
            if not ok:
                raise value
            self._pending.extend(value)
        return self._pending.popleft()

    async def aclose(self) -> None:
        self._call.abandon()

    def __del__(self) -> None:
        self._call.abandon()


# --- the worker processes -----------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    number: int
    stage: int
    row: int
    process: subprocess.Popen[bytes]
    slot: np.ndarray  # shared with the worker (wire.py)
    control: str  # its control queue's name (it removes it once read)
    killed: bool = False  # by terminate(): its end is expected

    def how_it_ended(self) -> str:
        return how_process_ended(self.process)


class Pipeline:
    """Stages in worker processes joined by hakobu queues; see the module's docstring.

    ``stages``: hakobu.Stage objects (a plain callable is a one-worker stage).
    ``capacity``: messages each queue between two stages holds (also the
    results queue); ``max_bytes``: payload bytes each holds (None: the queue's
    default). ``retries``: how many times an input whose worker died runs again
    (from the first stage) before it fails with hakobu.WorkerLost. ``name``
    names the pipeline's board (``hakobu top``); ``domain`` its queues' domain.
    """

    def __init__(
        self,
        *stages: Any,
        capacity: int = 4,
        name: Optional[str] = None,
        domain: Optional[str] = None,
        retries: int = 0,
        max_bytes: Optional[int] = None,
    ) -> None:
        if running_script():
            raise RuntimeError(
                "a pipeline was made while a worker ran the main script to find a function of it: make "
                'pipelines under the script\'s `if __name__ == "__main__":` guard'
            )
        if not stages:
            raise _errors.InvalidArgument("a pipeline needs at least one stage")
        self._stages = [stage if isinstance(stage, Stage) else Stage(stage) for stage in stages]
        self._capacity = _positive(capacity, "capacity")
        self._retries = _checks.count(retries, "retries")
        self._max_bytes = None if max_bytes is None else _checks.count(max_bytes, "max_bytes")
        self._domain = _core.default_domain() if domain is None else _checks.name(domain, "domain")
        self._prefix = f"pipe-{os.getpid()}-{secrets.token_hex(4)}"
        self.name = self._prefix if name is None else _checks.name(name, "pipeline")
        self.owner_pid = os.getpid()
        # Pickled once: by reference where the workers can import it, else by value.
        self._functions: list[Packed] = []
        for stage in self._stages:
            try:
                self._functions.append(pack(stage.fn))
            except Exception as error:
                raise TypeError(
                    f"the function of stage {stage.name!r} cannot be sent to its workers ({describe_exception(error)})"
                ) from error
        count = len(self._stages)
        self._workers_total = sum(stage.workers for stage in self._stages)
        # Inputs in flight at most: what the queues and the workers hold.
        self.window = (count + 1) * self._capacity + self._workers_total
        self._lock = threading.RLock()  # re-entrant: see _Call._cond
        self._room = threading.Condition(self._lock)
        self._put_lock = threading.Lock()
        self._state = RUN
        self._broken: Optional[BaseException] = None
        self._inputs: dict[int, _Input] = {}
        self._seqs = itertools.count()
        self._feeders = 0
        self._putting = 0
        self._suspect = False  # a worker may have taken an item unseen: see "Lost items"
        self._suspect_stages: set[str] = set()  # the stages of such workers
        self._quiet_since: Optional[tuple[Any, ...]] = None
        self._workers: dict[int, _Worker] = {}
        self._numbers = itertools.count(1)
        self._start_failures = 0
        self._resend: collections.deque[_Input] = collections.deque()  # inputs to run again
        self._ended = False  # the parent closed its sending handles: every stage's input ends
        self._retired = np.zeros((count, len(COLUMN)))  # counters of replaced workers' rows
        self._queues: list[Queue] = []  # created here: statistics, removal
        self._senders: list[Queue] = []  # the parent's part of each stream (see "Queues")
        self._final_queue_stats: list[dict[str, Any]] = []
        try:
            for index in range(count + 1):
                queue = self._make_queue(f"{self._prefix}-{index}")
                self._queues.append(queue)
                self._senders.append(
                    Queue(queue.name, self._capacity, create=False, domain=self._domain, sends=True)
                )
            infos = [
                StageInfo(stage.name, stage.workers, self._queues[i].name, self._queues[i + 1].name)
                for i, stage in enumerate(self._stages)
            ]
            self._board: Optional[Board] = Board(self.name, infos, self._queues[-1].name, self._domain)
            self._final_rows = np.zeros(self._board.rows.shape)  # the board's last counters, once it is gone
        except BaseException:
            self._remove_queues()
            raise
        self._first_row = list(itertools.accumulate([0] + [stage.workers for stage in self._stages]))
        self._thread = threading.Thread(target=self._run, name=f"hakobu-{self._prefix}", daemon=True)
        _live.add(self)
        self._thread.start()

    def _make_queue(self, name: str) -> Queue:
        return Queue(name, self._capacity, create=True, domain=self._domain, max_bytes=self._max_bytes)

    # --- feeding ---------------------------------------------------------------------------------

    def _check_running(self) -> None:
        if os.getpid() != self.owner_pid:
            raise RuntimeError("a pipeline made before os.fork() cannot be used in the child")
        if self._broken is not None:
            raise self._broken
        if self._state != RUN:
            raise ValueError("Pipeline not running")

    def _admit(self, call: Optional[_Call]) -> bool:
        """Waits for room for one more input; False when the pipeline or the call ended."""
        with self._room:
            while True:
                if self._state == TERMINATE or self._broken is not None:
                    return False
                if call is not None and call.abandoned:
                    return False
                if (
                    len(self._inputs) < self.window
                    and not self._suspect
                    and (call is None or call.backlog() < call.window)
                ):
                    return True
                self._room.wait()

    def _put_input(self, value: Any, deliver: Callable[[bool, Any, bool], None]) -> None:
        """Sends ``value`` into the first stage (waiting for room there)."""
        with self._lock:
            seq = next(self._seqs)
            entry = _Input(seq, value if self._retries else None, deliver)
            self._inputs[seq] = entry
            self._putting += 1
        try:
            message = (ITEM, seq, 0, (), *pack(value))
            del value
            with self._put_lock:
                senders = self._senders
                if not senders:
                    raise _errors.Closed("the pipeline has ended")
                senders[0].put(message)
        except BaseException as error:
            with self._lock:
                self._inputs.pop(seq, None)
                self._room.notify_all()
            if not isinstance(error, Exception):
                raise  # Ctrl-C while waiting for room: the input is not sent (or its outputs dropped)
            if isinstance(error, (_errors.Unlinked, _errors.Closed)):
                error = self._terminated_error(seq)
            deliver(False, error, False)
        finally:
            with self._lock:
                self._putting -= 1

    def _feed(self, call: _Call, iterable: Iterable[Any]) -> None:
        """A call's feeder thread: reads ``iterable`` as room frees up."""
        index = 0
        try:
            items = iter(iterable)
            while self._admit(call):
                try:
                    value = next(items)
                except StopIteration:
                    break
                call.fed += 1
                self._put_input(value, _CallSink(call, index))
                index += 1
                del value
        except Exception as error:  # noqa: BLE001 - the iterable failed: it shows at its position
            call.fed += 1
            call.finish(index, False, error)
            index += 1
        finally:
            call.end(index)
            with self._lock:
                self._feeders -= 1
                self._room.notify_all()

    def _start_call(self, iterable: Iterable[Any], ordered: bool) -> _Call:
        self._check_running()
        call = _Call(bool(ordered), self.window, self._room)
        with self._lock:
            self._feeders += 1
        threading.Thread(
            target=self._feed, args=(call, iterable), name=f"hakobu-{self._prefix}-feed", daemon=True
        ).start()
        return call

    # --- what callers use -------------------------------------------------------------------------

    def imap(self, iterable: Iterable[Any], ordered: bool = True) -> Outputs:
        """The outputs, lazily: in input order (``ordered``) or as inputs finish. An input whose
        stage raised raises its error at its place; the iterator goes on after it."""
        return Outputs(self._start_call(iterable, ordered))

    def map(self, iterable: Iterable[Any], ordered: bool = True) -> list[Any]:
        """Every output, as a list. The first error raises: the inputs already fed still finish
        (their outputs are dropped) and the rest of ``iterable`` is not read."""
        outputs = self.imap(iterable, ordered)
        try:
            return list(outputs)
        except BaseException:
            outputs.close()  # Ctrl-C, or an error: what is still to come is dropped
            raise

    def amap(self, iterable: Iterable[Any], ordered: bool = True) -> AsyncOutputs:
        """imap for asyncio: ``async for out in pipe.amap(inputs)``."""
        loop = asyncio.get_running_loop()
        return AsyncOutputs(self._start_call(iterable, ordered), loop)

    def map_async(
        self,
        iterable: Iterable[Any],
        callback: Optional[Callable[[list[Any]], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> ApplyResult[list[Any]]:
        """map without waiting: a multiprocessing-style AsyncResult (``get()``, ``ready()``...),
        with the callbacks called on the pipeline's monitor thread."""
        result: ApplyResult[list[Any]] = ApplyResult(None, callback, error_callback)
        call = _Call(True, sys.maxsize, self._room)  # its outcomes wait for the end anyway

        def complete() -> None:
            outputs: list[Any] = []
            for ok, value in call.results():
                if not ok:
                    result._complete(False, value)
                    return
                outputs.extend(value)
            result._complete(True, outputs)

        call.on_complete = complete
        self._check_running()
        with self._lock:
            self._feeders += 1
        threading.Thread(
            target=self._feed, args=(call, iterable), name=f"hakobu-{self._prefix}-feed", daemon=True
        ).start()
        return result

    def submit(self, item: Any) -> concurrent.futures.Future[Any]:
        """Sends one input; its Future's result is the output (a list of outputs when a stage
        returned a list, an empty one when it returned SKIP), or the stage's error."""
        self._check_running()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            self._feeders += 1
        try:
            if not self._admit(None):
                raise ValueError("Pipeline not running")
            self._put_input(item, _FutureSink(future))
        finally:
            with self._lock:
                self._feeders -= 1
                self._room.notify_all()
        return future

    def stats(self) -> list[dict[str, Any]]:
        """Per stage: ``name``, ``workers``, ``items``, ``errors``, ``compute_seconds``,
        ``input_wait_seconds``, ``output_wait_seconds`` (every worker it had) and ``queue`` (its
        input queue's statistics)."""
        with self._lock:
            board = self._board
            rows = self._final_rows if board is None else np.array(board.rows, copy=True)
            retired = self._retired.copy()
            queues = self._queues
            ended = not queues
        described = []
        for index, stage in enumerate(self._stages):
            mine = rows[self._first_row[index] : self._first_row[index + 1]].sum(axis=0) + retired[index]
            described.append(
                {
                    "name": stage.name,
                    "workers": stage.workers,
                    "items": int(mine[COLUMN["items"]]),
                    "errors": int(mine[COLUMN["errors"]]),
                    "compute_seconds": float(mine[COLUMN["compute_seconds"]]),
                    "input_wait_seconds": float(mine[COLUMN["input_wait_seconds"]]),
                    "output_wait_seconds": float(mine[COLUMN["output_wait_seconds"]]),
                    "queue": self._final_queue_stats[index] if ended else queues[index].stats(),
                }
            )
        return described

    # --- life cycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Takes no new calls; what was given finishes and is delivered, then the workers exit."""
        with self._room:
            if self._state == RUN:
                self._state = CLOSE
            self._room.notify_all()

    def terminate(self) -> None:
        """Kills the workers now; inputs not finished fail with hakobu.PoolTerminated."""
        on_monitor = threading.current_thread() is self._thread
        with self._room:
            self._state = TERMINATE
            self._room.notify_all()
        if not on_monitor:
            queues = self._queues
            try:
                if queues:
                    queues[-1].unlink()  # wakes the monitor at once
            except _errors.HakobuError:
                pass
            self._thread.join()
            # Feeders blocked in a put wake as the monitor removes the queues. Let them leave
            # (bounded: one may wait in the caller's own iterable), so that none is still in
            # a queue call when the interpreter exits.
            deadline = time.monotonic() + FEEDERS_LEAVE_SECONDS
            with self._room:
                while self._feeders and (left := deadline - time.monotonic()) > 0:
                    self._room.wait(left)

    def join(self, timeout: Optional[float] = None) -> None:
        """Waits until the workers have exited and the queues are gone (after close/terminate)."""
        if self._state == RUN:
            raise ValueError("Pipeline is still running: close() or terminate() it first")
        if threading.current_thread() is self._thread:
            raise RuntimeError("a pipeline cannot be joined from one of its own callbacks")
        self._thread.join(_checks.timeout(timeout))

    def __enter__(self) -> Pipeline:
        self._check_running()
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.terminate()  # Ctrl-C: stop now, as hakobu.Executor does
            return
        self.close()
        self.join()

    def __reduce__(self) -> Any:
        raise NotImplementedError("pipeline objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        stages = " -> ".join(f"{stage.name}x{stage.workers}" for stage in self._stages)
        return f"<hakobu.Pipeline {self.name!r} state={self._state} {stages}>"

    # --- the monitor thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            for index, stage in enumerate(self._stages):
                for offset in range(stage.workers):
                    self._spawn(index, self._first_row[index] + offset)
            while True:
                self._receive()
                self._reap()
                self._send_again()
                self._advance_close()
                self._look_for_lost()
                if self._state == TERMINATE or self._broken is not None:
                    break
                if self._ended and not self._workers:
                    break
        except BaseException as error:  # noqa: BLE001 - a fault of ours: every input fails with it
            failure = _errors.BrokenPool(f"the pipeline's monitor failed ({describe_exception(error)})")
            failure.__cause__ = error
            self._break(failure)
        finally:
            self._release()

    def _spawn(self, stage: int, row: int) -> None:
        number = next(self._numbers)
        control = Queue(f"{self._prefix}-w{number}", CONTROL_CAPACITY, create=True, domain=self._domain)
        try:
            process = start_worker_process(
                "hakobu._pipeline.worker",
                [
                    control.name,
                    self._queues[stage].name,
                    self._queues[stage + 1].name,
                    self.name,
                    str(os.getpid()),
                ],
                domain=self._domain,
                workers=self._workers_total,
                threads_per_worker=None,
            )
            slot = _arrays.zeros(SLOT_FIELDS, np.int64, domain=self._domain)
            script = main_script()
            where = None if script is None else (script.path, script.module)
            control.put(slot, block=False)  # alone in its message: by reference
            control.put(
                hello_message(list(sys.path), list(sys.argv), where, self._functions[stage]), block=False
            )
            setup = StageSetup(stage, self._stages[stage].name, row, self._queues[-1].name)
            control.put(tuple(setup), block=False)
        except BaseException:
            discard_queue(control)
            raise
        control.close()  # the worker removes it once read
        with self._lock:
            self._workers[number] = _Worker(number, stage, row, process, slot, f"{self._prefix}-w{number}")

    def _receive(self) -> None:
        results = self._queues[-1]
        for count in range(DRAIN_BATCH):
            try:
                record = results.get(timeout=POLL_SECONDS if count == 0 else 0.0)
            except _errors.Empty:
                return
            except (_errors.Closed, _errors.Unlinked):
                if self._state != TERMINATE:  # removed from under us (hakobu rm): nothing can arrive
                    self._break(
                        _errors.BrokenPool(f"the results queue of pipeline {self.name!r} was removed")
                    )
                    with self._lock:
                        self._state = TERMINATE
                return
            self._handle(record)
            del record

    def _handle(self, record: Any) -> None:
        # Records come through shared memory: anything malformed is dropped.
        if type(record) is not tuple or len(record) < 5:
            return
        kind, seq, attempt, path = record[:4]
        path = valid_path(path)
        if path is None or type(seq) is not int or type(attempt) is not int:
            return
        with self._lock:
            entry = self._inputs.get(seq)
        if entry is None or entry.attempt != attempt:
            return  # of a run given up (retried, or failed)
        if kind == ITEM and len(record) == 6:
            try:
                value = unpack(record[4], record[5])
            except Exception as why:  # noqa: BLE001 - this output fails its input
                value = None
                self._note_error(
                    entry,
                    _errors.RemoteError(
                        f"an output of input {seq} cannot be rebuilt in the parent ({describe_exception(why)})"
                    ),
                )
            else:
                entry.outputs.append((path, value))
            entry.fanned = entry.fanned or bool(path)
        elif (
            kind == ERROR
            and len(record) == 7
            and type(record[4]) is int
            and 0 <= record[4] < len(self._stages)
        ):
            error = rebuild_error(record[5], record[6])
            self._note_error(
                entry, _named(error, self._stages[record[4]].name, record[4], len(self._stages), seq)
            )
        elif kind == DROP and len(record) == 5:
            entry.fanned = True
        else:
            return
        entry.done += share(path)
        if entry.done >= 1:
            self._complete(entry)

    @staticmethod
    def _note_error(entry: _Input, error: BaseException) -> None:
        if entry.error is None:
            entry.error = error  # the first one is what the caller sees

    def _complete(self, entry: _Input, error: Optional[BaseException] = None) -> None:
        """The input is done: its outcome goes to its caller."""
        with self._lock:
            if self._inputs.pop(entry.seq, None) is None:
                return
            self._room.notify_all()
        if error is None:
            error = entry.error
        try:
            if error is not None:
                entry.deliver(False, error, entry.fanned)
            else:
                entry.outputs.sort(key=lambda output: output[0])
                entry.deliver(True, [value for _, value in entry.outputs], entry.fanned)
        except BaseException:  # noqa: BLE001 - a user callback raised: report it, keep serving
            _report_callback_error()
        entry.outputs = []

    def _reap(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            if worker.process.poll() is not None:
                self._bury(worker)

    def _bury(self, worker: _Worker) -> None:
        """Forgets an exited worker: what it held fails or runs again; it is replaced if needed."""
        with self._lock:
            self._workers.pop(worker.number, None)
            if self._board is not None:
                self._retired[worker.stage] += self._board.rows[worker.row]
                self._board.rows[worker.row] = 0.0
        _remove_queue(worker.control, self._domain)
        state, seq, attempt = (int(worker.slot[field]) for field in (STATE, SEQ, ATTEMPT))
        worker.slot = np.zeros(0)  # let the shared slot go
        if worker.killed:
            return
        left_as_told = state == EXITED and worker.process.returncode == 0
        if left_as_told:
            return
        _core.collect_garbage(self._domain)  # what it held in shared memory comes back
        if state == HOLDING:
            with self._lock:
                entry = self._inputs.get(seq)
            if entry is not None and entry.attempt == attempt:
                self._lost(entry, self._lost_error(worker, entry))
        elif state == WAITING:
            with self._lock:
                self._suspect = True  # it may have taken an item unseen (see "Lost items")
                self._suspect_stages.add(self._stages[worker.stage].name)
                self._quiet_since = None
        if state == STARTING:
            self._start_failures += 1
            if self._start_failures >= START_FAILURES_TO_BREAK:
                self._break(
                    _errors.BrokenPool(
                        f"the workers of stage {self._stages[worker.stage].name!r} exit before they start "
                        f"(worker {worker.number}, pid {worker.process.pid}, {worker.how_it_ended()}); see their "
                        "error output above"
                    )
                )
                return
        else:
            self._start_failures = 0
        if self._state != TERMINATE and self._broken is None and not self._ended:
            self._spawn(worker.stage, worker.row)

    def _lost_error(self, worker: _Worker, entry: _Input) -> _errors.WorkerLost:
        stage = self._stages[worker.stage].name
        code = worker.process.returncode
        message = (
            f"a worker of stage {stage!r} (pid {worker.process.pid}) {worker.how_it_ended()} while it held "
            f"input {entry.seq}; the pipeline replaced the worker"
        )
        if code == -signal.SIGKILL:
            message += "; SIGKILL is also how the kernel's out-of-memory killer ends a process (see `dmesg`)"
        message += (
            f"; the input was run {entry.lost_runs + 1} times (retries={self._retries})"
            if self._retries
            else "; pass retries=N to run such inputs again"
        )
        error = _errors.WorkerLost(
            message,
            worker=worker.number,
            pid=worker.process.pid,
            signal=-code if code is not None and code < 0 else None,
            exit_code=code if code is not None and code >= 0 else None,
            task=entry.seq,
        )
        error.stage = stage  # type: ignore[attr-defined]
        return error

    def _lost(self, entry: _Input, error: BaseException) -> None:
        """Its run died with a worker: it runs again from the first stage, or fails."""
        entry.lost_runs += 1
        if entry.lost_runs <= self._retries and self._state != TERMINATE:
            entry.attempt += 1
            entry.done = Fraction()
            entry.outputs = []
            entry.fanned = False
            entry.error = None
            self._resend.append(entry)
        else:
            self._complete(entry, error)

    def _send_again(self) -> None:
        """Puts the inputs that run again, without waiting for room (next round if there is none)."""
        while self._resend:
            what = self._resend[0]
            with self._lock:
                if self._inputs.get(what.seq) is not what:
                    self._resend.popleft()
                    continue
            if not self._put_lock.acquire(blocking=False):
                return  # a feeder waits for room there: next round
            try:
                self._senders[0].put((ITEM, what.seq, what.attempt, (), *pack(what.value)), block=False)
            except _errors.Full:
                return
            except Exception as error:  # noqa: BLE001 - e.g. it cannot be pickled anymore
                self._resend.popleft()
                self._complete(what, error)
                continue
            finally:
                self._put_lock.release()
            self._resend.popleft()

    def _advance_close(self) -> None:
        """Closing, once every input is done and no feeder is left: the parent's part of every
        stage's input ends; the end of stream flows down the stages as their workers leave."""
        with self._lock:
            if self._state != CLOSE or self._ended:
                return
            if self._feeders or self._putting or self._inputs or self._resend:
                return
            self._ended = True
            senders = self._senders[:-1]  # the results queue's stays: the monitor reads it to the end
        for sender in senders:
            try:
                sender.close()
            except _errors.HakobuError:
                pass

    def _look_for_lost(self) -> None:
        """After a worker died WAITING: once the pipeline is quiet, what is outstanding is lost."""
        with self._lock:
            if not self._suspect:
                return
            busy = self._putting or self._resend
            workers = list(self._workers.values())
        if busy or any(queue.qsize() for queue in self._queues):
            self._quiet_since = None
            return
        look = tuple((worker.number, int(worker.slot[STATE]), int(worker.slot[TAKES])) for worker in workers)
        if any(state not in (STARTING, WAITING, EXITED) for _, state, _ in look):
            self._quiet_since = None
            return
        if self._quiet_since != look:
            self._quiet_since = look  # quiet at one look: look again a poll later
            return
        with self._lock:
            lost = list(self._inputs.values())
            stages = ", ".join(repr(name) for name in sorted(self._suspect_stages))
            self._suspect = False
            self._suspect_stages.clear()
            self._quiet_since = None
            self._room.notify_all()
        for entry in lost:
            error = _errors.WorkerLost(
                f"input {entry.seq} was lost with a worker of stage {stages} that died as it took it "
                "(between taking an item and recording which); the pipeline replaced the worker"
                + ("; pass retries=N to run such inputs again" if not self._retries else ""),
                task=entry.seq,
            )
            error.stage = stages  # type: ignore[attr-defined]
            self._lost(entry, error)

    def _break(self, error: BaseException) -> None:
        """Nothing more can run: every input fails with ``error``, new ones are refused."""
        with self._lock:
            if self._broken is not None:
                return
            self._broken = error
            entries = list(self._inputs.values())
            self._room.notify_all()
        for entry in entries:
            self._complete(entry, error)

    def _terminated_error(self, seq: int) -> _errors.PoolTerminated:
        return _errors.PoolTerminated(
            f"the pipeline {self.name!r} was terminated before input {seq} finished"
        )

    def _release(self) -> None:
        """The monitor's last act: no worker, no queue, no board left; what is unfinished fails."""
        with self._lock:
            workers = list(self._workers.values())
            workers_to_wait = workers if self._state != TERMINATE and self._broken is None else []
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in workers_to_wait:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for worker in workers:
            if worker.process.poll() is None:
                worker.killed = True
                try:
                    worker.process.kill()
                except ProcessLookupError:
                    pass
            worker.process.wait()
            self._bury(worker)
        with self._room:
            if self._state != TERMINATE:
                self._state = CLOSE  # a broken pipeline takes nothing more either
            entries = list(self._inputs.values())
            self._room.notify_all()
        for entry in entries:
            self._complete(
                entry, self._broken if self._broken is not None else self._terminated_error(entry.seq)
            )
        self._remove_queues()
        with self._lock:
            board, self._board = self._board, None  # dropped: a finished pipeline holds no handle
            if board is not None:
                self._final_rows = np.array(board.rows, copy=True)
        if board is not None:
            board.remove()
        del board
        if workers:
            _core.collect_garbage(self._domain)
        _live.discard(self)

    def _remove_queues(self) -> None:
        """Removes the queues and drops them: a finished pipeline keeps no handle (nor the domain) open."""
        with self._lock:
            queues, self._queues = self._queues, []
            senders, self._senders = self._senders, []
            if queues:
                self._final_queue_stats = [queue.stats() for queue in queues]
        for queue in senders:
            try:
                queue.close()
            except _errors.HakobuError:
                pass  # closed already (the end of the stages' inputs)
        for queue in queues:
            discard_queue(queue)


class _CallSink:
    """Delivers one input's outcome to its place in a call."""

    def __init__(self, call: _Call, index: int) -> None:
        self.call = call
        self.index = index

    def __call__(self, ok: bool, value: Any, fanned: bool) -> None:
        self.call.finish(self.index, ok, value)


class _FutureSink:
    """Delivers one input's outcome to a Future: the output itself unless it fanned out."""

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self.future = future

    def __call__(self, ok: bool, value: Any, fanned: bool) -> None:
        try:
            if not ok:
                self.future.set_exception(value)
            elif not fanned and len(value) == 1:
                self.future.set_result(value[0])
            else:
                self.future.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass


def _named(error: BaseException, stage: str, index: int, count: int, seq: int) -> BaseException:
    """A stage's error, as itself, saying which stage raised it (a note, and ``error.stage``)."""
    note = f"raised in stage {stage!r} ({index + 1} of {count}) of a hakobu.Pipeline, on input {seq}"
    if hasattr(error, "add_note"):
        error.add_note(note)
    try:
        error.stage = stage  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass  # an exception type with slots: the note says it
    return error


def _remove_queue(name: str, domain: str) -> None:
    try:
        _core.remove(name, domain)
    except _errors.HakobuError:
        pass


def _report_callback_error() -> None:
    import traceback

    print("Exception in a callback of a hakobu pipeline (the pipeline goes on):", file=sys.stderr)
    traceback.print_exc()


def _at_exit() -> None:
    """At interpreter exit, pipelines still running are terminated (their workers die anyway)."""
    for pipeline in list(_live):
        if pipeline.owner_pid != os.getpid():
            continue
        if pipeline._state == RUN:
            warnings.warn(f"unclosed running pipeline {pipeline!r}", ResourceWarning, stacklevel=1)
        pipeline.terminate()


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_live.clear)
