"""Pool tasks that cost little: small tasks batched both ways, the main script's functions by
reference, the ResourceWarning for a pool left running. Separate programs where the main
script matters. No timing is asserted: the watchdogs only guard against deadlock."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import PROGRAMS, finish, start
from test_pool import leftovers

import hakobu

sys.path.insert(0, str(PROGRAMS))
import pool_tasks as tasks

WATCHDOG = 60  # seconds: against deadlock, never a measure of speed


# --- batching ---------------------------------------------------------------------------------


def test_many_tiny_tasks_complete_and_each_callback_fires_once() -> None:
    calls: collections.Counter[object] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def on_result(value: int) -> None:
        with lock:
            calls[value] += 1

    def on_error(error: BaseException) -> None:
        with lock:
            errors[str(error)] += 1

    with hakobu.Pool(2) as pool:
        results = []
        for k in range(3000):
            if k % 10 == 7:
                results.append(
                    pool.apply_async(tasks.fail, (f"task {k}",), callback=on_result, error_callback=on_error)
                )
            else:
                results.append(
                    pool.apply_async(tasks.square, (k,), callback=on_result, error_callback=on_error)
                )
        for k, result in enumerate(results):
            result.wait(WATCHDOG)
            assert result.ready(), f"task {k} did not finish within the watchdog"
            if k % 10 == 7:
                with pytest.raises(ValueError, match=f"^task {k}$"):
                    result.get()
            else:
                assert result.get() == k * k
        stats = pool._engine.stats()
    assert calls == collections.Counter(k * k for k in range(3000) if k % 10 != 7), "each callback once"
    assert errors == collections.Counter(f"task {k}" for k in range(3000) if k % 10 == 7), (
        "each error_callback once"
    )
    assert stats["tasks"] == stats["results"] == 3000


def test_small_tasks_travel_in_batches_both_ways() -> None:
    with hakobu.Pool(1) as pool:
        assert pool.map(tasks.square, range(50), chunksize=1) == [
            x * x for x in range(50)
        ]  # learns they are short
        before = pool._engine.stats()
        assert pool.map(tasks.square, range(2000), chunksize=1) == [x * x for x in range(2000)]
        after = pool._engine.stats()
    sent = {key: after[key] - before[key] for key in after}
    assert sent["tasks"] == sent["results"] == 2000
    assert sent["task_messages"] < sent["tasks"] / 4, f"tasks go in batches: {sent}"
    assert sent["result_messages"] < sent["results"] / 4, f"results come back in batches: {sent}"


def test_order_of_map_and_imap_and_errors_per_task_with_batches() -> None:
    with hakobu.Pool(2) as pool:
        assert pool.map(tasks.square, range(5000), chunksize=1) == [x * x for x in range(5000)]
        assert pool.starmap(tasks.add, [(k, 1) for k in range(3000)]) == [k + 1 for k in range(3000)]
        assert list(pool.imap(tasks.square, range(3000))) == [x * x for x in range(3000)]
        assert sorted(pool.imap_unordered(tasks.square, range(3000))) == [x * x for x in range(3000)]
        iterator = pool.imap(tasks.fail_if, [(k, k % 100 == 0) for k in range(1000)])
        for k in range(1000):
            if k % 100 == 0:
                with pytest.raises(ValueError, match=f"^item {k}$"):
                    next(iterator)
            else:
                assert next(iterator) == k, "an error fails its own item only"
    with hakobu.Executor(2) as executor:
        futures = [executor.submit(tasks.fail_if, (k, k % 3 == 0)) for k in range(2000)]
        for k, future in enumerate(futures):
            if k % 3 == 0:
                assert isinstance(future.exception(WATCHDOG), ValueError)
            else:
                assert future.result(WATCHDOG) == k
        assert list(executor.map(tasks.add, range(1000), range(1000))) == [2 * k for k in range(1000)]


def test_chunksize_groups_items_as_before() -> None:
    with hakobu.Pool(2) as pool:
        before = pool._engine.stats()["tasks"]
        ran = pool.map(tasks.pid_and_item, range(40), chunksize=6)
        assert [item for _, item in ran] == list(range(40))
        chunks = [ran[k : k + 6] for k in range(0, 40, 6)]
        assert all(len({pid for pid, _ in chunk}) == 1 for chunk in chunks), "a chunk runs in one worker"
        assert pool._engine.stats()["tasks"] - before == 7, "one task per chunk of 6 (40 items)"
        assert list(pool.imap(tasks.square, range(10), chunksize=3)) == [x * x for x in range(10)]


def test_a_worker_killed_amid_a_batch_fails_only_the_task_it_ran() -> None:
    with hakobu.Pool(1) as pool:
        pool.map(tasks.square, range(50), chunksize=1)  # short tasks: batches from now on
        iterator = pool.imap(tasks.kill_self_at, [(k, 40) for k in range(100)])
        for k in range(100):
            if k == 40:
                with pytest.raises(hakobu.WorkerLost, match=r"kill_self_at on item 40"):
                    next(iterator)
            else:
                assert next(iterator) == k, "the other tasks of its batch run (again if their results died)"
    assert not leftovers(pool)


# --- the main script --------------------------------------------------------------------------


def test_a_guarded_script_sends_its_functions_and_classes_by_reference(tmp_path: Path) -> None:
    program = subprocess.Popen(
        [sys.executable, str(PROGRAMS / "pool_main_guard.py"), "an-arg"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    code, out, err = finish(program, WATCHDOG)
    assert code == 0, err
    assert out.splitlines() == [
        "locked [0, 1, 4, 9, 16]",  # a function using a module-level lock
        "method [0, 6, 12, 18]",  # a method of a class holding a lock
        "static [-1, -2]",
        "where __mp_main__ worker",  # the workers ran the script as __mp_main__
        "class back Counter(7) True",  # an instance made in a worker is the parent's class
        "lambda [3, 6]",  # by value
        "under the guard [1001, 1002]",  # defined under the guard: by value
        "argv ['an-arg']",  # the script ran in the workers with the parent's arguments
        "executor 81",
    ]


def test_a_script_without_a_guard_is_never_run_again() -> None:
    code, out, err = finish(start("pool_noguard"), WATCHDOG)
    assert code == 0, err
    assert out.count("script body runs") == 1


def test_code_without_a_file_travels_by_value() -> None:
    code_text = textwrap.dedent(
        """
        import hakobu

        class Box:
            def __init__(self, value):
                self.value = value

        def unbox(box):
            return box.value * 2

        print("python -c", hakobu.Pool(2).map(unbox, [Box(1), Box(2)]), flush=True)
        with hakobu.Pool(2) as pool:
            print("back", type(pool.apply(Box, (3,))).__name__, flush=True)
            print("lambda", pool.map(lambda x: -x, [1, 2]), flush=True)
        """
    )
    program = subprocess.Popen(
        [sys.executable, "-c", code_text], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    code, out, err = finish(program, WATCHDOG)
    assert code == 0, err
    assert out.splitlines() == ["python -c [2, 4]", "back Box", "lambda [-1, -2]"]


def test_notebook_cells_exec_in_main_travel_by_value() -> None:
    code, out, err = finish(start("pool_notebook"), WATCHDOG)
    assert code == 0, err
    assert out.splitlines() == [
        "cell class [Reading(value=2.0), Reading(value=5.0)]",
        "cell lambda [10, 20]",
    ]


# --- a pool left running ----------------------------------------------------------------------


def test_a_pool_left_running_at_exit_warns() -> None:
    environment = {**os.environ, "PYTHONWARNINGS": "always::ResourceWarning"}
    code, out, err = finish(start("pool_unclosed", env=environment), WATCHDOG)
    assert code == 0, err
    assert out == "result 16\n"
    assert err.count("ResourceWarning: unclosed running pool <hakobu.Pool pool_size=1>") == 1, err
    assert "Traceback" not in err and "leaked" not in err, err
