"""What both engines share: the front-end half of an engine, and the process-wide hooks.

hakobu.Pool and hakobu.Executor (hakobu.pool) drive an engine through one
interface: state, name, submit, stats, open_feed, close_feed, wait_for_room,
close, terminate, join, finished, cancel_pending, owner_pid, workers,
drain_at_exit, description. EngineCore holds the part of it that does not
depend on where tasks run: the states (RUN, CLOSE, TERMINATE), the pending
queue, lazy producers (feeders), the manager thread's start and end, how
sinks are called, how an engine breaks. Its subclasses say how tasks reach
workers and how outcomes and deaths are learned: Engine (engine.py, local
worker processes) and DaskEngine (hakobu._dask.engine, a Dask cluster).

What a subclass provides
------------------------
* ``_poke()``, with the lock held, after a front-end changed what the engine
  has to do (tasks submitted, a feeder ended, close, cancel_pending): the
  local engine dispatches there and then, the Dask engine wakes its manager.
  It returns the tasks that could not be sent, for their sinks.
* ``_interrupt(on_manager)``, with the lock held, when terminate() set the
  state: wakes the manager at once (terminate() then waits for it unless
  called from the manager thread, i.e. from a callback).
* ``_room_limit()``, with the lock held: how many pending tasks make a lazy
  producer wait (wait_for_room).
* ``_cancellable(task)``: whether cancel_pending cancels a pending task.
* ``_take_on_break()``, with the lock held, when the engine breaks: the
  tasks to fail now (the manager fails the rest itself).
* ``_serve()`` (the manager thread's loop), ``_after_fault()`` (after the
  loop raised and the engine broke) and ``_release()`` (the manager's last
  act).

Process-wide hooks
------------------
Every engine is in ``_live_engines`` while its manager thread runs. At
interpreter exit, Executors finish their work and Pools are terminated
(_at_exit); a forked child forgets its parent's engines (_forget_in_child).
Both are installed when this module is imported (by an engine module, which
hakobu.pool imports when it makes the first pool): a process that never
makes a pool, a worker above all, installs neither. An engine module
imported after libraries whose own exit hooks its engines need (Dask's
closes its clients) calls install_at_exit() again, so that the hook runs
before theirs.

Locking rules
-------------
``_lock`` guards the engine's state: ``_pending``, ``_state``, ``_broken``
and ``_feeders``, and what each subclass adds (its module's docstring says
what); ``_room`` (on the same lock) wakes lazy producers waiting for room.
Sinks are called without it, on the manager thread as a rule (user
callbacks run there, as multiprocessing and concurrent.futures run them on
their result threads: they should return quickly; they may submit more
work).
"""

from __future__ import annotations

import atexit
import collections
import itertools
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, Optional

from .. import _errors
from .pickling import describe_exception, rebuild_error, unpack
from .protocol import Packed
from .tasks import CLOSE, RUN, TERMINATE, Outcome, Task

_live_engines: set[EngineCore] = set()
_live_lock = threading.Lock()


