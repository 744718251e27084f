"""The data lane: a plain TCP connection beside ZeroMQ that carries the numbered messages.

Why: ZeroMQ receives every frame into a buffer it allocates itself, so a receiving end
that puts a payload into its local queue copies it once more than a program reading a
socket with ``recv_into`` (measured: a third of the throughput where the CPUs are the
limit). On the lane the receiving end reads each payload straight into the block it
then puts into its queue, and the sending end writes the block's memory to the socket
(``sendmsg`` of views): one copy on each side, as raw TCP.

ZeroMQ still carries the rest (HELLO, STATUS: acknowledgements, heartbeats, who the
peer is) and every message while there is no lane. The lane is only opened without
CurveZMQ keys (it is not encrypted), towards a receiving end that binds (it listens on
the lane port it announces in STATUS, on the address it binds ZeroMQ to). The format
is in wire.py; what arrives on it is checked like a ZeroMQ message.

Both classes are non-blocking and used by their bridge's thread alone: LaneOut keeps
what the socket has not taken yet; LaneIn feeds what arrives to a parser (a generator
that yields the buffer it wants filled next, so a payload lands in its block directly).
"""

from __future__ import annotations

import collections
import errno
import itertools
import select
import socket
import time
from collections.abc import Generator
from typing import Any, Optional

IOV_BATCH = 64  # buffers handed to one sendmsg (the kernel's limit is 1024)
READ_BUDGET = 64 << 20  # bytes read from one lane before the loop looks at the rest again
# What arrives is read into a staging buffer of STAGING_BYTES and handed on from there (small
# messages: one read for many), except into a buffer of at least DIRECT_BYTES still to fill
# while nothing is staged: that is read into directly (a large payload lands in its block).
STAGING_BYTES = 256 << 10
DIRECT_BYTES = 64 << 10
RECEIVING_SECONDS = 1.0  # a lane whose reads found nothing for this long is not receiving


def tcp_host(endpoint: str) -> Optional[str]:
    """The host of a ZeroMQ ``tcp://HOST:PORT`` endpoint ('' for ``*``), None for anything
    else (ipc://, a source address, a malformed one): no lane then."""
    if not endpoint.startswith("tcp://") or ";" in endpoint:
        return None
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    if not host or not port:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return "" if host == "*" else host


class LaneListener:
    """The receiving end's listening socket."""

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(16)
            self.socket.setblocking(False)
        except BaseException:
            self.socket.close()
            raise
        self.port: int = self.socket.getsockname()[1]
        self.exhausted_at: Optional[float] = None  # when an accept failed for want of descriptors or memory

    def fileno(self) -> int:
        return self.socket.fileno()

    def accept(self) -> Optional[tuple[socket.socket, str]]:
        try:
            connection, address = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # The connection stays in the backlog and the socket readable: the caller stops
                # watching it for a while rather than spin.
                self.exhausted_at = time.monotonic()
            return None  # a connection reset before it was accepted: not ours to stop for
        connection.setblocking(False)
        return connection, f"tcp://{address[0]}:{address[1]}"

    def close(self) -> None:
        self.socket.close()


# A parser yields the writable buffer it wants filled next; it returns when the lane is done.
Parser = Generator[memoryview, None, None]


