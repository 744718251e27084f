"""hakobu.Pool and hakobu.Executor: multiprocessing.Pool and ProcessPoolExecutor over shared memory.

>>> import hakobu                                  # instead of: from multiprocessing import Pool
>>> with hakobu.Pool() as pool:
...     results = pool.map(np.fft.fft2, images)    # arrays travel through shared memory

Both are thin front-ends over one engine (hakobu._pool, whose docstring maps
its modules): they turn calls into tasks (chunks of calls) and give each
task's outcome to a result object of multiprocessing (ApplyResult, MapResult,
IMapIterator) or to a concurrent.futures.Future. A worker that dies fails only
the task it was running (hakobu.WorkerLost naming the worker and the signal),
or runs it again with ``retries=``; the pool replaces the worker and goes on.
Each task is pickled once; short tasks travel to a worker in batches, and
their results come back in batches, so that thousands of tiny calls cost
little.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import multiprocessing
import os
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Callable, Generic, Optional, TypeVar, Union

from . import _checks, _errors
from ._pool.pickling import Function, function
from ._pool.protocol import MODE_ARG, MODE_CALL, MODE_STAR
from ._pool.tasks import CLOSE, RUN, TERMINATE, Sink, Task, make_task
from ._pool.threads import available_cores

if TYPE_CHECKING:
    from ._dask.engine import DaskEngine
    from ._pool.engine import Engine

    AnyEngine = Union[Engine, DaskEngine]

T = TypeVar("T")

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "Executor",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
    "Pool",
]


def _start_engine(
    workers: Optional[int],
    initializer: Optional[Callable[..., Any]],
    initargs: Sequence[Any],
    max_tasks_per_worker: Optional[int],
    retries: int,
    threads_per_worker: Optional[int],
    *,
    drain_at_exit: bool,
    description: str = "",
    engine: str = "local",
    address: Optional[str] = None,
    client: Any = None,
) -> AnyEngine:
    """A new engine, local or on Dask (``engine`` as _engine_kind returned). Its module is imported
    here, with the first pool, not with hakobu: a pool's worker, which imports hakobu, then never
    imports it nor installs its process-wide hooks (nor imports Dask)."""
    if engine == "dask":
        if max_tasks_per_worker is not None:
            raise ValueError(
                "maxtasksperchild/max_tasks_per_child cannot be used with engine='dask': Dask does not "
                "replace its worker processes after a number of tasks; leave it None"
            )
        from ._dask.engine import DaskEngine

        return DaskEngine(
            workers,
            initializer,
            initargs,
            retries,
            threads_per_worker,
            drain_at_exit=drain_at_exit,
            description=description,
            address=address,
            client=client,
        )
    from ._pool.engine import Engine

    assert workers is not None
    return Engine(
        workers,
        initializer,
        initargs,
        max_tasks_per_worker,
        retries,
        threads_per_worker,
        drain_at_exit=drain_at_exit,
        description=description,
    )


ENGINES = ("local", "dask")


def _engine_kind(engine: str, address: Optional[str], client: Any) -> str:
    """Which engine the arguments ask for: "local" or "dask" (``client=`` implies "dask")."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    if address is not None and client is not None:
        raise ValueError(
            "pass either address= (the pool connects its own client to that scheduler) or client= "
            "(an existing distributed.Client), not both"
        )
    if client is not None:
        return "dask"
    if address is not None:
        if engine != "dask":
            raise ValueError(f"address={address!r} is a Dask scheduler's address: pass engine='dask' too")
        if not isinstance(address, str) or not address:
            raise ValueError(
                f"address must be a Dask scheduler's address such as 'tcp://host:8786', got {address!r}"
            )
    return engine


def _check_options(retries: int, threads_per_worker: Optional[int]) -> None:
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative int, got {retries!r}")
    if threads_per_worker is not None and (not isinstance(threads_per_worker, int) or threads_per_worker < 1):
        raise ValueError(f"threads_per_worker must be a positive int or None, got {threads_per_worker!r}")


