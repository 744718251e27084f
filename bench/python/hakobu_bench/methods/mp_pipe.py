"""multiprocessing.Pipe: a duplex Connection; send(array) pickles it, recv() unpickles.

The peer is a separately started interpreter that receives its end of the
pipe as an inherited file descriptor (``Connection(fd)``).
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from typing import Any, Optional

import numpy as np

from ..channel import Channel, PeerEnd, PeerFailed


class ConnectionPeer(PeerEnd):
    """The peer's end for methods that talk through a multiprocessing Connection."""

    connection: Connection

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.connection = Connection(config["fd"])

    def receive_raw(self) -> Any:
        try:
            return self.connection.recv()
        except EOFError:  # the sender went away
            return None

    def send_back(self, array: np.ndarray) -> None:
        self.connection.send(array)

    def close(self) -> None:
        self.connection.close()


class MpPipe(Channel):
    name = "mp-pipe"
    label = "multiprocessing.Pipe"
    order = 20
    description = "multiprocessing.Pipe() Connection.send / recv (pickle of the ndarray)"
    peer_end = ConnectionPeer
    connection: Optional[Connection] = None

    def start(self) -> None:
        mine, theirs = multiprocessing.Pipe(duplex=True)
        try:
            self.spawn_peer({"fd": theirs.fileno()}, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()  # the peer has its own copy of the descriptor
        self.connection = mine

    def send(self, array: np.ndarray) -> None:
        assert self.connection is not None
        self.connection.send(array)

    def receive(self) -> np.ndarray:
        assert self.connection is not None
        try:
            received = self.connection.recv()
        except EOFError:
            raise PeerFailed(f"the {self.name} peer closed the connection: {self.peer_errors()}") from None
        assert isinstance(received, np.ndarray)
        return received

    def close(self) -> None:
        if self.connection is not None:
            try:
                if self.peer_alive():
                    self.connection.send(None)
            except OSError:
                pass
            self.stop_peer()
            self.connection.close()
            self.connection = None
        else:
            self.stop_peer()


METHOD = MpPipe
