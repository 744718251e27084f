"""TCP over loopback (127.0.0.1): header + bytes, sendall out, recv_into the array's memory.

sendall loops over partial sends and the receiver loops recv_into until the
whole message is in, so any size goes through in chunks; Nagle is off.
"""

from __future__ import annotations

import socket
from typing import Any

from .unix_socket import UnixSocket


class TcpLoopback(UnixSocket):
    name = "tcp"
    label = "TCP loopback"
    order = 13
    description = "TCP on 127.0.0.1, TCP_NODELAY: a fixed header, then the raw bytes (sendall / recv_into)"

    def listen(self) -> tuple[socket.socket, dict[str, Any]]:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))  # any free port
        return listener, {"port": listener.getsockname()[1]}


METHOD = TcpLoopback
