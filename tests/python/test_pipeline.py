"""hakobu.Pipeline and hakobu.Stage: order, fan-out and SKIP, every way to call it, errors with
their stage, killed workers, backpressure in blocks held, arrays forwarded without a copy,
shutdown with items in flight, Ctrl-C, a killed parent, absurd arguments.

Stage functions live in programs/pipeline_tasks.py (workers import them by name)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PROGRAMS, files_of_domain, finish, start
from test_pool import eventually, processes_named

import hakobu
from hakobu._pipeline.wire import STATE, WAITING

sys.path.insert(0, str(PROGRAMS))
import pipeline_tasks as tasks

WATCHDOG = 60  # seconds: against deadlock, never a measure of speed


def leftovers(pipe: hakobu.Pipeline) -> list[str]:
    """The pipeline's files still in /dev/shm (queues, board), and its workers still alive."""
    prefix = pipe._prefix
    files = [path for path in files_of_domain() if prefix in path or f"{pipe.name}.pipeline" in path]
    return files + [f"process {pid}" for pid in processes_named(prefix)]


def ended(pipe: hakobu.Pipeline) -> None:
    """Closes the pipeline (if it runs), waits for it, and checks that nothing of it is left."""
    pipe.close()
    pipe.join(WATCHDOG)
    hung = pipe._thread.is_alive()
    if hung:
        pipe.terminate()  # so that the failure leaves nothing behind
    assert not hung, "the pipeline ends within the watchdog"
    assert not leftovers(pipe)


def took(directory: Path, number: int) -> int:
    """The pid of the worker that announced item ``number`` (pipeline_tasks.ticket), once it has."""
    found: list[int] = []

    def announced() -> bool:
        found[:] = [int(p.name.split("-")[2]) for p in directory.glob(f"took-{number}-*")]
        return bool(found)

    eventually(announced, f"a worker takes item {number}")
    return found[0]


def go(directory: Path, *numbers: int) -> None:
    for number in numbers:
        (directory / f"go-{number}").touch()


@pytest.fixture(scope="module")
def pipe() -> Iterator[hakobu.Pipeline]:
    """double, then increment in two workers; shared by the tests that leave it as they found it."""
    shared = hakobu.Pipeline(hakobu.Stage(tasks.double), hakobu.Stage(tasks.increment, workers=2))
    yield shared
    ended(shared)


# --- order, fan-out, SKIP -----------------------------------------------------------------------


def test_map_returns_every_output_in_input_order(pipe: hakobu.Pipeline) -> None:
    assert pipe.map(range(50)) == [2 * x + 1 for x in range(50)]
    assert pipe.map([]) == []


def test_ordered_results_wait_for_earlier_inputs_that_finish_later() -> None:
    # Input x sleeps (10 - x) ms in one of three workers: later inputs tend to finish first.
    with hakobu.Pipeline(hakobu.Stage(tasks.slow_by_value, workers=3)) as pipe:
        assert pipe.map(range(12)) == list(range(12))
        unordered = pipe.map(range(12), ordered=False)
        assert sorted(unordered) == list(range(12))
        assert list(pipe.imap(range(12))) == list(range(12))
    assert not leftovers(pipe)


def test_skip_drops_an_item_and_a_list_fans_out_in_order() -> None:
    with hakobu.Pipeline(hakobu.Stage(tasks.fan_out), hakobu.Stage(tasks.increment, workers=2)) as pipe:
        expected = [1, 1.5, 3, 4, 4.5, 6, 7, 7.5, 9]
        assert pipe.map(range(9)) == expected
        unordered = pipe.map(range(9), ordered=False)
        assert sorted(unordered) == expected
        for x in (0, 3, 6):  # the outputs of one input come one after the other, in order
            first = unordered.index(x + 1)
            assert unordered[first + 1] == x + 1.5
    with hakobu.Pipeline(tasks.explode, tasks.explode, tasks.empty_list) as pipe:
        assert pipe.map([0, 1, 2]) == []
    with hakobu.Pipeline(tasks.explode, hakobu.Stage(tasks.explode, workers=2)) as pipe:
        assert pipe.map([0, 1, 2, 3]) == [1] + [2] * 4 + [3] * 9


