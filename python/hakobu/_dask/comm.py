"""The ``hakobu://`` transport for Dask: processes of one machine exchange messages in shared memory.

Dask finds this module through the ``distributed.comm.backends`` entry point
(pyproject.toml) and calls ``HakobuBackend()`` once per process. Addresses look
like TCP's, ``hakobu://HOST:PORT``, so that everything in Dask that splits an
address into host and port (the scheduler's host table, the dashboard, the
``dask worker`` command line) keeps working, and so that workers of one
machine are seen as on one host. The port is not a TCP port: it names the
listener's *accept queue*, ``dask.listen.<port>``, in the process's hakobu
domain (``HAKOBU_DOMAIN``, by default one per user). The host only says which
machine; connecting to an address whose host is not one of this machine's
fails at once (use ``tcp://`` between machines).

A connection is two hakobu queues, one per direction, both created by the
connecting side (so a connect that nobody accepts leaves nothing behind once
it gives up) and announced to the listener by a small JSON message on its
accept queue; the listener answers on the queue to the connector, and only
then is the connection made. A Dask message is a list of frames: one queue
message carries a header with the sizes of all frames and the small frames
themselves; each large frame follows as a uint8 array, copied once into a
block of shared memory, and is read as a view of that block (no copy on the
receiving side; Dask's deserializers take it as a memoryview).

End of a connection, as the queues' streams say it: ``close()`` closes this
side's sending handle, so the peer's ``read`` raises CommClosedError once it
has read everything (hakobu.EndOfStream); a peer that dies or aborts ends it
as failed (hakobu.SendersLost, noticed within about 0.1 s). Each side removes
the queue it receives on when it is done with the connection; the survivor of
a dead peer removes the peer's queue too; a writer waiting for room looks whether the
peer's process lives every 0.1 s. What a killed process leaves (its accept queue, the
queues of its connections nobody reads) is removed by the next listener that starts in
the domain (``reap_stale_queues``). Nothing read from shared memory is
trusted: headers are checked (magic, version, counts, sizes) and a message
that fails aborts the connection with CommClosedError saying what was wrong.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import secrets
import socket
import struct
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional, cast

import numpy as np
from dask.utils import parse_bytes
from distributed import utils as _distributed_utils
from distributed.comm import utils as _comm_utils
from distributed.comm.addressing import parse_host_port, unparse_host_port
from distributed.comm.core import (
    BaseListener,
    Comm,
    CommClosedError,
    Connector,
    FatalCommClosedError,
)
from distributed.comm.registry import Backend
from distributed.utils import ensure_ip

from .. import _core, _errors
from .._arrays import empty
from .._processes import process_exists
from .._queue import Queue

logger = logging.getLogger(__name__)

# Dask's own helpers, typed here (distributed leaves them untyped).
to_frames = cast(Callable[..., Awaitable[list[Any]]], _comm_utils.to_frames)
from_frames = cast(Callable[..., Awaitable[Any]], _comm_utils.from_frames)
ensure_concrete_host = cast(Callable[..., str], _comm_utils.ensure_concrete_host)
get_ip = cast(Callable[..., str], _distributed_utils.get_ip)
offload = cast(Callable[..., Awaitable[Any]], _distributed_utils.offload)
# Frames from this size are copied into shared memory in Dask's offload thread: its own
# threshold for moving (de)serialization off the event loop (10 MiB by default; 0 or
# false in Dask's config turns offloading off, here too).
_threshold = _comm_utils.OFFLOAD_THRESHOLD
OFFLOAD_BYTES: Optional[int] = int(parse_bytes(_threshold)) if _threshold else None

PREFIX = "hakobu://"
# Queue names: the listener's accept queue, and the two queues of each connection.
ACCEPT_NAME = "dask.listen.{port}"
CONNECTION_NAME = "dask.{port}.{token}"
# Ports chosen when a listener asks for port 0 (as an ephemeral TCP port would be).
EPHEMERAL_PORTS = (20000, 64999)
# How often a write waiting for room looks whether the peer process still lives.
SENDER_CHECK_SECONDS = 0.1
# Messages in flight per direction: a writer waits for room beyond this (backpressure).
CONNECTION_CAPACITY = 64
# Frames from this size travel as their own message, in a block of shared memory read
# in place; smaller ones are copied into the message header, as one queue message.
LARGE_FRAME = 64 * 1024

# The header of a Dask message: magic, version, frame count; then per frame its kind and size.
_MAGIC = b"HKDC"
_VERSION = 1
_HEAD = struct.Struct("<4sHI")
_FRAME = struct.Struct("<BQ")
_INLINE, _SEPARATE = 0, 1
# Bounds for what a header may claim (it comes from shared memory another process wrote).
MAX_FRAMES = 1 << 20
MAX_FRAME_BYTES = 1 << 44
# The announce and answer messages of connection set-up: JSON, at most this many bytes.
MAX_HELLO_BYTES = 4096


def _pid_namespace() -> int:
    """This process's PID namespace (0 if unknown): process ids mean something only within one."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _peer_pid(fields: dict[str, Any]) -> int:
    """The peer's process id from its set-up message, or 0 (unknown: never judged dead) when it
    lives in another PID namespace, where the same number names another process or none."""
    namespace = fields.get("pidns")
    if not isinstance(namespace, int) or namespace != _pid_namespace() or namespace == 0:
        return 0
    return int(fields["pid"])