class EngineCore:
    """The front-end half of an engine and its manager thread's frame; see the module's docstring."""

    workers: int

    def __init__(self, prefix: str, *, drain_at_exit: bool, description: str) -> None:
        self.drain_at_exit = drain_at_exit
        self.description = description
        self.owner_pid = os.getpid()
        self._prefix = prefix
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._pending: collections.deque[Task] = collections.deque()
        self._state = RUN
        self._broken: Optional[_errors.BrokenPool] = None
        self._feeders = 0  # lazy producers (imap) still submitting: a closing engine waits for them
        self._task_ids = itertools.count(1)
        self._counts: dict[str, int] = {}
        self._thread: threading.Thread

    def _start(self, thread_name: str) -> None:
        """Starts the manager thread (the subclass's last act in __init__)."""
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        with _live_lock:
            _live_engines.add(self)
        self._thread.start()

    # --- what the front-ends call (any thread) -------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def name(self) -> str:
        """The engine's prefix: of its queues' names and its workers' command lines (local), of its
        tasks' keys on the cluster (Dask)."""
        return self._prefix

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def submit(self, tasks: Sequence[Task], *, feeding: bool = False) -> bool:
        """Queues ``tasks`` (see _poke); False once the engine takes no more work. Raises
        BrokenPool.

        ``feeding``: from a lazy producer started while the engine ran, which
        may go on after close() (as multiprocessing's imap does).
        """
        if os.getpid() != self.owner_pid:
            raise RuntimeError(
                "a pool made before os.fork() cannot be used in the child: make a new pool there"
            )
        with self._lock:
            if self._broken is not None:
                raise self._broken_error()
            if self._state != RUN and not (feeding and self._state == CLOSE):
                return False
            for task in tasks:
                task.id = next(self._task_ids)
                self._pending.append(task)
            failed = self._poke()
        self._finish_all(failed)
        return True

    def stats(self) -> dict[str, int]:
        """What the engine counted (``_counts``: each engine says what it counts)."""
        with self._lock:
            return dict(self._counts)

    def open_feed(self) -> None:
        """A lazy producer (imap) starts submitting; a closing engine waits for its end."""
        with self._lock:
            self._feeders += 1

    def close_feed(self) -> None:
        with self._lock:
            self._feeders -= 1
            failed = self._poke()  # a closing engine may now end
        self._finish_all(failed)

    def wait_for_room(self) -> None:
        """Waits while enough tasks wait already (_room_limit): lazy producers need not read ahead."""
        with self._room:
            while self._state != TERMINATE and self._broken is None:
                if len(self._pending) < self._room_limit():
                    return
                self._room.wait()

    def close(self) -> None:
        """Takes no more work; what was submitted finishes, then the engine lets its workers go."""
        with self._lock:
            if self._state == RUN:
                self._state = CLOSE
            self._room.notify_all()
            failed = self._poke()
        self._finish_all(failed)

    def terminate(self) -> None:
        """Unfinished tasks fail with PoolTerminated (never started: cancelled); the workers stop now."""
        on_manager = threading.current_thread() is self._thread
        with self._lock:
            self._state = TERMINATE
            self._room.notify_all()
            self._interrupt(on_manager)
        if not on_manager:  # from a callback: the manager sees the state
            self._thread.join()

    def join(self, timeout: Optional[float] = None) -> None:
        """Waits until the manager thread has let the workers go and ended."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a pool cannot be joined from one of its own callbacks")
        self._thread.join(timeout)

    def cancel_pending(self) -> None:
        """Cancels the pending tasks that _cancellable allows (Executor.shutdown(cancel_futures=True))."""
        with self._lock:
            cancelled = [task for task in self._pending if self._cancellable(task)]
            kept = [task for task in self._pending if not self._cancellable(task)]
            self._pending.clear()
            self._pending.extend(kept)
            self._room.notify_all()
            failed = self._poke()
        for task in cancelled:
            self._cancel(task, _errors.PoolTerminated("cancelled before it started"))
        self._finish_all(failed)

    # --- for the subclasses' dispatch (the lock held) --------------------------------------------

    def _start_next(self) -> Optional[Task]:
        """Takes the first pending task to send it, its sink told it starts (a task that waits again
        after its worker died started already); None when it was cancelled while it waited."""
        task = self._pending.popleft()
        if not task.started:
            if not task.sink.start():
                return None
            task.started = True
        return task

    # --- what workers send back (the manager thread, the lock not held) -------------------------

    def _rebuilt(self, task: Task, results: Packed, where: str) -> tuple[bool, Any]:
        """A task's pickled results unpickled ``where`` (the engine's side): (True, them), else
        (False, the RemoteError saying why), for its sink."""
        try:
            return True, unpack(*results)
        except Exception as why:  # noqa: BLE001 - the task fails, the pool goes on
            error = _errors.RemoteError(
                f"the result of task {task.id} ({task.label}) cannot be rebuilt {where} "
                f"({describe_exception(why)})"
            )
            error.__cause__ = why
            return False, error

    def _initializer_failed(self, packed_error: Packed, where: str) -> None:
        """The pool's initializer raised ``where`` (in which worker): the engine breaks."""
        cause = rebuild_error(*packed_error)
        error = _errors.BrokenPool(
            f"the pool's initializer failed {where}: {describe_exception(cause)}; "
            "every pending task fails: fix the initializer and make a new pool"
        )
        error.__cause__ = cause
        self._break(error)

    # --- what a subclass provides ------------------------------------------------------------

    def _poke(self) -> list[Outcome]:
        raise NotImplementedError

    def _interrupt(self, on_manager: bool) -> None:
        raise NotImplementedError

    def _room_limit(self) -> int:
        raise NotImplementedError

    def _cancellable(self, task: Task) -> bool:
        raise NotImplementedError

    def _take_on_break(self) -> list[Task]:
        raise NotImplementedError

    def _serve(self) -> None:
        raise NotImplementedError

    def _after_fault(self) -> None:
        pass

    def _release(self) -> None:
        pass

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
            self._after_fault()
        finally:
            self._release()
            with _live_lock:
                _live_engines.discard(self)

    # --- sinks (any thread, the lock not held) ------------------------------------------------

    def _finish(self, task: Task, ok: bool, value: object) -> None:
        try:
            task.sink.finish(ok, value)
        except BaseException:  # noqa: BLE001 - a user callback raised: report it, keep serving
            _report_callback_error()

    def _finish_all(self, outcomes: list[Outcome]) -> None:
        for task, ok, value in outcomes:
            self._finish(task, ok, value)

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
            self._room.notify_all()
            tasks = self._take_on_break()
        for task in tasks:
            self._finish(task, False, self._broken_error())

    def _broken_error(self) -> _errors.BrokenPool:
        """A fresh copy of the error that broke the pool (one exception object per task)."""
        assert self._broken is not None
        error = _errors.BrokenPool(*self._broken.args)
        error.__cause__ = self._broken.__cause__
        return error


def _report_callback_error() -> None:
    print("Exception in a callback of a hakobu pool (the pool goes on):", file=sys.stderr)
    traceback.print_exc()


def _at_exit() -> None:
    """At interpreter exit: Executors finish their work (as concurrent.futures does), Pools are
    terminated, with a ResourceWarning for one still running (as multiprocessing's Pool warns)."""
    with _live_lock:
        engines = [engine for engine in _live_engines if engine.owner_pid == os.getpid()]
    for engine in engines:
        if engine.drain_at_exit:
            engine.close()
            engine.join()
        else:
            if engine.state == RUN:
                warnings.warn(f"unclosed running pool {engine.description}", ResourceWarning, stacklevel=1)
            engine.terminate()


def _forget_in_child() -> None:
    # A forked child has the engines' objects but not their threads or workers.
    _live_engines.clear()


def install_at_exit() -> None:
    """(Re)installs _at_exit so that it runs before the exit hooks registered so far (atexit runs
    the last registered first), e.g. Dask's, which close the clients under its engines."""
    atexit.unregister(_at_exit)
    atexit.register(_at_exit)


install_at_exit()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