# --- every way to call it ------------------------------------------------------------------------


def test_submit_gives_a_future_per_input(pipe: hakobu.Pipeline) -> None:
    futures = [pipe.submit(x) for x in range(10)]
    assert [future.result(WATCHDOG) for future in futures] == [2 * x + 1 for x in range(10)]
    with hakobu.Pipeline(tasks.fan_out) as fanning:
        assert fanning.submit(3).result(WATCHDOG) == [3, 3.5]  # fanned out: the list
        assert fanning.submit(4).result(WATCHDOG) == []  # SKIP: nothing
        assert fanning.submit(5).result(WATCHDOG) == 5


def test_map_async_calls_back_with_every_output(pipe: hakobu.Pipeline) -> None:
    called: list[Any] = []
    done = threading.Event()

    def callback(outputs: list[int]) -> None:
        called.append(outputs)
        done.set()

    result = pipe.map_async(range(20), callback=callback)
    assert result.get(WATCHDOG) == [2 * x + 1 for x in range(20)]
    assert done.wait(WATCHDOG) and called == [[2 * x + 1 for x in range(20)]]
    assert result.successful()


def test_map_async_reports_the_first_error() -> None:
    errors: list[BaseException] = []
    with hakobu.Pipeline(tasks.fail_on_three) as pipe:
        result = pipe.map_async(range(6), error_callback=errors.append)
        with pytest.raises(ValueError, match="three is not allowed"):
            result.get(WATCHDOG)
        assert not result.successful() and len(errors) == 1


def test_amap_iterates_in_asyncio(pipe: hakobu.Pipeline) -> None:
    async def collect(ordered: bool) -> list[int]:
        return [out async for out in pipe.amap(range(15), ordered=ordered)]

    assert asyncio.run(collect(True)) == [2 * x + 1 for x in range(15)]
    assert sorted(asyncio.run(collect(False))) == [2 * x + 1 for x in range(15)]


def test_imap_reads_its_input_lazily(pipe: hakobu.Pipeline) -> None:
    def endless() -> Iterator[int]:
        n = 0
        while True:
            yield n
            n += 1

    outputs = pipe.imap(endless())
    assert [next(outputs) for _ in range(30)] == [2 * x + 1 for x in range(30)]
    outputs.close()  # the feeder stops; what is in flight finishes and is dropped


# --- errors ------------------------------------------------------------------------------------------


def test_an_error_reaches_the_caller_with_its_stage_and_traceback_and_the_pipeline_goes_on() -> None:
    with hakobu.Pipeline(hakobu.Stage(tasks.fail_on_three, name="checker"), tasks.double) as pipe:
        outputs = pipe.imap(range(6))
        seen: list[Any] = []
        for _ in range(6):
            try:
                seen.append(next(outputs))
            except ValueError as error:
                seen.append(error)
        with pytest.raises(StopIteration):
            next(outputs)
        assert seen[:3] == [0, 2, 4] and seen[4:] == [8, 10]
        error = seen[3]
        assert isinstance(error, ValueError) and "three is not allowed (3)" in str(error)
        assert error.stage == "checker"  # type: ignore[attr-defined]
        if sys.version_info >= (3, 11):
            assert any("'checker'" in note for note in error.__notes__)
        assert isinstance(error.__cause__, hakobu.RemoteTraceback)
        assert "fail_on_three" in str(error.__cause__)  # the worker's traceback
        # map raises the first error; the inputs after it may never be read (their feeder stops),
        # so this one has nothing after it and every count below is exact.
        with pytest.raises(ValueError, match="three is not allowed"):
            pipe.map([2, 3])
        assert pipe.map([5]) == [10]  # the pipeline goes on
        # A worker counts an item once it has sent what came of it: maybe after the caller got it.
        expected = [("checker", 9, 2), ("double", 7, 0)]
        eventually(
            lambda: [(s["name"], s["items"], s["errors"]) for s in pipe.stats()] == expected,
            "every worker has counted its items",
        )
        stats = pipe.stats()
        assert stats[0]["queue"]["capacity"] == 4 and stats[0]["workers"] == 1
        assert all(stage["compute_seconds"] >= 0 and stage["input_wait_seconds"] >= 0 for stage in stats)


