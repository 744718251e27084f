"""hakobu.Pool and hakobu.Executor on Dask (engine="dask"): the same API as the local engine on a
dask.distributed cluster, workers killed mid-task, and a cluster spread over "hosts" (network
namespaces) one of which dies mid-map."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PROGRAMS

distributed = pytest.importorskip(
    "distributed", reason='the Dask engine needs the dask extra: pip install "hakobu[dask]"'
)

import hakobu  # noqa: E402 - after the skip: without Dask there is nothing to test here

sys.path.insert(0, str(PROGRAMS))  # before any cluster starts: its spawned workers inherit sys.path
import dask_tasks as tasks  # noqa: E402

WATCHDOG = 60  # seconds: against deadlock, never a measure of speed
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """One LocalCluster of two single-threaded worker processes, shared by the module's tests."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as running:
        yield running


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster, set_as_default=False) as connected:
        yield connected


@pytest.fixture
def pool(client: Any) -> Iterator[hakobu.Pool]:
    with hakobu.Pool(client=client) as on_dask:  # leaving it terminates the pool, whatever a test did
        yield on_dask


# --- the call forms --------------------------------------------------------------------------


def test_every_call_form_gives_the_results_in_order(pool: hakobu.Pool) -> None:
    numbers = list(range(40))
    squares = [x * x for x in numbers]
    assert pool.map(tasks.square, numbers) == squares
    assert pool.map(tasks.square, numbers, chunksize=7) == squares
    assert list(pool.imap(tasks.square, numbers)) == squares
    assert list(pool.imap(tasks.square, numbers, chunksize=3)) == squares
    assert sorted(pool.imap_unordered(tasks.square, numbers)) == squares
    assert pool.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.apply(tasks.add, (1, 2), {"scale": 10}) == 30
    assert pool.apply_async(tasks.square, (9,)).get(WATCHDOG) == 81
    assert pool.map_async(tasks.square, [1, 2, 3]).get(WATCHDOG) == [1, 4, 9]
    assert pool.starmap_async(tasks.add, [(5, 5)]).get(WATCHDOG) == [10]
    assert pool.map(tasks.square, []) == []
    assert pool.map(lambda x: x + 1, [1, 2]) == [2, 3]  # a lambda travels by value


def test_callbacks_get_the_results_and_the_errors(pool: hakobu.Pool) -> None:
    got: list[Any] = []
    done = threading.Event()

    def keep(value: Any) -> None:
        got.append(value)
        if len(got) == 3:
            done.set()

    pool.apply_async(tasks.square, (4,), callback=keep)
    pool.map_async(tasks.square, [1, 2], callback=keep)
    pool.apply_async(tasks.fail, ("wrong",), error_callback=keep)
    assert done.wait(WATCHDOG)
    errors = [value for value in got if isinstance(value, BaseException)]
    assert sorted(map(str, got)) == sorted(["16", "[1, 4]", "wrong"])
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_errors_arrive_as_themselves_with_the_remote_traceback(pool: hakobu.Pool) -> None:
    with pytest.raises(ValueError, match="bad input 3") as caught:
        pool.map(tasks.fail, ["fine", "bad input 3"][1:])
    cause = caught.value.__cause__
    assert isinstance(cause, hakobu.RemoteTraceback)
    text = str(cause)
    assert "dask_tasks.py" in text and "raise ValueError(message)" in text
    result = pool.apply_async(tasks.fail, ("again",))
    result.wait(WATCHDOG)
    assert result.ready() and not result.successful()


def test_a_result_that_cannot_travel_fails_its_task_with_a_clear_error(pool: hakobu.Pool) -> None:
    with pytest.raises(hakobu.EncodingError, match="result of return_lock cannot be pickled to travel back"):
        pool.apply(tasks.return_lock)
    assert pool.apply(tasks.square, (4,)) == 16, "the pool goes on"


