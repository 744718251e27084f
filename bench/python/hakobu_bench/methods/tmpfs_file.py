"""A file on tmpfs (/dev/shm): the array is written to a file, its header goes over a pipe.

The sender writes the bytes to a file on tmpfs and tells the peer through
the peer's stdin (a fixed header: dtype, shape, size); the peer reads the
file into a fresh array, writes its answer to a second file and answers on
its stdout. Files are opened for each message, as file exchange is done.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..channel import (
    HEADER_SIZE,
    Channel,
    FdStream,
    PeerEnd,
    PeerFailed,
    as_bytes,
    decode_header,
    encode_header,
    read_exactly,
)

TMPFS = Path("/dev/shm")


def write_file(path: Path, array: np.ndarray) -> None:
    with open(path, "wb", buffering=0) as file:
        file.write(as_bytes(array))


def read_file(path: Path, nbytes: int) -> np.ndarray:
    payload = np.empty(nbytes, np.uint8)
    view, done = payload.data, 0
    with open(path, "rb", buffering=0) as file:
        while done < nbytes:  # one read returns at most about 2 GiB
            count = file.readinto(view[done:])
            if not count:
                raise PeerFailed(f"{path} is shorter than {nbytes} bytes")
            done += count
    return payload


def read_notice(stream: FdStream) -> Optional[tuple[np.dtype[Any], tuple[int, ...], int]]:
    header = bytearray(HEADER_SIZE)
    if not read_exactly(stream, memoryview(header)):
        return None
    return decode_header(bytes(header))


class TmpfsPeer(PeerEnd):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.stream = FdStream(0, 1)
        self.inbox, self.outbox = Path(config["to"]), Path(config["from"])

    def receive_raw(self) -> Any:
        notice = read_notice(self.stream)
        if notice is None:
            return None
        dtype, shape, nbytes = notice
        return dtype, shape, read_file(self.inbox, nbytes)

    def rebuild(self, raw: Any) -> np.ndarray:
        dtype, shape, payload = raw
        array: np.ndarray = payload.view(dtype).reshape(shape)
        return array

    def send_back(self, array: np.ndarray) -> None:
        write_file(self.outbox, array)
        self.stream.write_all(memoryview(encode_header(array)))


class TmpfsFile(Channel):
    name = "tmpfs-file"
    label = "file on tmpfs"
    order = 31
    description = "write the bytes to a file in /dev/shm (tmpfs), announce it over a pipe, read it back"
    peer_end = TmpfsPeer
    process: Optional[subprocess.Popen[bytes]] = None

    @classmethod
    def missing(cls) -> Optional[str]:
        if not TMPFS.is_dir():
            return f"{TMPFS} does not exist (no tmpfs to write to)"
        return super().missing()

    def start(self) -> None:
        base = TMPFS / f"hakobu-bench.{os.getpid()}"
        self.to_peer, self.from_peer = Path(f"{base}.to"), Path(f"{base}.from")
        self.process = self.spawn_peer(
            {"to": str(self.to_peer), "from": str(self.from_peer)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        ).process
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stream = FdStream(self.process.stdout.fileno(), self.process.stdin.fileno())

    def send(self, array: np.ndarray) -> None:
        write_file(self.to_peer, array)
        self.stream.write_all(memoryview(encode_header(array)))

    def receive(self) -> np.ndarray:
        notice = read_notice(self.stream)
        if notice is None:
            raise PeerFailed(f"the {self.name} peer closed its stdout: {self.peer_errors()}")
        dtype, shape, nbytes = notice
        return read_file(self.from_peer, nbytes).view(dtype).reshape(shape)

    def close(self) -> None:
        if self.process is None:
            return
        try:
            if self.peer_alive():
                self.stream.write_all(memoryview(encode_header(None)))
        except BrokenPipeError:
            pass
        self.stop_peer()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        for path in (self.to_peer, self.from_peer):
            path.unlink(missing_ok=True)
        self.process = None


METHOD = TmpfsFile
