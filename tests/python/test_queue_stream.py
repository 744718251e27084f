"""End of stream (EndOfStream, SendersLost) and byte capacity (max_bytes) of hakobu.Queue,
with separately started senders and receivers (programs/stream_peer.py)."""

from __future__ import annotations

import asyncio
import subprocess

import numpy as np
import pytest
from conftest import finish, said, start

import hakobu

WATCHDOG = 60.0


def drained(receiver: subprocess.Popen) -> list[str]:
    code, out, err = finish(receiver)
    assert code == 0, err
    return out.split("\n")[:-1]


@pytest.mark.parametrize("mode", ["drain", "drain-async"])
def test_a_receiver_started_first_gets_everything_then_the_end(name: str, mode: str) -> None:
    with hakobu.Queue(name, create=True) as q:
        receiver = start("stream_peer", mode, name)
        said(receiver, "ready")  # waiting on a queue nobody sent on: no end yet
        code, _, err = finish(start("stream_peer", "put", name, 50, "close"))
        assert code == 0, err
        assert drained(receiver) == [str(i) for i in range(50)] + ["ended"]
        assert q.stats()["ended"] and not q.stats()["senders_lost"]
        q.unlink()


@pytest.mark.parametrize("how", ["fail", "kill", "exit", "raise"])
def test_a_sender_that_fails_or_dies_ends_the_stream_as_lost(name: str, how: str) -> None:
    with hakobu.Queue(name, create=True) as q:
        receiver = start("stream_peer", "drain", name)
        said(receiver, "ready")
        finish(start("stream_peer", "put", name, 20, how, 100_000))  # arrays in blocks
        lines = drained(receiver)
        assert lines[:20] == [str(i) for i in range(20)], "every published message arrives first"
        assert lines[20].startswith("lost: "), lines
        assert len(lines) == 21
        with pytest.raises(hakobu.SendersLost):
            q.get_nowait()
        q.unlink()


def test_no_end_while_one_of_two_senders_still_sends(name: str) -> None:
    with hakobu.Queue(name, create=True) as q, hakobu.Queue(name, sends=True) as mine:
        assert q.stats()["senders"] == 1
        code, _, err = finish(start("stream_peer", "put", name, 5, "close"))
        assert code == 0, err
        assert [q.get(timeout=WATCHDOG) for _ in range(5)] == list(range(5))
        with pytest.raises(hakobu.Empty):
            q.get(timeout=0.3)  # this process's `mine` may still send
        mine.put("last")
        mine.close()
        assert q.get(timeout=WATCHDOG) == "last"
        with pytest.raises(hakobu.EndOfStream) as ended:
            q.get(timeout=WATCHDOG)
        assert not isinstance(ended.value, hakobu.SendersLost)
        q.unlink()