def _peer_dead(pid: int) -> bool:
    """Whether a known peer process (pid > 0) is gone; an unknown one (0) is not judged."""
    return pid > 0 and not process_exists(pid)


def _remove_queue(name: str) -> None:
    """Removes a queue of the connection if it is still there (the peer may have removed it)."""
    try:
        _core.remove(name, "")  # "": the default domain, where the queues were opened
    except (_errors.NotFound, _errors.Unlinked, _errors.Closed):
        pass


def _quiet(queue: Queue) -> None:
    """No NoSenderWarning from this handle: a listener waits for its first connection, and
    a connector for the listener's answer, as long as they must; the names are ours."""
    queue._watch_for_sender = False


# --- addresses ---------------------------------------------------------------------------
_local_hosts: set[str] = set()


def is_local_host(host: str) -> bool:
    """Whether ``host`` (a name or an IP address) is one of this machine's.

    An address this machine can bind is one of its own; names are resolved
    first. The answer is remembered for hosts found local.
    """
    if host in _local_hosts or host in ("", "localhost", socket.gethostname()):
        return True
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError:
        return False
    for family, _type, _proto, _name, sockaddr in infos:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((sockaddr[0], 0))
        except OSError:
            continue
        _local_hosts.add(host)
        return True
    return False


def _split(loc: str) -> tuple[str, int]:
    """``HOST:PORT`` of an address without its scheme, checked."""
    try:
        host, port = parse_host_port(loc)
    except ValueError as exc:
        raise ValueError(
            f"invalid hakobu address {PREFIX}{loc!r}: expected hakobu://HOST:PORT ({exc})"
        ) from None
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid hakobu address {PREFIX}{loc!r}: the port must be 0-65535")
    return host, port


