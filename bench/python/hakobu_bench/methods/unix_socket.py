"""A Unix domain stream socket: header + bytes, sendall out, recv_into the array's memory."""

from __future__ import annotations

import socket
from typing import Any, Optional

from ..channel import FramedChannel, FramedPeerEnd, SocketStream

_BUFFER = 4 << 20  # socket buffers asked for, as a careful implementation would


class SocketPeer(FramedPeerEnd):
    """Connects to the sender's listening socket (Unix path or TCP port)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        if "path" in config:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = config["path"]
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            address = ("127.0.0.1", config["port"])
        tune(self.sock)
        self.sock.connect(address)
        self.stream = SocketStream(self.sock)

    def close(self) -> None:
        self.sock.close()


def tune(sock: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER)
        except OSError:
            pass


class UnixSocket(FramedChannel):
    name = "unix-socket"
    label = "Unix domain socket"
    order = 12
    description = "AF_UNIX stream socket: a fixed header, then the raw bytes (sendall / recv_into)"
    peer_end = SocketPeer
    conn: Optional[socket.socket] = None

    def listen(self) -> tuple[socket.socket, dict[str, Any]]:
        """A listening socket and the peer's config to reach it."""
        path = self.workdir / "unix.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        return listener, {"path": str(path)}

    def start(self) -> None:
        listener, config = self.listen()
        try:
            listener.listen(1)
            listener.settimeout(0.2)  # accept wakes up to see whether the peer still lives
            self.spawn_peer(config)

            def accept() -> Optional[socket.socket]:
                try:
                    return listener.accept()[0]
                except socket.timeout:
                    return None

            self.conn = self.wait_until(accept, "accepting the peer's connection")
        finally:
            listener.close()
        assert self.conn is not None
        self.conn.settimeout(None)
        if self.conn.family == socket.AF_INET:
            self.conn.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )  # no Nagle delay on small messages
        tune(self.conn)
        self.stream = SocketStream(self.conn)

    def release_stream(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


METHOD = UnixSocket
