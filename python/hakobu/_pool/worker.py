"""A pool worker process: ``python -m hakobu._pool.worker INBOX RESULTS NUMBER PARENT_PID THREADS``.

The engine (engine.py) starts each worker as a fresh interpreter: nothing is
forked. The two speak the protocol of protocol.py; the worker imports that,
pickling and the tunables, never the engine, so that it installs none of the
engine's process-wide hooks (hakobu.pool imports the engine only when a pool
is made: a task may make one). The worker takes the parent's
sys.path and argv from its first message (and inherits its working
directory), runs the initializer, then runs tasks from its inbox until told
to stop or its inbox goes away. It runs the parent's main script (as
``__mp_main__``, its main guard false) only if a task names a function or
class of it, which the parent does only for a script with a main guard (see
main_script.py): scripts without one and notebooks are never run
again, their functions travel by value.

A worker exits by itself when its parent dies (PR_SET_PDEATHSIG with SIGHUP,
and a thread that watches getppid), removing the pool's queues the dead parent
cannot remove. It leaves in order: the running task is unwound (ParentGone,
raised in the main thread) and every hakobu object is released before the
interpreter exits normally, so that the library detaches this process from the
domain and the last process out removes the domain's files. It ignores SIGINT:
Ctrl-C in a terminal interrupts the parent, which then stops its workers.
"""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import signal
import sys
import threading
import time
import types
from typing import Any, Optional

from .. import _core, _errors
from .._queue import Queue
from . import main_script
from .pickling import describe_exception, pack_error, pack_result, unpack
from .protocol import (
    BYE,
    DONE,
    FUNCTION_RECORD,
    INIT_FAILED,
    KEY_BYTES,
    READY,
    TASK_RECORD,
    TASKS,
    TASKS_HEADER,
    FrameReader,
    call,
    frame_message,
    progress_view,
    read_hello,
    results_frame,
)
from .threads import limit_threads
from .tuning import (
    PARENT_EXIT_SECONDS,
    PARENT_WATCH_SECONDS,
    RESULT_BATCH,
    RESULT_HOLD_SECONDS,
    UNWIND_SECONDS,
)

_PR_SET_PDEATHSIG = 1


# Set once the main thread is on its way out (ParentGone raised, or its work done): from then
# on a hang-up raises nothing, so that the cleanup runs to its end.
_LEAVING = threading.Event()


class ParentGone(BaseException):
    """Raised in the main thread when the pool's parent has gone (or its pool ended): unwinds
    the running task so that its hakobu objects are released before the worker exits.

    A BaseException, as SystemExit, and passed through every handler of tasks and initializers.
    """


class _Unloadable:
    """A cached function whose blob failed to load: every task using it fails the same way."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ScriptImport:
    """The parent's main script, run once as module ``__mp_main__`` the first time a task needs
    one of its names (see main_script.py), as multiprocessing's spawn imports it."""

    def __init__(self, path: str, module_name: Optional[str]) -> None:
        self.path = path
        self.module_name = module_name
        self.module: Optional[types.ModuleType] = None
        self.failure: Optional[BaseException] = None

    def load(self) -> types.ModuleType:
        if self.module is not None:
            return self.module
        if self.failure is None:
            module = types.ModuleType("__mp_main__")
            module.__file__ = self.path
            if self.module_name:
                module.__package__ = self.module_name.rpartition(".")[0]
            sys.modules["__mp_main__"] = module
            try:
                with main_script.script_running():
                    with open(self.path, "rb") as source:
                        code = compile(source.read(), self.path, "exec")
                    exec(code, module.__dict__)
            except ParentGone:
                raise
            except BaseException as error:  # noqa: BLE001 - every task that needs it fails with it
                self.failure = error
                sys.modules.pop("__mp_main__", None)
            if self.failure is None:
                # As multiprocessing: code that imports __main__ finds the script.
                sys.modules["__main__"] = module
                self.module = module
                return module
        assert self.failure is not None
        failure = ImportError(
            f"the pool's worker could not run the main script {self.path} to find a function or class of it "
            f"({describe_exception(self.failure)}); see the cause"
        )
        raise failure from self.failure


