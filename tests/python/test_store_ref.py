"""Store values travel by reference: a hakobu.Pool task (or a queue's receiver in another
program) given an array read from a hakobu.Store gets a read-only view of the very version
sent, without a copy, whatever the store does meanwhile (python/hakobu/_codec.py, C++
Loan::attach(const StoreValue&, range))."""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import DOMAIN, PROGRAMS, _names, finish, start

import hakobu
from hakobu import _core

sys.path.insert(0, str(PROGRAMS))
import store_ref_tasks as tasks

WATCHDOG = 60  # seconds: against deadlock, never a measure of speed
N = 2 * 1024 * 1024  # float64: 16 MiB


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[hakobu.Store]:
    name = f"ref-{next(_names)}-{os.getpid()}"
    with hakobu.Store(name) as opened:
        yield opened
    gc.collect()
    try:
        hakobu.Store(name, create=False).unlink()
    except hakobu.NotFound:
        pass


@pytest.fixture
def queues() -> Iterator[list[str]]:
    """Names of queues a test creates (removed after it)."""
    names: list[str] = []
    yield names
    for queue_name in names:
        try:
            hakobu.remove(queue_name)
        except hakobu.NotFound:
            pass


def new_queue(queues: list[str], stem: str) -> hakobu.Queue:
    queue_name = f"{stem}-{next(_names)}-{os.getpid()}"
    queues.append(queue_name)
    return hakobu.Queue(queue_name)


def live_bytes() -> int:
    """Bytes of the domain's heap held by anything, after dead processes' holdings are reclaimed."""
    gc.collect()
    _core.collect_garbage(DOMAIN)
    return int(_core.domain_stats(DOMAIN)["live_bytes"])


def address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def test_a_store_array_is_shared_memory(store: hakobu.Store) -> None:
    store["X"] = np.arange(N, dtype=np.float64)
    x = store["X"]
    assert hakobu.is_shared(x) and hakobu.is_shared(x[10:1000]) and hakobu.is_shared(x[::3])
    assert not x.flags.writeable
    assert not hakobu.is_shared(np.arange(10))


def test_a_pool_task_gets_the_version_sent_read_only_and_without_a_copy(
    store: hakobu.Store, queues: list[str]
) -> None:
    expected = np.arange(N, dtype=np.float64)
    with hakobu.Pool(1) as pool:
        pool.apply(tasks.describe, (np.zeros(4),))  # the worker is up: its own memory is counted before
        store["X"] = expected
        x = store["X"]
        started, go = new_queue(queues, "started"), new_queue(queues, "go")
        before = live_bytes()
        result = pool.apply_async(tasks.report_then_wait, (x, started.name, go.name))
        _pid, seen = started.get(timeout=WATCHDOG)
        assert live_bytes() - before < x.nbytes // 4, "the task's argument was not copied"
        assert seen["sum"] == float(expected.sum()) and seen["shape"] == (N,)
        assert not seen["writeable"] and seen["shared"]
        # The key moves on and the sender lets go while the task holds its view.
        store["X"] = np.ones(N)
        del store["X"]
        del x
        go.put(True)
        after = result.get(WATCHDOG)
        assert after["sum"] == float(expected.sum()) and after["address"] == seen["address"]
        store["Y"] = expected
        assert "read-only" in pool.apply(tasks.try_to_write, (store["Y"],))
    del result