def test_a_new_sender_starts_a_new_stream(name: str) -> None:
    with hakobu.Queue(name, create=True) as q:
        finish(start("stream_peer", "put", name, 1, "kill"))
        assert q.get(timeout=WATCHDOG) == 0
        with pytest.raises(hakobu.SendersLost):
            q.get(timeout=WATCHDOG)
        with pytest.raises(hakobu.SendersLost):
            q.get_nowait()  # the end lasts until a sender comes
        code, _, err = finish(start("stream_peer", "put", name, 3, "close"))
        assert code == 0, err
        # Its stream does not inherit the old one's failure.
        assert [q.get(timeout=WATCHDOG) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(hakobu.EndOfStream) as ended:
            q.get_nowait()
        assert not isinstance(ended.value, hakobu.SendersLost), "a clean stream after a lost one"
        with hakobu.Queue(name, sends=True) as again:
            with pytest.raises(hakobu.Empty):
                q.get(timeout=0.2)  # a sender is back: receivers wait again
            again.put("more")
        assert q.get(timeout=WATCHDOG) == "more"
        with pytest.raises(hakobu.EndOfStream):
            q.get(timeout=WATCHDOG)
        q.unlink()


def test_a_queue_nobody_sent_on_never_ends(name: str) -> None:
    with hakobu.Queue(name, create=True) as q:
        with pytest.raises(hakobu.Empty):
            q.get(timeout=0.2)
        assert not q.stats()["ended"]
        q.unlink()


def test_sends_at_open_holds_the_end_back_before_the_first_put(name: str) -> None:
    with hakobu.Queue(name, create=True) as q:
        finish(start("stream_peer", "put", name, 1, "close"))
        assert q.get(timeout=WATCHDOG) == 0
        with hakobu.Queue(name, sends=True) as upstream:
            with pytest.raises(hakobu.Empty):
                q.get(timeout=0.2)  # ended before, but a sender is back
            upstream.close(failed=True)
        with pytest.raises(hakobu.SendersLost):
            q.get_nowait()
        q.unlink()


def test_a_handle_that_sends_and_receives_never_ends_its_own_stream(name: str) -> None:
    with hakobu.Queue(name, create=True) as q:
        q.put(1)
        assert q.get() == 1
        with pytest.raises(hakobu.Empty):
            q.get(timeout=0.1)
        q.unlink()


def test_async_get_learns_of_a_killed_sender(name: str) -> None:
    with hakobu.Queue(name, create=True) as q:
        sender = start("stream_peer", "put", name, 3, "kill")
        finish(sender)

        async def main() -> list[object]:
            got: list[object] = []
            with pytest.raises(hakobu.SendersLost):
                async for item in q:
                    got.append(item)
            return got

        assert asyncio.run(asyncio.wait_for(main(), WATCHDOG)) == [0, 1, 2]
        q.unlink()


def test_close_failed_checks_its_argument(name: str) -> None:
    with hakobu.Queue(name, create=True) as q:
        with pytest.raises(hakobu.InvalidArgument):
            q.close(failed="yes")  # type: ignore[arg-type]
        q.unlink()


# --- byte capacity ------------------------------------------------------------------------


def test_max_bytes_makes_a_put_wait_for_room(name: str) -> None:
    size = 400_000
    with hakobu.Queue(name, create=True, max_bytes=1_000_000) as q:
        assert q.max_bytes == 1_000_000
        producer = start("stream_peer", "block-put", name, size, 6)
        said(producer, "put 0")
        said(producer, "put 1")  # two fit in 1 MB; the third waits for room
        with hakobu.Queue(name) as other, pytest.raises(hakobu.Full):
            other.put_nowait(np.zeros(size, np.uint8))  # (a handle that tries to put is a sender)
        assert q.qsize() == 2
        assert size * 2 <= q.stats()["bytes"] <= 1_000_000
        received = []
        for _ in range(6):
            received.append(int(q.get(timeout=WATCHDOG)[0]))
        code, _, err = finish(producer)
        assert code == 0, err
        assert received == list(range(6))
        assert q.stats()["bytes"] == 0
        with pytest.raises(hakobu.EndOfStream):
            q.get_nowait()
        q.unlink()


def test_arrays_sent_by_reference_count_against_max_bytes(name: str) -> None:
    # A shared-memory array travels by reference, but the queue keeps its memory alive: without
    # counting it, a producer of hakobu.empty arrays would fill /dev/shm past any max_bytes.
    size = 400_000
    with hakobu.Queue(name, create=True, max_bytes=1_000_000) as q:
        q.put_nowait(hakobu.empty(size, np.uint8))
        q.put_nowait({"frame": hakobu.empty(size, np.uint8), "id": 1})  # out of band in a pickle
        assert 2 * size <= q.stats()["bytes"] <= 1_000_000
        kept = hakobu.empty(size, np.uint8)
        with pytest.raises(hakobu.Full):
            q.put_nowait(kept)
        with pytest.raises(hakobu.Full):
            q.put(kept, timeout=0.05)
        first = q.get(timeout=WATCHDOG)
        assert first.nbytes == size
        assert size <= q.stats()["bytes"] < 2 * size  # the receiver holds it now, not the queue
        q.put_nowait(kept)
        second = q.get(timeout=WATCHDOG)
        assert second["id"] == 1 and second["frame"].nbytes == size
        assert q.get(timeout=WATCHDOG).nbytes == size
        assert q.stats()["bytes"] == 0
        q.unlink()


def test_views_by_reference_count_their_own_bytes_and_a_block_once_per_message(name: str) -> None:
    # Rows of one shared array sent to workers: each message keeps the whole block alive, but
    # counts what it carries, as a copy would; an object holding many views counts the block once.
    rows, row_bytes = 32, 1 << 20
    frame = hakobu.empty((rows, row_bytes), np.uint8)
    with hakobu.Queue(name, create=True, max_bytes=64 << 20) as q:
        for k in range(rows):
            q.put_nowait(frame[k])  # a 1 MiB view of a 32 MiB block
        assert rows * row_bytes <= q.stats()["bytes"] < rows * row_bytes + rows * 4096
        for _ in range(rows):
            assert q.get(timeout=WATCHDOG).nbytes == row_bytes
        q.put_nowait({"rows": [frame[k] for k in range(rows)]})  # 32 views of one block, one message
        assert rows * row_bytes <= q.stats()["bytes"] < 2 * rows * row_bytes
        assert len(q.get(timeout=WATCHDOG)["rows"]) == rows
        assert q.stats()["bytes"] == 0
        q.unlink()


def test_one_message_larger_than_max_bytes_gets_into_an_empty_queue(name: str) -> None:
    with hakobu.Queue(name, create=True, max_bytes=1000) as q:
        big = np.arange(10_000, dtype=np.int64)
        q.put_nowait(big)
        with pytest.raises(hakobu.Full):
            q.put_nowait(big)
        np.testing.assert_array_equal(q.get(), big)
        q.put_nowait(big)
        q.get()
        q.unlink()


def test_max_bytes_defaults_to_half_of_dev_shm_and_zero_means_no_limit(name: str) -> None:
    import os

    with hakobu.Queue(name, create=True) as q:
        stat = os.statvfs("/dev/shm")
        assert q.max_bytes == stat.f_blocks * stat.f_frsize // 2
        q.unlink()
    with hakobu.Queue(name, create=True, max_bytes=0) as q:
        assert q.max_bytes == 0
        for _ in range(3):
            q.put_nowait(np.zeros(1_000_000, np.uint8))
        q.unlink()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1000", float("nan")])
def test_max_bytes_rejects_absurd_values(name: str, bad: object) -> None:
    with pytest.raises(hakobu.InvalidArgument):
        hakobu.Queue(name, create=True, max_bytes=bad)  # type: ignore[arg-type]


def test_stats_count_who_waits(name: str) -> None:
    import time

    with hakobu.Queue(name, create=True, capacity=1) as q:
        assert (q.stats()["receivers_waiting"], q.stats()["senders_waiting"]) == (0, 0)
        receiver = start("stream_peer", "drain", name)
        said(receiver, "ready")
        deadline = time.monotonic() + WATCHDOG  # a watchdog, not a timing assertion
        while q.stats()["receivers_waiting"] != 1:
            assert time.monotonic() < deadline, "the blocked receiver never showed as waiting"
            time.sleep(0.01)
        receiver.kill()
        receiver.communicate()
        q.put(1)
        sender = start("stream_peer", "block-put", name, 10, 1)  # the ring is full: it waits
        while q.stats()["senders_waiting"] != 1:
            assert time.monotonic() < deadline, "the blocked sender never showed as waiting"
            time.sleep(0.01)
        assert q.get() == 1
        code, _, err = finish(sender)
        assert code == 0, err
        q.unlink()