def _die_with_parent(parent_pid: int, queue_names: tuple[str, str]) -> None:
    """Makes the worker leave when the parent dies, removing the pool's queues the parent cannot
    remove anymore.

    The kernel sends SIGHUP (PR_SET_PDEATHSIG) when the parent's thread that
    started this worker ends: when the parent dies, or, if the parent lives
    on, when its pool has ended (then the parent removes the queues). A
    thread watching getppid() covers the rest (other systems, a task that
    takes SIGHUP for itself). Either way the main thread gets ParentGone and
    main() exits in order; os._exit only when it has not within
    UNWIND_SECONDS. SIGTERM keeps its default: a worker killed by it is
    reported as such.
    """
    main_thread = threading.main_thread().ident

    def parent_gone() -> bool:
        return os.getppid() != parent_pid

    def remove_queues() -> None:
        # Wakes a main thread blocked on the inbox (Unlinked) as well.
        for name in queue_names:
            try:
                _core.remove(name)
            except _errors.HakobuError:
                pass  # already removed (by the parent, or by another worker)

    def on_hang_up(signum: int, frame: Any) -> None:
        if _LEAVING.is_set():
            return  # unwinding already: a second ParentGone would interrupt the cleanup
        # The starting thread ended; if the whole parent is dying, we are reparented in a moment.
        deadline = time.monotonic() + PARENT_EXIT_SECONDS
        while not parent_gone() and time.monotonic() < deadline:
            time.sleep(0.01)
        if parent_gone():
            remove_queues()
        _LEAVING.set()
        threading.Thread(target=exit_anyway, name="hakobu-worker-exit", daemon=True).start()
        raise ParentGone

    def exit_anyway() -> None:
        time.sleep(UNWIND_SECONDS)
        os._exit(1)  # the main thread is stuck (in native code): leave without releasing

    def watch() -> None:
        while not parent_gone():
            time.sleep(PARENT_WATCH_SECONDS)
        remove_queues()
        if not _LEAVING.is_set() and main_thread is not None:
            signal.pthread_kill(main_thread, signal.SIGHUP)  # runs on_hang_up in the main thread
        exit_anyway()  # in case the main thread never gets back to Python to run it

    signal.signal(signal.SIGHUP, on_hang_up)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGHUP, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher thread below still notices
    if parent_gone():  # died before the prctl took effect; this process holds nothing of hakobu yet
        remove_queues()
        os._exit(1)
    threading.Thread(target=watch, name="hakobu-parent-watch", daemon=True).start()