def test_slices_and_arrays_inside_objects_travel_by_reference(store: hakobu.Store) -> None:
    store["X"] = np.arange(N, dtype=np.float64).reshape(N // 8, 8)
    x = store["X"]
    rows = x[1000:100_000]
    with hakobu.Pool(1) as pool:
        part = pool.apply(tasks.describe, (rows,))
        assert part["sum"] == float(rows.sum()) and part["shape"] == rows.shape
        assert not part["writeable"] and part["shared"]
        nested = pool.apply(tasks.describe_nested, ({"whole": x, "inside": (rows, "text")},))
        assert nested["whole"]["sum"] == float(x.sum()) and nested["part"]["sum"] == float(rows.sum())
        assert not nested["whole"]["writeable"] and nested["whole"]["shared"] and nested["part"]["shared"]
        # A column is not contiguous: copied (its pickle holds its elements), still correct.
        column = pool.apply(tasks.describe, (x[:, 3],))
        assert column["sum"] == float(x[:, 3].sum())


def test_a_store_array_put_on_a_queue_is_read_by_another_program(
    store: hakobu.Store, queues: list[str]
) -> None:
    expected = np.arange(N, dtype=np.float64)
    store["X"] = expected
    queue = new_queue(queues, "to-reader")
    before = live_bytes()
    queue.put(store["X"][N // 2 :])
    assert live_bytes() - before < expected.nbytes // 4, "the message holds a reference, not a copy"
    reader = start("store_ref_reader", queue.name, stdin=-1)
    assert reader.stdout is not None and reader.stdin is not None
    first = json.loads(reader.stdout.readline() or "{}")
    assert first == {
        "sum": float(expected[N // 2 :].sum()),
        "shape": [N // 2],
        "writeable": False,
        "shared": True,
    }, finish(reader)
    # Republished, deleted and unlinked while the reader holds its view.
    store["X"] = np.zeros(N)
    del store["X"]
    store.unlink()
    reader.stdin.write("go\n")
    reader.stdin.flush()
    code, out, err = finish(reader)
    assert code == 0, err
    assert json.loads(out) == {"sum": float(expected[N // 2 :].sum())}
    assert live_bytes() < before - expected.nbytes // 2, "the version returned once the reader let go"


def test_a_received_store_array_forwarded_stays_read_only(store: hakobu.Store, queues: list[str]) -> None:
    store["X"] = np.arange(N, dtype=np.float64)
    queue = new_queue(queues, "forward")
    queue.put(store["X"])
    received = queue.get(timeout=WATCHDOG)
    assert not received.flags.writeable and hakobu.is_shared(received)
    queue.put({"again": received})
    forwarded = queue.get(timeout=WATCHDOG)["again"]
    assert not forwarded.flags.writeable and address(forwarded) == address(received)


def test_a_worker_killed_holding_a_store_array_leaks_nothing(store: hakobu.Store, queues: list[str]) -> None:
    gc.collect()
    baseline = live_bytes()
    store["X"] = np.arange(N, dtype=np.float64)
    started = new_queue(queues, "started")
    with hakobu.Pool(1) as pool:
        doomed = pool.apply_async(tasks.report_then_die, (store["X"], started.name))
        pid, seen = started.get(timeout=WATCHDOG)
        assert seen["shared"]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(hakobu.WorkerLost):
            doomed.get(WATCHDOG)
        del doomed
    del store["X"]
    assert live_bytes() <= baseline, "the dead worker's reference to the version was reclaimed"


def test_small_and_strided_store_views_on_a_queue_are_copied(store: hakobu.Store, queues: list[str]) -> None:
    store["X"] = np.arange(N, dtype=np.float64).reshape(N // 8, 8)
    store["small"] = np.arange(10, dtype=np.int32)
    x = store["X"]
    queue = new_queue(queues, "copies")
    queue.put(x[:, 3])
    queue.put(store["small"])
    column = queue.get(timeout=WATCHDOG)
    small = queue.get(timeout=WATCHDOG)
    assert np.array_equal(column, x[:, 3]) and np.array_equal(small, np.arange(10))
    assert column.flags.writeable and small.flags.writeable, "copies, the receiver's own"


def test_a_store_array_published_again_stays_an_array_value(store: hakobu.Store) -> None:
    store["X"] = np.arange(N, dtype=np.float64)
    store["Y"] = store["X"]
    y = store["Y"]
    assert isinstance(y, np.ndarray) and not y.flags.writeable and float(y.sum()) == float(store["X"].sum())
    assert store._core.value("Y").kind == 2, "an array message: C++ readers read it as an array"
    store["meta"] = {"x": store["X"]}
    inside = store["meta"]["x"]
    assert not inside.flags.writeable and float(inside.sum()) == float(y.sum())