def test_big_arrays_travel_both_ways_with_their_values(pool: hakobu.Pool) -> None:
    # 16 MiB each: above the engine's scatter threshold, so they go to the workers apart from the graph.
    arrays = [np.arange(2_000_000, dtype=np.float64) + k for k in range(3)]
    results = pool.starmap(tasks.scaled, [(array, 2.0) for array in arrays])
    for array, result in zip(arrays, results):
        assert result.dtype == np.float64 and result.shape == array.shape
        np.testing.assert_array_equal(result, array * 2.0)
    assert pool.map(tasks.checksum, arrays) == [float(array.sum()) for array in arrays]
    assert pool._engine.stats()["scattered"] >= 6


def test_a_pool_made_with_the_address_of_a_running_scheduler(cluster: Any) -> None:
    with hakobu.Pool(engine="dask", address=cluster.scheduler_address) as pool:
        assert pool.map(tasks.square, range(10)) == [x * x for x in range(10)]
        assert pool._processes == 2  # the cluster's threads: map's default chunks follow them
        pool.close()
        pool.join()


def test_a_given_client_is_used_and_never_closed(client: Any) -> None:
    with hakobu.Pool(client=client) as pool:
        assert pool.map(tasks.square, [3]) == [9]
    with hakobu.Executor(client=client) as executor:
        assert executor.submit(tasks.square, 5).result(WATCHDOG) == 25
    assert client.status == "running"
    assert client.submit(tasks.square, 6).result(WATCHDOG) == 36


def test_the_initializer_runs_once_in_each_worker_process(client: Any) -> None:
    with hakobu.Pool(client=client, initializer=tasks.initialize, initargs=("setup",)) as pool:
        seen = pool.map(tasks.initialized, range(60), chunksize=1)
        again = pool.map(tasks.initialized, range(20), chunksize=1)
    assert {tag for _, tag, _ in seen + again} == {"setup"}
    counts = {pid: count for pid, _, count in seen + again}
    assert counts and set(counts.values()) == {1}, counts


def test_a_failing_initializer_breaks_the_pool(client: Any) -> None:
    with hakobu.Pool(client=client, initializer=tasks.failing_initializer) as pool:
        with pytest.raises(hakobu.BrokenPool, match="no licence") as caught:
            pool.map(tasks.square, range(4))
        assert isinstance(caught.value.__cause__, RuntimeError)
        with pytest.raises(hakobu.BrokenPool):
            pool.apply(tasks.square, (1,))


def test_threads_per_worker_caps_the_task_s_blas_threads(client: Any) -> None:
    with hakobu.Pool(client=client, threads_per_worker=1) as pool:
        counts = pool.map(tasks.threads_now, range(4))
    assert all(count <= 1 for count in counts), counts


# --- life cycle and Executor --------------------------------------------------------------------


def test_terminate_fails_what_is_unfinished(client: Any) -> None:
    pool = hakobu.Pool(client=client)
    slow = [pool.apply_async(tasks.sleep_then, (30, k)) for k in range(6)]
    pool.terminate()
    for result in slow:
        with pytest.raises(hakobu.PoolTerminated):
            result.get(WATCHDOG)
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(tasks.square, [1])
    pool.join()


def test_close_then_join_finishes_the_submitted_work(client: Any) -> None:
    pool = hakobu.Pool(client=client)
    results = [pool.apply_async(tasks.sleep_then, (0.05, k)) for k in range(8)]
    pool.close()
    pool.join()
    assert [result.get(0) for result in results] == list(range(8))
    with pytest.raises(ValueError):
        pool.apply(tasks.square, (1,))


def test_imap_over_an_endless_iterable_reads_only_a_bounded_way_ahead(
    pool: hakobu.Pool, tmp_path: Path
) -> None:
    """Tasks that wait for a file: none finishes, so the producer must stop once the window runs and
    as many wait (the engine's window: 16 tasks per worker thread)."""
    gate = tmp_path / "go"
    read = [0]
    stopped = threading.Event()

    def endless() -> Iterator[tuple[str, int]]:
        while True:
            read[0] += 1
            if read[0] > 200:
                stopped.set()  # it should never get here
            yield (str(gate), read[0])

    results = pool.imap(tasks.wait_for_item, endless())
    assert not stopped.wait(2.0), f"imap read {read[0]} items ahead"
    assert read[0] <= 2 * 16 * 2 + 1, read[0]
    gate.touch()
    assert [next(results) for _ in range(30)] == list(range(1, 31))


