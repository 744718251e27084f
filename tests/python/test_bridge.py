"""hakobu.Bridge over loopback: every kind of message, order, the end of the stream,
backpressure, hostile frames, CurveZMQ, and a receiving process killed and restarted.

The two ends run in this process (each bridge is a thread with its own ZeroMQ
socket) except where a separate process matters (its death, its own producer).
Both "hosts" share the test domain here: the ends use different queue names.
Waits are bounded by watchdogs; nothing is timed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from conftest import PROGRAMS, finish, start  # noqa: E402

import hakobu  # noqa: E402
from hakobu._bridge import keys, wire  # noqa: E402
from hakobu._bridge.lane import DIRECT_BYTES, LaneIn, Parser  # noqa: E402

sys.path.insert(0, str(PROGRAMS))
from cases import cases, fingerprint  # noqa: E402

WATCHDOG = 60.0


def wait_for(condition: Callable[[], bool], what: str, watchdog: float = WATCHDOG) -> None:
    """Waits until ``condition()`` holds; the watchdog fails the test instead of hanging it."""
    deadline = time.monotonic() + watchdog
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"watchdog: {what} did not happen within {watchdog} s")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def names(name: str) -> Iterator[tuple[str, str]]:
    """The local queue of the sending end and the one of the receiving end (removed after)."""
    pair = (f"{name}-a", f"{name}-b")
    yield pair
    for queue in pair:
        try:
            hakobu.remove(queue)
        except hakobu.NotFound:
            pass
        try:  # where a receiving end that did not see the end of the stream keeps its progress
            hakobu._core.remove_store(f"{queue}.bridge")
        except hakobu.NotFound:
            pass


@pytest.fixture
def bridges() -> Iterator[list[hakobu.Bridge]]:
    """Bridges a test made; closed after it whatever happened."""
    made: list[hakobu.Bridge] = []
    yield made
    for bridge in made:
        bridge.close()


def pair(
    names: tuple[str, str], bridges: list[hakobu.Bridge], **options: Any
) -> tuple[hakobu.Bridge, hakobu.Bridge]:
    receiving_options = {k: v for k, v in options.items() if k in ("max_message_bytes", "topic", "lane")}
    # Objects travel between these (no keys): as on a trusted network.
    receiving_options["allow_objects"] = options.pop("allow_objects", True)
    receiving = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*", **receiving_options)
    bridges.append(receiving)
    sending = hakobu.Bridge(names[0], send_to=receiving.endpoint, **options)
    bridges.append(sending)
    return sending, receiving


# --- what travels ------------------------------------------------------------------------


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "zeromq"])
def test_every_kind_dtype_and_shape_round_trips(
    names: tuple[str, str], bridges: list[hakobu.Bridge], lane: bool
) -> None:
    """On the data lane (the default between ends without keys) and through ZeroMQ alone."""
    sending, receiving = pair(names, bridges, lane=lane)
    samples = [
        *cases(),
        ("memoryview", memoryview(b"view of bytes" * 100)),
        ("large-bytes", os.urandom(3_000_000)),
        ("int", 12345),
        ("tuple", (1, "two", 3.0)),
        ("hakobu-array", hakobu.full((10, 10), 7.5)),  # sent by reference to shared memory
        (  # an object's pieces in chunks: a stream and buffers over a chunk, one exactly a chunk
            "object-over-chunks",
            {
                "big": np.arange(600_000.0),
                "exact": np.arange(wire.CHUNK // 8, dtype=np.int64),
                "text": "x" * (3 * wire.CHUNK + 5),
                "small": np.arange(3),
            },
        ),
    ]
    with hakobu.Queue(names[0]) as source, hakobu.Queue(names[1]) as sink:
        for _, obj in samples:
            source.put(obj)
        for label, obj in samples:
            got = sink.get(timeout=WATCHDOG)
            expected = bytes(obj) if isinstance(obj, (bytearray, memoryview)) else obj
            assert fingerprint(got) == fingerprint(expected), label
            if isinstance(obj, np.ndarray):
                assert got.dtype == obj.dtype and got.shape == obj.shape, label
                np.testing.assert_array_equal(got, obj)
                # Contiguity is kept: Fortran stays Fortran; a strided view arrives C-contiguous.
                if obj.flags.f_contiguous and not obj.flags.c_contiguous:
                    assert got.flags.f_contiguous, label
                else:
                    assert got.flags.c_contiguous, label
                assert got.flags.writeable, label
    wait_for(lambda: sending.stats()["messages"] == len(samples), "every acknowledgement")
    # The whole stream travels on the lane when there is one (the first lane is waited for).
    assert (
        sending.stats()["lane_messages"]
        == receiving.stats()["lane_messages"]
        == (len(samples) if lane else 0)
    )
    assert (receiving.lane_port is not None) == lane


def test_order_bytes_and_the_end_of_the_stream(names: tuple[str, str], bridges: list[hakobu.Bridge]) -> None:
    sending, receiving = pair(names, bridges)
    producer = start("bridge_send", names[0], 3000)
    try:
        with hakobu.Queue(names[1]) as sink:
            assert list(sink) == list(range(3000))  # stops at EndOfStream: the end travelled
        assert finish(producer)[0] == 0
        assert sending.join(WATCHDOG) and receiving.join(WATCHDOG)
    finally:
        producer.kill()
    sent, received = sending.stats(), receiving.stats()
    assert sent["messages"] == received["messages"] == 3000
    assert sent["bytes"] == received["bytes"] > 0
    assert sent["in_flight"] == 0 and sent["rejected"] == received["rejected"] == 0


def test_a_receiving_end_closed_as_soon_as_the_stream_ends_still_acknowledges_its_end(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    """The usual receiving program: read until the end of the stream, then leave (closing the
    bridge at once). The acknowledgement of the end, sent just before, still reaches the sending
    end, whose join() returns: it does not wait forever for a receiving end that is gone."""
    for attempt in range(20):
        sending, receiving = pair(names, bridges, lane=attempt % 2 == 0)
        with hakobu.Queue(names[0]) as source:
            for k in range(5):
                source.put(k)
        with hakobu.Queue(names[1]) as sink:
            assert list(sink) == list(range(5))
        receiving.close()
        assert sending.join(WATCHDOG / 4), (
            f"attempt {attempt}: the sending end never heard the end acknowledged"
        )
        bridges.clear()
        for queue in names:
            hakobu.remove(queue)


def test_senders_lost_travels_as_senders_lost(names: tuple[str, str], bridges: list[hakobu.Bridge]) -> None:
    sending, receiving = pair(names, bridges)
    producer = start("bridge_send", names[0], 10, "fail")
    try:
        assert finish(producer)[0] == 0
        with hakobu.Queue(names[1]) as sink:
            got = [sink.get(timeout=WATCHDOG) for _ in range(10)]
            with pytest.raises(hakobu.SendersLost):
                sink.get(timeout=WATCHDOG)
        assert got == list(range(10))
        assert sending.join(WATCHDOG) and receiving.join(WATCHDOG)
    finally:
        producer.kill()


def test_either_end_may_bind(names: tuple[str, str], bridges: list[hakobu.Bridge]) -> None:
    sending = hakobu.Bridge(names[0], send_to="tcp://127.0.0.1:*", bind=True)
    bridges.append(sending)
    receiving = hakobu.Bridge(names[1], receive_at=sending.endpoint, bind=False)
    bridges.append(receiving)
    with hakobu.Queue(names[0]) as source, hakobu.Queue(names[1]) as sink:
        for i in range(20):
            source.put(np.full(2, i))
        source.close()
        assert [int(a[0]) for a in sink] == list(range(20))
    assert sending.join(WATCHDOG) and receiving.join(WATCHDOG)


def test_two_sending_ends_into_one_the_stream_ends_with_the_last(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    receiving = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*", allow_objects=True)
    bridges.append(receiving)
    other = f"{names[0]}-2"
    try:
        with hakobu.Queue(names[0]) as first, hakobu.Queue(other) as second, hakobu.Queue(names[1]) as sink:
            for source, queue_name in ((first, names[0]), (second, other)):
                bridges.append(hakobu.Bridge(queue_name, send_to=receiving.endpoint))
                source.put(f"hello from {queue_name}")
            wait_for(lambda: sink.qsize() == 2, "both first messages")
            first.close()  # one stream ends: the other still sends
            wait_for(lambda: not bridges[1].running, "the first sending end's end")
            for i in range(5):
                second.put(i)
            second.close()
            got = list(sink)  # ends once both ended
            assert sorted(map(str, got[:2])) == sorted(f"hello from {n}" for n in (names[0], other))
            assert got[2:] == list(range(5))
        assert receiving.join(WATCHDOG)
    finally:
        try:
            hakobu.remove(other)
        except hakobu.NotFound:
            pass


class _Tripwire:
    """Unpickling it creates a file: shows who unpickled (no bridge may)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (Path(self.path),))


