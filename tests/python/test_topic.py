"""hakobu.Topic: every subscriber (separately started processes) receives every message,
in order, as read-only views; history for late joiners; both slow-subscriber policies with
their counts; killed subscribers and publishers; several publishers; unlink with waiters;
C++ <-> Python. Messages are in the cross-language format of programs/topic_format.py."""

from __future__ import annotations

import gc
import json
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PROGRAMS, finish, said, start

import hakobu

sys.path.insert(0, str(PROGRAMS))
from topic_format import array_message, bytes_message, check

REPO = Path(__file__).resolve().parents[2]
WATCHDOG = 120.0  # seconds: against a hang, never a measure of speed


def result(program: subprocess.Popen) -> dict[str, Any]:
    """The JSON line a subscriber program prints last, once it exited cleanly."""
    code, out, err = finish(program)
    assert code == 0, err
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


# --- fan-out -------------------------------------------------------------------------------


def test_every_subscriber_sees_every_message_in_order(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, capacity=64)
    n = 400
    subscribers = [start("topic_peer", "subscribe", topic_name, n, "block") for _ in range(3)]
    for program in subscribers:
        said(program, "subscribed")
    publisher = start("topic_peer", "publish", topic_name, n, 0, 0, 3)  # sizes inline and in blocks
    code, out, err = finish(publisher)
    assert (code, out) == (0, f"ok {n}\n"), err
    for program in subscribers:
        report = result(program)
        assert report["seqs"] == list(range(n)), "every message, in order, each checked byte by byte"
        assert report["topic_seqs"] == list(range(n))
        assert report["missed"] == [0] * n and report["dropped"] == 0
    assert topic.published == n
    assert topic.subscribers == 0, "the subscriptions ended with their processes"
    topic.unlink()


def test_arrays_reach_every_subscriber_read_only(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    subscribers = [start("topic_peer", "subscribe", topic_name, 30, "block") for _ in range(2)]
    for program in subscribers:
        said(program, "subscribed")
    # 2 x 3 rides inline in the slot; 300 x 500 is a block shared by both subscribers.
    for shape in ((2, 3), (300, 500)):
        publisher = start(
            "topic_peer", "publish-arrays", topic_name, 15, *shape, 0 if shape[0] == 2 else 15, 2
        )
        code, _, err = finish(publisher)
        assert code == 0, err
    for program in subscribers:
        report = result(program)
        assert report["seqs"] == list(range(30))
        assert report["writeable"] == [False] * 30
    topic.unlink()


# --- history -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "first"),
    [("all", 12), ("3", 17), ("100", 12), ("0", 20)],
    ids=["True", "an-int", "more-than-kept", "none"],
)
def test_a_late_subscriber_receives_the_history_it_asked_for(
    topic_name: str, history: str, first: int
) -> None:
    topic = hakobu.Topic(topic_name, history=8, capacity=32)
    for seq in range(20):
        topic.publish(bytes_message(seq, 64))
    late = start("topic_peer", "subscribe", topic_name, 25 - first, "block", history)
    said(late, "subscribed")
    for seq in range(20, 25):
        topic.publish(bytes_message(seq, 64))
    report = result(late)
    assert report["seqs"] == list(range(first, 25))
    assert report["missed"] == [0] * (25 - first), "history is not counted as missed"
    topic.unlink()


def test_history_true_and_an_int_in_process(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, history=4, capacity=16)
    for seq in range(10):
        topic.publish(bytes_message(seq, 32))
    with topic.subscribe(history=True) as everything, topic.subscribe(history=2) as two:
        assert [check(everything.get_nowait()) for _ in range(4)] == [6, 7, 8, 9]
        assert [check(two.get_nowait()) for _ in range(2)] == [8, 9]
        for sub in (everything, two):
            with pytest.raises(hakobu.Empty):
                sub.get_nowait()
    topic.unlink()


# --- slow subscribers ----------------------------------------------------------------------


