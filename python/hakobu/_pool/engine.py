"""The engine under hakobu.Pool and hakobu.Executor: worker processes, dispatch, deaths.

Both front-ends (hakobu.pool) are thin: they turn calls into Tasks
(tasks.py), hand them to an Engine, and receive each task's outcome through
its Sink. Everything about processes lives here, once; what travels and how
is in protocol.py and pickling.py, the figures in tuning.py, the handle on
each worker in handle.py.

Design
------
* Workers are fresh interpreters (``python -m hakobu._pool.worker``, see
  worker.py), each in its own process group. Each has an inbox queue;
  all share one results queue. The parent creates every queue (names
  ``pool-<pid>-<token>-in-<n>`` and ``-out``) and removes them when a worker
  dies, when the pool ends, and at interpreter exit.
* A task is pickled once, when it is submitted, in the submitting thread
  (what cannot be pickled fails its own result there, as in multiprocessing).
  Whoever finds a worker with room sends it work: the submitting thread
  itself when a worker is idle (a lone task goes straight to a worker, no
  thread in between), else the manager thread as results free workers up.
  Tasks waiting by then travel together: one message carries a batch of
  them, sized by how long the worker's recent tasks took (a batch lasts about
  BATCH_SECONDS; short tasks only) and shared out between the workers with
  room.
* One manager thread per engine starts the workers, reads the results queue
  and notices deaths. Nothing wakes it but workers' messages (results,
  READY, BYE when a worker leaves), the removal of the results queue (how
  terminate() reaches it at once) and its poll timer: submitting threads
  never wake it, they dispatch themselves.
* It keeps at most IN_FLIGHT_PER_WORKER messages in each worker's inbox. A
  worker sends the results of a batch together (at most RESULT_BATCH per
  message, none held longer than RESULT_HOLD_SECONDS: tuning.py) and notes in a
  progress slot, two integers of shared memory the engine reads after its
  death, which task it started and which it finished last. So the engine
  knows what a dead worker held: the task it was running fails with
  WorkerLost (or runs again when ``retries`` allow); the tasks after it
  never started, and those before it finished but their results died with
  the worker: both go back to the front of the pending queue.
* A second message goes to a busy worker (prefetch) only when sending takes a
  noticeable share of a task's time (big arguments) or tasks are short: then
  the worker starts it the moment it finishes the first. Long tasks go one
  at a time, to whichever worker is free, so a task never waits behind a long
  one while another worker idles (multiprocessing's shared queue gives that).
* It waits on the results queue for at most POLL_SECONDS, then polls the worker
  processes (waitpid): a dead worker is noticed within that time, whatever it
  was doing. Before judging a dead worker it drains the results queue, where
  whatever the worker finished before dying already is.

The front-end half (states, pending tasks, feeders, the manager thread's
frame, sinks, breaking) and the process-wide hooks (at exit, at fork) are
EngineCore's, in core.py.

Locking rules
-------------
Besides what core.py's rules say, ``_lock`` guards ``_workers`` and every
worker handle's bookkeeping (what it holds, its function cache mirror) and
sending to inboxes. Any thread may dispatch, holding it (_poke). Processes
are started and waited for, results are unpickled and sinks are called
without it.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from .. import _core, _errors
from .._queue import Queue
from .core import EngineCore
from .handle import WorkerHandle, discard_queue, start_worker_process
from .main_script import main_script, running_script
from .pickling import Function, describe_exception, pack, rebuild_error
from .protocol import (
    DONE,
    INIT_FAILED,
    READY,
    RESULT_RECORD,
    RESULTS_HEADER,
    STOP_FRAME,
    FrameReader,
    Packed,
    frame_message,
    hello_message,
    progress_slot,
    tasks_frame,
)
from .tasks import CLOSE, RUN, TERMINATE, Outcome, Task
from .tuning import (
    DRAIN_BATCH,
    FUNCTION_CACHE_SIZE,
    IN_FLIGHT_PER_WORKER,
    INBOX_CAPACITY,
    MAX_BATCH,
    MAX_BATCH_BYTES,
    POLL_SECONDS,
    RESULTS_CAPACITY,
    START_FAILURES_TO_BREAK,
    STOP_GRACE_SECONDS,
)


class Engine(EngineCore):
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
        description: str = "",
    ) -> None:
        if running_script():
            raise RuntimeError(
                "a pool was made while a pool worker ran the main script to find a function of it: make pools "
                'under the script\'s `if __name__ == "__main__":` guard (workers run the script without it)'
            )
        super().__init__(
            f"pool-{os.getpid()}-{secrets.token_hex(4)}", drain_at_exit=drain_at_exit, description=description
        )
        self.workers = workers
        self._max_tasks = max_tasks_per_worker
        self._retries = retries
        self._threads_per_worker = threads_per_worker
        self._domain = _core.default_domain()
        self._init = pack((initializer, tuple(initargs)))
        self._worker_numbers = itertools.count(1)
        self._workers: dict[int, WorkerHandle] = {}
        self._start_failures = 0
        # Messages and tasks both ways, for stats(): how well tasks and results are batched.
        self._counts = {"task_messages": 0, "tasks": 0, "result_messages": 0, "results": 0}
        capacity = max(RESULTS_CAPACITY, 8 * workers)
        # The engine counts as a sender of its own results queue: workers come and go,
        # and the queue must not look ended (get returning at once) while none runs.
        results = Queue(f"{self._prefix}-out", capacity, create=True, domain=self._domain, sends=True)
        self._results_name = results.name
        # Dropped when the engine ends: a finished pool keeps no handle (nor the domain) open.
        self._results: Optional[Queue] = results
        self._start(f"hakobu-{self._prefix}")

    # --- what the front-ends call (any thread); the rest is EngineCore's ---------------------

    # --- EngineCore's hooks (the lock held) -------------------------------------------------

    def _poke(self) -> list[Outcome]:
        """Any thread dispatches itself: a lone task goes straight to an idle worker, a closing
        engine tells idle workers to stop."""
        return self._dispatch()

    def _interrupt(self, on_manager: bool) -> None:
        if not on_manager and self._results is not None:
            try:
                self._results.unlink()  # wakes the manager at once (Closed/Unlinked in its get)
            except _errors.HakobuError:
                pass

    def _room_limit(self) -> int:
        """Enough for the messages in flight, batches of short tasks included."""
        batch = max((w.batch_size(MAX_BATCH, 1, None) for w in self._workers.values()), default=1)
        return self.workers * IN_FLIGHT_PER_WORKER * batch

    def _cancellable(self, task: Task) -> bool:
        return not task.started  # a started task waits again after its worker died: it runs again

    def _take_on_break(self) -> list[Task]:
        tasks = list(self._pending)
        self._pending.clear()
        for worker in self._workers.values():
            tasks.extend(worker.outstanding.values())
            worker.outstanding.clear()
            worker.in_flight.clear()
        return tasks

    def _after_fault(self) -> None:
        self._stop_workers(kill=True)

    # --- dispatch (any thread, the lock held) -----------------------------------------------

    def _dispatch(self) -> list[Outcome]:
        """Sends pending tasks to workers with room; stops idle workers of a closing engine.
        Returns the tasks that could not be sent, for their sinks (called without the lock)."""
        failed: list[Outcome] = []
        before = len(self._pending)
        while self._pending:
            with_room = [w for w in self._workers.values() if w.ready and not w.stopping and w.has_room()]
            if not with_room:
                break
            worker = min(with_room, key=lambda w: len(w.in_flight))
            size = worker.batch_size(len(self._pending), len(with_room), self._max_tasks)
            batch: list[Task] = []
            inline = 0
            while self._pending and len(batch) < size and inline < MAX_BATCH_BYTES:
                task = self._start_next()
                if task is None:
                    continue  # cancelled while it waited
                batch.append(task)
                inline += len(task.payload[0])
            if batch:
                failed += self._send(worker, batch)
        if len(self._pending) != before:
            self._room.notify_all()
        if self._state == CLOSE and not self._pending and not self._feeders:
            for worker in self._workers.values():
                if not worker.stopping:
                    self._retire(worker)
        return failed

    def _send(self, worker: WorkerHandle, batch: list[Task]) -> list[Outcome]:
        """One TASKS frame to ``worker`` (see protocol.py); the tasks fail if it cannot be sent."""
        used = {task.function.key for task in batch}
        new: dict[bytes, Function] = {}
        for task in batch:
            if task.function.key not in worker.known:
                new.setdefault(task.function.key, task.function)
        evict = max(0, len(worker.known) + len(new) - FUNCTION_CACHE_SIZE)
        forget = list(itertools.islice((key for key in worker.known if key not in used), evict))
        parts, buffers = tasks_frame(
            forget,
            [(key, fn.blob) for key, fn in new.items()],
            [(task.id, task.function.key, task.mode, task.payload) for task in batch],
        )
        sending = time.monotonic()
        try:
            worker.inbox.put(frame_message(parts, buffers), block=False)
        except Exception as error:  # noqa: BLE001 - e.g. /dev/shm full: the worker never saw the tasks
            return [(task, False, error) for task in batch]
        now = time.monotonic()
        worker.send_seconds = now - sending
        worker.in_flight.append([len(batch), now])
        for key in forget:
            del worker.known[key]
        for key in used:
            worker.known[key] = None
            worker.known.move_to_end(key)
        for task in batch:
            worker.outstanding[task.id] = task
        worker.sent += len(batch)
        self._counts["task_messages"] += 1
        self._counts["tasks"] += len(batch)
        if self._max_tasks is not None and worker.sent >= self._max_tasks:
            self._retire(worker)  # a fresh worker replaces it at once (_replenish)
        return []

    def _retire(self, worker: WorkerHandle) -> None:
        """Tells ``worker`` to exit once its inbox is done (it says BYE)."""
        worker.stopping = True
        try:
            worker.inbox.put(STOP_FRAME, block=False)
        except _errors.HakobuError:
            worker.kill()  # cannot tell it: it dies, and its tasks with it

    # --- the manager thread ---------------------------------------------------------------

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
            with self._lock:
                failed = self._dispatch()
                finished = state == CLOSE and self._idle()
            self._finish_all(failed)
            if finished:
                self._stop_workers(kill=False)
                return
            if not self._receive(POLL_SECONDS):
                with self._lock:
                    state = self._state
                if state != TERMINATE:
                    self._break(
                        _errors.BrokenPool(f"the pool's results queue {self._results_name!r} was removed")
                    )

    def _idle(self) -> bool:
        """Nothing left to run (the lock held)."""
        if self._pending or self._feeders:
            return False
        return not any(worker.outstanding for worker in self._workers.values())

    def _manager_results(self) -> Queue:
        """The results queue, which exists as long as the manager thread runs."""
        assert self._results is not None
        return self._results

    def _receive(self, timeout: float) -> bool:
        """Handles a message (waiting at most ``timeout``), then what else has arrived; False
        when the results queue is gone (terminate() removes it to wake the manager)."""
        results = self._manager_results()
        for count in range(DRAIN_BATCH):
            try:
                message = results.get(timeout=timeout if count == 0 else 0.0)
            except _errors.Empty:
                return True
            except (_errors.Closed, _errors.Unlinked):
                return False
            self._handle(message)
        return True

    def _drain(self) -> None:
        while True:
            try:
                message = self._manager_results().get(block=False)
            except (_errors.Empty, _errors.Closed, _errors.Unlinked):
                return
            self._handle(message)

    def _handle(self, message: Any) -> None:
        reader = FrameReader(message)
        tag, number, count = reader.fields(RESULTS_HEADER)
        records = []
        for _ in range(count):
            task_id, ok, length, buffers = reader.fields(RESULT_RECORD)
            records.append((task_id, ok, reader.payload(length, buffers)))
        if tag == DONE:
            done: list[tuple[Task, bool, Packed]] = []
            with self._lock:
                self._counts["result_messages"] += 1
                self._counts["results"] += len(records)
                worker = self._workers.get(number)
                for task_id, ok, payload in records:
                    task = worker.outstanding.pop(task_id, None) if worker is not None else None
                    if task is None:
                        continue  # it failed already (the pool broke)
                    done.append((task, ok, payload))
                if done:
                    assert worker is not None
                    worker.done(len(done))
                failed = self._dispatch()  # the worker has room again: send before unpickling
            for task, ok, payload in done:
                if ok:
                    ok, value = self._rebuilt(task, payload, "in the parent")
                else:
                    value = rebuild_error(*payload)
                self._finish(task, bool(ok), value)
            self._finish_all(failed)
        elif tag == READY:
            with self._lock:
                worker = self._workers.get(number)
                if worker is not None:
                    worker.ready = True
                self._start_failures = 0
                failed = self._dispatch()
            self._finish_all(failed)
        elif tag == INIT_FAILED and records:
            self._initializer_failed(records[0][2], f"in worker {number}")
        # BYE: a worker leaves as told; it is buried when its process has exited (_reap).

    def _replenish(self, state: str) -> None:
        """Starts workers up to the pool's size while there is or may be work."""
        with self._lock:
            wanted = state == RUN or bool(self._pending) or self._feeders > 0
            active = sum(1 for worker in self._workers.values() if not worker.stopping)
        if not wanted or self._broken is not None:
            return
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
            process = start_worker_process(
                "hakobu._pool.worker",
                [inbox.name, self._results_name, str(number), str(os.getpid())],
                domain=self._domain,
                workers=self.workers,
                threads_per_worker=self._threads_per_worker,
            )
            script = main_script()
            where = None if script is None else (script.path, script.module)
            # An array message of its own: sent by reference, so the worker writes this memory.
            progress = progress_slot(self._domain)
            inbox.put(progress, block=False)
            inbox.put(hello_message(list(sys.path), list(sys.argv), where, self._init), block=False)
        except BaseException:
            discard_queue(inbox)
            raise
        with self._lock:
            self._workers[number] = WorkerHandle(number, process, inbox, progress)

    def _reap(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        exited = [worker for worker in workers if worker.process.poll() is not None]
        if exited:
            self._drain()  # what they finished before dying is in the queue already
            for worker in exited:
                self._bury(worker)

    def _bury(self, worker: WorkerHandle) -> None:
        """Forgets an exited worker: its queue goes; its tasks run again or fail."""
        with self._lock:
            self._workers.pop(worker.number, None)
            tasks = list(worker.outstanding.values())
            worker.outstanding.clear()
            worker.in_flight.clear()
        discard_queue(worker.inbox)
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
                        "Check that `python -m hakobu._pool.worker` runs in this environment"
                    )
                )
        if not tasks:
            return
        running, again = worker.what_died(tasks)
        if running is not None:
            running.attempts += 1
        with self._lock:
            self._pending.extendleft(reversed(again))  # first in line again
            if running is not None and running.attempts <= self._retries:
                self._pending.appendleft(running)
                return
        if running is not None:
            self._finish(running, False, self._lost(worker, running))

    def _lost(self, worker: WorkerHandle, task: Task) -> _errors.WorkerLost:
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

    def _terminate_now(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.process.wait()
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
            running = [task for worker in workers for task in worker.outstanding.values()]
            for worker in workers:
                worker.outstanding.clear()
        for worker in workers:
            self._bury(worker)
        for task in running + pending:
            self._cancel(
                task,
                _errors.PoolTerminated(
                    f"the pool was terminated before task {task.id} ({task.label}) finished"
                ),
            )

    def _stop_workers(self, kill: bool) -> None:
        """Stops every worker (they finish their inbox first unless ``kill``) and forgets them."""
        with self._lock:
            workers = list(self._workers.values())
            for worker in workers:
                if kill:
                    worker.kill()
                elif not worker.stopping:
                    self._retire(worker)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.process.wait()
        self._drain()
        for worker in workers:
            self._bury(worker)

    def _release(self) -> None:
        """The manager's last act: no worker, no queue left."""
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:  # only after a fault of the engine itself
            worker.kill()
            worker.process.wait()
            self._bury(worker)
        with self._lock:
            results, self._results = self._results, None
        if results is not None:
            discard_queue(results)