def test_a_bridge_never_unpickles_and_the_consumer_decides(
    names: tuple[str, str], bridges: list[hakobu.Bridge], tmp_path: Path
) -> None:
    _, receiving = pair(names, bridges)
    wire_marker = tmp_path / "unpickled"
    with hakobu.Queue(names[0]) as source:
        source.put(_Tripwire(str(wire_marker)))
        source.put({"plain": [1, 2, 3]})
    wait_for(lambda: receiving.stats()["messages"] == 2, "delivery of both objects")
    assert not wire_marker.exists()  # carried by both bridges as bytes
    with hakobu.Queue(names[1], allow_pickle=False) as sink:
        with pytest.raises(hakobu.UnpicklingRefused):
            sink.get(timeout=WATCHDOG)
        assert sink.get(timeout=WATCHDOG) == {"plain": [1, 2, 3]}
    assert not wire_marker.exists()


def test_a_topic_is_bridged_to_a_topic(topic_name: str, bridges: list[hakobu.Bridge]) -> None:
    far = f"{topic_name}-far"
    try:
        with hakobu.Topic(topic_name) as near, hakobu.Topic(far) as remote:
            subscription = remote.subscribe()
            pair((topic_name, far), bridges, topic=True)
            for i in range(50):
                near.publish(np.full(3, i, dtype=np.int16) if i % 2 else {"i": i})
            for i in range(50):
                got = subscription.get(timeout=WATCHDOG)
                if i % 2:
                    assert got.dtype == np.int16 and list(got) == [i] * 3
                else:
                    assert got == {"i": i}
            subscription.close()
            near.unlink()  # the end of the near topic ends both bridges
            assert bridges[1].join(WATCHDOG) and bridges[0].join(WATCHDOG)
    finally:
        for topic in (topic_name, far):
            try:
                hakobu.Topic.remove(topic)
            except hakobu.NotFound:
                pass


# --- flow control and faults ---------------------------------------------------------------