# --- the connection ----------------------------------------------------------------------
class HakobuComm(Comm):
    """One established connection: this side's sending and receiving queues."""

    def __init__(
        self,
        send: Queue,
        receive: Queue,
        local_addr: str,
        peer_addr: str,
        peer_pid: int,
        deserialize: bool = True,
    ) -> None:
        super().__init__(deserialize=deserialize)
        self._send: Optional[Queue] = send
        self._receive: Optional[Queue] = receive
        self._send_name = send.name
        self._receive_name = receive.name
        self._local_addr = local_addr
        self._peer_addr = peer_addr
        self._peer_pid = peer_pid
        self._closed = False
        self._peer_lost = False
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._pending: Optional[asyncio.Future[Any]] = None
        # A comm dropped without close(): end the stream as failed and remove what it received on.
        self._finalizer = weakref.finalize(self, _drop_queues, send, receive, peer_pid)
        self._finalizer.atexit = False

    @property
    def local_address(self) -> str:
        return self._local_addr

    @property
    def peer_address(self) -> str:
        return self._peer_addr

    @property
    def same_host(self) -> bool:
        return True  # a connection is made only between processes of one machine

    # --- reading ---
    async def _get(self) -> Any:
        """The next queue message; abort() cancels the wait (a closed handle wakes nobody)."""
        receive = self._receive
        if receive is None:
            raise CommClosedError(f"in {self!r}: closed")
        self._pending = asyncio.ensure_future(receive.get_async())
        try:
            return await self._pending
        except asyncio.CancelledError:
            if self._closed:
                raise CommClosedError(f"in {self!r}: aborted while reading") from None
            raise
        except _errors.SendersLost:
            self._peer_lost = True
            self.abort()
            raise CommClosedError(f"in {self!r}: the peer process died or aborted") from None
        except _errors.EndOfStream:
            self.abort(peer_closed=True)
            raise CommClosedError(f"in {self!r}: the peer closed the connection") from None
        except (_errors.Closed, _errors.Unlinked) as exc:
            self.abort()
            raise CommClosedError(f"in {self!r}: {exc}") from None
        finally:
            self._pending = None

    async def read(self, deserializers: Any = None) -> Any:
        if self._closed:
            raise CommClosedError(f"in {self!r}: closed")
        async with self._read_lock:
            header = await self._get()
            try:
                frames = await self._read_frames(header)
            except BaseException:
                # A message taken in part (a cancelled read, an error): what follows on the
                # queue would be read out of step, so the connection cannot go on (as Dask's TCP comm).
                self.abort()
                raise
        try:
            return await from_frames(
                frames,
                deserialize=self.deserialize,
                deserializers=deserializers,
                allow_offload=self.allow_offload,
            )
        except EOFError:
            self.abort()
            raise CommClosedError(f"in {self!r}: aborted stream on truncated data") from None

    async def _read_frames(self, header: Any) -> list[Any]:
        """The frames of the message whose header was read: small ones from it, large ones from the queue."""
        try:
            layout, inline = parse_header(header)
        except ValueError as exc:
            self.abort()
            raise CommClosedError(f"in {self!r}: malformed message from the peer: {exc}") from None
        frames: list[Any] = []
        offset = 0
        for kind, size in layout:
            if kind == _INLINE:
                frames.append(inline[offset : offset + size])
                offset += size
                continue
            block = await self._get()
            if not (isinstance(block, np.ndarray) and block.dtype == np.uint8 and block.ndim == 1):
                self.abort()
                raise CommClosedError(
                    f"in {self!r}: malformed message from the peer: a large frame arrived as "
                    f"{type(block).__name__}, expected a uint8 array"
                )
            if block.nbytes != size:
                self.abort()
                raise CommClosedError(
                    f"in {self!r}: malformed message from the peer: a frame of {block.nbytes} "
                    f"bytes where the header says {size}"
                )
            frames.append(block.data)  # a view of the block: no copy
        return frames

    # --- writing ---
    async def write(self, msg: Any, serializers: Any = None, on_error: Any = "message") -> int:
        if self._closed or self._send is None:
            raise CommClosedError(f"in {self!r}: closed")
        frames = await to_frames(
            msg,
            allow_offload=self.allow_offload,
            serializers=serializers,
            on_error=on_error,
            context={"sender": self.local_info, "recipient": self.remote_info, **self.handshake_options},
        )
        header, large = build_header(frames)
        async with self._write_lock:
            send = self._send
            if send is None:
                raise CommClosedError(f"in {self!r}: closed")
            try:
                await self._put(send, header)
                for frame in large:
                    await self._put(send, await _in_shared_memory(frame, self.allow_offload))
            except (_errors.Closed, _errors.Unlinked) as exc:
                self.abort()
                raise CommClosedError(f"in {self!r}: the peer is gone ({exc})") from None
            except asyncio.CancelledError:
                # Part of a message may be out: the stream cannot go on.
                self.abort()
                raise
        return len(header) + sum(frame.nbytes for frame in large)

    async def _put(self, send: Queue, message: Any) -> None:
        """Puts one message, waiting for room while the peer lives: a dead peer reads nothing
        more, so a writer waiting on its full queue would wait forever (TCP: a broken pipe)."""
        while True:
            if _peer_dead(self._peer_pid):
                self._peer_lost = True
                self.abort()
                raise CommClosedError(f"in {self!r}: the peer process died")
            try:
                await send.put_async(message, timeout=SENDER_CHECK_SECONDS)
                return
            except _errors.Full:
                continue  # no room yet: look at the peer again

    # --- ending ---
    async def close(self) -> None:
        """Ends this side's stream: the peer reads what was written, then CommClosedError."""
        self._finish(failed=False)

    def abort(self, peer_closed: bool = False) -> None:
        """Ends the connection now; the peer's read raises CommClosedError."""
        self._finish(failed=not peer_closed)

    def _finish(self, failed: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        pending = self._pending
        if pending is not None and not pending.done():
            pending.cancel()
        send, receive = self._send, self._receive
        self._send = self._receive = None
        _release(send, receive, self._peer_pid, failed=failed, peer_lost=self._peer_lost)

    def closed(self) -> bool:
        return self._closed


async def _in_shared_memory(frame: memoryview, allow_offload: bool) -> np.ndarray:
    """A large frame as a uint8 array to put: copied into a hakobu block off the event loop
    when big (as Dask offloads (de)serializing big messages), so that the copy and the page
    faults of fresh shared memory do not stall the loop's heartbeats; the block then goes on
    the queue by reference. Smaller frames are copied by the put itself."""
    source = np.frombuffer(frame, dtype=np.uint8)
    if not allow_offload or OFFLOAD_BYTES is None or source.nbytes < OFFLOAD_BYTES:
        return source
    block = empty(source.nbytes, np.uint8)
    await offload(np.copyto, block, source)
    return block


def _release(
    send: Optional[Queue], receive: Optional[Queue], peer_pid: int, failed: bool, peer_lost: bool
) -> None:
    """Closes both handles and removes the queue received on (and the peer's, if it is gone)."""
    if send is not None:
        name = send.name
        # The peer's process is gone (its stream ended as lost, or its id is free and no loop
        # watches the queue: an id alone could mislead across PID namespaces): nobody else
        # will remove the queue. A live peer removes it itself after reading what is left.
        try:
            watched = bool(send.stats()["receivers_waiting"])
        except _errors.HakobuError:
            watched = False  # removed already, by the peer: nothing to decide
        gone = peer_lost or (_peer_dead(peer_pid) and not watched)
        send.close(failed=failed)
        if gone:
            _remove_queue(name)
    if receive is not None:
        name = receive.name
        receive.close()
        _remove_queue(name)


def _drop_queues(send: Queue, receive: Queue, peer_pid: int) -> None:
    """The finalizer of a comm dropped without close()."""
    try:
        _release(send, receive, peer_pid, failed=True, peer_lost=False)
    except _errors.HakobuError:
        pass


def build_header(frames: Sequence[Any]) -> tuple[bytes, list[memoryview]]:
    """The header message of ``frames`` (small frames inside it), and the large frames to follow."""
    parts = [_HEAD.pack(_MAGIC, _VERSION, len(frames))]
    inline: list[memoryview] = []
    large: list[memoryview] = []
    for frame in frames:
        view = memoryview(frame)
        if not view.contiguous:
            view = memoryview(view.tobytes())
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        if view.nbytes >= LARGE_FRAME:
            parts.append(_FRAME.pack(_SEPARATE, view.nbytes))
            large.append(view)
        else:
            parts.append(_FRAME.pack(_INLINE, view.nbytes))
            inline.append(view)
    return b"".join([*parts, *inline]), large


def parse_header(message: Any) -> tuple[list[tuple[int, int]], memoryview]:
    """The frames' (kind, size) and the small frames' bytes of a header; ValueError says what is wrong."""
    if not isinstance(message, bytes):
        raise ValueError(f"expected a message header (bytes), got {type(message).__name__}")
    if len(message) < _HEAD.size:
        raise ValueError(f"a header of {len(message)} bytes, shorter than its fixed part")
    magic, version, count = _HEAD.unpack_from(message)
    if magic != _MAGIC:
        raise ValueError(f"not a hakobu:// message header (magic {magic!r})")
    if version != _VERSION:
        raise ValueError(f"message format version {version}; this hakobu reads version {_VERSION}")
    if count > MAX_FRAMES:
        raise ValueError(f"{count} frames, more than the {MAX_FRAMES} allowed")
    table_end = _HEAD.size + count * _FRAME.size
    if len(message) < table_end:
        raise ValueError(f"a header of {len(message)} bytes cannot hold its table of {count} frames")
    layout: list[tuple[int, int]] = []
    inline_bytes = 0
    for index in range(count):
        kind, size = _FRAME.unpack_from(message, _HEAD.size + index * _FRAME.size)
        if kind not in (_INLINE, _SEPARATE):
            raise ValueError(f"frame {index} has unknown kind {kind}")
        if size > MAX_FRAME_BYTES:
            raise ValueError(f"frame {index} claims {size} bytes, beyond {MAX_FRAME_BYTES}")
        if kind == _INLINE:
            inline_bytes += size
        layout.append((kind, size))
    if len(message) != table_end + inline_bytes:
        raise ValueError(f"a header of {len(message)} bytes where its table says {table_end + inline_bytes}")
    return layout, memoryview(message)[table_end:]


def _hello(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()


def _read_hello(message: Any, what: str, required: dict[str, type]) -> dict[str, Any]:
    """A set-up message (JSON) from shared memory, checked: its fields and their types."""
    if not isinstance(message, bytes) or len(message) > MAX_HELLO_BYTES:
        raise ValueError(f"{what}: expected at most {MAX_HELLO_BYTES} bytes of JSON")
    try:
        fields = json.loads(message)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested beyond the stack
        raise ValueError(f"{what}: not JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{what}: expected a JSON object")
    if fields.get("version") != _VERSION:
        raise ValueError(f"{what}: protocol version {fields.get('version')!r}, expected {_VERSION}")
    for key, kind in required.items():
        if not isinstance(fields.get(key), kind) or isinstance(fields.get(key), bool):
            raise ValueError(f"{what}: field {key!r} missing or not a {kind.__name__}")
    return fields


# --- connecting --------------------------------------------------------------------------
class HakobuConnector(Connector):
    async def connect(self, address: str, deserialize: bool = True, **connection_args: Any) -> Comm:
        host, port = _split(address)
        if not is_local_host(host):
            raise FatalCommClosedError(
                f"cannot connect to {PREFIX}{address}: {host} is not an address of this machine, and "
                "hakobu:// connects processes of one machine only (through its /dev/shm); use "
                "tcp:// between machines"
            )
        try:
            accept = Queue(ACCEPT_NAME.format(port=port), create=False, allow_pickle=False)
        except _errors.NotFound:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"no hakobu:// listener at {PREFIX}{address} (no accept queue)"
            ) from None
        try:
            stats = accept.stats()
            creator = int(stats["creator_pid"])
            # A listener that was killed leaves its accept queue; nobody else will remove it.
            # Its process id alone could mislead (another PID namespace sharing /dev/shm), so
            # only a queue that no event loop watches either counts as the dead listener's.
            if not process_exists(creator) and not stats["receivers_waiting"]:
                _remove_queue(accept.name)
                raise ConnectionRefusedError(
                    errno.ECONNREFUSED,
                    f"the hakobu:// listener at {PREFIX}{address} (process {creator}) is gone",
                )
            return await self._connect(accept, host, port, deserialize)
        finally:
            accept.close()

    async def _connect(self, accept: Queue, host: str, port: int, deserialize: bool) -> Comm:
        base = CONNECTION_NAME.format(port=port, token=secrets.token_hex(6))
        up_name, down_name = f"{base}.up", f"{base}.down"
        up = Queue(up_name, CONNECTION_CAPACITY, create=True, allow_pickle=False, sends=True)
        try:
            down = Queue(down_name, CONNECTION_CAPACITY, create=True, allow_pickle=False)
            _quiet(down)
        except BaseException:
            up.close()
            _remove_queue(up_name)
            raise
        made = False
        try:
            local = f"{PREFIX}{unparse_host_port(ensure_concrete_host(host), os.getpid())}"
            await accept.put_async(
                _hello(
                    {
                        "version": _VERSION,
                        "up": up_name,
                        "down": down_name,
                        "pid": os.getpid(),
                        "pidns": _pid_namespace(),
                        "address": local,
                    }
                )
            )
            answer = await down.get_async()  # Dask's connect timeout bounds this wait
            fields = _read_hello(answer, "the listener's answer", {"pid": int, "address": str})
            comm = HakobuComm(up, down, local, fields["address"], _peer_pid(fields), deserialize)
            made = True
            return comm
        except _errors.EndOfStream:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, "the hakobu:// listener refused the connection"
            ) from None
        except ValueError as exc:
            raise FatalCommClosedError(f"connection set-up failed: {exc}") from None
        finally:
            if not made:  # a timeout (cancelled), a refusal: remove what was made
                up.close(failed=True)
                down.close()
                _remove_queue(up_name)
                _remove_queue(down_name)