def _chunks(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _label(fn: Function, mode: int, start: int, count: int) -> str:
    """Which calls a task holds, for error messages: 'f', 'f on item 3', 'f on items 8-15'."""
    if mode == MODE_CALL:
        return fn.name
    return f"{fn.name} on item {start}" if count == 1 else f"{fn.name} on items {start}-{start + count - 1}"


class _ChunkSink:
    """Delivers one task's outcome to position ``index`` of a pool result."""

    def __init__(self, target: _ResultTarget, index: int, single: bool) -> None:
        self.target = target
        self.index = index
        self.single = single  # the task is one call: deliver its result, not a list of one

    def start(self) -> bool:
        return True

    def finish(self, ok: bool, value: Any) -> None:
        self.target._set(self.index, ok, value[0] if ok and self.single else value)

    def cancel(self, error: BaseException) -> None:
        self.target._set(self.index, False, error)


class _ResultTarget:
    def _set(self, index: int, ok: bool, value: Any) -> None:
        raise NotImplementedError


# --- multiprocessing's result objects -----------------------------------------------------


class ApplyResult(_ResultTarget, Generic[T]):
    """The result of ``apply_async`` (multiprocessing.pool.ApplyResult's API)."""

    def __init__(
        self,
        pool: Optional[Pool],
        callback: Optional[Callable[[T], object]],
        error_callback: Optional[Callable[[BaseException], object]],
    ) -> None:
        self._pool = pool  # kept alive until the result is ready, as multiprocessing does
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: Optional[float] = None) -> None:
        """Waits until the result is ready or ``timeout`` seconds (None or inf: no limit) passed.

        A NaN or negative timeout raises hakobu.InvalidArgument (a ValueError).
        """
        self._event.wait(_checks.timeout(timeout))

    def get(self, timeout: Optional[float] = None) -> T:
        """The result (or the task's exception, raised); multiprocessing.TimeoutError if not
        ready within ``timeout`` seconds (None or inf: no limit; NaN or negative: InvalidArgument)."""
        self.wait(timeout)
        if not self.ready():
            raise multiprocessing.TimeoutError
        if self._success:
            value: T = self._value
            return value
        raise self._value

    def _set(self, index: int, ok: bool, value: Any) -> None:
        self._complete(ok, value)

    def _complete(self, ok: bool, value: Any) -> None:
        self._success, self._value = ok, value
        try:
            if ok and self._callback is not None:
                self._callback(value)
            if not ok and self._error_callback is not None:
                self._error_callback(value)
        finally:  # ready even if a callback raised (the pool reports that error)
            self._event.set()
            self._pool = None


AsyncResult = ApplyResult


class MapResult(ApplyResult[list[T]]):
    """The result of ``map_async``/``starmap_async``: ready when every chunk is done."""

    def __init__(
        self,
        pool: Pool,
        chunksize: int,
        length: int,
        callback: Optional[Callable[[list[T]], object]],
        error_callback: Optional[Callable[[BaseException], object]],
    ) -> None:
        super().__init__(pool, callback, error_callback)
        self._lock = threading.Lock()
        self._values: list[Any] = [None] * length
        self._error: Optional[BaseException] = None
        self._chunksize = chunksize
        self._left = 0 if chunksize <= 0 else length // chunksize + bool(length % chunksize)
        if self._left == 0:
            self._complete(True, self._values)

    def _set(self, index: int, ok: bool, value: Any) -> None:
        with self._lock:
            self._left -= 1
            if ok:
                self._values[index * self._chunksize : (index + 1) * self._chunksize] = value
            elif self._error is None:
                self._error = value  # the first error is the one raised
            if self._left:
                return
        # As multiprocessing: ready (and its callback called) once every chunk is done.
        if self._error is None:
            self._complete(True, self._values)
        else:
            self._complete(False, self._error)


