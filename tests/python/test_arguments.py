"""Absurd arguments are clear hakobu errors (never a hang, an overflow, a wrong class or the
bindings' TypeError), and a pickled queue reopens the same queue."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import pickle
import threading
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import pytest
from conftest import DOMAIN, files_of_domain

import hakobu

WATCHDOG = 30.0  # seconds: against a hang, never a measure of speed

NAN = math.nan
# (value, why it is wrong) for every timeout and spin.
BAD_SECONDS = [NAN, -1, -0.5, -math.inf, "1", True, [1], 1j]


@pytest.fixture
def other_domain() -> Iterator[str]:
    """A second domain; the test must leave none of its files behind."""
    domain = f"{DOMAIN}x"
    yield domain
    gc.collect()
    left = files_of_domain(domain)
    for path in left:
        os.unlink(path)
    assert not left, f"files left in shared memory: {left}"


# --- 1. a pickled queue -----------------------------------------------------------------


def test_a_pickled_queue_reopens_the_same_queue_in_its_domain(name: str, other_domain: str) -> None:
    q = hakobu.Queue(name, capacity=8, domain=other_domain, inline_capacity=64, spin=0.0, allow_pickle=False)
    try:
        copy = pickle.loads(pickle.dumps(q))
        try:
            assert (copy.name, copy.domain, copy.capacity) == (name, other_domain, 8)
            assert not copy.allow_pickle, "a queue refusing pickles stays so when handed on"
            assert not copy.is_creator
            assert not [path for path in files_of_domain() if path.endswith(f":q:{name}")], (
                "nothing was created in the default domain"
            )
            copy.put("through the copy")
            assert q.get(timeout=WATCHDOG) == "through the copy"
        finally:
            copy.close()
    finally:
        q.unlink()
    with pytest.raises(hakobu.NotFound):
        pickle.loads(pickle.dumps(q))  # the queue is gone: unpickling does not make a new one


def test_domain_property_is_the_resolved_domain(name: str) -> None:
    with hakobu.Queue(name) as q:
        assert q.domain == DOMAIN == hakobu.default_domain()


# --- 2. timeouts and spin ---------------------------------------------------------------------


def _queue_calls(q: hakobu.Queue) -> dict[str, Callable[[Any], Any]]:
    """Every Queue method that takes a timeout, on a queue that is empty and has room."""

    def run(coroutine: Any) -> Any:
        # A watchdog: a NaN that the loop never reaches its deadline with must not hang the suite.
        return asyncio.run(asyncio.wait_for(coroutine, WATCHDOG))

    return {
        "put": lambda t: q.put(1, timeout=t),
        "put nonblocking": lambda t: q.put(1, block=False, timeout=t),
        "get": lambda t: q.get(timeout=t),
        "get nonblocking": lambda t: q.get(block=False, timeout=t),
        "put_async": lambda t: run(q.put_async(1, timeout=t)),
        "get_async": lambda t: run(q.get_async(timeout=t)),
    }


@pytest.mark.parametrize(
    "method", ["put", "put nonblocking", "get", "get nonblocking", "put_async", "get_async"]
)
@pytest.mark.parametrize("timeout", BAD_SECONDS, ids=repr)
def test_nan_negative_and_non_number_timeouts_are_refused(name: str, method: str, timeout: Any) -> None:
    q = hakobu.Queue(name, capacity=4)
    with pytest.raises(hakobu.InvalidArgument) as info:
        _queue_calls(q)[method](timeout)
    assert isinstance(info.value, ValueError) and "timeout" in str(info.value)
    assert q.qsize() == 0, "nothing was sent"


@pytest.mark.parametrize("timeout", [math.inf, 1e300, 10**400, 2**63, None], ids=repr)
def test_infinite_and_huge_timeouts_wait_without_a_limit(name: str, timeout: Any) -> None:
    q = hakobu.Queue(name, capacity=1)
    q.put("room", timeout=timeout)  # no overflow on the way to nanoseconds
    assert q.get(timeout=timeout) == "room"
    late = threading.Timer(0.2, lambda: q.put("late"))
    late.start()
    try:
        assert q.get(timeout=timeout) == "late", "waited until a message came"
    finally:
        late.join()


@pytest.mark.parametrize("spin", BAD_SECONDS, ids=repr)
def test_bad_spins_are_refused(name: str, spin: Any) -> None:
    with pytest.raises(hakobu.InvalidArgument) as info:
        hakobu.Queue(name, spin=spin)
    assert "spin" in str(info.value)
    assert not [path for path in files_of_domain() if path.endswith(f":q:{name}")], "no queue was made"


@pytest.mark.parametrize("spin", [0, 0.0, 1e-6, math.inf, 1e300], ids=repr)
def test_any_non_negative_spin_works(name: str, spin: float) -> None:
    with hakobu.Queue(name, spin=spin) as q:
        q.put(1)
        assert q.get(timeout=WATCHDOG) == 1


def test_bindings_refuse_nan_and_negative_waits_themselves(name: str) -> None:
    core = hakobu._core.Queue(name, None, 4, 224, "", 0.0)
    try:
        for bad in (NAN, -1.0, -math.inf):
            with pytest.raises(hakobu.InvalidArgument):
                core.get(bad)
            with pytest.raises(hakobu.InvalidArgument):
                core.put_bytes(b"x", 1, bad)
            with pytest.raises(hakobu.InvalidArgument):
                hakobu._core.Queue(name, None, 4, 224, "", bad)
        core.put_bytes(b"x", 1, 1e300)
        assert bytes(memoryview(core.get(math.inf))) == b"x"
        with pytest.raises(hakobu.Empty):
            core.get(0.0)
    finally:
        core.unlink()


@pytest.mark.parametrize("timeout", [NAN, -1, "soon"], ids=repr)
def test_pool_results_refuse_bad_timeouts(timeout: Any) -> None:
    from hakobu.pool import ApplyResult, IMapIterator

    result: ApplyResult[int] = ApplyResult(None, None, None)
    for call in (result.get, result.wait, IMapIterator(None).next):  # type: ignore[arg-type]
        with pytest.raises(hakobu.InvalidArgument):
            call(timeout)


def test_pool_result_with_an_infinite_timeout_waits() -> None:
    from hakobu.pool import ApplyResult

    result: ApplyResult[str] = ApplyResult(None, None, None)
    threading.Timer(0.1, lambda: result._set(0, True, "done")).start()
    assert result.get(timeout=math.inf) == "done"


def test_executor_map_refuses_bad_timeouts() -> None:
    with hakobu.Executor(1) as executor:
        for bad in (NAN, -1):
            with pytest.raises(hakobu.InvalidArgument):
                executor.map(abs, [1, 2], timeout=bad)
        assert list(executor.map(abs, [-1, -2], timeout=math.inf)) == [1, 2]


# --- 3. exception classes for absurd arguments -----------------------------------------------


def test_removing_an_invalid_name_is_invalid_name() -> None:
    for bad in ["../x", "", "a/b", ".hidden", "x" * 65]:
        with pytest.raises(hakobu.InvalidName):
            hakobu.remove(bad)
    with pytest.raises(hakobu.InvalidName):
        hakobu.remove("x", domain="../d")
    with pytest.raises(hakobu.InvalidName):
        hakobu.remove(5)  # type: ignore[arg-type]


TOO_LARGE_ARRAYS = [
    ((2**64,), float),
    (2**64, float),
    (2**64 - 1, np.uint8),
    ((2**62,), np.int64),
    ((2**32, 2**32), np.uint8),  # product overflows int64
    ((2**31, 2**31, 4), np.uint8),
    ((0, 2**63), np.uint8),  # a dimension beyond any index, even beside a 0
    ((2**62,), np.uint8),  # fits an index, not the heap
    ((1 << 41,), np.uint8),  # twice the default heap
]


@pytest.mark.parametrize("shape,dtype", TOO_LARGE_ARRAYS, ids=repr)
def test_arrays_too_large_for_any_memory_are_too_large(shape: Any, dtype: Any) -> None:
    before = hakobu._core.domain_stats()["live_blocks"]
    for make in (hakobu.empty, hakobu.zeros, lambda s, d: hakobu.full(s, 1, d)):
        with pytest.raises(hakobu.TooLarge) as info:
            make(shape, dtype)
        assert isinstance(info.value, ValueError)
    assert hakobu._core.domain_stats()["live_blocks"] == before


BAD_SHAPES = [
    -1,
    (-1,),
    (3, -2),
    2.5,
    (2.0, 3),
    (2, 3.5),
    True,
    (True, 2),
    NAN,
    (NAN,),
    "3",
    ("3",),
    None,
    (None,),
    np.float64(2),
    object(),
]


def shape_id(shape: Any) -> str:
    """repr(), but not the address in a bare object()'s: every pytest-xdist worker collects the
    tests itself, and their ids must be the same in each."""
    return "object()" if type(shape) is object else repr(shape)


@pytest.mark.parametrize("shape", BAD_SHAPES, ids=shape_id)
def test_shapes_that_are_not_non_negative_ints_are_invalid(shape: Any) -> None:
    with pytest.raises(hakobu.InvalidArgument) as info:
        hakobu.empty(shape)
    assert isinstance(info.value, ValueError) and "shape" in str(info.value)


def test_integer_like_shapes_work() -> None:
    assert hakobu.empty(np.int64(3)).shape == (3,)
    assert hakobu.empty(np.array([2, 3])).shape == (2, 3)
    assert hakobu.empty([np.uint8(2), 0]).shape == (2, 0)
    assert hakobu.zeros((0, 5)).size == 0
    with pytest.raises(hakobu.InvalidArgument):
        hakobu.empty(3, order="X")  # type: ignore[arg-type]


def test_allocating_absurd_sizes_in_the_bindings() -> None:
    allocate = hakobu._core.allocate
    for huge in (2**64 - 1, 2**64, 2**100, 2**63):
        with pytest.raises(hakobu.TooLarge):
            allocate(huge)
    with pytest.raises(hakobu.TooLarge):
        allocate(2**63 - 1)  # an index, but no heap is that large (the core says so)
    for bad in (-1, -(2**70), 1.5, True, "8", None):
        with pytest.raises(hakobu.InvalidArgument):
            allocate(bad)
    with pytest.raises(hakobu.InvalidName):
        allocate(8, "../d")


@pytest.mark.parametrize(
    "options",
    [
        {"inline_capacity": -1},
        {"inline_capacity": 225},
        {"inline_capacity": 2**64},
        {"inline_capacity": 8.0},
        {"capacity": 2.0},
        {"capacity": 2.5},
        {"capacity": NAN},
        {"capacity": True},
        {"capacity": 0},
        {"capacity": -1},
        {"capacity": 2**64},
        {"capacity": 2**70},
        {"capacity": "8"},
        {"create": 1},
        {"create": "yes"},
        {"allow_pickle": 0},
        {"allow_pickle": "no"},
    ],
    ids=repr,
)
def test_bad_queue_options_are_invalid_arguments(name: str, options: dict[str, Any]) -> None:
    with pytest.raises(hakobu.InvalidArgument) as info:
        hakobu.Queue(name, **options)
    assert isinstance(info.value, ValueError)
    option = next(iter(options))
    assert option in str(info.value), f"the message names {option}: {info.value}"
    assert not [path for path in files_of_domain() if path.endswith(f":q:{name}")], "no queue was made"


@pytest.mark.parametrize("bad", [5, None, b"name", "../x", "a b", ""], ids=repr)
def test_bad_queue_and_domain_names_are_invalid_names(bad: Any) -> None:
    if bad is not None:
        with pytest.raises(hakobu.InvalidName):
            hakobu.Queue(bad)
    if bad not in (None, ""):
        with pytest.raises(hakobu.InvalidName):
            hakobu.Queue("fine", domain=bad)
        with pytest.raises(hakobu.InvalidName):
            hakobu.empty(3, domain=bad)


def test_loans_of_absurd_sizes_in_the_bindings(name: str) -> None:
    core = hakobu._core.Queue(name, None, 4, 224, "", 0.0)
    try:
        for huge in (2**64 - 1, 2**64):
            with pytest.raises(hakobu.TooLarge):
                core.loan(huge, 3, 0)
        for bad in (-1, 1.0, True):
            with pytest.raises(hakobu.InvalidArgument):
                core.loan(bad, 3, 0)
            with pytest.raises(hakobu.InvalidArgument):
                core.loan(8, 3, bad)
    finally:
        core.unlink()


def test_a_queue_works_after_refused_arguments(name: str) -> None:
    q = hakobu.Queue(name)
    for bad in (NAN, -1):
        with pytest.raises(hakobu.InvalidArgument):
            q.put("x", timeout=bad)
    q.put("fine")
    assert q.get(timeout=WATCHDOG) == "fine"
