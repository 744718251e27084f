"""multiprocessing.Queue: put(array) pickles it in a feeder thread, get() unpickles.

A multiprocessing.Queue can only be handed to a process at its start, so the
peer is started with the "spawn" context: a fresh interpreter (fork + exec of
Python), not a forked copy of the bench, running the same echo loop.
"""

from __future__ import annotations

import multiprocessing
import queue
from typing import Any, Optional

import numpy as np

from ..channel import Channel, PeerEnd, serve_peer

_POLL = 1.0  # s: blocking gets wake up this often to check that the other side lives


class QueuePeer(PeerEnd):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.inbox, self.outbox = config["queues"]

    def receive_raw(self) -> Any:
        return self.inbox.get()  # the parent watch ends the process if the sender dies

    def send_back(self, array: np.ndarray) -> None:
        self.outbox.put(array)

    def close(self) -> None:
        self.outbox.close()
        self.outbox.join_thread()  # flush what the feeder thread still holds


class SpawnedPeer:
    """A peer started by multiprocessing's spawn context."""

    def __init__(self, process: Any) -> None:
        self.process = process

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def stop(self, timeout: float) -> Optional[int]:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
            return None
        return int(self.process.exitcode)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()


class MpQueue(Channel):
    name = "mp-queue"
    label = "multiprocessing.Queue"
    order = 21
    description = "multiprocessing.Queue put / get (pickle, feeder thread, pipe); peer started by spawn"
    peer_end = QueuePeer
    outbox: Any = None
    inbox: Any = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.outbox, self.inbox = context.Queue(), context.Queue()
        config = self.peer_config({"queues": (self.outbox, self.inbox)})
        process = context.Process(
            target=serve_peer, args=(QueuePeer, config), name="hakobu-bench-peer", daemon=True
        )
        process.start()
        self.peer = SpawnedPeer(process)

    def send(self, array: np.ndarray) -> None:
        self.outbox.put(array)

    def receive(self) -> np.ndarray:
        while True:
            try:
                received = self.inbox.get(timeout=_POLL)
            except queue.Empty:
                self.check_peer()
                continue
            assert isinstance(received, np.ndarray)
            return received

    def close(self) -> None:
        if self.outbox is not None:
            if self.peer_alive():
                self.outbox.put(None)
            self.stop_peer()
            for q in (self.outbox, self.inbox):
                q.close()
                q.join_thread()
            self.outbox = self.inbox = None


METHOD = MpQueue