def test_executor_semantics(client: Any) -> None:
    with hakobu.Executor(client=client) as executor:
        assert executor.submit(tasks.add, 1, 2, scale=3).result(WATCHDOG) == 9
        assert list(executor.map(tasks.add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
        assert list(executor.map(tasks.square, range(10), chunksize=4)) == [x * x for x in range(10)]
        failed = executor.submit(tasks.fail, "no")
        assert isinstance(failed.exception(WATCHDOG), ValueError)
        assert isinstance(failed.exception().__cause__, hakobu.RemoteTraceback)  # type: ignore[union-attr]
        with pytest.raises(concurrent.futures.TimeoutError):
            list(executor.map(tasks.sleep_then, [5], [1], timeout=0.01))
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(tasks.square, 1)


def test_shutdown_with_cancel_futures_cancels_what_has_not_started(client: Any) -> None:
    executor = hakobu.Executor(client=client)
    futures = [executor.submit(tasks.sleep_then, 0.1, k) for k in range(100)]
    executor.shutdown(wait=True, cancel_futures=True)
    cancelled = [future for future in futures if future.cancelled()]
    finished = [future for future in futures if not future.cancelled()]
    assert cancelled, "the window holds far fewer than 100 tasks: the rest never started"
    assert [future.result(0) for future in finished] == [futures.index(f) for f in finished]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"engine": "spark"}, "engine must be one of"),
        ({"address": "tcp://127.0.0.1:8786"}, "pass engine='dask' too"),
        ({"engine": "dask", "address": "tcp://127.0.0.1:8786", "client": object()}, "not both"),
        ({"engine": "dask", "maxtasksperchild": 3}, "Dask does not replace"),
        ({"engine": "dask", "processes": 0}, "at least 1"),
    ],
)
def test_absurd_arguments_are_refused_clearly(arguments: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        hakobu.Pool(**arguments)


def test_absurd_executor_arguments_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="Dask does not replace"):
        hakobu.Executor(engine="dask", max_tasks_per_child=2)
    with pytest.raises(ValueError, match="not both"):
        hakobu.Executor(address="tcp://127.0.0.1:8786", client=object())


def test_without_dask_the_error_says_what_to_install() -> None:
    program = (
        "import sys; sys.modules['distributed'] = None\n"
        "import hakobu\n"
        "try:\n"
        "    hakobu.Pool(engine='dask')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    ran = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=WATCHDOG)
    assert 'pip install "hakobu[dask]"' in ran.stdout, ran.stdout + ran.stderr


# --- workers killed mid-task ----------------------------------------------------------------------


def _kill_the_worker_running(directory: Path, x: int) -> None:
    """Waits (watchdog) until die_once(x) announced its pid, then SIGKILLs that Dask worker."""
    mark = directory / f"started-{x}"
    deadline = time.monotonic() + WATCHDOG
    while not mark.exists():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.01)
    os.kill(int(mark.read_text()), signal.SIGKILL)


def test_a_killed_worker_s_task_runs_again_and_the_map_completes(tmp_path: Path) -> None:
    with hakobu.Pool(2, engine="dask", retries=1) as pool:
        result = pool.starmap_async(tasks.die_once, [(str(tmp_path), x) for x in range(6)], chunksize=1)
        _kill_the_worker_running(tmp_path, 0)
        assert result.get(WATCHDOG * 2) == [x * x for x in range(6)]


def test_a_worker_killed_with_no_retries_left_fails_the_task_with_worker_lost(tmp_path: Path) -> None:
    with hakobu.Pool(2, engine="dask", retries=0) as pool:
        result = pool.apply_async(tasks.die_once, (str(tmp_path), 0))
        _kill_the_worker_running(tmp_path, 0)
        with pytest.raises(hakobu.WorkerLost, match="died") as caught:
            result.get(WATCHDOG)
        assert isinstance(caught.value.__cause__, distributed.KilledWorker)
        assert pool.apply(tasks.square, (7,)) == 49  # the pool goes on (Dask restarted the worker)