class LaneIn:
    """An accepted lane: reads into the buffers its parser asks for."""

    def __init__(self, connection: socket.socket, address: str) -> None:
        self.socket = connection
        self.address = address
        self.session: Optional[bytes] = None  # set by the parser from the lane hello
        self.opened = self.heard = time.monotonic()
        self.busy = False  # in the middle of a message (its block allocated)
        # Since when a read found nothing (None: the last read brought bytes): what a stalled
        # peer is judged by, not by the time since it was last read (this end may have been busy).
        self.starved_since: Optional[float] = None
        self._parser: Optional[Parser] = None
        self._target = memoryview(b"")
        self._filled = 0
        self._staging = memoryview(bytearray(STAGING_BYTES))
        self._staged_from = self._staged_to = 0  # the staged bytes not handed on yet

    def start(self, parser: Parser) -> None:
        self._parser = parser
        self._target, self._filled = next(parser), 0

    def fileno(self) -> int:
        return self.socket.fileno()

    def receiving(self) -> bool:
        """In the middle of a message whose bytes still come (the last read found some, or
        found none less than RECEIVING_SECONDS ago)."""
        starved = self.starved_since
        return self.busy and (starved is None or time.monotonic() - starved < RECEIVING_SECONDS)

    def pump(self) -> bool:
        """Reads what has arrived (up to READ_BUDGET), handing each filled buffer to the parser;
        False when the lane is over (the peer closed it, or the parser ended it)."""
        assert self._parser is not None
        read = 0
        while True:
            # A filled buffer goes to the parser at once (also the last one before the budget
            # runs out): the socket may stay silent after a stream's last message.
            while True:
                while self._filled == len(self._target):
                    try:
                        self._target, self._filled = self._parser.send(None), 0
                    except StopIteration:
                        return False
                staged = self._staged_to - self._staged_from
                if not staged:
                    break
                step = min(staged, len(self._target) - self._filled)
                start = self._staged_from
                self._target[self._filled : self._filled + step] = self._staging[start : start + step]
                self._filled += step
                self._staged_from += step
            if read >= READ_BUDGET:
                return True
            wanted = len(self._target) - self._filled
            direct = wanted >= DIRECT_BYTES
            try:
                if direct:
                    count = self.socket.recv_into(self._target[self._filled :])
                else:
                    count = self.socket.recv_into(self._staging)
            except (BlockingIOError, InterruptedError):
                if self.starved_since is None:
                    self.starved_since = time.monotonic()
                return True
            except OSError:
                return False  # reset by the peer, or the network
            if count == 0:
                return False
            if direct:
                self._filled += count
            else:
                self._staged_from, self._staged_to = 0, count
            read += count
            self.heard = time.monotonic()
            self.starved_since = None

    def close(self) -> None:
        if self._parser is not None:
            self._parser.close()  # lets go of a half-filled block
            self._parser = None
        self._target = memoryview(b"")
        self.socket.close()


class LaneOut:
    """The sending end's lane: connects without blocking, then writes what it is given, in
    order, as the socket takes it."""

    def __init__(self, host: str, port: int, hello: bytes) -> None:
        self.started = time.monotonic()
        self.connected = False
        self.socket: Optional[socket.socket] = None
        # (buffer, seq): a message's last buffer carries its sequence number, so that what is
        # still waiting here is not queued twice by a resend.
        self._pending: collections.deque[tuple[memoryview, int]] = collections.deque()
        self._waiting: set[int] = set()
        self._pending.append((memoryview(hello), 0))
        self.pending_bytes = len(hello)  # queued, not yet taken by the socket
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        except OSError:
            return  # stays unconnected: failed() says so at once
        self.socket = socket.socket(info[0], socket.SOCK_STREAM)
        self.socket.setblocking(False)
        error = self.socket.connect_ex(info[4])
        if error not in (0, errno.EINPROGRESS):
            self.socket.close()
            self.socket = None

    def fileno(self) -> int:
        return self.socket.fileno() if self.socket is not None else -1

    def failed(self, connect_seconds: float) -> bool:
        """True when the connection could not be made (within ``connect_seconds``)."""
        if self.socket is None:
            return True
        return not self.connected and time.monotonic() - self.started > connect_seconds

    def wants_write(self) -> bool:
        return self.socket is not None and (not self.connected or bool(self._pending))

    def waiting(self, seq: int) -> bool:
        """Whether message ``seq`` is still here, not yet taken by the socket."""
        return seq in self._waiting

    def queue(self, seq: int, parts: list[Any]) -> None:
        """Queues a message's buffers (its prefix first); written by flush()."""
        views = [view for view in (memoryview(part).cast("B") for part in parts) if len(view)]
        for view in views[:-1]:
            self._pending.append((view, 0))
        self._pending.append((views[-1], seq))
        self._waiting.add(seq)
        self.pending_bytes += sum(len(view) for view in views)

    def flush(self) -> bool:
        """Writes as much as the socket takes now; False when the lane is lost."""
        if self.socket is None:
            return False
        if not self.connected:
            probe = select.poll()  # (select.select refuses descriptors from 1024 on)
            probe.register(self.socket.fileno(), select.POLLOUT)
            if not probe.poll(0):
                return True
            if self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                return False
            self.connected = True
        try:
            if self.socket.recv(1, socket.MSG_DONTWAIT) is not None:
                return False  # closed by the receiving end (which never writes to it)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return False
        while self._pending:
            batch = [view for view, _ in itertools.islice(self._pending, IOV_BATCH)]
            try:
                sent = self.socket.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False  # the peer closed it, or the network
            if sent == 0:
                return True
            self.pending_bytes -= sent
            while sent:
                view, seq = self._pending[0]
                if sent >= len(view):
                    sent -= len(view)
                    self._pending.popleft()
                    self._waiting.discard(seq)
                else:
                    self._pending[0] = (view[sent:], seq)
                    sent = 0
        return True

    def close(self) -> None:
        self._pending.clear()
        self._waiting.clear()
        self.pending_bytes = 0
        if self.socket is not None:
            self.socket.close()
            self.socket = None
