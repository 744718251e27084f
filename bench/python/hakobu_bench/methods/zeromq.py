"""ZeroMQ (pyzmq) PAIR sockets over ipc://: a header frame, then the array as a zero-copy frame.

Frames are sent with ``copy=False`` (pyzmq hands the array's buffer to libzmq
without copying it into a message first) and received with ``copy=False``, so
the array is rebuilt as a view of the received frame.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..channel import HEADER_SIZE, Channel, PeerEnd, PeerFailed, as_bytes, decode_header, encode_header

_POLL_MS = 1000  # a waiting send or receive wakes up this often to check that the peer lives


def send_array(sock: Any, array: Optional[np.ndarray]) -> None:
    import zmq

    if array is None:
        sock.send(encode_header(None))
        return
    sock.send(encode_header(array), zmq.SNDMORE)
    sock.send(as_bytes(array), copy=False)


def receive_frames(sock: Any) -> Optional[tuple[np.dtype[Any], tuple[int, ...], Any]]:
    frames = sock.recv_multipart(copy=False)
    header = bytes(frames[0].buffer)
    if len(header) != HEADER_SIZE:
        raise PeerFailed(f"a ZeroMQ header of {len(header)} bytes")
    decoded = decode_header(header)
    if decoded is None:
        return None
    dtype, shape, _ = decoded
    return dtype, shape, frames[1]


def rebuild_frames(raw: tuple[np.dtype[Any], tuple[int, ...], Any]) -> np.ndarray:
    dtype, shape, frame = raw
    array: np.ndarray = np.frombuffer(frame.buffer, dtype).reshape(shape)  # a view of the frame
    return array


class ZmqPeer(PeerEnd):
    def __init__(self, config: dict[str, Any]) -> None:
        import zmq

        super().__init__(config)
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PAIR)
        self.sock.connect(config["address"])

    def receive_raw(self) -> Any:
        return receive_frames(self.sock)

    def rebuild(self, raw: Any) -> np.ndarray:
        return rebuild_frames(raw)

    def send_back(self, array: np.ndarray) -> None:
        send_array(self.sock, array)

    def close(self) -> None:
        self.sock.close(linger=1000)
        self.context.term()


class ZeroMQ(Channel):
    name = "zeromq"
    label = "ZeroMQ ipc:// (copy=False)"
    order = 40
    description = "pyzmq PAIR sockets on ipc://: header frame + array frame, copy=False both ways"
    requires = ("zmq",)
    install = "pip install pyzmq   (a dependency of hakobu-bench)"
    peer_end = ZmqPeer
    sock: Any = None

    def start(self) -> None:
        import zmq

        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PAIR)
        address = f"ipc://{self.workdir / 'zmq.ipc'}"
        self.sock.bind(address)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.spawn_peer({"address": address})

    def send(self, array: np.ndarray) -> None:
        import zmq

        # A PAIR socket's send blocks until a peer has connected: a peer that died before it
        # connected would block it for ever (the watchdog can only kill the peer).
        while not self.sock.poll(_POLL_MS, zmq.POLLOUT):
            self.check_peer()
        send_array(self.sock, array)

    def receive(self) -> np.ndarray:
        while not self.poller.poll(_POLL_MS):
            self.check_peer()
        raw = receive_frames(self.sock)
        if raw is None:
            raise PeerFailed("the ZeroMQ peer sent a stop message")
        return rebuild_frames(raw)

    def close(self) -> None:
        if self.sock is None:
            return
        if self.peer_alive():
            send_array(self.sock, None)
        self.stop_peer()
        self.sock.close(linger=0)
        self.context.term()
        self.sock = None


METHOD = ZeroMQ