def test_an_iterable_that_raises_fails_at_its_position(pipe: hakobu.Pipeline) -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise KeyError("no more")

    outputs = pipe.imap(broken())
    assert next(outputs) == 3
    with pytest.raises(KeyError):
        next(outputs)
    with pytest.raises(StopIteration):
        next(outputs)
    with pytest.raises(TypeError):
        pipe.map(42)  # type: ignore[arg-type]


# --- killed workers -------------------------------------------------------------------------------


def test_a_killed_worker_fails_its_item_with_worker_lost_and_is_replaced(tmp_path: Path) -> None:
    with hakobu.Pipeline(hakobu.Stage(tasks.ticket, name="ticketing"), tasks.double) as pipe:
        future = pipe.submit((str(tmp_path), 0))
        os.kill(took(tmp_path, 0), signal.SIGKILL)
        error = future.exception(WATCHDOG)
        assert isinstance(error, hakobu.WorkerLost) and "'ticketing'" in str(error)
        assert error.signal == signal.SIGKILL and "retries=N" in str(error)
        go(tmp_path, 1)
        assert pipe.submit((str(tmp_path), 1)).result(WATCHDOG) == 2  # its replacement runs
    assert not leftovers(pipe)


@pytest.mark.parametrize("stage", [0, 1])
def test_retries_run_an_item_again_from_the_first_stage(tmp_path: Path, stage: int) -> None:
    stages = [tasks.same, tasks.same]
    stages[stage] = tasks.once_then_ok
    with hakobu.Pipeline(*stages, retries=1) as pipe:
        future = pipe.submit((str(tmp_path), 7))
        os.kill(took(tmp_path, 7), signal.SIGKILL)
        assert future.result(WATCHDOG) == 7
        assert pipe.map([(str(tmp_path), 7)]) == [7]
    assert not leftovers(pipe)


@pytest.mark.parametrize("retries", [0, 1])
def test_an_item_taken_by_a_worker_that_died_before_recording_it_is_not_waited_for(
    tmp_path: Path, retries: int
) -> None:
    """The window between a worker's get and its slot's mark: another handle takes the item
    unseen (as a worker killed right after its get would), then the worker dies waiting."""
    with hakobu.Pipeline(hakobu.Stage(tasks.ticket, name="ticketing"), retries=retries) as pipe:
        first = pipe.submit((str(tmp_path), 0))
        worker = took(tmp_path, 0)
        second = pipe.submit((str(tmp_path), 1))  # waits in the queue: the only worker is busy
        with hakobu.Queue(pipe._queues[0].name, create=False) as thief:
            stolen = thief.get(timeout=WATCHDOG)
        del stolen
        go(tmp_path, 0, 1)
        assert first.result(WATCHDOG) == 0
        eventually(
            lambda: all(int(w.slot[STATE]) == WAITING for w in pipe._workers.values()), "the worker waits"
        )
        os.kill(worker, signal.SIGKILL)
        if retries:
            assert second.result(WATCHDOG) == 1
        else:
            error = second.exception(WATCHDOG)
            assert isinstance(error, hakobu.WorkerLost) and "'ticketing'" in str(error)
        assert pipe.map([(str(tmp_path), 1)]) == [1]
    assert not leftovers(pipe)


# --- memory -----------------------------------------------------------------------------------------


