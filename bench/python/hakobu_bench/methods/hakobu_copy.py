"""hakobu.Queue with an ordinary (private) array: one copy into shared memory.

The peer opens the two queues by name and puts back the array it received;
a received array lives in shared memory, so that return costs no copy.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

import hakobu

from ..channel import Channel, PeerEnd, PeerFailed

_POLL = 1.0  # s: blocking gets wake up this often to check that the other side lives


class HakobuPeer(PeerEnd):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.inbox = hakobu.Queue(config["inbox"], create=False)
        self.outbox = hakobu.Queue(config["outbox"], create=False)

    def receive_raw(self) -> Any:
        return self.inbox.get()  # the parent watch ends the process if the sender dies

    def send_back(self, array: np.ndarray) -> None:
        self.outbox.put(array)

    def close(self) -> None:
        self.inbox.close()
        self.outbox.close()


class HakobuCopy(Channel):
    name = "hakobu"
    label = "hakobu (copy)"
    order = 0
    description = "hakobu.Queue.put of a private ndarray (one copy into shared memory); get returns a view"
    peer_end = HakobuPeer
    outbox: Optional[hakobu.Queue] = None
    inbox: Optional[hakobu.Queue] = None

    def start(self) -> None:
        base = f"bench-{os.getpid()}-{self.name}"
        self.outbox = hakobu.Queue(f"{base}-to", capacity=4, create=True)
        self.inbox = hakobu.Queue(f"{base}-from", capacity=4, create=True)
        self.spawn_peer({"inbox": self.outbox.name, "outbox": self.inbox.name})

    def send(self, array: np.ndarray) -> None:
        assert self.outbox is not None
        self.outbox.put(array)

    def receive(self) -> np.ndarray:
        assert self.inbox is not None
        while True:
            try:
                received = self.inbox.get(timeout=_POLL)
            except hakobu.Empty:
                self.check_peer()
                continue
            if not isinstance(received, np.ndarray):
                raise PeerFailed(f"expected an ndarray, got {type(received).__name__}")
            return received

    def close(self) -> None:
        if self.outbox is not None and self.peer_alive():
            self.outbox.put(None)
        self.stop_peer()
        for queue in (self.outbox, self.inbox):
            if queue is not None:
                queue.unlink()
                queue.close()
        self.outbox = self.inbox = None


METHOD = HakobuCopy
