"""hakobu.Queue from Python: in one process, and between separately started
Python (and C++) programs."""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import queue as std_queue
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import PROGRAMS, finish, start

import hakobu

sys.path.insert(0, str(PROGRAMS))
from cases import cases, fingerprint

REPO = Path(__file__).resolve().parents[2]


def live_blocks() -> int:
    gc.collect()
    return hakobu._core.domain_stats()["live_blocks"]


# --- one process -----------------------------------------------------------------


@pytest.mark.parametrize("label,obj", cases(), ids=[label for label, _ in cases()])
def test_every_case_round_trips(name: str, label: str, obj: object) -> None:
    with hakobu.Queue(name) as q:
        q.put(obj)
        assert fingerprint(q.get(timeout=5)) == fingerprint(obj)


def test_received_arrays_are_writable_views_of_shared_memory(name: str) -> None:
    q = hakobu.Queue(name)
    before = live_blocks()
    q.put(np.arange(100_000, dtype=np.int64))
    a = q.get()
    assert a.flags.writeable and a.flags.c_contiguous
    assert isinstance(a.base, hakobu._core.Message) and a.base.in_shared_memory
    a[0] = -1  # the receiver owns it
    view = a[10:20]
    del a
    assert live_blocks() == before + 1, "a view keeps the block"
    assert view[0] == 10
    del view
    assert live_blocks() == before, "the block returns when the last view dies"


def test_fifo_capacity_and_nonblocking_forms(name: str) -> None:
    q = hakobu.Queue(name, capacity=4, create=True)
    assert q.is_creator and q.capacity == 4 and q.empty()
    for i in range(4):
        q.put_nowait(i)
    assert q.full() and q.qsize() == 4
    with pytest.raises(std_queue.Full):
        q.put_nowait(99)
    with pytest.raises(hakobu.Full):
        q.put(99, timeout=0.05)
    assert [q.get_nowait() for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(std_queue.Empty):
        q.get_nowait()
    start_time = time.monotonic()
    with pytest.raises(hakobu.Empty):
        q.get(timeout=0.1)
    assert time.monotonic() - start_time >= 0.09
    with pytest.raises(ValueError):
        q.get(timeout=-1)


def test_open_modes_and_names(name: str) -> None:
    with pytest.raises(hakobu.NotFound):
        hakobu.Queue(name, create=False)
    creator = hakobu.Queue(name, create=True)
    with pytest.raises(hakobu.AlreadyExists):
        hakobu.Queue(name, create=True)
    other = hakobu.Queue(name, create=False)
    assert not other.is_creator
    with pytest.raises(hakobu.NotCreator):
        other.unlink()
    for bad in ["", "a/b", "..", ".hidden", "x" * 65, "sp ace"]:
        with pytest.raises(hakobu.InvalidName) as info:
            hakobu.Queue(bad)
        assert str(info.value)
    assert isinstance(info.value, ValueError)
    creator.unlink()
    with pytest.raises(hakobu.NotFound):
        hakobu.remove(name)


def test_closed_and_unlinked_queues_refuse_work(name: str) -> None:
    q = hakobu.Queue(name)
    closed = hakobu.Queue(name)
    closed.close()
    with pytest.raises(hakobu.Closed):
        closed.put(1)
    with pytest.raises(hakobu.Closed):
        closed.get_nowait()
    other = hakobu.Queue(name)
    q.put("left behind")
    q.unlink()  # also closes the creator's handle
    with pytest.raises(hakobu.Closed):
        q.put(2)
    with pytest.raises(hakobu.Unlinked):
        other.put(2)
    assert other.get_nowait() == "left behind", "messages sent before the unlink can still be received"
    with pytest.raises(hakobu.Unlinked):
        other.get_nowait()


def test_queue_pickles_by_name(name: str) -> None:
    q = hakobu.Queue(name, capacity=8)
    copy = pickle.loads(pickle.dumps(q))
    copy.put("through the copy")
    assert q.get(timeout=1) == "through the copy"


def test_async_forms(name: str) -> None:
    q = hakobu.Queue(name, capacity=1)

    async def main() -> list[object]:
        await q.put_async(np.ones(3))
        with pytest.raises(hakobu.Full):
            await q.put_async(1, timeout=0.05)
        first = await q.get_async()
        waiter = asyncio.create_task(q.get_async(timeout=5))
        await asyncio.sleep(0.01)
        q.put("late")
        return [first, await waiter]

    first, second = asyncio.run(main())
    assert np.array_equal(first, np.ones(3)) and second == "late"


def test_full_shared_memory_is_an_error_with_numbers(name: str) -> None:
    q = hakobu.Queue(name)
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(free + 2**30,), strides=(0,))
    with pytest.raises(hakobu.OutOfSharedMemory) as info:
        q.put(huge)
    assert "asked for" in str(info.value) and "free of" in str(info.value)
    assert isinstance(info.value, MemoryError)
    assert q.qsize() == 0