# --- listening ---------------------------------------------------------------------------
class HakobuListener(BaseListener):
    prefix = PREFIX

    def __init__(self, loc: str, handle_comm: Any, deserialize: bool = True, **connection_args: Any) -> None:
        super().__init__()
        host, port = _split(loc) if loc else ("", 0)
        self._host = ensure_concrete_host(host, default_host=get_ip())
        self._port = port
        self._handle_comm = handle_comm
        self._deserialize = deserialize
        self._accept: Optional[Queue] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._accept = self._open_accept_queue()
        try:
            reap_stale_queues(self._accept.domain)
        except _errors.HakobuError as exc:  # tidying must not keep a listener from starting
            logger.warning(
                "hakobu:// listener %s: could not look for stale queues: %s", self.contact_address, exc
            )
        self._task = asyncio.ensure_future(self._serve())
        self._task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        """The accept loop ended: by stop(), or by an error that must not go unseen."""
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "hakobu:// listener %s stopped accepting connections",
                self.contact_address,
                exc_info=task.exception(),
            )

    def _open_accept_queue(self) -> Queue:
        if self._port:
            return self._claim(self._port, retry_stale=True)
        rng = secrets.SystemRandom()
        for _ in range(100):
            port = rng.randint(*EPHEMERAL_PORTS)
            try:
                return self._claim(port, retry_stale=False)
            except OSError:
                continue
        raise OSError(errno.EADDRINUSE, "no free hakobu:// port after 100 tries")

    def _claim(self, port: int, retry_stale: bool) -> Queue:
        name = ACCEPT_NAME.format(port=port)
        # sends=True: connectors open the queue, announce themselves and close it; with the
        # listener counted as a sender, their leaving does not end the queue's stream.
        try:
            queue = Queue(name, create=True, allow_pickle=False, sends=True)
        except _errors.AlreadyExists:
            if not retry_stale or not self._remove_if_stale(name):
                raise OSError(
                    errno.EADDRINUSE, f"{PREFIX}{self._host}:{port} is in use by another listener"
                ) from None
            queue = Queue(name, create=True, allow_pickle=False, sends=True)
        _quiet(queue)
        self._port = port
        return queue

    @staticmethod
    def _remove_if_stale(name: str) -> bool:
        """Removes an accept queue whose listener died (its name stays); True if it did."""
        try:
            with Queue(name, create=False, allow_pickle=False) as old:
                creator = int(old.stats()["creator_pid"])
            if process_exists(creator):
                return False
            _remove_queue(name)
        except _errors.NotFound:
            pass
        return True

    async def _serve(self) -> None:
        accept = self._accept
        assert accept is not None
        while True:
            message = await accept.get_async()
            try:
                fields = _read_hello(
                    message, "a connection request", {"up": str, "down": str, "pid": int, "address": str}
                )
                comm = self._open(fields)
            except Exception as exc:  # noqa: BLE001 - one bad request must not stop the listener
                logger.warning(
                    "hakobu:// listener %s: dropped a connection request: %s", self.contact_address, exc
                )
                continue
            task = asyncio.ensure_future(self._handle(comm))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    def _open(self, fields: dict[str, Any]) -> HakobuComm:
        up_name, down_name = fields["up"], fields["down"]
        expected = CONNECTION_NAME.format(port=self._port, token="")
        if not (up_name.startswith(expected) and down_name.startswith(expected)):
            raise ValueError(
                f"a connection request names queues {up_name!r}, {down_name!r} not of this listener"
            )
        receive = Queue(up_name, create=False, allow_pickle=False)
        try:
            send = Queue(down_name, create=False, allow_pickle=False, sends=True)
        except BaseException:
            receive.close()
            raise
        send.put(
            _hello(
                {
                    "version": _VERSION,
                    "pid": os.getpid(),
                    "pidns": _pid_namespace(),
                    "address": self.contact_address,
                }
            ),
            timeout=0,
        )
        return HakobuComm(
            send, receive, self.contact_address, fields["address"], _peer_pid(fields), self._deserialize
        )

    async def _handle(self, comm: HakobuComm) -> None:
        try:
            await self.on_connection(comm)
        except CommClosedError:
            logger.debug("hakobu:// connection closed before its handshake completed")
            return
        await self._handle_comm(comm)

    def stop(self) -> None:
        """Accepts no more connections and removes the accept queue; connections made stay."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        accept, self._accept = self._accept, None
        if accept is not None:
            name = accept.name
            accept.close()
            _remove_queue(name)
        self.abort_handshaking_comms()

    @property
    def listen_address(self) -> str:
        return self.contact_address

    @property
    def contact_address(self) -> str:
        return f"{PREFIX}{unparse_host_port(self._host, self._port)}"


def _stale(name: str) -> bool:
    """Whether the queue ``name`` was left by a process that is gone: its creator's process id
    is free and no event loop watches it (an id alone could mislead across PID namespaces)."""
    try:
        with Queue(name, create=False, allow_pickle=False) as queue:
            stats = queue.stats()
    except _errors.HakobuError:
        return False  # gone already, or not ours to judge
    return not process_exists(int(stats["creator_pid"])) and not stats["receivers_waiting"]


def _watched(name: str) -> bool:
    """Whether an event loop or thread waits on the queue ``name`` now (True when unsure)."""
    try:
        with Queue(name, create=False, allow_pickle=False) as queue:
            return bool(queue.stats()["receivers_waiting"])
    except _errors.HakobuError:
        return True  # gone already, or not ours to judge: leave it


def reap_stale_queues(domain: str) -> list[str]:
    """Removes the queues of this comm that processes killed before they could remove them, and
    returns their names: the accept queues of dead listeners, and the connection queues of a dead
    connector whose listener is gone too (both ends dead: nobody else will). Every listener
    runs it when it starts, so a cluster whose workers get killed and restarted does not pile up
    queues (``hakobu rm`` removes them by hand)."""
    names = {name for _path, kind, name in _core.domain_files(domain) if kind == "queue"}
    removed = []
    for name in sorted(names):
        parts = name.split(".")
        if len(parts) == 3 and name.startswith("dask.listen.") and _stale(name):
            _remove_queue(name)
            removed.append(name)
    listening = {name for name in names if name.startswith("dask.listen.")} - set(removed)
    dead_listeners = {name.rsplit(".", 1)[1] for name in removed}
    for name in sorted(names):
        parts = name.split(".")
        if not (len(parts) == 4 and parts[0] == "dask" and parts[3] in ("up", "down")):
            continue
        if parts[1] in dead_listeners:
            # The listener's process is dead, so each of its connections is over: the queue
            # goes unless a connector's loop is reading it now (that one removes it itself).
            stale = not _watched(name)
        else:
            stale = f"dask.listen.{parts[1]}" not in listening and _stale(name)
        if stale:
            _remove_queue(name)
            removed.append(name)
    if removed:
        logger.info("hakobu:// removed queues left by processes that are gone: %s", ", ".join(removed))
    return removed


# --- the backend Dask loads --------------------------------------------------------------
class HakobuBackend(Backend):
    """``hakobu://HOST:PORT``: Dask processes of one machine, connected through shared memory."""

    def get_connector(self) -> Connector:
        return HakobuConnector()

    def get_listener(
        self, loc: str, handle_comm: Any, deserialize: bool, **connection_args: Any
    ) -> HakobuListener:
        return HakobuListener(loc, handle_comm, deserialize, **connection_args)

    def get_address_host(self, loc: str) -> str:
        return _split(loc)[0]

    def get_address_host_port(self, loc: str) -> tuple[str, int]:
        return _split(loc)

    def resolve_address(self, loc: str) -> str:
        host, port = _split(loc)
        return unparse_host_port(ensure_ip(host), port)

    def get_local_address_for(self, loc: str) -> str:
        host, _port = _split(loc)
        return unparse_host_port(get_ip(ensure_ip(host)), None)