def test_memory_in_flight_is_bounded_by_the_capacities_in_blocks_held(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    held = functools.partial(tasks.gated, str(gate))
    pipe = hakobu.Pipeline(hakobu.Stage(tasks.make_block), hakobu.Stage(held, name="held"), capacity=2)
    try:
        (tmp_path / "gate").touch()
        assert len(pipe.map(range(3))) == 3  # the workers are up
        (tmp_path / "gate").unlink()
        before = hakobu._core.domain_stats()["live_blocks"]
        outputs = pipe.imap(range(200))  # not read yet: the pipeline fills up, then stops feeding

        def stuck() -> bool:
            queues = pipe.stats()
            return bool(queues[0]["queue"]["size"] == 2 and queues[1]["queue"]["size"] == 2)

        eventually(stuck, "both queues are full")
        blocks = hakobu._core.domain_stats()["live_blocks"] - before
        # The arrays in the queue and in the two workers, and each worker's slot: far below 200.
        assert blocks <= pipe.window + 2, blocks
        assert len(pipe._inputs) <= pipe.window
        gate.touch()
        assert [float(a[0]) for a in outputs] == [float(x) for x in range(200)]
    finally:
        gate.touch()
        ended(pipe)


def test_arrays_are_forwarded_by_reference_not_copied() -> None:
    stages = [tasks.increment_in_place] * 3
    with hakobu.Pipeline(*stages) as pipe:
        x = hakobu.zeros((256, 1024))
        [y] = pipe.map([x])
        assert y.ctypes.data == x.ctypes.data  # the very memory went through the three stages
        assert (x == 3).all()  # each stage wrote it in place
        private = np.zeros(1 << 17)  # 1 MiB: its pickle carries it out of band
        [z] = pipe.map([private])
        assert hakobu.is_shared(z) and (z == 3).all()  # copied once into shared memory
        assert (private == 0).all()
        del x, y, z
    with hakobu.Pipeline(tasks.increment_in_place, tasks.where) as pipe:
        assert pipe.map([hakobu.zeros(1 << 17)]) == [(True, 1)]


# --- shutdown --------------------------------------------------------------------------------------


def test_close_delivers_the_items_in_flight(tmp_path: Path) -> None:
    pipe = hakobu.Pipeline(hakobu.Stage(tasks.ticket, workers=2), tasks.double)
    futures = [pipe.submit((str(tmp_path), n)) for n in range(4)]
    took(tmp_path, 0)
    took(tmp_path, 1)
    pipe.close()
    with pytest.raises(ValueError):
        pipe.submit((str(tmp_path), 9))
    go(tmp_path, 0, 1, 2, 3)
    pipe.join(WATCHDOG)
    assert [future.result(0) for future in futures] == [0, 2, 4, 6]
    ended(pipe)


def test_terminate_fails_the_items_in_flight(tmp_path: Path) -> None:
    pipe = hakobu.Pipeline(hakobu.Stage(tasks.ticket), tasks.double)
    futures = [pipe.submit((str(tmp_path), n)) for n in range(3)]
    took(tmp_path, 0)
    pipe.terminate()
    for future in futures:
        with pytest.raises(hakobu.PoolTerminated, match="terminated before input"):
            future.result(WATCHDOG)
    ended(pipe)


@pytest.mark.parametrize("mode", ["with", "usable", "bare"])
def test_ctrl_c_interrupts_map(mode: str, tmp_path: Path) -> None:
    program = start("pipeline_interrupt", mode, tmp_path)
    line = program.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("mapping "), program.stderr.read()  # type: ignore[union-attr]
    prefix = line.split()[1]
    eventually(lambda: len(list(tmp_path.glob("took-*"))) == 2, "both workers run an item")
    program.send_signal(signal.SIGINT)
    code, out, err = finish(program, WATCHDOG)
    if mode == "bare":  # as hakobu.Pool: the interrupt ends the program, its workers with it
        assert code == -signal.SIGINT and err.rstrip().endswith("KeyboardInterrupt"), err
        assert err.count("Traceback") == 1, err
    else:
        expected = "interrupted\n" + ("again [8]\n" if mode == "usable" else "")
        assert code == 3 and out == expected, err
        assert err.count("Traceback") == 0, err
    assert not processes_named(prefix), "no worker is left"
    assert not [path for path in files_of_domain() if prefix in path], "no queue is left"


def test_workers_leave_and_remove_everything_when_the_parent_is_killed(tmp_path: Path) -> None:
    program = start("pipeline_orphan", tmp_path)
    line = program.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("pipe-"), program.stderr.read()  # type: ignore[union-attr]
    prefix, name = line.split()
    took(tmp_path, 0)
    assert len(processes_named(prefix)) == 3
    program.kill()
    finish(program, WATCHDOG)
    eventually(lambda: not processes_named(prefix), "the orphaned workers exit")
    eventually(
        lambda: not [path for path in files_of_domain() if prefix in path or f"{name}.pipeline" in path],
        "the workers remove the queues and the board",
    )
    hakobu._core.collect_garbage()  # what the killed parent held


# --- arguments ----------------------------------------------------------------------------------------


def test_absurd_arguments_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match="callable"):
        hakobu.Stage(42)  # type: ignore[arg-type]
    for workers in (0, -1, 1.5, float("nan"), True):
        with pytest.raises(hakobu.InvalidArgument, match="workers"):
            hakobu.Stage(tasks.double, workers=workers)  # type: ignore[arg-type]
    with pytest.raises(hakobu.InvalidArgument, match="name"):
        hakobu.Stage(tasks.double, name="")
    with pytest.raises(hakobu.InvalidArgument, match="at least one stage"):
        hakobu.Pipeline()
    for capacity in (0, -1, float("nan"), 2.0):
        with pytest.raises(hakobu.InvalidArgument, match="capacity"):
            hakobu.Pipeline(tasks.double, capacity=capacity)  # type: ignore[arg-type]
    with pytest.raises(hakobu.InvalidArgument, match="retries"):
        hakobu.Pipeline(tasks.double, retries=-1)
    with pytest.raises(hakobu.InvalidName):
        hakobu.Pipeline(tasks.double, name="no spaces/here")
    with pytest.raises(TypeError, match="cannot be sent"):
        hakobu.Pipeline(functools.partial(tasks.gated, threading.Lock()))
    with pytest.raises(TypeError, match="callable"):
        hakobu.Pipeline(tasks.double, "not a function")
    assert repr(hakobu.Stage(tasks.double, workers=2)) == "hakobu.Stage(double, workers=2)"


