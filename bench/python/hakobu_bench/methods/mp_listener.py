"""multiprocessing.connection Listener / Client on a Unix socket, with an authentication key.

The peer listens; the sender connects as a client. Arrays go with
Connection.send / recv (pickle).
"""

from __future__ import annotations

import os
from multiprocessing.connection import Client, Connection, Listener
from typing import Any, Optional

from .mp_pipe import ConnectionPeer, MpPipe


class ListenerPeer(ConnectionPeer):
    def __init__(self, config: dict[str, Any]) -> None:
        with Listener(config["path"], family="AF_UNIX", authkey=bytes.fromhex(config["key"])) as listener:
            self.connection = listener.accept()
        self.config = config


class MpListener(MpPipe):
    name = "mp-listener"
    label = "mp.connection Listener/Client"
    order = 22
    description = "multiprocessing.connection.Listener (peer) and Client (sender) on AF_UNIX, send / recv"
    peer_end = ListenerPeer

    def start(self) -> None:
        path, key = self.workdir / "listener.sock", os.urandom(16)
        self.spawn_peer({"path": str(path), "key": key.hex()})

        def connect() -> Optional[Connection]:
            try:
                return Client(str(path), family="AF_UNIX", authkey=key)
            except (FileNotFoundError, ConnectionRefusedError):  # the peer is not listening yet
                return None

        self.connection = self.wait_until(connect, "connecting to the peer's Listener")


METHOD = MpListener
