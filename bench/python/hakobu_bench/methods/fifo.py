"""Two named pipes (FIFOs) in a private directory: header + bytes, read into the array."""

from __future__ import annotations

import errno
import os
from typing import Any, Optional

from ..channel import FdStream, FramedChannel, FramedPeerEnd, enlarge_pipe


class FifoPeer(FramedPeerEnd):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        # This order matters: the sender opened "from" for reading before starting us, so this
        # open returns at once; opening "to" then waits for the sender's writer (see Fifo.start).
        write_fd = os.open(config["from"], os.O_WRONLY)
        read_fd = os.open(config["to"], os.O_RDONLY)
        self.stream = FdStream(read_fd, write_fd)

    def close(self) -> None:
        assert isinstance(self.stream, FdStream)
        os.close(self.stream.read_fd)
        os.close(self.stream.write_fd)


class Fifo(FramedChannel):
    name = "fifo"
    label = "named pipe (FIFO)"
    order = 11
    description = "two FIFOs (mkfifo): a fixed header, then the raw bytes, read into the array"
    peer_end = FifoPeer

    def start(self) -> None:
        to_peer, from_peer = self.workdir / "fifo-to", self.workdir / "fifo-from"
        os.mkfifo(to_peer, 0o600)
        os.mkfifo(from_peer, 0o600)
        # A non-blocking open for reading returns at once, so the sender never blocks on a peer
        # that failed to start; reads become blocking below, once the peer is connected.
        read_fd = os.open(from_peer, os.O_RDONLY | os.O_NONBLOCK)
        self.spawn_peer({"to": str(to_peer), "from": str(from_peer)})

        def open_writer() -> Optional[int]:
            try:
                return os.open(to_peer, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                if error.errno == errno.ENXIO:  # no reader yet
                    return None
                raise

        try:
            write_fd: int = self.wait_until(open_writer, "opening the FIFO")
        except BaseException:
            os.close(read_fd)
            raise
        # The peer opens its writer before its reader, so it is fully connected now.
        os.set_blocking(read_fd, True)
        os.set_blocking(write_fd, True)
        enlarge_pipe(write_fd)
        enlarge_pipe(read_fd)
        self.stream = FdStream(read_fd, write_fd)

    def release_stream(self) -> None:
        assert isinstance(self.stream, FdStream)
        os.close(self.stream.read_fd)
        os.close(self.stream.write_fd)


METHOD = Fifo
