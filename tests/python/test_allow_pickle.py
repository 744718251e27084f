"""allow_pickle=False: object messages are decoded with an unpickler that builds plain built-in
types only, so a peer that can write the domain cannot run code in the reader."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import finish, start

import hakobu

WATCHDOG = 60.0  # seconds: against a hang, never a measure of speed


class Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (self.command,))


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_the_hostile_payload_runs_in_a_default_receiver(name: str, tmp_path: Path) -> None:
    """The control: without the restriction, unpickling runs the sender's command."""
    marker = tmp_path / "ran"
    with hakobu.Queue(name) as q:
        q.put(Evil(f"touch {marker}"))
        q.get(timeout=WATCHDOG)
    assert marker.exists()


def test_a_restricted_receiver_refuses_hostile_pickles_from_another_program(
    name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    receiver = hakobu.Queue(name, allow_pickle=False)
    code, _, err = finish(start("hostile", name, marker), WATCHDOG)
    assert code == 0, err
    assert receiver.qsize() == 4
    for what in ("a pickled object naming os.system", "a hand-written stream naming os.system"):
        with pytest.raises(hakobu.UnpicklingRefused) as info:
            receiver.get(timeout=WATCHDOG)
        assert "system" in str(info.value) and "allow_pickle" in str(info.value), what
        assert isinstance(info.value, pickle.UnpicklingError) and isinstance(info.value, hakobu.HakobuError)
        assert not marker.exists(), f"{what}: nothing ran"
    plain = receiver.get(timeout=WATCHDOG)  # the queue goes on: the refused messages were dropped
    assert plain["n"] == [1, 2.5, 3j, None, True] and plain["s"] == {"a", frozenset({1})}
    assert plain["b"] == (b"x", bytearray(b"y"))
    assert plain["big"] == bytes(range(256)) * 1024 and type(plain["big"]) is bytes, (
        "out-of-band bytes as bytes"
    )
    assert receiver.get(timeout=WATCHDOG) == "END"
    assert receiver.qsize() == 0
    assert not marker.exists()


def test_arrays_bytes_and_plain_objects_arrive_as_always(name: str) -> None:
    sender = hakobu.Queue(name)
    receiver = hakobu.Queue(name, allow_pickle=False)
    assert not receiver.allow_pickle and sender.allow_pickle
    shared = hakobu.full((300, 300), 3.0)
    sender.put(np.arange(10.0))
    sender.put(shared)
    sender.put(b"raw bytes")
    sender.put({"key": [1, (2, 3)], 4: {5.5}})
    sender.put([pickle.PickleBuffer(np.arange(100_000.0))])  # a buffer's bytes, out of band
    assert np.array_equal(receiver.get(), np.arange(10.0))
    assert receiver.get().ctypes.data == shared.ctypes.data
    assert receiver.get() == b"raw bytes"
    assert receiver.get() == {"key": [1, (2, 3)], 4: {5.5}}
    assert receiver.get() == [np.arange(100_000.0).tobytes()]


@pytest.mark.parametrize(
    "obj",
    [Point(1, 2), np.int64(3), {"array inside": np.zeros(3)}, [np.zeros(100_000)], Evil("true"), print],
    ids=[
        "dataclass",
        "numpy scalar",
        "array in a dict",
        "large array in a list",
        "reduce to os.system",
        "a builtin",
    ],
)
def test_anything_but_plain_types_is_refused_and_the_queue_goes_on(name: str, obj: object) -> None:
    q = hakobu.Queue(name, allow_pickle=False)
    q.put(obj)
    q.put("next")
    with pytest.raises(hakobu.UnpicklingRefused):
        q.get(timeout=WATCHDOG)
    assert q.get(timeout=WATCHDOG) == "next"
    assert q.qsize() == 0


def test_a_damaged_stream_is_refused(name: str) -> None:
    q = hakobu.Queue(name, allow_pickle=False)
    header = b"HKP1" + bytes(4)
    for stream in (b"\x80\x05garbage", b"", b"(lp0\nI1\nab."):  # the last: BUILD on a list
        loan = q._core.loan(len(header) + len(stream), 3, 0)
        view = memoryview(loan)
        view[: len(header)] = header
        view[len(header) :] = stream
        view.release()
        q._core.put_loan(loan, None)
        with pytest.raises(hakobu.UnpicklingRefused):
            q.get(timeout=WATCHDOG)
    q.put(("still", "fine"))
    assert q.get(timeout=WATCHDOG) == ("still", "fine")