class WorkerLoop:
    """This process's side of the pool, the loop that serves its inbox: its two queues, its
    cache of unpickled functions, its progress slot and the results it holds.

    Results are held and sent together while a batch runs (one message for
    up to RESULT_BATCH of them), never longer than RESULT_HOLD_SECONDS: a
    flusher thread sends them if the task after them runs longer. The
    progress slot (shared memory the parent reads when this process dies)
    says which task started and which finished last, so that held results
    lost with the process are told apart from the task that killed it.

    Locking: ``_hold`` guards ``held`` and ``held_since`` and is held while
    sending results, so that results leave in order whichever thread sends.
    """

    def __init__(self, inbox: Queue, results: Queue, number: int) -> None:
        self.inbox = inbox
        self.results = results
        self.number = number
        self.functions: dict[bytes, Any] = {}
        self.progress: Optional[memoryview] = None  # [started task id, finished task id]
        self.held: list[tuple[int, bool, Any]] = []
        self.held_since = 0.0
        self._hold = threading.Condition(threading.Lock())
        self._closing = False
        self._flusher_thread: Optional[threading.Thread] = None

    def start(self, threads: int) -> bool:
        """Takes the HELLO message, runs the initializer; False if it failed (the parent is told)."""
        try:
            progress = self.inbox.get()
            hello = self.inbox.get()
        except (_errors.Unlinked, _errors.Closed, _errors.EndOfStream):
            return False  # the pool went away before this worker started
        told = read_hello(hello)
        if told is None:
            return False  # stopped before it started
        self.progress = progress_view(progress)
        if self.progress is None:
            return False
        del progress, hello
        sys.path[:] = told.sys_path  # functions pickled by reference import as in the parent
        sys.argv[:] = told.argv  # what the main script sees, should a task need it run
        where = told.main_script
        main_script.adopt_in_worker(where, None if where is None else ScriptImport(*where).load)
        try:
            initializer, initargs = unpack(told.init_stream, told.init_buffers)
            del told
            if initializer is not None:
                initializer(*initargs)
        except ParentGone:
            raise
        except BaseException as error:  # noqa: BLE001 - the parent decides what it means
            self.send(INIT_FAILED, [(0, False, pack_error(error))])
            return False
        limit_threads(threads)  # after the initializer: it may have loaded libraries
        self.send(READY, [])
        self._flusher_thread = threading.Thread(target=self._flusher, name="hakobu-worker-flush", daemon=True)
        self._flusher_thread.start()
        return True

    def stop(self) -> None:
        """Ends the flusher thread, so that nothing refers to the queues once they are closed."""
        with self._hold:
            self._closing = True
            self._hold.notify()
        if self._flusher_thread is not None:
            self._flusher_thread.join(UNWIND_SECONDS)

    def send(self, tag: int, records: list[tuple[int, bool, Any]]) -> None:
        self.results.put(frame_message(*results_frame(tag, self.number, records)))

    def serve(self) -> None:
        while True:
            try:
                message = self.inbox.get()
            except (_errors.Unlinked, _errors.Closed, _errors.EndOfStream):
                return  # the pool went away (its inbox handle closed, or its process died)
            reader = FrameReader(message)
            del message
            if reader.tag() != TASKS:
                self.send(BYE, [])
                return
            try:
                self.run_batch(reader)
            except (_errors.Unlinked, _errors.Closed):
                return
            del reader  # let the arguments' shared memory go before the next message

    def run_batch(self, reader: FrameReader) -> None:
        """Runs a TASKS frame's tasks in order; their results leave by the end of the batch."""
        assert self.progress is not None
        _, forgotten, functions, tasks, first = reader.fields(TASKS_HEADER)
        self.progress[0] = first  # a crash while loading the functions is the first task's
        for _ in range(forgotten):
            self.functions.pop(bytes(reader.raw(KEY_BYTES)), None)
        for _ in range(functions):
            key, length, count = reader.fields(FUNCTION_RECORD)
            blob, _ = reader.payload(length, count)
            try:
                self.functions[key] = pickle.loads(blob)
            except ParentGone:
                raise
            except BaseException as error:  # noqa: BLE001 - reported with each task that uses it
                self.functions[key] = _Unloadable(error)
        for left in range(tasks - 1, -1, -1):
            task_id, key, mode, length, count = reader.fields(TASK_RECORD)
            self.progress[0] = task_id
            stream, buffers = reader.payload(length, count)
            record = (task_id, *self.run(key, mode, stream, buffers))
            del stream, buffers
            self.progress[1] = task_id
            large = bool(record[2][1])  # big arrays in the result: they leave at once, never held
            with self._hold:
                self.held.append(record)
                del record  # the held list owns it: sent, it is freed
                now = time.monotonic()
                if len(self.held) == 1:
                    self.held_since = now
                    if left and not large:
                        self._hold.notify()  # the flusher watches its age
                if (
                    not left
                    or large
                    or len(self.held) >= RESULT_BATCH
                    or now - self.held_since >= RESULT_HOLD_SECONDS
                ):
                    self._flush()

    def _flush(self) -> None:
        """Sends the held results (``_hold`` held)."""
        held, self.held = self.held, []
        try:
            self.send(DONE, held)
        except (_errors.Unlinked, _errors.Closed):
            raise
        except Exception as error:  # noqa: BLE001 - e.g. /dev/shm full: the tasks fail with it
            failure = pack_error(error)
            self.send(DONE, [(task_id, False, failure) for task_id, _, _ in held])

    def _flusher(self) -> None:
        """Sends results held longer than RESULT_HOLD_SECONDS while a task runs."""
        with self._hold:
            while True:
                while not self.held and not self._closing:
                    self._hold.wait()
                if self._closing:
                    return
                wait = self.held_since + RESULT_HOLD_SECONDS - time.monotonic()
                if wait > 0:
                    self._hold.wait(wait)
                    continue
                try:
                    self._flush()
                except Exception:  # noqa: BLE001 - the queue went away: the main thread sees it too
                    return

    def run(self, key: bytes, mode: int, stream: Any, buffers: Any) -> tuple[bool, Any]:
        function = None
        try:
            function = self.functions.get(key)
            if function is None:
                raise _errors.Corrupt("a task names a function the worker was never sent")
            if isinstance(function, _Unloadable):
                raise function.error
            items = unpack(stream, buffers)
            results = call(function, mode, items)
            del items
        except ParentGone:
            raise
        except BaseException as error:  # noqa: BLE001 - as concurrent.futures: SystemExit too
            return False, pack_error(error)
        return pack_result(results, function, to="the parent")


def _work(inbox_name: str, results_name: str, number: int, threads: int) -> int:
    try:
        inbox, results = Queue(inbox_name, create=False), Queue(results_name, create=False)
    except _errors.NotFound:
        return 1  # the pool was closed before this worker started
    try:
        worker = WorkerLoop(inbox, results, number)
        try:
            if worker.start(threads):
                worker.serve()
        finally:
            worker.stop()
    finally:
        inbox.close()
        results.close()
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    # Ctrl-C in a terminal reaches the whole foreground group: the parent handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox_name, results_name, number, parent_pid, threads = (argv if argv is not None else sys.argv[1:])[:5]
    _die_with_parent(int(parent_pid), (inbox_name, results_name))
    code = 1
    try:
        try:
            code = _work(inbox_name, results_name, int(number), int(threads))
        finally:
            _LEAVING.set()
    except ParentGone:
        pass
    # Out of the handler: the exception and its traceback, which held the task's frames and
    # so its arrays, are gone. What cycles still hold goes now, while the library is loaded:
    # the interpreter then exits normally and the library detaches this process from the domain.
    gc.collect()
    return code


if __name__ == "__main__":
    sys.exit(main())