def test_a_task_that_kills_every_worker_runs_retries_plus_one_times(tmp_path: Path) -> None:
    """As with the local engine: retries=1 is two runs in all (the pool's own cluster re-runs it, the
    pool does not send it again on top), then WorkerLost."""
    with hakobu.Pool(2, engine="dask", retries=1) as pool:
        with pytest.raises(hakobu.WorkerLost, match="retries=1 were used up"):
            pool.apply_async(tasks.die_every_time, (str(tmp_path),)).get(WATCHDOG * 2)
        assert pool._engine.stats()["resubmitted"] == 0
    assert len(list(tmp_path.glob("run-*"))) == 2


# --- "hosts": a scheduler, two workers and the client in network namespaces ------------------


def test_a_host_that_dies_mid_map_has_its_tasks_run_on_the_other() -> None:
    from hakobu_bench import netns

    why = netns.unavailable()
    if why is not None:
        pytest.skip(why)
    count = 24
    semaphores = set(Path("/dev/shm").glob("sem.mp-*"))
    try:
        _a_host_dies_mid_map(netns, count)
    finally:
        # The killed host's Dask processes could not remove their multiprocessing semaphores (a
        # machine lost loses nothing on the others; here the hosts share /dev/shm): remove them,
        # the new ones that no process has open (not those of a test running beside this one).
        for path in _unused_semaphores(semaphores):
            path.unlink(missing_ok=True)


def _unused_semaphores(before: set[Path]) -> set[Path]:
    """The multiprocessing semaphores in /dev/shm, but those in ``before``, that no process has open.

    Judged by file (device and inode), not by name: sem_open makes a semaphore
    as a temporary file that it maps, then links under its name and removes, so
    the process that made it (a Dask nanny of a test or run beside this one,
    whose spawned worker has not opened it yet) maps "/dev/shm/sem.XXXXXX
    (deleted)", never "/dev/shm/sem.mp-...".
    """
    candidates: dict[tuple[int, int], Path] = {}
    for path in set(Path("/dev/shm").glob("sem.mp-*")) - before:
        try:
            status = path.stat()
        except OSError:
            continue  # removed meanwhile
        candidates[(os.major(status.st_dev), os.minor(status.st_dev)), status.st_ino] = path
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue  # it exited meanwhile, or is not ours to read
        for line in text.splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or not fields[5].startswith("/dev/shm/sem."):
                continue
            major, minor = (int(part, 16) for part in fields[3].split(":"))
            candidates.pop(((major, minor), int(fields[4])), None)
    return set(candidates.values())


def test_semaphores_of_a_run_beside_this_one_are_not_taken_for_leftovers() -> None:
    """A semaphore that its creator holds (and no other process has opened) is in use: the clean-up
    after the host test must leave it, or a Dask nanny starting beside it loses its worker."""
    before = set(Path("/dev/shm").glob("sem.mp-*"))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import multiprocessing, sys\n"
            "lock = multiprocessing.get_context('spawn').Lock()\n"
            "print(lock._semlock.name, flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        name = holder.stdout.readline().strip()
        path = Path("/dev/shm") / f"sem.{name.lstrip('/')}"
        assert path.exists(), name
        assert path not in _unused_semaphores(before)
    finally:
        holder.communicate("", timeout=WATCHDOG)


