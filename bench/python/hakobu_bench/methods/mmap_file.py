"""A memory-mapped file per direction, with a flag protocol.

Each file starts with a 4 KiB header: a sequence number (the flag) and the
array's header. The writer grows the file when a message needs more room,
copies the bytes in, then writes the sequence number last; the reader polls
the sequence number (spinning briefly, then sleeping 50 us), maps the file
again if it grew, and views the bytes in place. The sender copies the answer
out, because the next message overwrites it. Stores become visible in program
order on x86-64 (TSO), which this protocol relies on, as such code usually does.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..channel import HEADER_SIZE, Channel, PeerEnd, PeerFailed, as_bytes, decode_header, encode_header

_PAGE = 4096
_SEQUENCE = struct.Struct("<Q")
_STOP = (1 << 64) - 1
_SPINS = 2000  # polls before the reader starts sleeping between polls


class MappedFile:
    """One direction: a file mapped by both processes."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self.fd).st_size < _PAGE:
            os.ftruncate(self.fd, _PAGE)
        self.map = mmap.mmap(self.fd, os.fstat(self.fd).st_size)

    def remap(self, size: int) -> None:
        """Maps at least ``size`` bytes (growing the file when writing needs it)."""
        if os.fstat(self.fd).st_size < size:
            os.ftruncate(self.fd, size)
        # The old map closes when the last view of it is gone.
        self.map = mmap.mmap(self.fd, os.fstat(self.fd).st_size)

    def write(self, sequence: int, array: Optional[np.ndarray]) -> None:
        if array is not None:
            if _PAGE + array.nbytes > len(self.map):
                self.remap(_PAGE + array.nbytes)
            self.map[_PAGE : _PAGE + array.nbytes] = as_bytes(array)
        self.map[8 : 8 + HEADER_SIZE] = encode_header(array)
        _SEQUENCE.pack_into(self.map, 0, _STOP if array is None else sequence)  # the flag, last

    def wait(self, sequence: int, alive: Callable[[], bool]) -> Optional[np.ndarray]:
        """Waits for message ``sequence``; returns a view of its array in the map (None: stop)."""
        polls = 0
        checked = time.monotonic()
        while True:
            flag = _SEQUENCE.unpack_from(self.map, 0)[0]
            if flag == _STOP:
                return None
            if flag == sequence:
                break
            polls += 1
            if polls > _SPINS:
                time.sleep(50e-6)
                if time.monotonic() - checked > 0.5:
                    if not alive():
                        raise PeerFailed("the other side of the mapped file went away")
                    checked = time.monotonic()
        decoded = decode_header(bytes(self.map[8 : 8 + HEADER_SIZE]))
        assert decoded is not None
        dtype, shape, nbytes = decoded
        if _PAGE + nbytes > len(self.map):
            self.remap(_PAGE + nbytes)
        return np.frombuffer(self.map, np.uint8, nbytes, _PAGE).view(dtype).reshape(shape)

    def close(self) -> None:
        os.close(self.fd)  # the map itself stays valid until its last view is gone


def _parent_alive(parent: int) -> Callable[[], bool]:
    return lambda: os.getppid() == parent


class MmapPeer(PeerEnd):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.inbox = MappedFile(Path(config["to"]))
        self.outbox = MappedFile(Path(config["from"]))
        self.sequence = 0
        self.sender_alive = _parent_alive(os.getppid())

    def receive_raw(self) -> Any:
        self.sequence += 1
        return self.inbox.wait(self.sequence, self.sender_alive)

    def send_back(self, array: np.ndarray) -> None:
        self.outbox.write(self.sequence, array)

    def close(self) -> None:
        self.inbox.close()
        self.outbox.close()


class MmapFile(Channel):
    name = "mmap-file"
    label = "mmap'd file + flag"
    order = 30
    description = "a memory-mapped file per direction; data, then a sequence-number flag the reader polls"
    peer_end = MmapPeer
    outbox: Optional[MappedFile] = None
    inbox: Optional[MappedFile] = None

    def start(self) -> None:
        to_peer, from_peer = self.workdir / "mmap-to", self.workdir / "mmap-from"
        self.outbox, self.inbox = (
            MappedFile(to_peer),
            MappedFile(from_peer),
        )  # created before the peer maps them
        self.sequence = 0
        self.spawn_peer({"to": str(to_peer), "from": str(from_peer)})

    def send(self, array: np.ndarray) -> None:
        assert self.outbox is not None
        self.sequence += 1
        self.outbox.write(self.sequence, array)

    def receive(self) -> np.ndarray:
        assert self.inbox is not None
        view = self.inbox.wait(self.sequence, self.peer_alive)
        if view is None:
            raise PeerFailed(f"the {self.name} peer stopped: {self.peer_errors()}")
        return np.array(view)  # a private copy: the next answer overwrites the map

    def close(self) -> None:
        if self.outbox is not None and self.inbox is not None:
            if self.peer_alive():
                self.outbox.write(0, None)
            self.stop_peer()
            self.outbox.close()
            self.inbox.close()
            self.outbox = self.inbox = None
        else:
            self.stop_peer()


METHOD = MmapFile