def test_a_held_up_consumer_stops_the_sender_reading_its_queue(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    with hakobu.Queue(names[0], capacity=200) as source, hakobu.Queue(names[1], capacity=2) as sink:
        sending, _ = pair(names, bridges, window=4)
        for i in range(100):
            source.put(i)
        # Nobody reads the sink: it fills, the receiving end waits, the window fills, the source stays.
        wait_for(lambda: sink.qsize() == 2 and sending.stats()["in_flight"] == 4, "a full window")
        assert source.qsize() >= 100 - 2 - 1 - 4  # two in the sink, one being put, four in flight
        assert sending.stats()["in_flight"] <= 4
        assert [sink.get(timeout=WATCHDOG) for _ in range(100)] == list(range(100))
        source.close()
        with pytest.raises(hakobu.EndOfStream):
            sink.get(timeout=WATCHDOG)


def test_close_puts_what_was_in_flight_back_and_takes_nothing_without_a_peer(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    with hakobu.Queue(names[0]) as source:
        # No peer: nothing leaves the local queue (it survives this process; a window would not).
        alone = hakobu.Bridge(names[0], send_to=f"tcp://127.0.0.1:{free_port()}", window=8)
        bridges.append(alone)
        for i in range(3):
            source.put(i)
        alone.close()
        assert alone.stats()["given_back"] == 0 and source.qsize() == 3
        assert [source.get(timeout=WATCHDOG) for _ in range(3)] == [0, 1, 2]
    with hakobu.Queue(names[0]) as source, hakobu.Queue(names[1], capacity=1) as sink:
        sending, _ = pair(names, bridges, window=4)
        for i in range(6):
            source.put(np.arange(i + 1))
        # The sink holds 0, 1..4 are in flight (not acknowledged: the sink is full), 5 waits.
        wait_for(
            lambda: sink.qsize() == 1 and sending.stats()["in_flight"] == 4 and source.qsize() == 1,
            "a full window after the first acknowledgement",
        )
        sending.close()
        assert sending.stats()["given_back"] == 4
        back = sorted(len(source.get(timeout=WATCHDOG)) for _ in range(5))
        assert back == [2, 3, 4, 5, 6]  # 5 was still there; 1..4 put back after it


def test_close_under_backpressure_returns_and_says_what_it_could_not_put_back(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    with hakobu.Queue(names[0], capacity=4) as source, hakobu.Queue(names[1], capacity=1) as sink:
        sending, _ = pair(names, bridges, window=4)
        for i in range(100):  # until the source is full again behind a full window
            try:
                source.put(i, timeout=0.5)
            except hakobu.Full:
                break
        wait_for(
            lambda: sending.stats()["in_flight"] == 4 and source.qsize() == 4 and sink.qsize() == 1,
            "a full window, source and sink",
        )
        sending.close()  # its one reader is the bridge: no room to put the window back
        with pytest.raises(hakobu.BridgeError, match="could not be put back"):
            sending.join(0)
        assert sending.stats()["not_given_back"] == 4 and sending.stats()["given_back"] == 0
        assert sink.qsize() == 1


@pytest.mark.filterwarnings("ignore::hakobu.BridgeInputWarning")
def test_a_foreign_local_message_is_dropped_and_the_bridge_goes_on(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    sending, _ = pair(names, bridges)
    with hakobu.Queue(names[0]) as source, hakobu.Queue(names[1]) as sink:
        source._core.put_bytes(b"a kind no codec knows", 9, 10.0)  # as a C++ producer may
        source.put(b"after it")
        assert sink.get(timeout=WATCHDOG) == b"after it"
        assert sending.stats()["rejected"] == 1 and sending.running


def test_no_peer_within_timeout_raises_peer_timeout(name: str, bridges: list[hakobu.Bridge]) -> None:
    sending = hakobu.Bridge(name, send_to=f"tcp://127.0.0.1:{free_port()}", timeout=0.5)
    bridges.append(sending)
    with pytest.raises(hakobu.PeerTimeout, match="no answer"):
        sending.join(WATCHDOG)


def test_a_killed_receiving_process_restarted_loses_nothing(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    count = 400
    first = start("bridge_receive", names[1], endpoint)
    second = None
    try:
        assert first.stdout is not None and first.stdout.readline().startswith("ready")
        sending = hakobu.Bridge(names[0], send_to=endpoint, window=16)
        bridges.append(sending)
        received: list[int] = []
        with hakobu.Queue(names[0]) as source, hakobu.Queue(names[1]) as sink:
            for i in range(count):
                source.put(i)

            def take(until: int) -> None:
                deadline = time.monotonic() + WATCHDOG
                while len(received) < until:
                    assert time.monotonic() < deadline, f"watchdog: {len(received)} of {until} received"
                    try:
                        received.append(sink.get(timeout=0.2))
                    except (hakobu.Empty, hakobu.SendersLost):
                        pass  # between the death and the restart nobody sends: the end lasts until one does

            take(100)
            first.kill()
            first.wait(WATCHDOG)
            second = start("bridge_receive", names[1], endpoint)
            assert second.stdout is not None and second.stdout.readline().startswith("ready")
            source.close()
            take(count)
            code, _, err = finish(second)
            assert code == 0, err
            try:
                for leftover in sink:  # at most the one message delivered but not acknowledged at the kill
                    received.append(leftover)
            except hakobu.SendersLost:
                pass  # the killed receiving process was a sender of the sink too
        assert sending.join(WATCHDOG)
        assert sorted(set(received)) == list(range(count))  # nothing lost
        assert len(received) - count <= 1  # only the unacknowledged one may come twice
        assert received == sorted(received)  # in order
    finally:
        first.kill()
        if second is not None:
            second.kill()


# --- hostile input ---------------------------------------------------------------------------


def _data(session: bytes, seq: int, kind: int, meta: bytes, *payload: bytes) -> list[bytes]:
    return [wire.data_header(session, seq, 0, kind), meta, *payload]


def input_warnings(receiving: hakobu.Bridge, frames: list[bytes]) -> list[str]:
    """The BridgeInputWarnings ``receiving`` gives for one message of ``frames`` from a bare
    peer, once it has counted the message as rejected."""
    with raw_peer(receiving.endpoint) as raw, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", hakobu.BridgeInputWarning)
        raw.send_multipart(frames)
        wait_for(lambda: receiving.stats()["rejected"] == 1, "the rejection")
    return [str(w.message) for w in caught if issubclass(w.category, hakobu.BridgeInputWarning)]


@contextlib.contextmanager
def raw_peer(endpoint: str, reconnect_ms: int = 100) -> Iterator[Any]:
    """A bare ZeroMQ DEALER connected to ``endpoint``: a peer that sends whatever a test makes."""
    raw = zmq.Context.instance().socket(zmq.DEALER)
    try:
        raw.setsockopt(zmq.LINGER, 0)
        raw.setsockopt(zmq.RECONNECT_IVL, reconnect_ms)
        raw.connect(endpoint)
        yield raw
    finally:
        raw.close()


@pytest.mark.filterwarnings("ignore::hakobu.BridgeInputWarning")
def test_hostile_frames_are_dropped_and_counted_and_good_messages_still_arrive(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    receiving = hakobu.Bridge(
        names[1], receive_at="tcp://127.0.0.1:*", max_message_bytes=4 << 20, allow_objects=True
    )
    bridges.append(receiving)
    rng = random.Random(15)
    chunk = wire.CHUNK
    big_meta = json.dumps({"t": "<f8", "s": [chunk // 4], "o": "C"}).encode()  # 2 chunks of elements
    session = os.urandom(16)
    array_meta = b'{"t": "<f8", "s": [4], "o": "C"}'
    hostile: list[list[bytes]] = [
        [b""],
        [b"HKBR"],  # truncated header
        [b"HKBR\x01"],
        [struct.pack("<4sBBxx", b"HKBR", 99, wire.HELLO) + bytes(24)],  # another version
        [struct.pack("<4sBBxx", b"HKBR", wire.VERSION, 77)],  # unknown type
        [struct.pack("<4sBBxx", b"XXXX", wire.VERSION, wire.HELLO) + bytes(24)],  # wrong magic
        [wire.status(bytes(16), session, 5, 0)],  # a receiving end's message, to a receiving end
        _data(session, 1, wire.DATA, b""),  # too few frames
        _data(session, 1, 9, b"", b"x"),  # unknown kind
        _data(session, 2, 2, b'{"t": "<f8", "s": [1000000000, 1000000000], "o": "C"}', b"x"),  # huge claim
        _data(session, 3, 2, array_meta, b"x" * 31),  # size does not match
        _data(session, 4, 2, b'{"t": "|O", "s": [1], "o": "C"}', b"x" * 8),  # object dtype: pointers
        _data(session, 5, 2, b"not json", b"x" * 32),
        _data(session, 6, 2, b'{"t": "<f8", "s": [-4], "o": "C"}', b"x" * 32),
        _data(session, 7, 3, b'{"s": 6, "b": [[0, 10]]}', b"stream", b"short"),  # buffer size mismatch
        _data(session, 8, 3, b'{"b": "x"}', b"stream"),
        _data(session, 9, 1, b"", *[b"x" * chunk] * 4, b"x"),  # over max_message_bytes
        _data(session, 10, 1, b"", b"a", b"b", b"", b"", b""),  # too many payload frames
        _data(
            session, 11, 2, b'{"t": "<f8", "s": [0, 2305843009213693952], "o": "C"}', b""
        ),  # empty, huge extent
        _data(session, 12, 2, b'{"t": "<f8", "s": [2305843009213693952, 0], "o": "C"}', b""),
        _data(session, 13, 2, b"[" * 60000, b""),  # nesting deeper than a parser recurses
        # Chunks: a frame over CHUNK, too few or too many bytes in all, too many frames.
        _data(session, 14, 2, big_meta, b"x" * (2 * chunk)),
        _data(session, 15, 2, big_meta, b"x" * chunk, b"x" * (chunk // 2)),
        _data(session, 16, 2, big_meta, b"x" * chunk, b"x" * chunk, b"x" * 8),
        _data(session, 17, 2, array_meta, *[b"x" * 4] * 8),  # 32 bytes in 8 frames
        _data(session, 99, 2, array_meta),  # no payload frame at all (refused before its number counts)
        _data(session, 18, 1, b"", b"x" * (chunk + 1)),  # bytes: a frame over CHUNK
        _data(session, 19, 1, b"", *[b""] * 5),  # empty, in too many frames
        # Objects: a frame no piece has, a negative size, a claim over the limit, a piece not cut at CHUNK.
        _data(session, 20, 3, b'{"s": 6, "b": []}', b"stream", b"extra"),
        _data(session, 21, 3, b'{"s": -1, "b": []}', b""),
        _data(session, 22, 3, b'{"s": 0, "b": [[0, 5242880]]}', b""),
        _data(session, 23, 3, b'{"s": %d, "b": []}' % (chunk + 10), b"x" * (chunk + 10)),
        [
            wire.data_header(os.urandom(16), 1, 0, 1),
            b"",
            *([b"x"] * (wire.MAX_FRAMES + 5)),
        ],  # far too many frames
        *[[rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 5))] for _ in range(40)],
    ]
    with raw_peer(receiving.endpoint) as raw:
        for frames in hostile:
            raw.send_multipart(frames)
        # A good message of the same session after all that (numbered next), then a real bridge.
        raw.send_multipart(_data(session, 24, 2, array_meta, np.arange(4.0).tobytes()))
        # Chunks cut elsewhere than at CHUNK are accepted when they fill the array exactly.
        two = np.arange(chunk // 4, dtype="<f8").tobytes()
        raw.send_multipart(
            _data(session, 25, 2, big_meta, two[:1000], two[1000 : 1000 + chunk], two[1000 + chunk :])
        )
        with hakobu.Queue(names[1]) as sink:
            assert list(sink.get(timeout=WATCHDOG)) == [0.0, 1.0, 2.0, 3.0]
            assert sink.get(timeout=WATCHDOG).tobytes() == two
            sending = hakobu.Bridge(names[0], send_to=receiving.endpoint)
            bridges.append(sending)
            with hakobu.Queue(names[0]) as source:
                source.put(b"good")
                source.put(np.ones(3))
            assert sink.get(timeout=WATCHDOG) == b"good"
            assert list(sink.get(timeout=WATCHDOG)) == [1.0, 1.0, 1.0]
            assert receiving.stats()["rejected"] == len(hostile)  # each one, once
        assert receiving.running and sending.join(WATCHDOG) and receiving.join(WATCHDOG)


def test_a_peer_sending_a_frame_over_4_mib_is_cut_off_before_it_is_taken(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    from zmq.utils.monitor import recv_monitor_message

    receiving = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*")
    bridges.append(receiving)
    # One connection (no quick reconnect): its end is what this test sees.
    with raw_peer(receiving.endpoint, reconnect_ms=60_000) as raw:
        monitor = raw.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            raw.send_multipart(_data(os.urandom(16), 1, 1, b"", b"x" * (wire.LARGEST_FRAME + 1)))
            monitor.setsockopt(zmq.RCVTIMEO, int(WATCHDOG * 1000))
            recv_monitor_message(monitor)  # the disconnection (zmq.Again after the watchdog: a failure)
        finally:
            raw.disable_monitor()
            monitor.close()
    assert receiving.running and receiving.stats()["rejected"] == 0  # never reached the bridge
    sending = hakobu.Bridge(names[0], send_to=receiving.endpoint)
    bridges.append(sending)
    with hakobu.Queue(names[0]) as source, hakobu.Queue(names[1]) as sink:
        source.put(b"after the cut")
        assert sink.get(timeout=WATCHDOG) == b"after the cut"


def test_bad_input_warns_naming_the_peer_and_the_fault(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    receiving = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*")
    bridges.append(receiving)
    texts = input_warnings(receiving, [struct.pack("<4sBBxx", b"HKBR", 99, wire.HELLO) + bytes(24)])
    assert len(texts) == 1
    assert "127.0.0.1" in texts[0] and "version 99" in texts[0]


def test_a_peer_of_the_previous_protocol_version_is_told_so(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    receiving = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*")
    bridges.append(receiving)
    old = struct.pack("<4sBBxx", b"HKBR", wire.VERSION - 1, wire.DATA) + bytes(33)  # a whole DATA header
    texts = input_warnings(receiving, [old, b"", b"x" * 16])
    assert len(texts) == 1 and f"protocol version {wire.VERSION - 1}" in texts[0]
    assert "same hakobu version" in texts[0]


# --- objects and who may send them ---------------------------------------------------------


def test_objects_from_unauthenticated_peers_are_refused_and_the_rest_flows(
    names: tuple[str, str], bridges: list[hakobu.Bridge], tmp_path: Path
) -> None:
    sending, receiving = pair(names, bridges, allow_objects=False)
    marker = tmp_path / "unpickled"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", hakobu.BridgeInputWarning)
        with hakobu.Queue(names[0]) as source, hakobu.Queue(names[1], allow_pickle=True) as sink:
            source.put(b"before")
            source.put(_Tripwire(str(marker)))
            source.put(np.arange(3))
            source.put({"plain": 1})
            source.put(b"after")
            source.close()
            got = list(sink)  # the stream still ends
        assert sending.join(WATCHDOG) and receiving.join(WATCHDOG)
    assert got[0] == b"before" and list(got[1]) == [0, 1, 2] and got[2] == b"after" and len(got) == 3
    assert not marker.exists()
    assert receiving.stats()["rejected"] == 2 and receiving.stats()["messages"] == 3
    assert sending.stats()["messages"] == 5  # acknowledged, not sent again
    texts = [str(w.message) for w in caught if issubclass(w.category, hakobu.BridgeInputWarning)]
    assert texts and "127.0.0.1" in texts[0] and "object message" in texts[0]
    assert "--allowed-keys" in texts[0] and "--allow-objects" in texts[0]


def test_allow_objects_must_be_a_flag(name: str) -> None:
    with pytest.raises(hakobu.InvalidArgument):
        hakobu.Bridge(name, receive_at="tcp://127.0.0.1:*", allow_objects="yes")  # type: ignore[arg-type]


def test_a_hostile_receiving_end_cannot_break_the_sender(name: str, bridges: list[hakobu.Bridge]) -> None:
    fake = zmq.Context.instance().socket(zmq.ROUTER)
    try:
        fake.setsockopt(zmq.LINGER, 0)
        port = fake.bind_to_random_port("tcp://127.0.0.1")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", hakobu.BridgeInputWarning)
            sending = hakobu.Bridge(name, send_to=f"tcp://127.0.0.1:{port}")
            bridges.append(sending)
            with hakobu.Queue(name) as source:
                source.put(b"one")
                assert fake.poll(WATCHDOG * 1000)
                identity = fake.recv_multipart()[0]
                for frames in (
                    [b"junk"],
                    [wire.status(bytes(16), bytes(16), 1, 0), b"extra"],
                    [wire.hello(bytes(16), 3)],
                ):
                    fake.send_multipart([identity, *frames])
                wait_for(lambda: sending.stats()["rejected"] == 3, "three rejections")
                assert sending.running
    finally:
        fake.close()


# --- the data lane ---------------------------------------------------------------------------


def announced_lane(receiving: hakobu.Bridge, session: bytes) -> tuple[bytes, int]:
    """(receiver id, lane port) as a receiving end announces them to a peer that says HELLO."""
    with raw_peer(receiving.endpoint) as raw:
        raw.send(wire.hello(session, 0))
        assert raw.poll(WATCHDOG * 1000), "no STATUS from the receiving end"
        status = wire.parse_header(memoryview(raw.recv()))
    assert status.type == wire.STATUS and status.lane_port == receiving.lane_port
    return status.receiver, status.lane_port


def lane_message(frames: list[bytes]) -> bytes:
    """A message as a sending end writes it on a lane: the prefix, then the frames."""
    return wire.lane_prefix([len(frame) for frame in frames]) + b"".join(frames)


def closed_by_peer(connection: socket.socket) -> bool:
    """Waits (bounded) until the other end closes ``connection``; True when it did."""
    connection.settimeout(WATCHDOG)
    try:
        while connection.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


@pytest.mark.filterwarnings("ignore::hakobu.BridgeInputWarning")
def test_hostile_lane_input_is_read_past_or_closes_the_lane_and_good_messages_still_arrive(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    """What a lane brings is checked like a ZeroMQ message: a bad message whose size is known is
    read past (the lane stays in step: the next good one is delivered), a bad hello or prefix
    closes the lane. Each is counted once; then a real sending end still gets through."""
    limit = 4 << 20
    receiving = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*", max_message_bytes=limit)
    bridges.append(receiving)
    session = os.urandom(16)
    receiver, port = announced_lane(receiving, session)
    chunk, cap = wire.CHUNK, wire.max_frames(limit)
    array_meta = b'{"t": "<f8", "s": [4], "o": "C"}'
    read_past: list[bytes] = [
        wire.lane_prefix([1] * (cap + 1)) + b"x" * (cap + 1),  # more frames than a message may have
        lane_message(_data(session, 1, 1, b"", b"x" * (wire.LARGEST_FRAME + 1))),  # a frame over 4 MiB
        lane_message([b"not a header at all", b""]),
        lane_message(_data(os.urandom(16), 1, 2, array_meta, bytes(32))),  # another session's
        lane_message([wire.hello(session, 0)]),  # not a numbered message
        lane_message(_data(session, 1, 2, b"not json", bytes(32))),  # numbered 1: refused and acknowledged
        lane_message(_data(session, 2, 2, array_meta, bytes(31))),  # its size does not match its shape
        lane_message(_data(session, 3, 3, b'{"s": 6, "b": []}', b"stream")),  # a pickle, no keys
        lane_message(_data(session, 4, 2, b'{"t": "<f8", "s": [1048576], "o": "C"}', *[bytes(chunk)] * 8)),
    ]
    unanswered = [  # numbered past a gap, and a duplicate: dropped without a warning
        lane_message(_data(session, 9, 2, array_meta, bytes(32))),
        lane_message(_data(session, 2, 2, array_meta, bytes(32))),
    ]
    closing = [
        os.urandom(wire.LANE_HELLO_BYTES),
        struct.pack("<4sB3x16s16s", b"HKBL", 99, session, receiver),  # another version
        wire.lane_hello(session, os.urandom(16)),  # for another receiving end
        wire.lane_hello(session, receiver) + b"XXXX" + bytes(12),  # a prefix that is not one
        wire.lane_hello(session, receiver) + struct.pack("<4sIQ2I", b"HKBM", 2, 99, 1, 2),  # sizes != total
        wire.lane_hello(session, receiver) + struct.pack("<4sIQ", b"HKBM", 0, 0),  # no frames
    ]
    with hakobu.Queue(names[1]) as sink:
        with socket.create_connection(("127.0.0.1", port), timeout=WATCHDOG) as lane:
            lane.sendall(wire.lane_hello(session, receiver))
            for message in [*read_past, *unanswered]:
                lane.sendall(message)
            lane.sendall(lane_message(_data(session, 5, 2, array_meta, np.arange(4.0).tobytes())))
            assert list(sink.get(timeout=WATCHDOG)) == [0.0, 1.0, 2.0, 3.0]
            wait_for(lambda: receiving.stats()["lane_messages"] == 1, "the delivery counted")
            assert receiving.stats()["rejected"] == len(read_past)
        for stream in closing:
            with socket.create_connection(("127.0.0.1", port), timeout=WATCHDOG) as lane:
                lane.sendall(stream)
                assert closed_by_peer(lane), stream[:24]
        assert receiving.stats()["rejected"] == len(read_past) + len(closing)
        sending = hakobu.Bridge(names[0], send_to=receiving.endpoint)
        bridges.append(sending)
        with hakobu.Queue(names[0]) as source:
            source.put(np.ones(3))
            source.close()
        assert list(sink.get(timeout=WATCHDOG)) == [1.0, 1.0, 1.0]
        assert sending.join(WATCHDOG) and receiving.join(WATCHDOG)
        assert sending.stats()["lane_messages"] == 1


@pytest.mark.filterwarnings("ignore::hakobu.BridgeInputWarning")
def test_fuzzed_lanes_never_stop_the_receiving_end(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    """Lanes of random and half-valid bytes (a right hello, then prefixes, headers and meta frames
    with random fields, cut anywhere), each closed after its bytes: the receiving end stays up
    and a real sending end gets through after them."""
    receiving = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*", max_message_bytes=1 << 20)
    bridges.append(receiving)
    rng = random.Random(44)
    session = os.urandom(16)
    receiver, port = announced_lane(receiving, session)
    metas = [b"", b"{}", b'{"t": "<f8", "s": [4], "o": "C"}', b'{"s": 3, "b": [[0, 2]]}', b"[[[", b"\xff"]

    def message() -> bytes:
        frames = [
            wire.data_header(
                rng.choice([session, os.urandom(16)]), rng.randrange(0, 4), 0, rng.randrange(0, 5)
            ),
            rng.choice(metas),
            *[rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(0, 4))],
        ]
        data = lane_message(frames)
        if rng.random() < 0.3:  # a field or a byte changed
            at = rng.randrange(len(data))
            data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
        return data

    for _ in range(150):
        stream = wire.lane_hello(session, receiver) if rng.random() < 0.9 else rng.randbytes(40)
        stream += b"".join(message() for _ in range(rng.randrange(0, 6)))
        stream = stream[: rng.randrange(len(stream) + 1)] if rng.random() < 0.5 else stream
        with (
            socket.create_connection(("127.0.0.1", port), timeout=WATCHDOG) as lane,
            contextlib.suppress(OSError),
        ):
            lane.sendall(stream)
    assert receiving.running and receiving.stats()["rejected"] > 0
    with hakobu.Queue(names[1]) as sink:
        with contextlib.suppress(hakobu.Empty):
            while True:  # whatever the fuzz made that was a valid message
                sink.get(timeout=1.0)
        sending = hakobu.Bridge(names[0], send_to=receiving.endpoint)
        bridges.append(sending)
        with hakobu.Queue(names[0]) as source:
            source.put(b"after the fuzz")
        assert sink.get(timeout=WATCHDOG) == b"after the fuzz"
    assert receiving.running


def test_a_lane_hands_on_every_byte_in_order_however_it_arrives_and_is_asked_for() -> None:
    """The receiving end's lane reader (lane.LaneIn) over a socket pair: the peer writes a stream
    in pieces of random sizes (1 byte to 300 KiB) with pauses; a parser asks for buffers of random
    sizes, small ones (served from the reader's staging buffer) and large ones (read into
    directly), and the last buffer comes even though the socket stays silent after it. Every byte
    lands in order, once."""
    rng = random.Random(7)
    sizes = [
        rng.choice([1, 7, 16, 4096, DIRECT_BYTES - 1, DIRECT_BYTES, 300_000, 1 << 20]) for _ in range(120)
    ]
    stream = rng.randbytes(sum(sizes))
    got: list[bytes] = []

    def parser() -> Parser:
        for size in sizes:
            buffer = bytearray(size)
            yield memoryview(buffer)
            got.append(bytes(buffer))

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    reader = LaneIn(ours, "a socket pair")

    def write() -> None:
        at = 0
        while at < len(stream):
            step = rng.choice([1, 13, 4096, 65536, 300_000])
            theirs.sendall(stream[at : at + step])
            at += step
            if rng.random() < 0.1:
                time.sleep(0.001)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        reader.start(parser())
        deadline = time.monotonic() + WATCHDOG
        while reader.pump():
            assert time.monotonic() < deadline, "watchdog: the reader did not finish"
            select.select([ours], [], [], 0.05)
    finally:
        writer.join(WATCHDOG)
        reader.close()
        theirs.close()
    assert [len(piece) for piece in got] == sizes
    assert b"".join(got) == stream


def test_a_remembered_array_layout_is_still_checked_against_each_message() -> None:
    """The receiving end remembers the array meta frames it parsed (a stream repeats a few), but
    the size limit and the payload's frame sizes are checked for every message; the sending end
    remembers what it wrote per dtype, shape and order, so different byte orders or shapes never
    share a meta frame."""
    meta, payload = wire.array_frames(np.zeros((4, 4), "<f8"))
    sizes = [len(memoryview(p)) for p in payload]
    for _ in range(3):
        plan = wire.check_array(memoryview(meta), sizes, 1 << 20)
        assert plan.shape == [4, 4] and plan.nbytes == 128 and plan.dtype == np.dtype("<f8")
        plan.shape.append(99)  # a caller's change does not reach the remembered layout
    with pytest.raises(wire.Rejected, match="max_message_bytes=100"):
        wire.check_array(memoryview(meta), sizes, 100)
    with pytest.raises(wire.Rejected):
        wire.check_array(memoryview(meta), [64], 1 << 20)  # frames that do not add up to the shape
    big, _ = wire.array_frames(np.zeros((4, 4), ">f8"))
    fortran, _ = wire.array_frames(np.zeros((4, 4), "<f8", order="F"))
    other, _ = wire.array_frames(np.zeros((16,), "<f8"))
    assert len({meta, big, fortran, other}) == 4
    assert json.loads(big)["t"] != json.loads(meta)["t"] and json.loads(fortran)["o"] == "F"
    point = np.dtype([("x", "<f4"), ("y", "<f4")])
    structured, _ = wire.array_frames(np.zeros(3, point))
    assert wire.check_array(memoryview(structured), [24], 1 << 20).dtype == point
    for k in range(3 * wire.MEMO_ENTRIES):  # more layouts than are remembered: each still right
        shaped, _ = wire.array_frames(np.zeros((k + 1,), "<i2"))
        assert wire.check_array(memoryview(shaped), [2 * (k + 1)], 1 << 20).shape == [k + 1]


def test_a_lane_message_delivered_through_zeromq_meanwhile_is_not_delivered_twice(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    """A sending end that gives up its lane in the middle of a message sends it again through
    ZeroMQ, while the rest of it may still come on the old lane: the receiving end delivers it
    once (through ZeroMQ) and drops the lane's copy when it is whole."""
    receiving = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*")
    bridges.append(receiving)
    session = os.urandom(16)
    meta = b'{"t": "<f8", "s": [131072], "o": "C"}'  # 1 MiB
    payload = np.arange(131072.0).tobytes()
    frames = _data(session, 1, 2, meta, payload)
    with raw_peer(receiving.endpoint) as raw:
        raw.send(wire.hello(session, 0))
        assert raw.poll(WATCHDOG * 1000)
        status = wire.parse_header(memoryview(raw.recv()))
        with socket.create_connection(("127.0.0.1", status.lane_port), timeout=WATCHDOG) as lane:
            whole = lane_message(frames)
            lane.sendall(wire.lane_hello(session, status.receiver) + whole[: len(whole) // 2])
            with hakobu.Queue(names[1]) as sink:
                wait_for(lambda: any(lane.busy for lane in receiving._end.lanes), "the lane message begun")
                raw.send_multipart(frames)  # the same message, whole, through ZeroMQ
                np.testing.assert_array_equal(sink.get(timeout=WATCHDOG), np.arange(131072.0))
                lane.sendall(whole[len(whole) // 2 :])
                lane.sendall(lane_message(_data(session, 2, 1, b"", b"next")))  # the lane goes on
                assert sink.get(timeout=WATCHDOG) == b"next"
                assert sink.qsize() == 0
    assert receiving.stats()["messages"] == 2 and receiving.stats()["lane_messages"] == 1


def test_a_sending_end_whose_lane_socket_is_past_descriptor_1024_still_uses_it(
    names: tuple[str, str], bridges: list[hakobu.Bridge]
) -> None:
    """select() refuses descriptors from 1024 on; a busy program's lane socket may be one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the descriptor limit ({hard}) leaves no room past 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        sending, _ = pair(names, bridges)
        with hakobu.Queue(names[0]) as source, hakobu.Queue(names[1]) as sink:
            source.put(b"high")
            assert sink.get(timeout=WATCHDOG) == b"high"
        assert sending.join(WATCHDOG)  # the end travelled too: no error in the bridge
        assert sending.stats()["lane_messages"] == 1
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fake_receiving_end() -> tuple[Any, int]:
    """A bare ROUTER playing a receiving end: (socket, its port)."""
    fake = zmq.Context.instance().socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    return fake, fake.bind_to_random_port("tcp://127.0.0.1")


def next_of_type(
    fake: Any, kind: int, heartbeat: list[bytes] | None = None
) -> tuple[bytes, wire.Header, list[bytes]]:
    """The next message of type ``kind`` a fake receiving end gets (others skipped): (identity,
    header, frames). ``heartbeat``: frames it sends every 0.1 s meanwhile (a STATUS), as a
    receiving end says it is there."""
    deadline = time.monotonic() + WATCHDOG
    while time.monotonic() < deadline:
        if heartbeat is not None:
            fake.send_multipart(heartbeat)
        if fake.poll(100):
            identity, *frames = fake.recv_multipart()
            header = wire.parse_header(memoryview(frames[0]))
            if header.type == kind:
                return identity, header, frames
    pytest.fail(f"watchdog: no message of type {kind} within {WATCHDOG} s")


def read_exactly(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        more = connection.recv(count - len(data))
        assert more, "the lane closed early"
        data += more
    return data


@contextlib.contextmanager
def facing_a_fake(
    name: str, bridges: list[hakobu.Bridge], message: bytes, listen: bool = True
) -> Iterator[tuple[Any, list[bytes], socket.socket | None]]:
    """A sending bridge of queue ``name`` (holding ``message``) facing a fake receiving end, a
    bare ROUTER that answers its HELLO with a STATUS announcing a lane port: one this test
    listens on (``listen``), else one nobody listens on. Yields (the fake, its STATUS frames,
    the listening socket or None)."""
    fake, port = fake_receiving_end()
    listener = socket.create_server(("127.0.0.1", 0)) if listen else None
    try:
        if listener is not None:
            listener.settimeout(WATCHDOG)
        sending = hakobu.Bridge(name, send_to=f"tcp://127.0.0.1:{port}")
        bridges.append(sending)
        with hakobu.Queue(name) as source:
            source.put(message)
            identity, hello, _ = next_of_type(fake, wire.HELLO)
            lane_port = listener.getsockname()[1] if listener is not None else free_port()
            status = [identity, wire.status(os.urandom(16), hello.session, 0, 0, lane_port)]
            fake.send_multipart(status)
            yield fake, status, listener
    finally:
        if listener is not None:
            listener.close()
        fake.close()


def test_a_sending_end_whose_lane_is_closed_sends_again_through_zeromq(
    name: str, bridges: list[hakobu.Bridge]
) -> None:
    """The sending end connects to the lane a fake receiving end announced, says its lane hello
    and writes its first message there (in the documented format, before anything through
    ZeroMQ); the fake closes the lane unread; the message comes again through ZeroMQ."""
    with facing_a_fake(name, bridges, b"one") as (fake, status, listener):
        identity, said = status[0], wire.parse_header(memoryview(status[1]))
        assert listener is not None
        lane, _ = listener.accept()
        with lane:
            lane.settimeout(WATCHDOG)
            assert read_exactly(lane, wire.LANE_HELLO_BYTES) == wire.lane_hello(said.session, said.receiver)
            count, total = wire.parse_lane_prefix(read_exactly(lane, wire.LANE_PREFIX_BYTES))
            sizes = wire.parse_lane_sizes(read_exactly(lane, 4 * count), count, total)
            frames = [read_exactly(lane, size) for size in sizes]
            header = wire.parse_header(memoryview(frames[0]))
            assert (header.type, header.seq, header.kind, frames[1:]) == (wire.DATA, 1, 1, [b"", b"one"])
        _, again, frames = next_of_type(fake, wire.DATA)  # the lane closed: through ZeroMQ
        assert (again.seq, frames[2:]) == (1, [b"one"])
        fake.send_multipart([identity, wire.status(said.receiver, said.session, 1, 0)])
        sending = bridges[-1]
        wait_for(lambda: sending.stats()["messages"] == 1, "the acknowledgement")
        stats = sending.stats()
        assert stats["resent"] == 1 and stats["lane_messages"] == 0 and not stats["lane"]


def test_a_lane_that_swallows_everything_is_left_for_zeromq(name: str, bridges: list[hakobu.Bridge]) -> None:
    """A lane that is accepted and never read (a middlebox, a wedged peer): the receiving end's
    acknowledgements stop while it is heard, so the sending end drops the lane and sends again
    through ZeroMQ."""
    with facing_a_fake(name, bridges, b"three") as (fake, status, listener):
        assert listener is not None
        lane, _ = listener.accept()
        with lane:
            _, data, frames = next_of_type(fake, wire.DATA, heartbeat=status)
            assert (data.seq, frames[2:]) == (1, [b"three"])
            assert bridges[-1].stats()["resent"] == 1 and not bridges[-1].stats()["lane"]


def test_a_lane_nobody_answers_leaves_everything_to_zeromq(name: str, bridges: list[hakobu.Bridge]) -> None:
    with facing_a_fake(name, bridges, b"two", listen=False) as (fake, _, _):
        _, data, frames = next_of_type(fake, wire.DATA)
        assert (data.seq, frames[2:]) == (1, [b"two"])
        assert not bridges[-1].stats()["lane"]


@pytest.mark.filterwarnings("ignore::hakobu.BridgeInputWarning")
def test_a_lane_silent_before_its_hello_or_inside_a_message_is_closed(
    names: tuple[str, str], bridges: list[hakobu.Bridge], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lane that never says which session it carries, and one that stops in the middle of a
    message (its block allocated), are closed (shortened here from 3 and 10 s)."""
    from hakobu._bridge import receiver as receiving_module

    monkeypatch.setattr(receiving_module, "LANE_HELLO_SECONDS", 0.3)
    monkeypatch.setattr(receiving_module, "LANE_STALL_SECONDS", 0.3)
    receiving = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*")
    bridges.append(receiving)
    session = os.urandom(16)
    receiver, port = announced_lane(receiving, session)
    with socket.create_connection(("127.0.0.1", port), timeout=WATCHDOG) as mute:
        assert closed_by_peer(mute)
    meta = b'{"t": "<f8", "s": [131072], "o": "C"}'  # 1 MiB
    whole = lane_message(_data(session, 1, 2, meta, bytes(wire.CHUNK)))
    with socket.create_connection(("127.0.0.1", port), timeout=WATCHDOG) as lane:
        lane.sendall(wire.lane_hello(session, receiver) + whole[: len(whole) // 2])
        assert closed_by_peer(lane)
    with hakobu.Queue(names[1]) as sink:
        assert sink.qsize() == 0
        sending = hakobu.Bridge(names[0], send_to=receiving.endpoint)
        bridges.append(sending)
        with hakobu.Queue(names[0]) as source:
            source.put(b"still here")
        assert sink.get(timeout=WATCHDOG) == b"still here"


@pytest.mark.filterwarnings("ignore::hakobu.BridgeInputWarning")
def test_lanes_that_carry_are_kept_when_eight_are_open(
    names: tuple[str, str], bridges: list[hakobu.Bridge], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 8 lanes open and heard lately, a ninth connection is refused and the 8 stay; once
    they are silent (for LOST_SECONDS, shortened here), a new one replaces the quietest."""
    from hakobu._bridge import receiver as receiving_module

    monkeypatch.setattr(receiving_module, "LOST_SECONDS", 1.0)
    receiving = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*")
    bridges.append(receiving)
    session = os.urandom(16)
    receiver, port = announced_lane(receiving, session)
    with contextlib.ExitStack() as stack:
        lanes = []
        for _ in range(receiving_module.MAX_LANES):
            lane = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=WATCHDOG))
            lane.sendall(wire.lane_hello(os.urandom(16), receiver))
            lanes.append(lane)
        wait_for(lambda: len(receiving._end.lanes) == receiving_module.MAX_LANES, "eight lanes")
        with socket.create_connection(("127.0.0.1", port), timeout=WATCHDOG) as ninth:
            assert closed_by_peer(ninth)
        assert all(lane.session is not None for lane in receiving._end.lanes)
        time.sleep(1.0)  # the eight fall silent
        with socket.create_connection(("127.0.0.1", port), timeout=WATCHDOG) as tenth:
            tenth.sendall(wire.lane_hello(session, receiver))
            assert closed_by_peer(lanes[0])  # the quietest (the first) made room
            wait_for(
                lambda: any(lane.session == session for lane in receiving._end.lanes), "the new lane taken"
            )


def test_lane_options(names: tuple[str, str], bridges: list[hakobu.Bridge]) -> None:
    without = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*", lane=False)
    bridges.append(without)
    assert without.lane_port is None
    port = free_port()
    fixed = hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*", lane_port=port)
    bridges.append(fixed)
    assert fixed.lane_port == port
    with pytest.raises(hakobu.BridgeError, match="data lane"):
        hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*", lane_port=port)  # taken
    for bad in (-1, 65536, "5556", 1.5, True):
        with pytest.raises(hakobu.InvalidArgument, match="lane_port"):
            hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*", lane_port=bad)
    with pytest.raises(hakobu.InvalidArgument, match="lane"):
        hakobu.Bridge(names[1], receive_at="tcp://127.0.0.1:*", lane="yes")
    # A sending end that binds has no lane (the receiving end connects; it announces none).
    sending = hakobu.Bridge(names[0], send_to="tcp://127.0.0.1:*", bind=True)
    bridges.append(sending)
    assert sending.lane_port is None


# --- CurveZMQ --------------------------------------------------------------------------------


def test_curve_accepts_listed_clients_and_nothing_from_others(
    names: tuple[str, str], bridges: list[hakobu.Bridge], tmp_path: Path
) -> None:
    _, server_secret = keys.write_pair(str(tmp_path / "server"), "server")
    client_public, client_secret = keys.write_pair(str(tmp_path / "client"), "client")
    _, stranger_secret = keys.write_pair(str(tmp_path / "stranger"), "stranger")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "client.key").write_bytes(Path(client_public).read_bytes())
    server_public = str(tmp_path / "server" / "server.key")
    receiving = hakobu.Bridge(
        names[1], receive_at="tcp://127.0.0.1:*", secret_key=server_secret, allowed_keys=str(allowed)
    )
    bridges.append(receiving)
    # An unlisted key and no key at all: neither gets a message in.
    stranger = hakobu.Bridge(
        names[0], send_to=receiving.endpoint, secret_key=stranger_secret, peer_key=server_public, timeout=2
    )
    bridges.append(stranger)
    plain_name = f"{names[0]}-plain"
    plain = hakobu.Bridge(plain_name, send_to=receiving.endpoint, timeout=2)
    bridges.append(plain)
    try:
        with hakobu.Queue(names[0]) as source, hakobu.Queue(plain_name) as plain_source:
            source.put(b"from a stranger")
            plain_source.put(b"in the clear")
            with pytest.raises(hakobu.PeerTimeout):
                stranger.join(WATCHDOG)
            with pytest.raises(hakobu.PeerTimeout):
                plain.join(WATCHDOG)
            assert receiving.stats()["messages"] == 0
            # Never heard from the other end: they took nothing from their queues.
            assert stranger.stats()["given_back"] == 0 and plain.stats()["given_back"] == 0
            assert source.qsize() == 1 and plain_source.qsize() == 1
            # The listed client carries what the stranger could not.
            client = hakobu.Bridge(
                names[0], send_to=receiving.endpoint, secret_key=client_secret, peer_key=server_public
            )
            bridges.append(client)
            with hakobu.Queue(names[1]) as sink:
                assert sink.get(timeout=WATCHDOG) == b"from a stranger"
                source.put({"from": "a listed client"})  # authenticated: objects are delivered
                assert sink.get(timeout=WATCHDOG) == {"from": "a listed client"}
            assert receiving.stats()["rejected"] == 0
            source.close()
            assert client.join(WATCHDOG)
    finally:
        try:
            hakobu.remove(plain_name)
        except hakobu.NotFound:
            pass


def test_key_errors_say_what_to_give(name: str, tmp_path: Path) -> None:
    public, secret = keys.write_pair(str(tmp_path), "k")
    with pytest.raises(hakobu.BridgeError, match="allowed_keys"):
        hakobu.Bridge(name, receive_at="tcp://127.0.0.1:*", secret_key=secret)
    with pytest.raises(hakobu.BridgeError, match="peer_key"):
        hakobu.Bridge(name, send_to="tcp://127.0.0.1:9", secret_key=secret)
    with pytest.raises(hakobu.BridgeError, match="no secret key"):
        hakobu.Bridge(name, send_to="tcp://127.0.0.1:9", secret_key=public, peer_key=public)
    with pytest.raises(hakobu.BridgeError, match="exists already"):
        keys.write_pair(str(tmp_path), "k")
    with pytest.raises(hakobu.InvalidArgument, match="exactly one"):
        hakobu.Bridge(name)
    with pytest.raises(hakobu.BridgeError, match="cannot bind"):
        hakobu.Bridge(name, receive_at="tcp://192.0.2.1:5555")  # not this host's address


def test_pickled_bridge_errors_keep_their_class() -> None:
    error = hakobu.PeerTimeout("gone")
    assert isinstance(pickle.loads(pickle.dumps(error)), hakobu.PeerTimeout)
    assert issubclass(hakobu.PeerTimeout, TimeoutError) and issubclass(hakobu.BridgeError, hakobu.HakobuError)


def test_the_cluster_example_carries_every_frame() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "cluster" / "bridge_frames.py"
    done = subprocess.run(
        [sys.executable, str(example), "demo", "20"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "sent 20 frames" in done.stdout and "received 20 frames" in done.stdout
