"""hakobu.Lock and hakobu.Event between separately started programs: mutual exclusion, a
holder killed (OwnerDied), an event waking waiters in other programs, timeouts, Ctrl-C,
fork, and bad arguments. Programs: tests/python/programs/sync_peer.py."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import finish, said, start, stop

import hakobu

WATCHDOG = 120.0  # seconds: against a hang, never a measure of speed


# --- between programs --------------------------------------------------------------------


def test_two_programs_updating_a_file_under_the_lock_lose_no_update(sync_name: str, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    hakobu.Lock(sync_name, create=True)
    rounds = 300
    programs = [start("sync_peer", "count", sync_name, counter, rounds) for _ in range(2)]
    for program in programs:
        code, out, err = finish(program, WATCHDOG)
        assert (code, out) == (0, "done\n"), err
    assert int(counter.read_text()) == 2 * rounds


def test_a_killed_holder_leaves_the_lock_to_the_next_acquirer_with_owner_died(sync_name: str) -> None:
    lock = hakobu.Lock(sync_name)
    holder = start("sync_peer", "hold", sync_name)
    said(holder, "holding")
    info = lock.info()
    assert info["held"] and not info["held_by_this_process"]
    assert info["holder_pid"] == holder.pid
    assert lock.acquire(blocking=False) is False
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with pytest.warns(hakobu.OwnerDied, match=sync_name) as caught:
        assert lock.acquire(timeout=WATCHDOG) is True
    assert caught[0].filename == __file__, "the warning points at the caller's line"
    assert lock.owner_died is True
    assert lock.info()["owner_deaths"] == 1
    lock.release()
    assert lock.owner_died is True, "stays until the next clean acquire"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean acquire warns nothing
        with lock:
            assert lock.owner_died is False
    assert not lock.locked()


def test_owner_died_through_a_with_statement_points_at_it(sync_name: str) -> None:
    lock = hakobu.Lock(sync_name)
    holder = start("sync_peer", "hold", sync_name)
    said(holder, "holding")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with pytest.warns(hakobu.OwnerDied) as caught, lock:
        assert lock.owner_died
    assert caught[0].filename == __file__
    assert issubclass(hakobu.OwnerDied, Warning)


def test_an_event_set_in_one_program_wakes_waiters_in_two_others(sync_name: str) -> None:
    event = hakobu.Event(sync_name)
    waiters = [start("sync_peer", "wait", sync_name) for _ in range(2)]
    for waiter in waiters:
        said(waiter, "waiting")
    assert not event.is_set()
    setter = subprocess.run(
        [sys.executable, "-c", f"import hakobu; hakobu.Event({sync_name!r}).set()"],
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
    )
    assert setter.returncode == 0, setter.stderr
    for waiter in waiters:
        code, out, err = finish(waiter, WATCHDOG)
        assert (code, out) == (0, "woken True\n"), err
    assert event.is_set()
    event.clear()
    assert not event.is_set()
    assert event.wait(0) is False


def test_a_release_by_another_process_than_the_holder_is_refused(sync_name: str) -> None:
    lock = hakobu.Lock(sync_name)
    holder = start("sync_peer", "hold", sync_name)
    try:
        said(holder, "holding")
        with pytest.raises(hakobu.NotHeld, match=r"not|another"):
            lock.release()
        assert lock.locked(), "still the holder's"
    finally:
        stop(holder)


# --- timeouts and Ctrl-C -------------------------------------------------------------------


def test_acquire_gives_up_at_its_timeout_while_another_program_holds_it(sync_name: str) -> None:
    lock = hakobu.Lock(sync_name)
    holder = start("sync_peer", "hold", sync_name)
    try:
        said(holder, "holding")
        assert lock.acquire(timeout=0.05) is False
        assert lock.acquire(False) is False
        assert lock.acquire(blocking=False) is False
        assert lock.acquire(timeout=0) is False
        assert not lock.info()["held_by_this_process"]
    finally:
        stop(holder)


def test_event_wait_gives_up_at_its_timeout(sync_name: str) -> None:
    event = hakobu.Event(sync_name)
    assert event.wait(0.05) is False
    assert event.wait(timeout=0) is False
    event.set()
    assert event.wait(0.05) is True
    assert event.wait() is True


@pytest.mark.parametrize("command", ["block_lock", "block_event"])
def test_ctrl_c_interrupts_a_wait_and_takes_nothing(sync_name: str, command: str) -> None:
    lock = event = None
    if command == "block_lock":
        lock = hakobu.Lock(sync_name)
        assert lock.acquire()
    else:
        event = hakobu.Event(sync_name)
    waiter = start("sync_peer", command, sync_name)
    said(waiter, "waiting")
    time.sleep(0.2)  # let it block (if it has not yet, the interrupt still comes while waiting)
    waiter.send_signal(signal.SIGINT)
    code, out, err = finish(waiter, WATCHDOG)
    assert code == 3, err
    assert out == "interrupted False\n"
    if lock is not None:
        assert lock.info()["held_by_this_process"], "still ours: the interrupted waiter took nothing"
        lock.release()
    else:
        assert event is not None and not event.is_set()


# --- fork ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_lock_inherited_across_fork_is_refused_in_the_child_which_opens_it_again(sync_name: str) -> None:
    lock = hakobu.Lock(sync_name)
    assert _fork_checks(lock, sync_name) == 0
    assert not lock.locked()
    assert lock.acquire(), "the parent's handle still works in the parent"
    lock.release()


def _fork_checks(lock: hakobu.Lock, name: str) -> int:
    """In a forked child: the inherited handle refuses acquire and release (ForkedHandle, a
    RuntimeError that says what to do); a handle opened again in the child works."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            try:
                lock.acquire()
            except hakobu.ForkedHandle as error:
                assert isinstance(error, RuntimeError) and "open it again" in str(error)
            else:
                os._exit(2)
            try:
                lock.release()
            except hakobu.ForkedHandle:
                pass
            else:
                os._exit(3)
            again = hakobu.Lock(name)
            assert again.acquire(timeout=WATCHDOG)
            again.release()
            hakobu.Event(name + "-e").set()  # an event has no owner: fine in a child
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    event = hakobu.Event(name + "-e")
    try:
        assert event.is_set()
    finally:
        event.unlink()
    return os.waitstatus_to_exitcode(status)


