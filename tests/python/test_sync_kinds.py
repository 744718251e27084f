"""hakobu.RLock, Semaphore, BoundedSemaphore, Barrier, Condition, Value and Array between
separately started programs: atomic counts that lose no update, a killed semaphore holder's
count returning, a barrier of three programs and one killed at it, notify across programs,
RLock recursion and owner death, Ctrl-C in every wait, pickling to a hakobu.Pool task, and
bad arguments. Programs: tests/python/programs/sync_peer.py."""

from __future__ import annotations

import pickle
import signal
import threading
import time
import warnings

import numpy as np
import pytest
from conftest import finish, said, start

import hakobu

WATCHDOG = 120.0  # seconds: against a hang, never a measure of speed


# --- Value and Array ------------------------------------------------------------------------


def test_two_programs_adding_atomically_lose_no_update(sync_name: str) -> None:
    value = hakobu.Value(sync_name, "q")
    rounds = 200_000
    programs = [start("sync_peer", "add", sync_name, rounds) for _ in range(2)]
    for program in programs:
        code, out, err = finish(program, WATCHDOG)
        assert (code, out) == (0, "done\n"), err
    assert value.value == 2 * rounds


def test_two_programs_adding_under_get_lock_lose_no_update(sync_name: str) -> None:
    value = hakobu.Value(sync_name, "q")
    rounds = 20_000
    programs = [start("sync_peer", "locked_add", sync_name, rounds) for _ in range(2)]
    for program in programs:
        code, out, err = finish(program, WATCHDOG)
        assert (code, out) == (0, "done\n"), err
    assert value.value == 2 * rounds


def test_value_typecodes_initial_and_atomics(sync_name: str) -> None:
    v = hakobu.Value(sync_name, "i", 7)
    assert v.dtype == np.dtype("i") and v.value == 7
    assert hakobu.Value(sync_name, np.int32, 99).value == 7, "attaching leaves the value"
    assert v.add(5) == 7 and v.value == 12
    assert v.compare_exchange(12, -3) and v.value == -3
    assert not v.compare_exchange(12, 0) and v.value == -3
    v.value = 2**31 - 1
    assert v.add(1) == 2**31 - 1 and v.value == -(2**31), "wraps as NumPy int32"
    with pytest.raises(hakobu.InvalidArgument, match="does not fit"):
        v.value = 2**31
    with pytest.raises(hakobu.Incompatible):
        hakobu.Value(sync_name, "d")


def test_a_float_value_and_its_lock(sync_name: str) -> None:
    v = hakobu.Value(sync_name, "d", 1.5)
    assert v.value == 1.5
    with v.get_lock():
        v.value += 1.0
        assert not v.get_lock().acquire(blocking=False), "held: not recursive"
    assert v.value == 2.5
    with pytest.raises(hakobu.InvalidArgument, match="integer"):
        v.add(1)
    assert not hasattr(v.get_lock(), "unlink"), "the lock of a value cannot remove the value"


def test_array_is_a_shared_writable_view(sync_name: str) -> None:
    a = hakobu.Array(sync_name, "d", (2, 3))
    b = hakobu.Array(sync_name, np.float64, (2, 3), create=False)
    assert a.shape == (2, 3) and len(a) == 2 and a.array.flags.writeable
    assert not a.array.any(), "a new array is zeros"
    a[1, 2] = 4.0
    np.asarray(a)[0] = 1.0
    assert b[1, 2] == 4.0 and list(b.array[0]) == [1.0, 1.0, 1.0]
    with pytest.raises(hakobu.Incompatible):
        hakobu.Array(sync_name, "d", (3, 2))
    with pytest.raises(hakobu.Incompatible):
        hakobu.Array(sync_name, "f", (2, 3))


def test_integer_array_atomics_index_the_flat_array(sync_name: str) -> None:
    a = hakobu.Array(sync_name, "B", 4)
    assert a.add(3, 250) == 0 and a.add(3, 10) == 250 and a[3] == 4, "uint8 wraps"
    assert a.compare_exchange(0, 0, 9) and a[0] == 9
    with pytest.raises(IndexError):
        a.add(4, 1)


@pytest.mark.parametrize("dtype", ["O", "U3", [("a", "i4")], ">i8"])
def test_dtypes_the_core_cannot_hold_are_refused(sync_name: str, dtype: object) -> None:
    with pytest.raises(hakobu.InvalidArgument):
        hakobu.Value(sync_name, dtype)  # type: ignore[arg-type]


# --- Semaphore and BoundedSemaphore ------------------------------------------------------------


def test_a_killed_holders_count_returns_to_a_waiter_in_another_program(sync_name: str) -> None:
    hakobu.Semaphore(sync_name, 1, create=True)
    holder = start("sync_peer", "sem_hold", sync_name)
    said(holder, "holding")
    waiter = start("sync_peer", "sem_take", sync_name)
    said(waiter, "waiting")
    holder.send_signal(signal.SIGKILL)
    holder.communicate()
    code, out, err = finish(waiter, WATCHDOG)
    assert (code, out) == (0, "took True\n"), err