def test_drop_oldest_skips_a_slow_subscriber_ahead_and_counts_exactly(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, capacity=8)
    with topic.subscribe(on_full="drop_oldest") as slow:
        topic.publish(bytes_message(0, 48))
        assert check(slow.get_nowait()) == 0 and slow.missed == 0
        # A separate publisher that fails at once (timeout=0: Full) if it has to wait.
        publisher = start("topic_peer", "publish", topic_name, 20, 48, 1, 1, 0)
        code, out, err = finish(publisher)
        assert (code, out) == (0, "ok 20\n"), err
        assert slow.lag == 8  # 13 .. 20 are still in the ring
        assert check(slow.get_nowait()) == 13
        assert (slow.missed, slow.dropped, slow.sequence) == (12, 12, 13)
        received = [check(slow.get_nowait()) for _ in range(7)]
        assert received == list(range(14, 21))
        assert slow.missed == 0 and slow.dropped == 12 and slow.received == 9
        with pytest.raises(hakobu.Empty):
            slow.get_nowait()
    topic.unlink()


def test_drop_oldest_counts_what_was_overwritten_before_the_first_get(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, capacity=8)
    with topic.subscribe(on_full="drop_oldest") as slow:
        for seq in range(20):
            topic.publish(bytes_message(seq, 48), timeout=0)
        assert check(slow.get_nowait()) == 12
        assert (slow.missed, slow.dropped) == (12, 12)
    topic.unlink()


def test_drop_oldest_never_holds_the_publisher_back(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, capacity=4)
    with topic.subscribe() as idle:  # drop_oldest by default
        for seq in range(1000):
            topic.publish(bytes_message(seq, 300), timeout=0)
        assert idle.lag == 4
        assert check(idle.get_nowait()) == 996
    topic.unlink()


def test_block_publisher_waits_then_continues_when_the_subscriber_reads(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, capacity=8)
    holder = start("topic_peer", "hold", topic_name, "block", stdin=subprocess.PIPE)
    said(holder, "subscribed")
    for seq in range(8):
        topic.publish(bytes_message(seq, 5000), timeout=0)
    with pytest.raises(hakobu.Full):
        topic.publish(bytes_message(8, 5000), timeout=0.1)
    holder.stdin.write("go\n")  # type: ignore[union-attr]
    holder.stdin.flush()  # type: ignore[union-attr]
    for seq in range(8, 100):
        topic.publish(
            bytes_message(seq, 5000), timeout=WATCHDOG
        )  # waits for the reader each time it is behind
    topic.unlink()  # its iteration ends once it received everything
    report = result(holder)
    assert report["seqs"] == list(range(100)), "nothing lost"
    assert report["dropped"] == 0


def test_a_killed_blocking_subscriber_stops_holding_the_publisher(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, capacity=8)
    holder = start("topic_peer", "hold", topic_name, "block", stdin=subprocess.PIPE)  # reads only when told
    said(holder, "subscribed")
    assert topic.subscribers == 1
    for seq in range(8):
        topic.publish(bytes_message(seq, 5000), timeout=0)
    with pytest.raises(hakobu.Full):
        topic.publish(bytes_message(8, 5000), timeout=0.1)
    holder.kill()
    holder.communicate()
    topic.publish(bytes_message(8, 5000), timeout=WATCHDOG)  # its entry is freed: room again
    for seq in range(9, 40):
        topic.publish(bytes_message(seq, 5000), timeout=WATCHDOG)
    assert topic.subscribers == 0
    topic.unlink()


# --- killed publishers, several publishers --------------------------------------------------


def test_a_killed_publisher_leaves_no_torn_message_and_another_continues(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, capacity=16)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    last = 10_000_000
    readers = [start("topic_peer", "until", topic_name, last, policy) for policy in ("block", "drop_oldest")]
    for program in readers:
        said(program, "subscribed")
    for round_ in range(4):
        # 2 MiB arrays: a kill lands in the middle of a copy or a publish most of the time.
        publisher = start("topic_peer", "publish-forever", topic_name, 512, 512, round_ * 1_000_000)
        said(publisher, "publishing")
        time.sleep(rng.uniform(0.0, 0.3))
        publisher.send_signal(signal.SIGKILL)
        publisher.communicate()
    finisher = start("topic_peer", "publish-arrays", topic_name, 5, 512, 512, last - 4, 0)
    code, out, err = finish(finisher)
    assert (code, out) == (0, "ok 5\n"), err
    for program in readers:
        report = result(program)  # every message was checked whole, in increasing order, by the reader
        seqs = report["seqs"]
        assert seqs[-5:] == list(range(last - 4, last + 1)), f"seed {seed}"
        assert sorted(seqs) == seqs and len(set(seqs)) == len(seqs), f"seed {seed}"
    topic.unlink()
    gc.collect()