def _a_host_dies_mid_map(netns: Any, count: int) -> None:
    with netns.hosts(3) as (first, second, third):
        scheduler_address = f"tcp://{first.address}:8786"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        processes = [
            first.start(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_scheduler",
                    "--host",
                    first.address,
                    "--port",
                    "8786",
                    "--no-dashboard",
                ],
                **quiet,
            )
        ]
        for host in (second, third):
            processes.append(
                host.start(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        scheduler_address,
                        "--nthreads",
                        "1",
                        "--host",
                        host.address,
                        "--no-dashboard",
                    ],
                    **quiet,
                )
            )
        client = first.start(
            [sys.executable, str(PROGRAMS / "dask_hosts_client.py"), scheduler_address, str(count), "0.3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        watchdog = threading.Timer(WATCHDOG * 3, client.kill)
        watchdog.start()
        try:
            assert client.stdout is not None
            lines: list[str] = []
            killed = False
            for line in client.stdout:
                lines.append(line.strip())
                words = line.split()
                if not killed and words[0] == "result" and third.address in words[3] and int(words[1]) >= 4:
                    third.kill_all()  # host 3 dies while it runs its next task
                    killed = True
            client.wait(WATCHDOG)
            assert client.returncode == 0, "\n".join(lines) + (client.stderr.read() if client.stderr else "")
        finally:
            watchdog.cancel()
            for process in [client, *processes]:
                if process.poll() is None:
                    process.kill()
                process.wait()
    results = [line.split() for line in lines if line.startswith("result")]
    assert killed, "host 3 computed no result before the end: nothing was killed"
    assert [int(words[2]) for words in results] == [x * x for x in range(count)]
    assert lines[-1] == "done"
    assert any(second.address in words[3] for words in results)


# --- the example -----------------------------------------------------------------------------------


def test_the_example_runs_on_a_local_cluster() -> None:
    ran = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "cluster" / "pool_on_dask.py"), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=WATCHDOG * 3,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "all 16 results correct" in ran.stdout, ran.stdout


# --- what travels ------------------------------------------------------------------------------------


def test_work_and_outcomes_survive_every_way_dask_may_send_them() -> None:
    """Dask's own frames (no copy), pickle 5 (buffers out of band) and older pickle (bytes)."""
    from hakobu._dask import engine
    from hakobu._pool.pickling import pack, unpack

    array = np.arange(300_000, dtype=np.int32)
    work = engine.Work("pool-x", pack((None, ())), 2, b"k" * 16, b"blob", 0, pack([array]))
    header, frames = engine._dump_work(work)
    copies = [engine._load_work(header, frames)]
    copies += [pickle_roundtrip(work, protocol) for protocol in (4, 5)]
    for copy in copies:
        assert (copy.pool, copy.threads, copy.key, copy.blob, copy.mode) == (
            "pool-x",
            2,
            b"k" * 16,
            b"blob",
            0,
        )
        np.testing.assert_array_equal(unpack(*copy.items)[0], array)
    outcome = engine.Outcome(engine.DONE, pack([array * 2]))
    header, frames = engine._dump_outcome(outcome)
    for copy in [
        engine._load_outcome(header, frames),
        pickle_roundtrip(outcome, 4),
        pickle_roundtrip(outcome, 5),
    ]:
        assert copy.kind == engine.DONE
        np.testing.assert_array_equal(unpack(*copy.packed)[0], array * 2)


def pickle_roundtrip(obj: Any, protocol: int) -> Any:
    import pickle

    buffers: list[Any] = []
    stream = pickle.dumps(obj, protocol, buffer_callback=buffers.append if protocol >= 5 else None)
    return pickle.loads(stream, buffers=buffers)


@pytest.mark.parametrize(
    ("header", "frames", "error"),
    [
        ({"pool": "p", "threads": None, "mode": 0, "init": 99}, [b"k", b"b", b"s", b"i"], "4 frames"),
        ({"pool": "p", "threads": None, "mode": "0", "init": 1}, [b"k", b"b", b"s", b"i"], "mode='0'"),
        ({"pool": 7, "threads": None, "mode": 0, "init": 1}, [b"k", b"b", b"s", b"i"], "pool=7"),
        ({"pool": "p", "threads": True, "mode": 0, "init": 1}, [b"k", b"b", b"s", b"i"], "threads=True"),
    ],
)
def test_a_damaged_task_from_the_network_is_refused_saying_what_was_wrong(
    header: dict[str, Any], frames: list[bytes], error: str
) -> None:
    from hakobu._dask import engine

    with pytest.raises(hakobu.Corrupt, match=error):
        engine._load_work(header, frames)


def test_a_damaged_result_from_the_network_is_refused_saying_what_was_wrong() -> None:
    from hakobu._dask import engine

    with pytest.raises(hakobu.Corrupt, match="kind 'exploded'"):
        engine._load_outcome({"kind": "exploded"}, [b"x"])
    with pytest.raises(hakobu.Corrupt, match="kind=None"):
        engine._load_outcome({}, [b"x"])
