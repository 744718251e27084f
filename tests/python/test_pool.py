"""hakobu.Pool and hakobu.Executor: the multiprocessing.Pool and ProcessPoolExecutor APIs,
dead workers, shared-memory data, and programs interrupted or killed."""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import multiprocessing.pool
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PROGRAMS, files_of_domain, finish, start

import hakobu

sys.path.insert(0, str(PROGRAMS))
import pool_tasks as tasks

WATCHDOG = 60  # seconds: against deadlock, never a measure of speed


@pytest.fixture(scope="module")
def pool() -> Iterator[hakobu.Pool]:
    """Two workers shared by the tests that leave them as they found them."""
    with hakobu.Pool(2) as shared:
        yield shared
        shared.close()
        shared.join()
    assert not leftovers(shared)


@pytest.fixture(scope="module")
def executor() -> Iterator[hakobu.Executor]:
    with hakobu.Executor(2) as shared:
        yield shared
    assert not leftovers(shared)


def leftovers(pool: hakobu.Pool | hakobu.Executor) -> list[str]:
    """The pool's queue files still in /dev/shm, and its worker processes still alive."""
    name = pool._engine.name
    files = [path for path in files_of_domain() if name in path]
    return files + [f"process {pid}" for pid in processes_named(name)]


def processes_named(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if text.encode() in cmdline.read():
                        found.append(int(entry))
            except OSError:
                pass  # it exited meanwhile
    return found


def eventually(condition: Any, what: str, watchdog: float = WATCHDOG) -> None:
    deadline = time.monotonic() + watchdog
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after the {watchdog} s watchdog: {what}")
        time.sleep(0.02)


def worker_pids(pool: hakobu.Pool, at_least: int) -> set[int]:
    """The pids of the pool's workers, once ``at_least`` have answered."""
    pids: set[int] = set()

    def enough() -> bool:
        pids.update(pool.map(tasks.pid, range(8), chunksize=1))
        return len(pids) >= at_least

    eventually(enough, f"{at_least} workers answer")
    return pids


# --- the multiprocessing.Pool API ------------------------------------------------------------------


def test_apply_and_apply_async_with_callbacks(pool: hakobu.Pool) -> None:
    assert pool.apply(tasks.add, (2, 3)) == 5
    assert pool.apply(tasks.add, (2, 3), {"scale": 10}) == 50
    results: list[Any] = []
    errors: list[BaseException] = []
    good = pool.apply_async(tasks.square, (7,), callback=results.append, error_callback=errors.append)
    bad = pool.apply_async(tasks.fail, ("no",), callback=results.append, error_callback=errors.append)
    assert good.get(WATCHDOG) == 49
    bad.wait(WATCHDOG)
    assert good.ready() and good.successful() and bad.ready() and not bad.successful()
    assert results == [49], "the callback ran before the result was ready"
    assert len(errors) == 1 and isinstance(errors[0], ValueError) and str(errors[0]) == "no"
    with pytest.raises(ValueError, match="no"):
        bad.get()


def test_map_and_starmap_in_any_chunking(pool: hakobu.Pool) -> None:
    assert pool.map(tasks.square, range(50)) == [x * x for x in range(50)]
    for chunksize in (1, 3, 50, 100):
        assert pool.map(tasks.square, range(20), chunksize) == [x * x for x in range(20)]
    assert pool.map(tasks.square, (x for x in range(5))) == [0, 1, 4, 9, 16], "a generator (no len)"
    assert pool.map(tasks.square, {3, 4}) in ([9, 16], [16, 9])
    assert pool.map(tasks.square, []) == []
    assert pool.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.starmap(tasks.add, [(k, k) for k in range(30)], chunksize=4) == [2 * k for k in range(30)]


def test_map_async_and_starmap_async_callbacks(pool: hakobu.Pool) -> None:
    done: list[Any] = []
    result = pool.map_async(tasks.square, range(10), callback=done.append)
    assert result.get(WATCHDOG) == [x * x for x in range(10)] and done == [[x * x for x in range(10)]]
    assert pool.starmap_async(tasks.add, [(1, 1)], callback=done.append).get(WATCHDOG) == [2]
    assert done[-1] == [2]
    empty = pool.map_async(tasks.square, [], callback=done.append)
    assert empty.ready() and empty.get() == [] and done[-1] == []
    failed: list[BaseException] = []
    bad = pool.map_async(tasks.fail, ["a", "b", "c"], chunksize=1, error_callback=failed.append)
    with pytest.raises(ValueError, match=r"^[abc]$"):
        bad.get(WATCHDOG)
    assert len(failed) == 1 and isinstance(failed[0], ValueError)


def test_imap_and_imap_unordered(pool: hakobu.Pool) -> None:
    assert list(pool.imap(tasks.square, range(25))) == [x * x for x in range(25)]
    assert list(pool.imap(tasks.square, iter(range(25)), chunksize=4)) == [x * x for x in range(25)]
    assert sorted(pool.imap_unordered(tasks.square, range(25))) == sorted(x * x for x in range(25))
    assert sorted(pool.imap_unordered(tasks.square, range(25), chunksize=6)) == sorted(
        x * x for x in range(25)
    )
    assert list(pool.imap(tasks.square, [])) == []
    with pytest.raises(ValueError):
        pool.imap(tasks.square, range(3), chunksize=0)


def test_imap_reports_an_error_at_its_position_and_goes_on(pool: hakobu.Pool) -> None:
    results = pool.imap(tasks.fail, ["x", "y"])
    with pytest.raises(ValueError, match="x"):
        next(results)
    with pytest.raises(ValueError, match="y"):
        next(results)
    with pytest.raises(StopIteration):
        next(results)

    def numbers() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("the source failed")

    results = pool.imap(tasks.square, numbers())
    assert next(results) == 1 and next(results) == 4
    with pytest.raises(OSError, match="the source failed"):
        next(results)
    with pytest.raises(StopIteration):
        next(results)


def test_timeouts_raise_multiprocessing_timeout_error(pool: hakobu.Pool, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    result = pool.apply_async(tasks.wait_for, (str(gate),))
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.1)
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    assert not result.ready()
    results = pool.imap(tasks.wait_for, [str(gate)])
    with pytest.raises(multiprocessing.TimeoutError):
        results.next(timeout=0.1)  # type: ignore[attr-defined]
    gate.touch()
    assert result.get(WATCHDOG) > 0 and result.successful()
    assert results.next(timeout=WATCHDOG) > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("history", ["fresh", "after short tasks"])
def test_imap_reads_its_iterable_as_workers_free_up(history: str, tmp_path: Path) -> None:
    """How far imap reads ahead follows how long the pool's recent tasks took (short ones travel
    in batches), so the pool is this test's own: one shared with other tests would read as far
    ahead as the tests that ran before on it (in one order or another, under pytest-xdist) made it."""
    gate = str(tmp_path / "gate")
    consumed: list[int] = []

    def paths() -> Iterator[str]:
        for k in range(100):
            consumed.append(k)
            yield gate

    with hakobu.Pool(2) as pool:
        limit = 12
        if history != "fresh":
            for _ in range(3):
                pool.map(tasks.square, range(2000))
            workers = list(pool._engine._workers.values())
            batch = max(worker.batch_size(10**6, 1, None) for worker in workers)
            limit = 2 * 2 * batch + 2 * 2 * batch + 1  # the room limit, what the workers hold, the next item
        results = pool.imap(tasks.wait_for, paths())
        eventually(lambda: len(consumed) >= 4, "the first items are read")
        time.sleep(0.3)  # a pause for the producer to run ahead, were it to
        assert len(consumed) <= limit, f"{len(consumed)} items read while the first task cannot finish"
        Path(gate).touch()
        assert len(list(results)) == 100
        pool.close()
        pool.join()
    assert not leftovers(pool)


def test_lambdas_closures_and_local_functions(pool: hakobu.Pool) -> None:
    offset = 1000

    def shift(x: int) -> int:
        return x + offset

    assert pool.map(lambda x: x * 3, range(5)) == [0, 3, 6, 9, 12]
    assert pool.map(shift, range(3)) == [1000, 1001, 1002]
    assert pool.apply(lambda: offset) == 1000
    assert list(pool.imap(lambda s: s.upper(), ["a", "b"])) == ["A", "B"]


def test_a_closure_over_big_data_is_sent_once_and_kept_current(pool: hakobu.Pool) -> None:
    weights = np.arange(200_000.0)  # 1.6 MB inside the function

    def weighted(k: int) -> float:
        return float(weights[k])

    assert pool.map(weighted, range(40), chunksize=1) == [float(k) for k in range(40)]
    weights[:] = -weights  # a new value: a new pickle, so the workers' cached one is not used
    assert pool.map(weighted, range(40), chunksize=1) == [-float(k) for k in range(40)]


def test_the_pool_refuses_work_once_closed() -> None:
    closed = hakobu.Pool(1)
    assert repr(closed) == "<hakobu.Pool state=RUN pool_size=1>"
    with pytest.raises(ValueError, match="still running"):
        closed.join()
    with pytest.raises(NotImplementedError):
        pickle.dumps(closed)
    pending = closed.map_async(tasks.square, range(10))
    closed.close()
    with pytest.raises(ValueError, match="Pool not running"):
        closed.apply(tasks.square, (1,))
    with pytest.raises(ValueError, match="Pool not running"):
        closed.imap(tasks.square, [1])
    closed.join()
    assert pending.get(0) == [x * x for x in range(10)], "close() lets submitted work finish"
    assert not leftovers(closed)
    with pytest.raises(ValueError):
        hakobu.Pool(0)
    with pytest.raises(ValueError):
        hakobu.Pool(1, maxtasksperchild=0)
    with pytest.raises(TypeError):
        hakobu.Pool(1, initializer=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        hakobu.Pool(1, retries=-1)
    with pytest.raises(ValueError):
        hakobu.Pool(1, threads_per_worker=0)


def test_a_collected_pool_warns_and_cleans_up() -> None:
    forgotten = hakobu.Pool(1)
    assert forgotten.apply(tasks.square, (3,)) == 9
    name = forgotten._engine.name
    with pytest.warns(ResourceWarning, match="unclosed running pool"):
        del forgotten
        gc.collect()
    assert not processes_named(name) and not [path for path in files_of_domain() if name in path]


def test_a_forked_child_cannot_use_its_parents_pool(pool: hakobu.Pool) -> None:
    child = os.fork()
    if child == 0:
        try:
            pool.apply(tasks.square, (2,))
        except RuntimeError as error:
            os._exit(0 if "os.fork()" in str(error) else 1)
        os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool.apply(tasks.square, (2,)) == 4


# --- exceptions ----------------------------------------------------------------------------------


def test_exceptions_arrive_as_themselves_with_the_remote_traceback(pool: hakobu.Pool) -> None:
    with pytest.raises(ValueError, match=r"^bad input$") as caught:
        pool.apply(tasks.fail, ("bad input",))
    cause = caught.value.__cause__
    assert isinstance(cause, hakobu.RemoteTraceback)
    assert isinstance(cause, multiprocessing.pool.RemoteTraceback), (
        "multiprocessing's class, for existing code"
    )
    assert "Traceback (most recent call last)" in str(cause)
    assert 'pool_tasks.py", line' in str(cause) and "in fail" in str(cause)
    assert "ValueError: bad input" in cause.tb


def test_exceptions_that_cannot_travel_are_replaced_by_clear_errors(pool: hakobu.Pool) -> None:
    with pytest.raises(hakobu.RemoteError, match=r"Unpicklable: holds a lock.*cannot be sent") as caught:
        pool.apply(tasks.raise_unpicklable)
    assert "raise Unpicklable()" in str(caught.value.__cause__)
    with pytest.raises(hakobu.RemoteError, match="NeedsTwo: this and that"):
        pool.apply(tasks.raise_needs_two)
    with pytest.raises(hakobu.EncodingError, match="result of return_lock cannot be pickled") as result_error:
        pool.apply(tasks.return_lock)
    assert isinstance(result_error.value, multiprocessing.pool.MaybeEncodingError)
    with pytest.raises(TypeError, match="pickle"):
        pool.apply(tasks.square, (threading.Lock(),))  # an argument that cannot be pickled
    assert pool.apply(tasks.square, (3,)) == 9, "the pool goes on"


def test_a_raising_callback_is_reported_and_the_pool_goes_on(
    pool: hakobu.Pool, capfd: pytest.CaptureFixture[str]
) -> None:
    def broken_callback(value: Any) -> None:
        raise RuntimeError("callback bug")

    result = pool.apply_async(tasks.square, (4,), callback=broken_callback)
    assert result.get(WATCHDOG) == 16
    assert pool.apply(tasks.square, (5,)) == 25
    assert "callback bug" in capfd.readouterr().err


# --- workers: life, death, limits ----------------------------------------------------------------


def test_maxtasksperchild_replaces_workers() -> None:
    with hakobu.Pool(1, maxtasksperchild=2) as limited:
        pids = [limited.apply(tasks.pid) for _ in range(6)]
        assert [pids.count(p) for p in dict.fromkeys(pids)] == [2, 2, 2], pids
        assert pids == sorted(pids, key=pids.index), "each worker ran two tasks in a row"
        assert limited.map(tasks.square, range(12), chunksize=1) == [x * x for x in range(12)]
    assert not leftovers(limited)


def test_initializer_and_initargs_run_once_in_every_worker() -> None:
    payload = {"model": np.arange(200_000.0)}  # a large initarg travels through shared memory too
    with hakobu.Pool(2, initializer=tasks.remember, initargs=(payload,)) as initialized:
        seen = initialized.map(tasks.recall, range(8), chunksize=1)
        assert all(np.array_equal(value["model"], payload["model"]) for value, _ in seen)


def test_a_failing_initializer_breaks_the_pool_with_its_cause() -> None:
    broken = hakobu.Pool(2, initializer=tasks.failing_initializer)
    result = broken.apply_async(tasks.square, (2,))
    with pytest.raises(hakobu.BrokenPool, match=r"initializer failed.*no licence server") as caught:
        result.get(WATCHDOG)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert isinstance(caught.value, concurrent.futures.process.BrokenProcessPool)
    eventually(lambda: broken._engine.finished, "the broken pool's manager ends")
    with pytest.raises(hakobu.BrokenPool):
        broken.apply(tasks.square, (2,))
    broken.terminate()
    assert not leftovers(broken)


@pytest.mark.parametrize(
    "victim,signal_name",
    [(tasks.kill_self, "SIGKILL"), (tasks.segfault, "SIGSEGV"), (tasks.terminate_self, "SIGTERM")],
)
def test_a_dead_worker_fails_its_task_naming_pid_and_signal(
    pool: hakobu.Pool, victim: Any, signal_name: str
) -> None:
    before = worker_pids(pool, 2)
    others = [pool.apply_async(tasks.square, (k,)) for k in range(6)]
    doomed = pool.apply_async(victim)
    more = [pool.apply_async(tasks.square, (k,)) for k in range(6, 12)]
    with pytest.raises(hakobu.WorkerLost) as caught:
        doomed.get(WATCHDOG)
    lost = caught.value
    assert lost.pid in before and lost.signal == getattr(signal, signal_name) and lost.exit_code is None
    assert (
        f"worker {lost.worker} (pid {lost.pid}) was killed by {signal_name} while running task {lost.task}"
        in str(lost)
    )
    assert victim.__name__ in str(lost) and "retries=N" in str(lost)
    assert isinstance(lost, concurrent.futures.process.BrokenProcessPool)
    assert [r.get(WATCHDOG) for r in others + more] == [k * k for k in range(12)], "other tasks succeed"
    after = worker_pids(pool, 2)
    assert lost.pid not in after, "the dead worker was replaced"
    assert pool.map(tasks.square, range(20)) == [x * x for x in range(20)], "the pool goes on"


def test_a_worker_that_exits_fails_its_task_with_the_code(pool: hakobu.Pool) -> None:
    with pytest.raises(
        hakobu.WorkerLost, match=r"exited with code 7 while running task \d+ \(exit_with\)"
    ) as caught:
        pool.apply(tasks.exit_with, (7,))
    assert caught.value.exit_code == 7 and caught.value.signal is None
    assert pool.apply(tasks.square, (6,)) == 36


def test_a_death_in_a_map_fails_the_map_and_only_its_chunk() -> None:
    with hakobu.Pool(2) as mapping:
        with pytest.raises(hakobu.WorkerLost, match=r"kill_self_if on items 4-7"):
            mapping.starmap(tasks.kill_self_if, [(x, 5) for x in range(16)], chunksize=4)
        assert list(mapping.imap(tasks.square, range(10))) == [x * x for x in range(10)]


def test_retries_run_a_task_again_after_its_worker_died(tmp_path: Path) -> None:
    with hakobu.Pool(2, retries=1) as retrying:
        marker = tmp_path / "attempted"
        answer = retrying.apply(tasks.kill_self_once, (str(marker),))
        assert marker.exists() and answer.startswith("survived in ")
        with pytest.raises(hakobu.WorkerLost, match=r"run 2 times \(retries=1\)"):
            retrying.apply(tasks.kill_self)
        assert retrying.map(tasks.square, range(6)) == [x * x for x in range(6)]
    assert not leftovers(retrying)


def test_terminate_while_busy_fails_the_work_and_leaves_nothing(tmp_path: Path) -> None:
    busy = hakobu.Pool(2)
    try:
        started = busy.starmap_async(
            tasks.announce_and_sleep, [(str(tmp_path), k) for k in range(2)], chunksize=1
        )
        waiting = busy.map_async(tasks.square, range(100), chunksize=1)
        eventually(lambda: len(list(tmp_path.iterdir())) == 2, "both workers run a task")
        pids = {int(path.name.split("-")[-1]) for path in tmp_path.iterdir()}
    finally:
        busy.terminate()
    for result in (started, waiting):
        with pytest.raises(hakobu.PoolTerminated):
            result.get(WATCHDOG)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids), "the workers were killed and reaped"
    busy.join()
    assert not leftovers(busy)
    with pytest.raises(ValueError, match="Pool not running"):
        busy.map(tasks.square, [1])


def test_threads_are_capped_per_worker(pool: hakobu.Pool) -> None:
    cap = str(max(1, len(os.sched_getaffinity(0)) // 2))
    user_set = {
        name: os.environ[name] for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS") if name in os.environ
    }
    report = pool.apply(tasks.thread_report)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert report[name] == user_set.get(name, cap), "the cap, unless the user set the variable"
    if not user_set:
        assert report["pools"] and all(str(n) == cap for n in report["pools"]), report
        assert "OMP_NUM_THREADS" not in os.environ, "the parent's environment is untouched"
    with hakobu.Pool(1, None, (), None, multiprocessing.get_context("spawn"), threads_per_worker=3) as wide:
        report = wide.apply(tasks.thread_report)
    assert report["OMP_NUM_THREADS"] == "3" and all(n == 3 for n in report["pools"]), report


# --- data through shared memory ------------------------------------------------------------------


def test_arrays_inside_tuples_dicts_and_dataclasses(pool: hakobu.Pool) -> None:
    batches = [
        {
            "pair": (np.full(50_000, k, np.float64), np.arange(20_000, dtype=np.int32)),
            "frame": tasks.Frame(f"f{k}", np.ones((300, 300)) * k),
        }
        for k in range(4)
    ]
    results = pool.map(tasks.double_frames, batches, chunksize=1)
    for k, result in enumerate(results):
        assert result["shared"] == [True, True], "arguments' large arrays arrived in shared memory"
        first, second = result["pair"]
        frame = result["frame"]
        assert isinstance(frame, tasks.Frame) and frame.label == f"f{k}!"
        assert np.array_equal(first, np.full(50_000, 2 * k)) and np.array_equal(second, np.arange(20_000) * 2)
        assert np.array_equal(frame.pixels, np.ones((300, 300)) * 2 * k)
        for array in (first, second, frame.pixels):
            assert hakobu.is_shared(array) and array.flags.writeable, (
                "results are writable views of shared memory"
            )
        first[0] = -1  # the parent owns its results


def test_a_big_shared_input_is_mapped_by_workers_never_copied(pool: hakobu.Pool) -> None:
    rows = 32
    big = hakobu.zeros((rows, 1 << 17))  # 32 MiB in shared memory
    gc.collect()
    before = hakobu._core.domain_stats()["live_bytes"]
    reports = pool.starmap(tasks.describe_shared, [(big, row) for row in range(rows)], chunksize=1)
    assert all(shared for shared, _, _ in reports)
    # Each worker wrote its row into the parent's array: they all had the same memory.
    assert np.array_equal(big[:, 0], np.arange(rows)) and np.array_equal(big[:, -1], np.arange(rows))
    # Copied per task, the array would add 32 MiB to the heap for each task in flight.
    grown = max(live for _, live, _ in reports) - before
    assert grown < big.nbytes // 4, f"the heap grew by {grown} bytes while tasks ran"


def test_results_of_a_big_map_are_writable_and_complete(pool: hakobu.Pool) -> None:
    inputs = [np.random.default_rng(k).random(1 << 20) for k in range(8)]  # 8 MiB each
    outputs = pool.map(np.sort, inputs)
    for source, result in zip(inputs, outputs):
        assert np.array_equal(result, np.sort(source)) and result.flags.writeable
        result *= 2


# --- concurrent.futures.Executor ---------------------------------------------------------------


def test_executor_submit_and_futures(executor: hakobu.Executor) -> None:
    assert isinstance(executor, concurrent.futures.Executor)
    future = executor.submit(tasks.add, 1, 2, scale=3)
    assert isinstance(future, concurrent.futures.Future) and future.result(WATCHDOG) == 9
    futures = [executor.submit(tasks.square, k) for k in range(10)]
    done = [f.result() for f in concurrent.futures.as_completed(futures, timeout=WATCHDOG)]
    assert sorted(done) == [k * k for k in range(10)]
    failed = executor.submit(tasks.fail, "oops")
    assert isinstance(failed.exception(WATCHDOG), ValueError)
    assert isinstance(failed.exception().__cause__, hakobu.RemoteTraceback)  # type: ignore[union-attr]
    assert executor.submit(lambda: 42).result(WATCHDOG) == 42


def test_executor_map_in_order_lazily_with_chunks(executor: hakobu.Executor) -> None:
    assert list(executor.map(tasks.square, range(30))) == [k * k for k in range(30)]
    assert list(executor.map(tasks.add, range(10), range(10), chunksize=3)) == [2 * k for k in range(10)]
    assert list(executor.map(tasks.square, [])) == []
    results = executor.map(tasks.fail, ["first"])
    with pytest.raises(ValueError, match="first"):
        next(results)
    with pytest.raises(ValueError):
        executor.map(tasks.square, [1], chunksize=0)


def test_executor_map_timeout(executor: hakobu.Executor, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    results = executor.map(tasks.wait_for, [str(gate)], timeout=0.2)
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)
    gate.touch()
    assert executor.submit(tasks.square, 3).result(WATCHDOG) == 9


def test_executor_dead_worker_fails_only_its_future(executor: hakobu.Executor) -> None:
    doomed = executor.submit(tasks.kill_self)
    fine = [executor.submit(tasks.square, k) for k in range(8)]
    error = doomed.exception(WATCHDOG)
    assert isinstance(error, hakobu.WorkerLost) and isinstance(
        error, concurrent.futures.process.BrokenProcessPool
    )
    assert "was killed by SIGKILL" in str(error)
    assert [f.result(WATCHDOG) for f in fine] == [k * k for k in range(8)]
    assert executor.submit(tasks.square, 9).result(WATCHDOG) == 81, "the executor is not broken"


def test_executor_shutdown_cancels_pending_futures(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    ex = hakobu.Executor(1, max_tasks_per_child=50)
    running = ex.submit(tasks.wait_for, str(gate))
    pending = [ex.submit(tasks.square, k) for k in range(20)]
    eventually(running.running, "the first task runs")
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in pending)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(tasks.square, 1)
    gate.touch()
    ex.shutdown(wait=True)
    assert running.result() > 0, "started work finishes"
    assert not leftovers(ex)


def test_executor_initializer_and_max_tasks_per_child() -> None:
    spawn = multiprocessing.get_context("spawn")  # accepted for compatibility
    with hakobu.Executor(1, tasks.remember, ("hello",), max_tasks_per_child=3, mp_context=spawn) as ex:
        seen = [ex.submit(tasks.recall).result(WATCHDOG) for _ in range(6)]
    assert [value for value, _ in seen] == ["hello"] * 6
    pids = [pid for _, pid in seen]
    assert pids[0] == pids[2] != pids[3] == pids[5]
    with pytest.raises(ValueError):
        hakobu.Executor(0)
    with pytest.raises(TypeError):
        hakobu.Executor(1, max_tasks_per_child="3")  # type: ignore[arg-type]


# --- separate programs ----------------------------------------------------------------------------


def test_a_script_without_a_main_guard_uses_the_pool() -> None:
    code, out, err = finish(start("pool_noguard"), WATCHDOG)
    assert code == 0, err
    assert out.splitlines() == [
        "script body runs",  # once: the workers did not run the script again
        "norms [5.0, 10.0]",
        "lambda [101, 102, 103]",
        "class back Point True Point(x=2, y=2)",
        "executor 13.0",
        "work left to an executor finishes at exit",
    ]


@pytest.mark.parametrize("mode", ["with", "bare", "executor"])
def test_ctrl_c_interrupts_map_and_leaves_no_workers_and_no_files(mode: str, tmp_path: Path) -> None:
    program = start("pool_interrupt", mode, tmp_path)
    line = program.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("mapping "), program.stderr.read()  # type: ignore[union-attr]
    name = line.split()[1]
    eventually(lambda: len(list(tmp_path.iterdir())) == 2, "both workers run a task")
    program.send_signal(signal.SIGINT)
    code, out, err = finish(program, WATCHDOG)
    if mode == "bare":
        assert code == -signal.SIGINT and err.rstrip().endswith("KeyboardInterrupt"), err
    else:
        assert code == 3 and out == "interrupted\n", err
    assert err.count("Traceback") <= 1, f"no worker tracebacks: {err}"
    assert not processes_named(name), "no worker is left"
    assert not [path for path in files_of_domain() if name in path], "no queue is left"


def test_workers_exit_and_queues_go_when_the_parent_is_killed() -> None:
    program = start("pool_orphan")
    line = program.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("pool-"), program.stderr.read()  # type: ignore[union-attr]
    name = line.strip()
    assert len(processes_named(name)) == 2
    program.kill()
    finish(program, WATCHDOG)
    eventually(lambda: not processes_named(name), "the orphaned workers exit")
    eventually(
        lambda: not [path for path in files_of_domain() if name in path], "the workers remove the queues"
    )
    hakobu._core.collect_garbage()  # what the killed parent held