def test_semaphore_counts_and_timeouts(sync_name: str) -> None:
    s = hakobu.Semaphore(sync_name, 2)
    assert hakobu.Semaphore(sync_name, 5).get_value() == 2, "attaching keeps the count"
    assert s.acquire() and s.acquire(blocking=False)
    assert s.acquire(blocking=False) is False
    assert s.acquire(timeout=0.01) is False
    assert s.info()["held_by_this_process"] == 2
    s.release(2)
    assert s.get_value() == 2
    with s:
        assert s.get_value() == 1
    with pytest.raises(hakobu.InvalidArgument):
        s.release(0)
    with pytest.raises(hakobu.InvalidArgument):
        hakobu.Semaphore(sync_name + "x", -1)
    with pytest.raises(hakobu.InvalidArgument):
        s.acquire(timeout=float("nan"))


def test_bounded_semaphore_over_release_is_a_value_error(sync_name: str) -> None:
    s = hakobu.BoundedSemaphore(sync_name, 1)
    with pytest.raises(ValueError) as raised:
        s.release()
    assert isinstance(raised.value, hakobu.TooManyReleases)
    assert s.acquire(blocking=False)
    s.release()
    with pytest.raises(hakobu.Incompatible):
        hakobu.BoundedSemaphore(sync_name, 2)
    with pytest.raises(hakobu.Incompatible):
        hakobu.Semaphore(sync_name, 1)


# --- Barrier ------------------------------------------------------------------------------------


def test_a_barrier_of_three_programs_trips_with_distinct_indices(sync_name: str) -> None:
    hakobu.Barrier(sync_name, 3, create=True)
    programs = [start("sync_peer", "barrier", sync_name, 3) for _ in range(3)]
    indices = set()
    for program in programs:
        said(program, "waiting")
    for program in programs:
        code, out, err = finish(program, WATCHDOG)
        assert code == 0, err
        indices.add(int(out.split()[-1]))
    assert indices == {0, 1, 2}


def test_a_party_killed_while_waiting_breaks_the_barrier_for_the_others(sync_name: str) -> None:
    barrier = hakobu.Barrier(sync_name, 3, create=True)
    doomed = start("sync_peer", "block_barrier", sync_name, 3)
    said(doomed, "waiting")
    other = start("sync_peer", "barrier", sync_name, 3)
    said(other, "waiting")
    watchdog = time.monotonic() + WATCHDOG
    while barrier.n_waiting < 2:  # both arrived
        assert time.monotonic() < watchdog, "the two parties never arrived"
        time.sleep(0.01)
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate()
    code, out, err = finish(other, WATCHDOG)
    assert (code, out) == (0, "broken\n"), err
    assert barrier.broken
    with pytest.raises(hakobu.BrokenBarrierError):
        barrier.wait(WATCHDOG)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(WATCHDOG)
    barrier.reset()
    assert not barrier.broken and barrier.n_waiting == 0


def test_threads_of_one_program_are_parties_too(sync_name: str) -> None:
    barrier = hakobu.Barrier(sync_name, 3)
    indices: list[int] = []
    threads = [threading.Thread(target=lambda: indices.append(barrier.wait(WATCHDOG))) for _ in range(2)]
    for thread in threads:
        thread.start()
    indices.append(barrier.wait(WATCHDOG))  # the main thread's wait, through its helper
    for thread in threads:
        thread.join(WATCHDOG)
    assert sorted(indices) == [0, 1, 2]


def test_barrier_timeout_breaks_it_and_parties_must_match(sync_name: str) -> None:
    barrier = hakobu.Barrier(sync_name, 2)
    assert barrier.parties == 2
    with pytest.raises(hakobu.BrokenBarrierError):
        barrier.wait(0.01)
    assert barrier.broken
    with pytest.raises(hakobu.Incompatible):
        hakobu.Barrier(sync_name, 3)
    with pytest.raises(hakobu.InvalidArgument):
        hakobu.Barrier(sync_name, 0)
    one = hakobu.Barrier(sync_name + "-one", 1)
    try:
        assert one.wait() == 0
    finally:
        one.unlink()


# --- Condition ----------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_lock", [0.0, 0.3])
def test_notify_wakes_a_waiter_in_another_program(sync_name: str, keep_lock: float) -> None:
    """keep_lock: the notifier keeps the lock that long after notify, past the waiter's slice
    of waiting: the woken waiter must still report the wake-up, not sleep again."""
    condition = hakobu.Condition(sync_name)
    waiter = start("sync_peer", "cond_wait", sync_name)
    said(waiter, "waiting")
    with condition:  # taken once the waiter released it inside wait()
        condition.notify()
        time.sleep(keep_lock)
    code, out, err = finish(waiter, WATCHDOG)
    assert (code, out) == (0, "notified True\n"), err


def test_condition_wait_times_out_holding_the_lock_and_wait_for(sync_name: str) -> None:
    condition = hakobu.Condition(sync_name)
    with pytest.raises(hakobu.NotHeld):
        condition.notify()
    with condition:
        assert condition.wait(0.01) is False
        assert not condition.acquire(blocking=False), "held again after the timeout"
        assert condition.wait_for(lambda: 0, timeout=0.01) == 0
        assert condition.wait_for(lambda: 5) == 5