class IMapIterator(_ResultTarget, Generic[T]):
    """The results of ``imap``, in order; ``next(timeout)`` as multiprocessing's."""

    def __init__(self, pool: Pool) -> None:
        self._pool: Optional[Pool] = pool
        self._cond = threading.Condition(threading.Lock())
        self._items: collections.deque[tuple[bool, Any]] = collections.deque()
        self._index = 0
        self._length: Optional[int] = None
        self._unsorted: dict[int, tuple[bool, Any]] = {}

    def __iter__(self) -> IMapIterator[T]:
        return self

    def next(self, timeout: Optional[float] = None) -> T:
        limit = _checks.timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        with self._cond:
            while not self._items:
                if self._index == self._length:
                    self._pool = None
                    raise StopIteration
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise multiprocessing.TimeoutError
                self._cond.wait(remaining)
            ok, value = self._items.popleft()
        if ok:
            result: T = value
            return result
        raise value

    __next__ = next

    def _set(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            if self._index == index:
                self._items.append((ok, value))
                self._index += 1
                while self._index in self._unsorted:
                    self._items.append(self._unsorted.pop(self._index))
                    self._index += 1
                self._cond.notify_all()
            else:
                self._unsorted[index] = (ok, value)
            if self._index == self._length:
                self._pool = None

    def _set_length(self, length: int) -> None:
        with self._cond:
            self._length = length
            if self._index == self._length:
                self._cond.notify_all()
                self._pool = None


class IMapUnorderedIterator(IMapIterator[T]):
    """The results of ``imap_unordered``, as they come."""

    def _set(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            self._items.append((ok, value))
            self._index += 1
            self._cond.notify_all()
            if self._index == self._length:
                self._pool = None


# --- Pool ----------------------------------------------------------------------------------


class Pool:
    """A drop-in ``multiprocessing.Pool`` whose arguments and results travel through shared memory.

    ``processes`` workers (default: the CPUs this process may use), each a
    fresh interpreter that runs ``initializer(*initargs)`` first and is
    replaced after ``maxtasksperchild`` tasks. Hakobu's additions: a task whose
    worker dies runs again up to ``retries`` times, else fails with
    WorkerLost; each worker's OpenMP/BLAS threads are capped at
    ``threads_per_worker`` (default: cores / workers). Leaving a with-block
    terminates the pool, as multiprocessing does. ``context`` is accepted and
    ignored: workers always start as fresh interpreters, like "spawn". As with
    "spawn", functions and classes of a main script that has an ``if __name__
    == "__main__":`` guard go by reference (a worker runs the script, without
    its guarded block, the first time it needs one), so they may use module
    state that cannot be pickled, such as a lock; a script without a guard,
    a notebook or ``python -c`` code is never run again: its functions and
    classes travel by value (cloudpickle), as do lambdas.

    ``engine="dask"`` runs the tasks on a ``dask.distributed`` cluster
    instead (``pip install "hakobu[dask]"``): the scheduler at ``address``
    (``"tcp://host:8786"``, any scheme Dask knows), or the cluster of
    ``client``, an existing ``distributed.Client`` the pool uses and never
    closes (``client=`` implies ``engine="dask"``); with neither, a
    ``LocalCluster`` of ``processes`` worker processes (one thread each) that
    the pool closes when it ends. Tasks and results travel as Dask moves
    them; the main script's functions and classes travel by value. ``retries``
    is the started cluster's allowed failures (runs again of a task whose
    worker died); on a given cluster its scheduler's
    ``distributed.scheduler.allowed-failures`` (default 3) says that, and
    ``retries`` adds runs after it: at most (allowed_failures + 1) *
    (retries + 1) runs in all. ``processes`` sets the default chunksize
    there (default: the cluster's threads). ``maxtasksperchild`` cannot be
    used: Dask does not replace workers after a number of tasks.
    """

    def __init__(
        self,
        processes: Optional[int] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: Optional[int] = None,
        context: object = None,
        *,
        retries: int = 0,
        threads_per_worker: Optional[int] = None,
        engine: str = "local",
        address: Optional[str] = None,
        client: Any = None,
    ) -> None:
        del context  # multiprocessing's start method: hakobu's workers are always fresh interpreters
        kind = _engine_kind(engine, address, client)
        on_given_cluster = address is not None or client is not None
        if processes is None and not on_given_cluster:
            processes = available_cores()
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        _check_options(retries, threads_per_worker)
        self._engine = _start_engine(
            processes,
            initializer,
            tuple(initargs),
            maxtasksperchild,
            retries,
            threads_per_worker,
            drain_at_exit=False,
            description=f"<hakobu.Pool pool_size={processes}>" if processes else "<hakobu.Pool on Dask>",
            engine=kind,
            address=address,
            client=client,
        )
        self._processes = processes if processes is not None else self._engine.workers
        # The main script's names go by reference only to workers that can run the script.
        self._by_reference = kind == "local"
        # Garbage-collected while running: warn and terminate, as multiprocessing does.
        self._finalizer = weakref.finalize(
            self, _collect_pool, self._engine, f"<hakobu.Pool pool_size={self._processes}>"
        )
        self._finalizer.atexit = False  # at exit, the engine's own exit hook terminates it

    # --- one call ----------------------------------------------------------------------

    def apply(self, func: Callable[..., T], args: Iterable[Any] = (), kwds: dict[str, Any] = {}) -> T:  # noqa: B006
        """``func(*args, **kwds)`` in a worker; waits for the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] = {},  # noqa: B006 - multiprocessing's signature
        callback: Optional[Callable[[T], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> ApplyResult[T]:
        """``func(*args, **kwds)`` in a worker; the result object's get() waits for it."""
        self._check_running()
        result: ApplyResult[T] = ApplyResult(self, callback, error_callback)
        self._submit(
            func, [[(tuple(args), dict(kwds))]], MODE_CALL, lambda index: _ChunkSink(result, 0, True)
        )
        return result

    # --- many calls, all at once ------------------------------------------------------------

    def map(
        self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: Optional[int] = None
    ) -> list[T]:
        """``[func(x) for x in iterable]`` across the workers, in chunks."""
        return self._map_async(func, iterable, MODE_ARG, chunksize, None, None).get()

    def map_async(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: Optional[int] = None,
        callback: Optional[Callable[[list[T]], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> MapResult[T]:
        return self._map_async(func, iterable, MODE_ARG, chunksize, callback, error_callback)

    def starmap(
        self, func: Callable[..., T], iterable: Iterable[Iterable[Any]], chunksize: Optional[int] = None
    ) -> list[T]:
        """``[func(*args) for args in iterable]`` across the workers."""
        return self._map_async(func, iterable, MODE_STAR, chunksize, None, None).get()

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: Optional[int] = None,
        callback: Optional[Callable[[list[T]], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> MapResult[T]:
        return self._map_async(func, iterable, MODE_STAR, chunksize, callback, error_callback)

    def _map_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Any],
        mode: int,
        chunksize: Optional[int],
        callback: Optional[Callable[[list[T]], object]],
        error_callback: Optional[Callable[[BaseException], object]],
    ) -> MapResult[T]:
        self._check_running()
        items = iterable if isinstance(iterable, Sequence) else list(iterable)
        if chunksize is None:
            # multiprocessing's choice: about four chunks per worker
            chunksize, extra = divmod(len(items), self._processes * 4)
            chunksize += bool(extra)
        elif chunksize < 1 and len(items):
            raise ValueError(f"Chunksize must be 1+, not {chunksize}")
        if len(items) == 0:
            chunksize = 0
        result: MapResult[T] = MapResult(self, chunksize, len(items), callback, error_callback)
        if chunksize:
            self._submit(
                func,
                _chunks(items, chunksize),
                mode,
                lambda index: _ChunkSink(result, index, False),
                chunksize,
            )
        return result

    def _submit(
        self,
        func: Callable[..., Any],
        chunks: Iterable[list[Any]],
        mode: int,
        sink_for: Callable[[int], Sink],
        chunksize: int = 1,
    ) -> None:
        """Sends ``func`` over ``chunks``; what cannot be pickled fails its result, as in multiprocessing."""
        by_reference = self._by_reference
        try:
            fn = function(func, main_by_reference=by_reference)
        except Exception as error:  # noqa: BLE001
            for index, _ in enumerate(chunks):
                sink_for(index).finish(False, error)
            return
        tasks = [
            make_task(
                fn,
                mode,
                chunk,
                sink_for(index),
                _label(fn, mode, index * chunksize, len(chunk)),
                main_by_reference=by_reference,
            )
            for index, chunk in enumerate(chunks)
        ]
        if not self._engine.submit([task for task in tasks if task is not None]):
            raise ValueError("Pool not running")

    # --- many calls, lazily ---------------------------------------------------------------

    def imap(self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int = 1) -> Iterator[T]:
        """Like map, lazily: results in order as they are ready; reads ``iterable`` as workers free up."""
        return self._imap(func, iterable, chunksize, IMapIterator(self))

    def imap_unordered(
        self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int = 1
    ) -> Iterator[T]:
        """Like imap, results in the order they finish."""
        return self._imap(func, iterable, chunksize, IMapUnorderedIterator(self))

    def _imap(
        self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int, results: IMapIterator[Any]
    ) -> Iterator[T]:
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        self._engine.open_feed()
        feeder = threading.Thread(
            target=_feed,
            args=(self._engine, func, iterable, chunksize, results, self._by_reference),
            name="hakobu-pool-imap",
            daemon=True,
        )
        feeder.start()
        if chunksize == 1:
            return results
        return (item for chunk in results for item in chunk)  # as multiprocessing does

    # --- life cycle ---------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._engine.state != RUN:
            raise ValueError("Pool not running")

    def close(self) -> None:
        """Takes no more tasks; the workers exit once the submitted ones are done."""
        self._engine.close()

    def terminate(self) -> None:
        """Kills the workers now; unfinished results fail with hakobu.PoolTerminated."""
        self._engine.terminate()

    def join(self) -> None:
        """Waits for the workers to exit (after close() or terminate())."""
        if self._engine.state == RUN:
            raise ValueError("Pool is still running")
        self._engine.join()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        return f"<hakobu.Pool state={self._engine.state} pool_size={self._processes}>"


def _collect_pool(engine: AnyEngine, description: str) -> None:
    if engine.owner_pid != os.getpid():
        return  # a forked child: the workers are its parent's
    if engine.state == RUN:
        warnings.warn(f"unclosed running pool {description}", ResourceWarning, stacklevel=2)
    engine.terminate()


def _feed(
    engine: AnyEngine,
    func: Callable[..., Any],
    iterable: Iterable[Any],
    chunksize: int,
    results: IMapIterator[Any],
    by_reference: bool,
) -> None:
    """imap's producer thread: reads ``iterable`` as room frees up, one task per chunk."""
    index = 0
    try:
        try:
            fn = function(func, main_by_reference=by_reference)
            items = iter(iterable)
            while True:
                engine.wait_for_room()
                chunk = list(itertools.islice(items, chunksize))
                if not chunk:
                    break
                sink = _ChunkSink(results, index, chunksize == 1)
                task = make_task(
                    fn,
                    MODE_ARG,
                    chunk,
                    sink,
                    _label(fn, MODE_ARG, index * chunksize, len(chunk)),
                    main_by_reference=by_reference,
                )
                index += 1
                if task is not None and not engine.submit([task], feeding=True):
                    results._set(
                        index - 1,
                        False,
                        _errors.PoolTerminated("the pool was terminated before this task started"),
                    )
                    break
        except Exception as error:  # noqa: BLE001 - the iterable (or the pool) failed: it shows at its position
            results._set(index, False, error)
            index += 1
        results._set_length(index)
    finally:
        engine.close_feed()


# --- Executor ------------------------------------------------------------------------------


class _FutureSink:
    """Delivers one task's outcome to a concurrent.futures.Future."""

    def __init__(self, future: concurrent.futures.Future[Any], single: bool) -> None:
        self.future = future
        self.single = single

    def start(self) -> bool:
        return self.future.set_running_or_notify_cancel()

    def finish(self, ok: bool, value: Any) -> None:
        try:
            if ok:
                self.future.set_result(value[0] if self.single else value)
            else:
                self.future.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile

    def cancel(self, error: BaseException) -> None:
        if not self.future.cancel():
            self.finish(False, error)


class Executor(concurrent.futures.Executor):
    """A drop-in ``concurrent.futures.ProcessPoolExecutor`` whose data travel through shared memory.

    Futures are ``concurrent.futures.Future``. A dead worker fails only its
    task's future (with hakobu.WorkerLost, a BrokenProcessPool), never the
    executor; ``retries=N`` runs such tasks again. ``threads_per_worker`` caps
    each worker's OpenMP/BLAS threads (default: cores / workers). ``mp_context``
    is accepted and ignored: workers always start as fresh interpreters (the
    main script's functions travel as for Pool).

    ``engine="dask"``, ``address`` and ``client`` run the tasks on a Dask
    cluster, as for Pool (``max_workers``: the started LocalCluster's
    processes; ``max_tasks_per_child`` cannot be used there).
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: Optional[int] = None,
        retries: int = 0,
        threads_per_worker: Optional[int] = None,
        mp_context: object = None,
        engine: str = "local",
        address: Optional[str] = None,
        client: Any = None,
    ) -> None:
        del mp_context  # ProcessPoolExecutor's start method: hakobu's workers are always fresh interpreters
        kind = _engine_kind(engine, address, client)
        if max_workers is None:
            if address is None and client is None:
                max_workers = available_cores()
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        _check_options(retries, threads_per_worker)
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        self._engine = _start_engine(
            max_workers,
            initializer,
            tuple(initargs),
            max_tasks_per_child,
            retries,
            threads_per_worker,
            drain_at_exit=True,
            engine=kind,
            address=address,
            client=client,
        )
        self._max_workers = max_workers if max_workers is not None else self._engine.workers
        self._by_reference = kind == "local"
        # Garbage-collected: the work goes on, then the workers exit (as concurrent.futures does).
        self._finalizer = weakref.finalize(self, self._engine.close)
        self._finalizer.atexit = False  # at exit, the engine's own exit hook lets the work finish

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """Schedules ``fn(*args, **kwargs)``; returns its Future."""
        future: concurrent.futures.Future[T] = self._submit(fn, [[(args, kwargs)]], MODE_CALL, True)[0]
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """``map(fn, *iterables)`` across the workers; results lazily, in order.

        ``timeout`` counts from this call; the iterator raises TimeoutError when
        a result is not ready by then (None or inf: no limit; NaN or negative:
        InvalidArgument). ``chunksize`` calls travel as one task.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        limit = _checks.timeout(timeout)
        end_time = None if limit is None else limit + time.monotonic()
        futures: list[concurrent.futures.Future[list[T]]] = self._submit(
            fn, _chunks(zip(*iterables), chunksize), MODE_STAR, False
        )
        return _results_in_order(futures, end_time)

    def _submit(
        self, fn: Callable[..., Any], chunks: Iterable[list[Any]], mode: int, single: bool
    ) -> list[Any]:
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            futures: list[concurrent.futures.Future[Any]] = []
            tasks: list[Task] = []
            try:
                pickled: Optional[Function] = function(fn, main_by_reference=self._by_reference)
            except Exception as error:  # noqa: BLE001 - as concurrent.futures: the future carries it
                pickled, failure = None, error
            start = 0
            for chunk in chunks:
                future: concurrent.futures.Future[Any] = concurrent.futures.Future()
                futures.append(future)
                sink = _FutureSink(future, single)
                if pickled is None:
                    sink.finish(False, failure)
                    continue
                task = make_task(
                    pickled,
                    mode,
                    chunk,
                    sink,
                    _label(pickled, mode, start, len(chunk)),
                    main_by_reference=self._by_reference,
                )
                start += len(chunk)
                if task is not None:
                    tasks.append(task)
            if not self._engine.submit(tasks):
                raise RuntimeError("cannot schedule new futures after shutdown")
            return futures

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; with ``cancel_futures`` the not yet started ones are cancelled;
        with ``wait``, returns when the work is done and the workers have exited."""
        with self._shutdown_lock:
            self._shutdown = True
        if cancel_futures:
            self._engine.cancel_pending()
        self._engine.close()
        if wait:
            self._engine.join()

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            # Ctrl-C: stop now rather than finish the work (which concurrent.futures would do)
            with self._shutdown_lock:
                self._shutdown = True
            self._engine.terminate()
            return
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        state = {RUN: "running", CLOSE: "shutting down", TERMINATE: "terminated"}[self._engine.state]
        if self._engine.finished:
            state = "shut down"
        return f"<hakobu.Executor {state} max_workers={self._max_workers}>"


def _results_in_order(
    futures: list[concurrent.futures.Future[list[T]]], end_time: Optional[float]
) -> Iterator[T]:
    """concurrent.futures' map iterator: lazily in order, cancelling what is left when closed."""
    try:
        futures.reverse()  # pop from the end, keeping no reference to done futures
        while futures:
            future = futures.pop()
            try:
                chunk = future.result(None if end_time is None else end_time - time.monotonic())
            finally:
                future.cancel()
                del future
            chunk.reverse()
            while chunk:
                yield chunk.pop()
    finally:
        for future in futures:
            future.cancel()
