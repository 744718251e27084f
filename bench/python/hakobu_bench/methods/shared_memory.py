"""multiprocessing.shared_memory, the segment's name sent over a Unix socket.

Each message is a new segment, as the module is meant to be used: the sender
creates one, copies the array in and sends its name, dtype and shape; the
peer attaches and views it (rebuild), then creates its own segment for the
answer. The sender copies the answer out and unlinks both segments.
"""

from __future__ import annotations

import socket
import sys
from multiprocessing import resource_tracker, shared_memory
from typing import Any, Optional

import numpy as np

from ..channel import (
    HEADER_SIZE,
    Channel,
    PeerEnd,
    PeerFailed,
    SocketStream,
    decode_header,
    encode_header,
    read_exactly,
)

_NAME = 64  # bytes for the segment name after the header


def write_name(stream: SocketStream, array: Optional[np.ndarray], name: str) -> None:
    stream.write_all(memoryview(encode_header(array) + name.encode().ljust(_NAME, b"\0")))


def read_name(stream: SocketStream) -> Optional[tuple[np.dtype[Any], tuple[int, ...], str]]:
    message = bytearray(HEADER_SIZE + _NAME)
    if not read_exactly(stream, memoryview(message)):
        return None
    decoded = decode_header(bytes(message[:HEADER_SIZE]))
    if decoded is None:
        return None
    dtype, shape, _ = decoded
    return dtype, shape, bytes(message[HEADER_SIZE:]).rstrip(b"\0").decode()


def attach(name: str) -> shared_memory.SharedMemory:
    """Attaches without leaving the segment to this process's resource tracker (gh-82300)."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)  # type: ignore[call-arg,unused-ignore]
    segment = shared_memory.SharedMemory(name)
    resource_tracker.unregister(segment._name, "shared_memory")  # type: ignore[attr-defined]
    return segment


def copy_into_new_segment(array: np.ndarray) -> shared_memory.SharedMemory:
    segment = shared_memory.SharedMemory(create=True, size=max(array.nbytes, 1))
    view: np.ndarray = np.ndarray(array.shape, array.dtype, buffer=segment.buf)
    view[...] = array
    del view  # a segment with live views cannot be closed
    return segment


def copy_into_answer_segment(array: np.ndarray) -> shared_memory.SharedMemory:
    """``copy_into_new_segment`` for an answer the sender takes over and unlinks."""
    answer = copy_into_new_segment(array)
    # The sender unlinks it: this process's tracker must forget it.
    resource_tracker.unregister(answer._name, "shared_memory")  # type: ignore[attr-defined]
    return answer


def take_answer(name: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
    """Copies the peer's answer out of segment ``name`` into a private array, then unlinks the segment."""
    answer = shared_memory.SharedMemory(name)
    view: np.ndarray = np.ndarray(shape, dtype, buffer=answer.buf)
    received = np.array(view)  # a private copy: the segment goes away now
    del view
    answer.close()
    answer.unlink()
    return received


class SharedMemoryPeer(PeerEnd):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.sock = socket.socket(fileno=config["fd"])
        self.stream = SocketStream(self.sock)
        self.received: Optional[shared_memory.SharedMemory] = None

    def receive_raw(self) -> Any:
        self.release()
        message = read_name(self.stream)
        if message is None:
            return None
        dtype, shape, name = message
        self.received = attach(name)
        return dtype, shape, self.received

    def rebuild(self, raw: Any) -> np.ndarray:
        dtype, shape, segment = raw
        return np.ndarray(shape, dtype, buffer=segment.buf)

    def send_back(self, array: np.ndarray) -> None:
        answer = copy_into_answer_segment(array)
        write_name(self.stream, array, answer.name)
        answer.close()

    def release(self) -> None:
        if self.received is not None:
            self.received.close()  # the sender unlinks it; the views died with the last message
            self.received = None

    def close(self) -> None:
        self.release()
        self.sock.close()


class SendsSegments:
    """A sender that puts each message in a new segment, unlinked once the answer is in."""

    sent: Optional[shared_memory.SharedMemory] = None

    def release_sent(self) -> None:
        if self.sent is not None:
            self.sent.close()
            self.sent.unlink()
            self.sent = None


class SharedMemory(SendsSegments, Channel):
    name = "shared-memory"
    label = "mp.shared_memory + socket"
    order = 23
    description = "a new multiprocessing.shared_memory segment per message, its name sent over a Unix socket"
    peer_end = SharedMemoryPeer
    sock: Optional[socket.socket] = None

    def start(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.spawn_peer({"fd": theirs.fileno()}, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        self.sock = mine
        self.stream = SocketStream(mine)

    def send(self, array: np.ndarray) -> None:
        self.sent = copy_into_new_segment(array)
        write_name(self.stream, array, self.sent.name)

    def receive(self) -> np.ndarray:
        message = read_name(self.stream)
        if message is None:
            raise PeerFailed(f"the {self.name} peer closed the socket: {self.peer_errors()}")
        dtype, shape, name = message
        received = take_answer(name, dtype, shape)
        self.release_sent()
        return received

    def close(self) -> None:
        if self.sock is not None:
            try:
                if self.peer_alive():
                    write_name(self.stream, None, "")
            except OSError:
                pass
            self.stop_peer()
            self.sock.close()
            self.sock = None
        else:
            self.stop_peer()
        self.release_sent()


METHOD = SharedMemory
