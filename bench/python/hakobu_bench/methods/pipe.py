"""stdin/stdout of a child program: header + bytes written to its stdin, read from its stdout.

Both sides read straight into the array's memory; the pipe buffer is raised
to 1 MiB where the system allows, as a careful implementation would.
"""

from __future__ import annotations

import subprocess
from typing import Any, Optional

from ..channel import FdStream, FramedChannel, FramedPeerEnd, enlarge_pipe


class PipePeer(FramedPeerEnd):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.stream = FdStream(0, 1)


class Pipe(FramedChannel):
    name = "pipe"
    label = "stdin/stdout pipe"
    order = 10
    description = (
        "a child program's stdin and stdout: a fixed header, then the raw bytes, read into the array"
    )
    peer_end = PipePeer
    process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        self.process = self.spawn_peer({}, stdin=subprocess.PIPE, stdout=subprocess.PIPE).process
        assert self.process.stdin is not None and self.process.stdout is not None
        enlarge_pipe(self.process.stdin.fileno())
        enlarge_pipe(self.process.stdout.fileno())
        self.stream = FdStream(self.process.stdout.fileno(), self.process.stdin.fileno())

    def release_stream(self) -> None:
        if self.process is not None:
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()
            self.process = None


METHOD = Pipe