def test_a_closed_pipeline_refuses_new_work(pipe: hakobu.Pipeline) -> None:
    with hakobu.Pipeline(tasks.double) as other:
        pass
    with pytest.raises(ValueError, match="not running"):
        other.map([1])
    with pytest.raises(ValueError, match="not running"):
        other.submit(1)
    with pytest.raises(NotImplementedError):
        import pickle

        pickle.dumps(pipe)


def test_max_bytes_bounds_each_queue_and_a_larger_item_still_passes() -> None:
    with hakobu.Pipeline(tasks.increment_in_place, tasks.increment_in_place, max_bytes=1 << 20) as pipe:
        assert all(stage["queue"]["max_bytes"] == 1 << 20 for stage in pipe.stats())
        arrays = [hakobu.zeros(1 << 19) for _ in range(6)]  # 4 MiB each: one at a time per queue
        outputs = pipe.map(arrays)
        assert [float(a[0]) for a in outputs] == [2.0] * 6
        del arrays, outputs
    with pytest.raises(hakobu.InvalidArgument, match="max_bytes"):
        hakobu.Pipeline(tasks.double, max_bytes=-1)


def test_the_board_shows_the_running_pipeline_to_other_readers(pipe: hakobu.Pipeline) -> None:
    from hakobu._pipeline import board

    def shown() -> dict[str, Any]:
        [found] = [b for b in board.running(hakobu.default_domain()) if b["name"] == pipe.name]
        return found

    assert pipe.map(range(4)) == [1, 3, 5, 7]
    described = shown()
    assert described["alive"] and described["pid"] == os.getpid()
    assert [(s["name"], s["workers"]) for s in described["stages"]] == [("double", 1), ("increment", 2)]
    assert described["results"] == pipe._queues[-1].name
    workers = {int(w.process.pid) for w in pipe._workers.values()}
    eventually(lambda: {int(row["pid"]) for row in shown()["workers"]} == workers, "each worker has its row")
    eventually(
        lambda: sum(row["items"] for row in shown()["workers"]) == sum(s["items"] for s in pipe.stats()),
        "the board and stats() agree",
    )