def test_several_publishers_one_order_for_every_subscriber(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, capacity=32)
    per_publisher, publishers = 150, 3
    total = per_publisher * publishers
    subscribers = [start("topic_peer", "subscribe", topic_name, total, "block") for _ in range(3)]
    for program in subscribers:
        said(program, "subscribed")
    running = [
        start("topic_peer", "publish", topic_name, per_publisher, 0, p * 1_000_000, 3)
        for p in range(publishers)
    ]
    for program in running:
        code, out, err = finish(program)
        assert (code, out) == (0, f"ok {per_publisher}\n"), err
    orders = []
    for program in subscribers:
        report = result(program)
        seqs = report["seqs"]
        for p in range(publishers):
            mine = [s for s in seqs if s // 1_000_000 == p]
            assert mine == list(range(p * 1_000_000, p * 1_000_000 + per_publisher)), (
                "a publisher's own order"
            )
        assert report["topic_seqs"] == list(range(total)), "positions count every message once"
        orders.append(seqs)
    assert orders[0] == orders[1] == orders[2], "one total order for every subscriber"
    topic.unlink()


# --- unlink, close ---------------------------------------------------------------------------


def test_unlink_with_waiting_subscribers_drains_then_ends_their_iteration(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    other = hakobu.Topic(topic_name, create=False)
    waiters = [start("topic_peer", "iterate", topic_name) for _ in range(2)]
    for program in waiters:
        said(program, "subscribed")
    for seq in range(10):
        topic.publish(bytes_message(seq, 1000))
    topic.unlink()  # also closes the creator's handle
    for program in waiters:
        assert result(program)["seqs"] == list(range(10))
    with pytest.raises(hakobu.Closed):
        topic.publish(b"after")
    with pytest.raises(hakobu.Unlinked):
        other.publish(b"after")
    with pytest.raises(hakobu.Unlinked):
        other.subscribe()
    other.close()


def test_get_after_unlink_raises_unlinked_once_drained(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    sub = topic.subscribe()
    topic.publish(b"last words")
    topic.unlink()
    assert sub.get(timeout=WATCHDOG) == b"last words"
    with pytest.raises(hakobu.Unlinked):
        sub.get(timeout=WATCHDOG)
    assert list(sub) == []
    sub.close()


def test_close_ends_a_subscription_and_wakes_a_waiting_iteration(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    sub = topic.subscribe()
    seen: list[Any] = []
    ended = threading.Event()

    def iterate() -> None:
        seen.extend(sub)
        ended.set()

    thread = threading.Thread(target=iterate)
    thread.start()
    topic.publish(b"one")
    while not seen:
        time.sleep(0.001)
    sub.close()
    assert ended.wait(WATCHDOG), "close() woke the iteration"
    thread.join()
    assert seen == [b"one"] and sub.closed
    assert topic.subscribers == 0
    with pytest.raises(hakobu.Closed):
        sub.get_nowait()
    topic.unlink()


def test_ctrl_c_interrupts_a_blocking_get(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    waiter = start("topic_peer", "interrupt", topic_name)
    said(waiter, "waiting")
    time.sleep(0.2)  # let it block
    waiter.send_signal(signal.SIGINT)
    code, out, err = finish(waiter)
    assert (code, out) == (3, "interrupted\n"), err
    topic.unlink()


# --- read-only views, no copy ----------------------------------------------------------------


def test_received_messages_are_read_only(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    with topic.subscribe() as sub:
        topic.publish(np.arange(6.0).reshape(2, 3))  # inline
        topic.publish(array_message(1, 400, 400))  # a shared block
        topic.publish({"big": np.ones(100_000), "small": np.zeros(3)})  # out-of-band buffer
        topic.publish(np.zeros(5, dtype=[("a", "<i4"), ("b", "<f8")]))  # decoded by the Python codec
        topic.publish(b"raw")
        small, big, obj, structured, raw = (sub.get_nowait() for _ in range(5))
        for array in (small, big, obj["big"], structured):
            assert not array.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                array[0] = 0
        # Views of the shared block cannot be made writeable (the small one is a private copy).
        for array in (big, obj["big"], structured):
            with pytest.raises(ValueError):
                array.setflags(write=True)
        assert raw == b"raw" and type(raw) is bytes
        # The Message under the view exports its bytes read-only too.
        with pytest.raises(TypeError, match="read-only"):
            memoryview(hakobu._arrays.owner_of(big)).cast("B")[0] = 1  # type: ignore[arg-type]
        check(big)
    topic.unlink()


def test_a_hakobu_empty_array_is_published_without_a_copy(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    first, second = topic.subscribe(), topic.subscribe()
    frame = hakobu.empty((1024, 1024))
    frame[...] = 7.0
    topic.publish(frame)
    a, b = first.get_nowait(), second.get_nowait()
    address = frame.__array_interface__["data"][0]
    assert a.__array_interface__["data"][0] == address
    assert b.__array_interface__["data"][0] == address
    assert not a.flags.writeable and float(a.sum()) == 7.0 * 1024 * 1024
    frame[0, 0] = 8.0  # the sender's memory: a shared view, no copy
    assert a[0, 0] == 8.0 and b[0, 0] == 8.0
    first.close()
    second.close()
    topic.unlink()


def test_a_received_array_republished_travels_by_reference_and_read_only(topic_name: str, name: str) -> None:
    topic = hakobu.Topic(topic_name)
    queue = hakobu.Queue(name)
    with topic.subscribe() as sub:
        topic.publish(array_message(3, 300, 300))
        received = sub.get_nowait()
        queue.put(received)
        forwarded = queue.get(timeout=WATCHDOG)
        assert forwarded.__array_interface__["data"][0] == received.__array_interface__["data"][0]
        assert not forwarded.flags.writeable
    queue.unlink()
    topic.unlink()


# --- handles -------------------------------------------------------------------------------


def test_properties_repr_and_pickling(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, history=3, capacity=10, max_subscribers=5)
    assert (topic.name, topic.domain, topic.history) == (topic_name, hakobu.default_domain(), 3)
    assert topic.capacity == 16, "rounded up to a power of two"
    assert topic.max_subscribers == 5 and topic.is_creator
    attached = pickle.loads(pickle.dumps(topic))
    assert not attached.is_creator and attached.capacity == 16 and attached.history == 3
    with attached.subscribe() as sub:
        assert topic.subscribers == 1
        topic.publish("an object")
        assert sub.get_nowait() == "an object"
        assert topic.published == 1
        assert "subscribers=1" in repr(topic) and "received=1" in repr(sub)
    assert "closed" in repr(sub)
    attached.close()
    assert "closed" in repr(attached)
    with pytest.raises(hakobu.NotCreator):
        hakobu.Topic(topic_name).unlink()
    topic.unlink()
    with pytest.raises(hakobu.NotFound):
        pickle.loads(pickle.dumps(topic))


@pytest.mark.parametrize(
    ("latency", "spin"), [("spin", None), ("sleep", None), (None, 0.001), ("adaptive", None)]
)
def test_latency_modes_of_a_handle_and_its_subscribers(
    topic_name: str, latency: str | None, spin: float | None
) -> None:
    topic = hakobu.Topic(topic_name, latency=latency, spin=spin)
    assert topic.latency == ("fixed" if spin else latency)
    with topic.subscribe() as sub:
        publisher = start("topic_peer", "publish", topic_name, 50, 100, 0, 1)
        assert [check(sub.get(timeout=WATCHDOG)) for _ in range(50)] == list(range(50))
        code, _, err = finish(publisher)
        assert code == 0, err
    topic.latency = "sleep"
    assert topic.latency == "sleep"
    with pytest.raises(hakobu.InvalidArgument):
        topic.latency = "fast"
    topic.unlink()


def test_too_many_subscribers(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name, max_subscribers=2)
    first, second = topic.subscribe(), topic.subscribe()
    with pytest.raises(hakobu.TooManySubscribers):
        topic.subscribe()
    first.close()
    third = topic.subscribe()  # the closed one's entry is free again
    second.close()
    third.close()
    topic.unlink()


def test_remove_by_name(topic_name: str) -> None:
    hakobu.Topic(topic_name).close()
    hakobu.Topic.remove(topic_name)
    with pytest.raises(hakobu.NotFound):
        hakobu.Topic(topic_name, create=False)
    with pytest.raises(hakobu.NotFound):
        hakobu.Topic.remove(topic_name)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"capacity": 0}, hakobu.InvalidArgument),
        ({"capacity": 2.5}, hakobu.InvalidArgument),
        ({"history": -1}, hakobu.InvalidArgument),
        ({"history": 16, "capacity": 16}, hakobu.InvalidArgument),
        ({"history": True}, hakobu.InvalidArgument),
        ({"max_subscribers": 0}, hakobu.InvalidArgument),
        ({"inline_capacity": 10_000}, hakobu.InvalidArgument),
        ({"create": "yes"}, hakobu.InvalidArgument),
        ({"latency": "fast"}, hakobu.InvalidArgument),
        ({"spin": float("nan")}, hakobu.InvalidArgument),
        ({"allow_pickle": 1}, hakobu.InvalidArgument),
    ],
)
def test_absurd_topic_arguments(topic_name: str, options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        hakobu.Topic(topic_name, **options)
    with pytest.raises(hakobu.NotFound):
        hakobu.Topic(topic_name, create=False)  # nothing was made


def test_absurd_names(topic_name: str) -> None:
    with pytest.raises(hakobu.InvalidName):
        hakobu.Topic("no/slash")
    with pytest.raises(hakobu.InvalidName):
        hakobu.Topic(3)  # type: ignore[arg-type]
    with pytest.raises(hakobu.InvalidName):
        hakobu.Topic.remove("no/slash")


def test_absurd_call_arguments(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    with topic.subscribe() as sub:
        for bad in (float("nan"), -1.0, "1"):
            with pytest.raises(hakobu.InvalidArgument):
                topic.publish(b"x", timeout=bad)  # type: ignore[arg-type]
            with pytest.raises(hakobu.InvalidArgument):
                sub.get(timeout=bad)  # type: ignore[arg-type]
        for history in (-1, 1.5, "all", None):
            with pytest.raises(hakobu.InvalidArgument):
                topic.subscribe(history=history)  # type: ignore[arg-type]
        for policy in ("x", "block ", None, 1):
            with pytest.raises(hakobu.InvalidArgument):
                topic.subscribe(on_full=policy)  # type: ignore[arg-type]
        assert topic.subscribers == 1, "no failed call subscribed"
        with pytest.raises(hakobu.Empty):
            sub.get(timeout=0)
        assert topic.published == 0, "no failed call published"
    topic.unlink()


def test_publishing_on_a_closed_handle(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    topic.close()
    with pytest.raises(hakobu.Closed):
        topic.publish(b"x")
    with pytest.raises(hakobu.Closed):
        topic.publish(np.zeros(100_000))
    with pytest.raises(hakobu.Closed):
        topic.subscribe()
    hakobu.Topic.remove(topic_name)


# --- C++ <-> Python ------------------------------------------------------------------------


def _cpp_peer() -> Path:
    for preset in ("dev", "release", "asan-ubsan"):
        path = REPO / "build" / preset / "tests" / "cpp" / "hakobu_topic_peer"
        if path.exists():
            return path
    pytest.skip(
        "build the C++ tests first: cmake --preset dev && cmake --build --preset dev (hakobu_topic_peer)"
    )


def test_a_cpp_publisher_and_python_subscribers(topic_name: str) -> None:
    peer = _cpp_peer()
    topic = hakobu.Topic(topic_name, capacity=32)
    readers = [start("topic_peer", "subscribe", topic_name, 60, "block") for _ in range(2)]
    for program in readers:
        said(program, "subscribed")
    published = subprocess.run(
        [peer, "publish", topic_name, "30", "3000"], capture_output=True, text=True, timeout=WATCHDOG
    )
    assert (published.returncode, published.stdout) == (0, "ok 30\n"), published.stderr
    published = subprocess.run(
        [peer, "publish-arrays", topic_name, "30", "200", "300"],
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
    )
    assert (published.returncode, published.stdout) == (0, "ok 30\n"), published.stderr
    for program in readers:
        report = result(program)
        assert report["seqs"] == list(range(30)) * 2
        assert report["writeable"] == [False] * 30
    topic.unlink()


def test_python_publishers_and_a_cpp_subscriber(topic_name: str) -> None:
    peer = _cpp_peer()
    topic = hakobu.Topic(topic_name, capacity=32)
    reader = subprocess.Popen(
        [peer, "subscribe", topic_name, "80"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    said(reader, "subscribed")
    for seq in range(40):
        topic.publish(bytes_message(seq, (16, 200, 70_000)[seq % 3]), timeout=WATCHDOG)
    for seq in range(40, 80):
        topic.publish(array_message(seq, 50, 70), timeout=WATCHDOG)
    code, out, err = finish(reader)
    assert (code, out) == (0, "ok 80\n"), err
    topic.unlink()