def test_condition_bound_to_a_named_lock(sync_name: str) -> None:
    lock = hakobu.Lock(sync_name + "-lock")
    try:
        condition = hakobu.Condition(sync_name, lock)
        with condition:
            assert lock.locked()
        assert not lock.locked()
        with pytest.raises(hakobu.Incompatible):
            hakobu.Condition(sync_name)
        again = pickle.loads(pickle.dumps(condition))
        assert again.lock is not None and again.lock.name == lock.name
    finally:
        lock.unlink()


# --- RLock ----------------------------------------------------------------------------------------


def test_rlock_recursion_and_other_threads(sync_name: str) -> None:
    rlock = hakobu.RLock(sync_name)
    with rlock, rlock:
        assert rlock.info()["depth"] == 2
        errors: list[BaseException] = []

        def other() -> None:
            try:
                assert rlock.acquire(blocking=False) is False
                rlock.release()
            except BaseException as e:  # noqa: BLE001 - checked below
                errors.append(e)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(WATCHDOG)
        assert len(errors) == 1 and isinstance(errors[0], hakobu.NotHeld)
        assert isinstance(errors[0], RuntimeError)
    assert not rlock.info()["held"]
    with pytest.raises(hakobu.NotHeld):
        rlock.release()


def test_a_killed_rlock_owner_hands_it_over_with_owner_died(sync_name: str) -> None:
    rlock = hakobu.RLock(sync_name)
    holder = start("sync_peer", "rlock_hold", sync_name)
    said(holder, "holding")
    assert rlock.acquire(blocking=False) is False
    holder.send_signal(signal.SIGKILL)
    holder.communicate()
    with pytest.warns(hakobu.OwnerDied, match=sync_name):
        assert rlock.acquire(timeout=WATCHDOG)
    assert rlock.owner_died and rlock.info()["depth"] == 1
    rlock.release()
    assert not rlock.info()["held"]


# --- Ctrl-C -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["block_sem", "block_barrier", "block_cond"])
def test_ctrl_c_interrupts_every_wait(sync_name: str, command: str) -> None:
    args: list[object] = []
    expected = "interrupted 0\n"
    if command == "block_sem":
        hakobu.Semaphore(sync_name, 0)
    elif command == "block_barrier":
        barrier = hakobu.Barrier(sync_name, 2)
        args = [2]
        expected = "interrupted True\n"  # it aborts the barrier: the party will never arrive
    else:
        hakobu.Condition(sync_name)
        expected = "interrupted True\n"  # the lock is held again, as threading's wait leaves it
    waiter = start("sync_peer", command, sync_name, *args)
    said(waiter, "waiting")
    time.sleep(0.2)  # let it block (if it has not yet, the interrupt still comes while waiting)
    waiter.send_signal(signal.SIGINT)
    code, out, err = finish(waiter, WATCHDOG)
    assert (code, out) == (3, expected), err
    if command == "block_barrier":
        assert barrier.broken


# --- pickling and Pool --------------------------------------------------------------------------


def _take_and_count(semaphore: hakobu.Semaphore, value: hakobu.Value) -> int:
    with semaphore:
        return value.add(1)


def test_objects_pickle_by_name_to_a_pool_task(sync_name: str) -> None:
    semaphore = hakobu.BoundedSemaphore(sync_name, 1)
    value = hakobu.Value(sync_name + "-v", "q")
    try:
        with hakobu.Pool(2) as pool:
            olds = pool.starmap(_take_and_count, [(semaphore, value)] * 4)
        assert sorted(olds) == [0, 1, 2, 3] and value.value == 4
        assert semaphore.get_value() == 1
    finally:
        value.unlink()


@pytest.mark.parametrize(
    "make",
    [
        lambda n: hakobu.RLock(n),
        lambda n: hakobu.Semaphore(n, 3),
        lambda n: hakobu.BoundedSemaphore(n, 2),
        lambda n: hakobu.Barrier(n, 4),
        lambda n: hakobu.Condition(n),
        lambda n: hakobu.Value(n, "h", 3),
        lambda n: hakobu.Array(n, "f", (2, 2)),
    ],
)
def test_every_kind_pickles_to_the_same_object(sync_name: str, make: object) -> None:
    original = make(sync_name)  # type: ignore[operator]
    again = pickle.loads(pickle.dumps(original))
    assert type(again) is type(original) and again.name == original.name
    assert repr(again) == repr(original)


def test_bad_names_and_kinds(sync_name: str) -> None:
    with pytest.raises(hakobu.InvalidName):
        hakobu.Semaphore("no/slash")
    with pytest.raises(hakobu.InvalidName):
        hakobu.Value("", "i")
    hakobu.Lock(sync_name)
    for make in (hakobu.RLock, hakobu.Semaphore, hakobu.Condition):
        with pytest.raises(hakobu.Incompatible):
            make(sync_name)
    with pytest.raises(hakobu.Incompatible):
        hakobu.Barrier(sync_name, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(hakobu.Incompatible):
            hakobu.Array(sync_name, "i", 3)