# --- separate programs ---------------------------------------------------------------------


def test_every_case_between_programs(name: str) -> None:
    receiver = start("receive", name)
    sender = start("send", name)
    code, _, err = finish(sender)
    assert code == 0, err
    code, out, err = finish(receiver)
    assert code == 0, err
    expected = [f"{label} | {fingerprint(obj)}" for label, obj in cases()]
    assert out.splitlines() == expected


def test_one_gib_array_between_programs(name: str) -> None:
    receiver = start("big", name, "receive", 1)
    sender = start("big", name, "send", 1)
    sent = finish(sender)
    received = finish(receiver)
    assert sent[0] == 0 and received[0] == 0, sent[2] + received[2]
    assert sent[1] == received[1] and sent[1].startswith("(134217728,)")


def test_a_killed_consumer_holding_an_array_is_reclaimed(name: str) -> None:
    q = hakobu.Queue(name)
    before = live_blocks()
    holder = start("hold", name)
    q.put(np.ones(2**20))
    line = holder.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("holding 8388608"), holder.stderr.read()  # type: ignore[union-attr]
    assert live_blocks() == before + 1
    holder.kill()
    holder.wait()
    assert hakobu._core.collect_garbage() == 1
    assert live_blocks() == before, "the dead consumer's array came back"
    q.put("still works")
    assert q.get(timeout=5) == "still works"


def test_ctrl_c_interrupts_a_blocking_get_and_leaves_the_queue_intact(name: str) -> None:
    q = hakobu.Queue(name)
    waiter = start("block_get", name)
    assert waiter.stdout.readline() == "waiting\n"  # type: ignore[union-attr]
    time.sleep(0.2)  # let it block
    waiter.send_signal(signal.SIGINT)
    code, out, err = finish(waiter)
    assert code == 3, err
    assert out == "interrupted 0\n"
    q.put("after the interrupt")
    assert q.get(timeout=5) == "after the interrupt"


def _cpp_example(program: str) -> Path:
    for preset in ("dev", "release", "asan-ubsan"):
        path = REPO / "build" / preset / "examples" / "cpp" / program
        if path.exists():
            return path
    pytest.skip(f"build the C++ examples first: cmake --preset dev && cmake --build --preset dev ({program})")


def test_cpp_producer_feeds_a_python_consumer(name: str) -> None:
    import subprocess

    program = _cpp_example("hakobu_producer")  # skips before anything is started when it is not built
    consumer = start("frames", name, "consume")
    producer = subprocess.run(
        [program, name, "50", "240", "320"], capture_output=True, text=True, timeout=120
    )
    assert producer.returncode == 0, producer.stderr
    code, out, err = finish(consumer)
    assert code == 0, err
    assert out == "received 50 frames, 0 wrong\n"


def test_python_producer_feeds_a_cpp_consumer(name: str) -> None:
    import subprocess

    consumer = subprocess.Popen([_cpp_example("hakobu_consumer"), name], stdout=subprocess.PIPE, text=True)
    code, _, err = finish(start("frames", name, "produce", 50))
    assert code == 0, err
    out, _ = consumer.communicate(timeout=120)
    assert consumer.returncode == 0
    assert "received 50 frames, 0 with wrong values" in out


# --- arrays in shared memory: sent and forwarded without a copy --------------------------