# --- arguments and names --------------------------------------------------------------------


@pytest.mark.parametrize("cls", [hakobu.Lock, hakobu.Event])
def test_bad_names_and_options_raise_what_queue_raises(cls: type[hakobu.Lock] | type[hakobu.Event]) -> None:
    for bad_name in ("", "a/b", "a:b", "x" * 300):
        with pytest.raises(hakobu.InvalidName):
            cls(bad_name)
    with pytest.raises(hakobu.InvalidName):
        cls(3)  # type: ignore[arg-type]
    with pytest.raises(hakobu.InvalidName):
        cls("fine", domain="bad/domain")
    with pytest.raises(hakobu.InvalidArgument):
        cls("fine", create="yes")  # type: ignore[arg-type]
    with pytest.raises(hakobu.NotFound):
        cls("never-made", create=False)
    with pytest.raises(hakobu.NotFound):
        cls.remove("never-made")
    with pytest.raises(hakobu.InvalidName):
        cls.remove("a/b")


@pytest.mark.parametrize("timeout", [float("nan"), -0.5, -2, "1", True])
def test_bad_lock_timeouts_raise_invalid_argument(sync_name: str, timeout: object) -> None:
    lock = hakobu.Lock(sync_name)
    with pytest.raises(hakobu.InvalidArgument):
        lock.acquire(timeout=timeout)  # type: ignore[arg-type]
    assert not lock.locked()


@pytest.mark.parametrize("timeout", [float("nan"), -0.5, "1"])
def test_bad_event_timeouts_raise_invalid_argument(sync_name: str, timeout: object) -> None:
    event = hakobu.Event(sync_name)
    with pytest.raises(hakobu.InvalidArgument):
        event.wait(timeout)  # type: ignore[arg-type]


def test_lock_arguments_follow_threading(sync_name: str) -> None:
    lock = hakobu.Lock(sync_name)
    with pytest.raises(hakobu.InvalidArgument, match="non-blocking"):
        lock.acquire(False, 1.0)
    with pytest.raises(hakobu.InvalidArgument):
        lock.acquire(blocking="yes")  # type: ignore[arg-type]
    assert lock.acquire(1) is True  # an int for blocking, as threading takes it
    assert lock.acquire(0) is False
    lock.release()
    assert lock.acquire(timeout=None) is True  # no limit, as multiprocessing.Lock takes it
    lock.release()
    assert lock.acquire(timeout=float("inf")) is True
    lock.release()
    assert lock.acquire(timeout=10**30) is True  # beyond any clock: no limit
    lock.release()
    with pytest.raises(hakobu.NotHeld) as raised:
        lock.release()
    assert isinstance(raised.value, RuntimeError), "as threading.Lock.release of an unlocked lock"


def test_kinds_share_one_namespace_and_do_not_mix(sync_name: str) -> None:
    hakobu.Lock(sync_name, create=True)
    with pytest.raises(hakobu.AlreadyExists):
        hakobu.Lock(sync_name, create=True)
    with pytest.raises(hakobu.Incompatible, match="lock"):
        hakobu.Event(sync_name)
    assert hakobu.Lock(sync_name, create=False).name == sync_name


def test_names_repr_pickle_and_unlink(sync_name: str) -> None:
    lock = hakobu.Lock(sync_name)
    assert lock.name == sync_name and lock.domain == hakobu.default_domain()
    assert repr(lock) == f"<hakobu.Lock {sync_name!r} domain={lock.domain!r} unlocked>"
    with lock:
        assert "locked>" in repr(lock) and lock.locked()
        again = pickle.loads(pickle.dumps(lock))
        assert isinstance(again, hakobu.Lock) and again.locked(), "the same lock, by name"
    lock.unlink()
    with pytest.raises(hakobu.NotFound):
        hakobu.Lock(sync_name, create=False)
    assert lock.acquire(), "an open handle keeps working on the removed lock"
    lock.release()
    event = hakobu.Event(sync_name)
    assert repr(event).endswith("clear>")
    copy = pickle.loads(pickle.dumps(event))
    copy.set()
    assert event.is_set() and repr(event).endswith("set>")
    hakobu.Event.remove(sync_name)


# --- the benchmark ----------------------------------------------------------------------------


def test_the_lock_benchmark_runs() -> None:
    """hakobu_bench.micro.lock, cut short: hakobu.Lock beside its baselines (no figure is checked)."""
    pytest.importorskip(
        "hakobu_bench.micro.lock", reason="install the bench distribution: pip install ./bench/python"
    )
    done = subprocess.run(
        [sys.executable, "-m", "hakobu_bench.micro.lock", "--quick", "--rounds", "1", "--steps", "20"],
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
    )
    assert done.returncode == 0, done.stderr
    for line in [
        "machine:",
        "hakobu.Lock (two programs)",
        "multiprocessing.Lock (parent, child)",
        "fcntl.lockf (two programs)",
        "threading.Lock",
        "x hakobu",
    ]:
        assert line in done.stdout, done.stdout
