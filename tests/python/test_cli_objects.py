"""`hakobu ls` / `info` / `rm` of stores, sync objects (locks, events, semaphores, barriers...) and topics, run as a separate
process next to separately started programs that hold them; assertions are on --json output
and exit codes. Stores are made through `_core.store_put_bytes` (the Python Store class is
not needed for that), and held by the C++ store peer where it is built."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DOMAIN, PROGRAMS, files_of_domain, finish, start
from test_cli import cli_json, run_cli

import hakobu
from hakobu import _core

sys.path.insert(0, str(PROGRAMS))
from topic_format import bytes_message  # the check format every topic test program shares

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count()


@pytest.fixture
def object_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh name; whatever store, sync object or queue has it is removed after the test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name[:40])
    name = f"{base}-{next(_names)}"
    yield name
    for remove in (_core.remove_store, _core.remove_sync, _core.remove):
        try:
            remove(name, "")
        except hakobu.NotFound:
            pass


def entry(report: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    found = [item for item in report[section] if item["name"] == name]
    assert len(found) == 1, report[section]
    return found[0]


def holding(name: str) -> subprocess.Popen[str]:
    """A program that holds lock `name` (tests/python/programs/sync_peer.py) until killed."""
    holder = start("sync_peer", "hold", name)
    line = holder.stdout.readline()  # type: ignore[union-attr]
    assert line == "holding\n", holder.stderr.read()  # type: ignore[union-attr]
    return holder


# --- locks and events ---------------------------------------------------------------------------


def test_a_lock_is_listed_with_its_holder_then_its_death_then_removed(object_name: str) -> None:
    hakobu.Lock(object_name, create=True)
    holder = holding(object_name)
    try:
        lock = entry(cli_json("ls"), "sync_objects", object_name)
        assert lock["kind"] == "lock" and lock["error"] is None
        assert lock["held"] and lock["holder_pid"] == holder.pid and lock["holder_alive"]
        assert lock["owner_deaths"] == 0 and lock["pids"] == [holder.pid]
        info = cli_json("info", object_name)
        assert (info["kind"], info["held"], info["holder_pid"]) == ("lock", True, holder.pid)
        text = run_cli("info", object_name)
        assert text.returncode == 0 and f"held by pid {holder.pid}" in text.stdout, text.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        finish(holder)
    dead = cli_json("info", object_name)
    assert dead["held"] and not dead["holder_alive"], "held by a dead process until someone takes it over"
    assert "dead" in run_cli("ls").stdout
    lock_handle = hakobu.Lock(object_name)
    with pytest.warns(hakobu.OwnerDied):
        assert lock_handle.acquire(timeout=60)
    lock_handle.release()
    after = cli_json("info", object_name)
    assert (after["held"], after["holder_pid"], after["owner_deaths"]) == (False, None, 1)

    removed = cli_json("rm", object_name)
    assert removed["removed"] == [object_name] and removed["kinds"] == {object_name: "sync"}
    assert all(item["name"] != object_name for item in cli_json("ls")["sync_objects"])
    with pytest.raises(hakobu.NotFound):
        hakobu.Lock(object_name, create=False)
    again = run_cli("rm", object_name)
    assert again.returncode == 1 and f"'{object_name}'" in again.stderr


def test_an_event_shows_set_or_clear(object_name: str) -> None:
    event = hakobu.Event(object_name)
    assert cli_json("info", object_name)["set"] is False
    event.set()
    info = cli_json("info", object_name, "--kind", "event")
    assert (info["kind"], info["set"]) == ("event", True)
    listed = run_cli("ls")
    assert listed.returncode == 0 and object_name in listed.stdout and "event" in listed.stdout
    assert cli_json("rm", object_name, "--kind", "sync")["removed"] == [object_name]


def test_a_semaphore_shows_its_value_and_the_counts_each_process_holds(object_name: str) -> None:
    semaphore = hakobu.Semaphore(object_name, 2)
    holder = start("sync_peer", "sem_hold", object_name)
    try:
        assert holder.stdout.readline() == "holding\n", holder.stderr.read()  # type: ignore[union-attr]
        info = cli_json("info", object_name)
        assert (info["kind"], info["value"], info["bound"]) == ("semaphore", 1, None)
        assert [(h["pid"], h["counts"], h["alive"]) for h in info["holders"]] == [(holder.pid, 1, True)]
        text = run_cli("info", object_name)
        assert text.returncode == 0 and f"pid {holder.pid}: 1" in text.stdout, text.stderr
        assert "semaphore" in run_cli("ls").stdout
    finally:
        holder.send_signal(signal.SIGKILL)
        finish(holder)
    dead = cli_json("info", object_name, "--kind", "semaphore")
    assert [(h["counts"], h["alive"]) for h in dead["holders"]] == [(1, False)]
    assert semaphore.acquire(timeout=60) and semaphore.acquire(timeout=60), "the dead holder's count returned"
    semaphore.release(2)


def test_barrier_rlock_condition_and_arrays_are_named_with_their_state(object_name: str) -> None:
    names = [f"{object_name}-{kind}" for kind in ("barrier", "rlock", "cond", "value", "array", "lock")]
    barrier_name, rlock_name, cond_name, value_name, array_name, lock_name = names
    try:
        barrier = hakobu.Barrier(barrier_name, 3)
        rlock = hakobu.RLock(rlock_name)
        lock = hakobu.Lock(lock_name)
        hakobu.Condition(cond_name, lock)
        hakobu.Value(value_name, "d", 2.5)
        hakobu.Array(array_name, "i", (2, 3))
        with rlock, rlock:
            info = cli_json("info", rlock_name)
            assert (info["kind"], info["held"], info["depth"]) == ("rlock", True, 2)
        info = cli_json("info", barrier_name)
        assert (info["kind"], info["parties"], info["n_waiting"], info["broken"]) == ("barrier", 3, 0, False)
        barrier.abort()
        assert cli_json("info", barrier_name)["broken"] is True
        assert "0 of 3 parties waiting, broken" in run_cli("info", barrier_name).stdout
        info = cli_json("info", cond_name)
        assert (info["kind"], info["lock_name"]) == ("condition", lock_name)
        info = cli_json("info", value_name)
        assert (info["kind"], info["dtype"], info["shape"], info["data_bytes"]) == ("value", "float64", [], 8)
        info = cli_json("info", array_name, "--kind", "array")
        assert (info["dtype"], info["shape"], info["held"]) == ("int32", [2, 3], False)
        listed = {item["name"]: item for item in cli_json("ls")["sync_objects"]}
        assert all(listed[n]["error"] is None for n in names), "no kind is reported as damaged"
        assert [listed[n]["kind"] for n in names] == [
            "barrier",
            "rlock",
            "condition",
            "value",
            "array",
            "lock",
        ]
        text = run_cli("ls")
        assert text.returncode == 0 and "int32" in text.stdout, text.stderr
    finally:
        for name in names:
            try:
                _core.remove_sync(name, "")
            except hakobu.NotFound:
                pass


# --- stores -------------------------------------------------------------------------------------


def store_peer() -> Path:
    for preset in ("dev", "release", "asan-ubsan"):
        path = REPO / "build" / preset / "tests" / "cpp" / "hakobu_store_peer"
        if path.exists():
            return path
    pytest.skip(
        "build the C++ tests first: cmake --preset dev && cmake --build --preset dev (hakobu_store_peer)"
    )


def test_a_store_is_listed_with_its_keys_sizes_versions_and_kinds(object_name: str) -> None:
    first = _core.store_put_bytes(object_name, "weights", b"\x01" * 1000)
    second = _core.store_put_bytes(object_name, "meta", b"abc")
    replaced = _core.store_put_bytes(object_name, "weights", b"\x02" * 2000)
    assert first < second < replaced
    store = entry(cli_json("ls"), "stores", object_name)
    assert store["kind"] == "store" and store["error"] is None and store["value_bytes"] == 2003
    info = cli_json("info", object_name)
    assert [(k["key"], k["size"], k["kind"], k["version"], k["readers"]) for k in info["keys"]] == [
        ("meta", 3, "bytes", second, 0),
        ("weights", 2000, "bytes", replaced, 0),
    ]
    assert info["capacity"] >= 2 and not info["unlinked"]
    text = run_cli("info", object_name)
    assert text.returncode == 0 and "weights" in text.stdout and "2 key(s)" in text.stdout, text.stderr

    removed = cli_json("rm", object_name)
    assert removed["kinds"] == {object_name: "store"}
    assert all(item["name"] != object_name for item in cli_json("ls")["stores"])
    assert run_cli("info", object_name).returncode == 1


def test_a_store_value_held_by_another_program_counts_as_a_reader(object_name: str, tmp_path: Path) -> None:
    peer = store_peer()
    _core.store_put_bytes(object_name, "x", b"\x07" * 4096)
    ready, go = tmp_path / "ready", tmp_path / "go"
    reader = subprocess.Popen(
        [str(peer), "hold", object_name, "x", str(ready), str(go)], stderr=subprocess.PIPE, text=True
    )
    try:
        for _ in range(6000):  # a watchdog of about 60 s against a peer that never starts
            if ready.exists() and ready.read_text():
                break
            if reader.poll() is not None:
                pytest.fail(f"the store peer ended: {reader.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.01)
        info = cli_json("info", object_name)
        assert [(k["key"], k["readers"]) for k in info["keys"]] == [("x", 1)]
        assert reader.pid in info["pids"], "the reader maps the store"
    finally:
        go.write_text("")
        code, _, err = finish(reader)
        assert code == 0, err
    assert [(k["key"], k["readers"]) for k in cli_json("info", object_name)["keys"]] == [("x", 0)]


# --- names shared between namespaces -----------------------------------------------------------


def test_a_name_shared_by_a_queue_and_a_lock_needs_kind(object_name: str) -> None:
    hakobu.Queue(object_name)
    hakobu.Lock(object_name)
    ambiguous = run_cli("info", object_name)
    assert ambiguous.returncode == 2 and "--kind" in ambiguous.stderr and "queue" in ambiguous.stderr
    assert cli_json("info", object_name, "--kind", "lock")["kind"] == "lock"
    assert cli_json("info", object_name, "--kind", "queue")["capacity"] == 1024
    removed = cli_json("rm", object_name, "--kind", "queue")
    assert removed["kinds"] == {object_name: "queue"}
    assert cli_json("info", object_name)["kind"] == "lock", "the lock is left"
    assert cli_json("rm", object_name)["kinds"] == {object_name: "sync"}


def test_bad_names_and_missing_objects(object_name: str) -> None:
    hakobu.Lock(object_name)  # the domain exists
    missing = run_cli("info", f"{object_name}-x", "--kind", "store")
    assert missing.returncode == 1 and f"no store '{object_name}-x' in domain '{DOMAIN}'" in missing.stderr
    assert run_cli("info", "a:b").returncode == 2
    assert run_cli("rm", "a/b").returncode == 2
    assert run_cli("info", object_name, "--kind", "nonsense").returncode == 2
    assert files_of_domain()  # the lock keeps the domain until the fixture removes it


# --- topics -------------------------------------------------------------------------------------


class Subscriber:
    """tests/python/programs/cli_topic_subscriber.py: a subscription in a program of its own."""

    def __init__(self, topic: str, on_full: str) -> None:
        self.process = start("cli_topic_subscriber", topic, on_full, stdin=subprocess.PIPE)
        self.expect("subscribed")

    def expect(self, start_of_line: str) -> str:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith(start_of_line):
            self.process.kill()
            pytest.fail(f"expected {start_of_line!r}, got {line!r}: {self.process.stderr.read()}")  # type: ignore[union-attr]
        return line

    def take(self, count: int) -> dict[str, int]:
        """Receives `count` messages; its own counters after them (missed: before the first)."""
        self.process.stdin.write(f"take {count}\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        words = self.expect(f"took {count} ").split()
        return {words[k]: int(words[k + 1]) for k in range(2, len(words), 2)}


def subscriber_of(report: dict[str, Any], pid: int) -> dict[str, Any]:
    found = [s for s in report["subscribers"] if s["pid"] == pid]
    assert len(found) == 1, report["subscribers"]
    return found[0]


def test_a_topic_shows_its_subscribers_their_lag_and_drops_then_is_removed(topic_name: str) -> None:
    """Two subscribers in programs of their own, one keeping up (block), one lagging
    (drop_oldest): ls and info show each one's lag, drops and receipts as the programs count them."""
    topic = hakobu.Topic(topic_name, capacity=8, create=True)
    keeper, laggard = Subscriber(topic_name, "block"), Subscriber(topic_name, "drop_oldest")
    try:
        for seq in range(5):
            topic.publish(bytes_message(seq, 64), timeout=60)
        assert keeper.take(5)["received"] == 5
        listed = entry(cli_json("ls"), "topics", topic_name)
        assert (listed["kind"], listed["error"], listed["published"]) == ("topic", None, 5)
        assert {keeper.process.pid, laggard.process.pid} <= set(listed["pids"]), "both map the topic"
        first = subscriber_of(listed, keeper.process.pid)
        assert (first["on_full"], first["lag"], first["received"], first["dropped"]) == ("block", 0, 5, 0)
        assert first["alive"] and first["state"] == "active"
        behind = subscriber_of(listed, laggard.process.pid)
        assert behind["on_full"] == "drop_oldest" and behind["alive"]
        assert (behind["lag"], behind["received"], behind["dropped"]) == (5, 0, 0)
        assert listed["retained"] == 5, "the lagging cursor holds every message"
        assert laggard.take(1)["received"] == 1  # message 0: from here on it counts what it misses

        # Ten more through a ring of 8: publishers skip the lagging subscriber past what they reuse.
        for seq in range(5, 15):
            topic.publish(bytes_message(seq, 64), timeout=60)
            assert keeper.take(1)["received"] == seq + 1
        info = cli_json("info", topic_name)
        assert (info["kind"], info["capacity"], info["history"], info["published"]) == ("topic", 8, 0, 15)
        behind = subscriber_of(info, laggard.process.pid)
        # Publishing 9..14 reused the slots of 1..6, which it had not read: it was moved to 7.
        assert (behind["received"], behind["dropped"], behind["lag"]) == (1, 6, 8)
        assert behind["lag"] + behind["dropped"] + behind["received"] == 15, (
            "each message waits, was taken or dropped"
        )
        assert subscriber_of(info, keeper.process.pid)["lag"] == 0

        counts = laggard.take(3)  # the program's own view agrees with the report
        assert counts["missed"] == behind["dropped"] and counts["dropped"] == behind["dropped"]
        after = subscriber_of(cli_json("info", topic_name, "--kind", "topic"), laggard.process.pid)
        assert after["received"] == 4 and after["dropped"] == behind["dropped"]
        assert after["lag"] == behind["lag"] - 3
        text = run_cli("info", topic_name)
        assert (
            text.returncode == 0 and "drop_oldest" in text.stdout and str(laggard.process.pid) in text.stdout
        )
        listed_text = run_cli("ls")
        assert (
            listed_text.returncode == 0 and topic_name in listed_text.stdout and "topic" in listed_text.stdout
        )

        laggard.process.send_signal(signal.SIGKILL)  # nobody publishes after: its entry stays, shown dead
        finish(laggard.process)
        dead = subscriber_of(cli_json("info", topic_name), laggard.process.pid)
        assert not dead["alive"]
        assert f"{laggard.process.pid} (dead)" in run_cli("info", topic_name).stdout
        assert entry(cli_json("ls"), "topics", topic_name)["retained"] > 0

        removed = cli_json("rm", topic_name, "--kind", "topic")
        assert removed["removed"] == [topic_name] and removed["kinds"] == {topic_name: "topic"}
        assert all(item["name"] != topic_name for item in cli_json("ls")["topics"])
        assert run_cli("info", topic_name).returncode == 1
        keeper.process.stdin.write("quit\n")  # type: ignore[union-attr]
        keeper.process.stdin.flush()  # type: ignore[union-attr]
        code, out, err = finish(keeper.process)
        assert code == 0 and "done" in out, err
    finally:
        for program in (keeper, laggard):
            if program.process.poll() is None:
                program.process.kill()
                finish(program.process)
        topic.close()