def test_array_constructors_allocate_in_shared_memory() -> None:
    a = hakobu.empty((3, 4), np.int32)
    assert hakobu.is_shared(a) and a.shape == (3, 4) and a.dtype == np.int32 and a.flags.writeable
    assert not hakobu.is_shared(np.empty(3))
    z = hakobu.zeros((2, 5), order="F")
    assert z.flags.f_contiguous and not z.any()
    assert (hakobu.full(4, 7, np.uint8) == 7).all()
    source = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    copy = hakobu.array(source)
    assert hakobu.is_shared(copy) and copy.flags.f_contiguous and np.array_equal(copy, source)
    assert hakobu.empty_like(source).flags.f_contiguous and not hakobu.zeros_like(source).any()
    assert hakobu.empty(0).size == 0
    with pytest.raises(TypeError):
        hakobu.empty(3, object)
    with pytest.raises(ValueError):
        hakobu.empty(-1)


def test_shared_arrays_are_sent_without_a_copy(name: str) -> None:
    q = hakobu.Queue(name)
    before = live_blocks()
    a = hakobu.zeros((500, 500))
    q.put(a)
    b = q.get()
    assert b.ctypes.data == a.ctypes.data, "the receiver sees the sender's memory"
    a[3, 4] = 1.5
    assert b[3, 4] == 1.5 and b.flags.writeable
    del a
    assert b[3, 4] == 1.5, "the message keeps the memory alive"
    del b
    assert live_blocks() == before


def test_received_arrays_and_their_views_are_forwarded_without_a_copy(name: str) -> None:
    q = hakobu.Queue(name)
    before = live_blocks()
    q.put(np.arange(1000.0).reshape(10, 100))  # copied once into shared memory
    received = q.get()
    q.put(received[::3, ::-7])
    view = q.get()
    assert np.shares_memory(view, received) and np.array_equal(view, received[::3, ::-7])
    q.put(view.T)  # forwarded again: its memory is the first message's
    again = q.get()
    assert np.shares_memory(again, received) and np.array_equal(again, view.T)
    shared_pointer = again.ctypes.data
    del received, view
    assert again.ctypes.data == shared_pointer and again[0, 0] == np.arange(1000.0).reshape(10, 100)[0, 99]
    del again
    assert live_blocks() == before


def test_a_program_forwards_arrays_without_copying_them(name: str) -> None:
    inbox, outbox = hakobu.Queue(name + "-in"), hakobu.Queue(name + "-out")
    try:
        forwarder = start("forward", inbox.name, outbox.name, 3)
        originals = [hakobu.array(np.arange(12.0 * (k + 1)).reshape(-1, 4)) for k in range(3)]
        for original in originals:
            inbox.put(original)
        for original in originals:
            result = outbox.get(timeout=60)
            assert np.array_equal(result, original[::-2])
            # Same process, same mapping: equal addresses prove nobody copied on the way.
            assert result.ctypes.data == original[::-2].ctypes.data
        code, _, err = finish(forwarder)
        assert code == 0, err
    finally:
        inbox.unlink()
        outbox.unlink()


def test_dlpack_consumers_share_the_memory(name: str) -> None:
    q = hakobu.Queue(name)
    q.put(np.arange(10, dtype=np.float32))
    received = q.get()
    view = np.from_dlpack(received)
    assert np.shares_memory(view, received)
    assert received.__dlpack_device__() == (1, 0)  # the CPU


def test_large_arrays_inside_objects_travel_in_shared_memory(name: str) -> None:
    q = hakobu.Queue(name)
    before = live_blocks()
    shared = hakobu.full((400, 400), 2.0)
    plain = np.arange(200_000, dtype=np.int64)
    small = np.arange(5)
    q.put({"shared": shared, "plain": plain, "small": small, "nested": [plain[::2]]})
    received = q.get()
    assert received["shared"].ctypes.data == shared.ctypes.data, "hakobu memory inside an object: no copy"
    assert hakobu.is_shared(received["plain"]) and np.array_equal(received["plain"], plain)
    assert np.array_equal(received["nested"][0], plain[::2])
    assert not hakobu.is_shared(received["small"]), "small buffers stay in the pickle"
    assert received["plain"].flags.writeable
    del received, shared
    assert live_blocks() == before


def test_dataframes_arrive_with_their_columns_in_shared_memory(name: str) -> None:
    pandas = pytest.importorskip("pandas")  # installed by the test extras: pip install ".[test]"
    q = hakobu.Queue(name)
    frame = pandas.DataFrame({"x": np.arange(50_000.0), "n": np.arange(50_000, dtype=np.int64), "s": "text"})
    q.put(frame)
    received = q.get()
    assert received.equals(frame)
    assert hakobu.is_shared(received["x"].to_numpy())
