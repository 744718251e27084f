"""The receiving end: puts what arrives into the local queue (or publishes it on the local topic).

Per session (one sending end's life) it keeps ``last``, the last sequence number
delivered: a message numbered ``last + 1`` is delivered and acknowledged; one at
or below is a duplicate (sent again after a reconnect), dropped and acknowledged
again; one beyond is past a gap (its predecessors were lost with a connection),
dropped with a STATUS flagged GAP, so the sender sends again from ``last + 1``.
A sending end tells in every message what was acknowledged to it (``acked``), so
a receiving end that restarted starts the session there: what it acknowledged
before is never delivered twice.

A message the sender numbered but that fails the checks (wire.Rejected) is dropped,
counted, warned about, and acknowledged like a delivered one: sending it again would
not make it better. While the local queue is full, the end waits in slices and
tells the peer it is BUSY, so the sender does not take the wait for a lost message.

Numbered messages also arrive on data lanes (lane.py), at most one per session: each
lane's parser reads a message's prefix, header and meta, runs the same checks and
session logic, allocates the message and has its payload read straight into it.
A message that fails the checks is read past (its size is in the prefix) and the
lane goes on; a lane out of step (bad prefix, a hello for another receiving end) is
closed, and its sending end falls back to ZeroMQ and opens a new one.

Object messages (pickles) are refused the same way unless the peer is authenticated
(CurveZMQ keys) or the bridge was told ``allow_objects``: a consumer's get() unpickles
them, which runs whatever code their sender chose.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, Optional

from .. import _codec, _core, _errors
from . import deliver, wire
from .lane import LaneIn, LaneListener, Parser
from .link import HEARTBEAT_SECONDS, LOST_SECONDS, Link

MAX_SESSIONS = 1024  # sessions remembered (the oldest are forgotten first)
ACK_BATCH = 32  # messages delivered in a row at most before their acknowledgement goes
ACK_DELAY = 0.005  # s: how long a delivery waits at most for others to be acknowledged with
# Bytes delivered in a row at most before their acknowledgement goes: large messages fill the
# sender's window_bytes after a few (256 MiB: four of 64 MiB), and a sender waiting for an
# acknowledgement held back until its window is all here leaves the network idle meanwhile.
ACK_BATCH_BYTES = 8 << 20
PUT_SLICE = 0.2  # a wait for room in the local queue, between heartbeats
END_LINGER_SECONDS = 0.5  # after the end: answer a sender that did not hear the acknowledgement
PEER_MEMORY_SECONDS = 10.0  # a binding end keeps sending heartbeats to a peer heard this recently
MAX_LANES = 8  # lanes open at once (a new one replaces one silent for LOST_SECONDS, or is refused)
LANE_HELLO_SECONDS = 3.0  # a lane must say which session it carries within this time
LANE_STALL_SECONDS = 10.0  # a lane that brings nothing this long in the middle of a message is closed
DISCARD_BYTES = 1 << 20  # the buffer that what is read past goes through


class Stopping(Exception):
    """close() was called while waiting for room in the local queue."""


@dataclass
class Session:
    last: int
    ended: bool = False
    heard: float = 0.0
    identity: Optional[bytes] = None  # the sending end's ZeroMQ identity (a binding end answers it by it)


class ReceivingEnd:
    def __init__(
        self,
        link: Link,
        name: str,
        topic: bool,
        domain: Optional[str],
        max_message_bytes: Optional[int],
        timeout: Optional[float],
        stop: threading.Event,
        allow_objects: bool = False,
        lane: Optional[LaneListener] = None,
    ) -> None:
        from .._queue import Queue
        from .._topic import Topic

        self.link = link
        self.allow_objects = allow_objects
        self.timeout = timeout
        self.stop = stop
        self.receiver_id = os.urandom(16)
        self.sessions: collections.OrderedDict[bytes, Session] = collections.OrderedDict()
        self.peers: dict[Optional[bytes], tuple[float, bytes]] = {}  # identity -> (heard at, session)
        self.heartbeat_at = 0.0
        self.started = time.monotonic()
        self.ended_at: Optional[float] = None
        self.end_failed = False
        self.queue: Optional[Queue] = None
        self.topic_handle: Optional[Topic] = None
        # Where each session stands, kept in the domain (a hakobu.Store): a receiving end that
        # is killed and restarted knows what it delivered, even what the sender never heard
        # acknowledged. Made at the first delivery, removed when the stream ends.
        self.progress_name: Optional[str] = f"{name}.bridge"
        if _core.validate_name(self.progress_name):
            self.progress_name = None  # too long a name: the restart check uses the sender's word alone
        self.domain = domain
        self.progress: Any = None
        self.unacknowledged: dict[tuple[Optional[bytes], bytes], Session] = {}
        self.unacknowledged_since = 0.0  # when the first of them was delivered
        self.batched = 0
        self.batched_bytes = 0
        self.listener = lane
        self.lanes: list[LaneIn] = []
        self._discard = memoryview(bytearray(DISCARD_BYTES))
        if lane is not None:
            link.watch(lane.fileno())
        if topic:
            self.topic_handle = Topic(name, domain=domain)
            self.channel: Any = self.topic_handle._core
            default_limit = 0
        else:
            # A sender of the local queue from the start: its receivers see the end only when this end says so.
            self.queue = Queue(name, domain=domain, sends=True)
            self.channel = self.queue._core
            default_limit = self.queue.max_bytes
        if max_message_bytes is None:
            max_message_bytes = default_limit if default_limit > 0 else 1 << 30
        self.limit = max_message_bytes

    # --- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        while not self.stop.is_set():
            if self.ended_at is not None and time.monotonic() - self.ended_at > END_LINGER_SECONDS:
                return
            # Deliveries are acknowledged together: with a full batch, or ACK_DELAY after the
            # first of them (not one by one: each acknowledgement wakes threads on both hosts).
            wait = 0.1
            if self.unacknowledged:
                wait = max(0.0, self.unacknowledged_since + ACK_DELAY - time.monotonic())
            if self.link.poll(wait):
                self._read_socket()
                self._read_lanes()
            if self.unacknowledged and time.monotonic() - self.unacknowledged_since >= ACK_DELAY:
                self._acknowledge()
            self._timers()

    def _read_socket(self) -> None:
        self._read_batch()

    def _batch_acknowledged(self) -> None:
        """Before the next message (whose copy takes a while): a full batch is acknowledged now."""
        if len(self.unacknowledged) and (self.batched >= ACK_BATCH or self.batched_bytes >= ACK_BATCH_BYTES):
            self._acknowledge()

    def _acknowledge(self) -> None:
        """One STATUS per sender for the deliveries of a batch (not one per message)."""
        for (identity, session_id), session in self.unacknowledged.items():
            self._status(identity, session_id, session, 0)
        self.unacknowledged.clear()
        self.batched = self.batched_bytes = 0

    def _read_batch(self) -> None:
        for identity, header, frames, address in self.link.incoming():
            try:
                self._on_message(identity, header, frames, address)
            except wire.Rejected as error:
                self.link.reject(address, str(error))
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as error:
                # A check that missed a case: still the peer's bytes, still not a reason to stop.
                self.link.reject(address, f"a malformed message ({type(error).__name__}: {error})")
            self._batch_acknowledged()

    def _session(self, header: wire.Header) -> Session:
        session = self.sessions.get(header.session)
        if session is None:
            last = max(header.acked, self._persisted(header.session))
            session = self.sessions[header.session] = Session(last=last)
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        else:
            self.sessions.move_to_end(header.session)
            session.last = max(session.last, header.acked)
        return session

    def _on_message(
        self, identity: Optional[bytes], header: wire.Header, frames: list[memoryview], address: str
    ) -> None:
        """A message from ZeroMQ."""
        if header.type == wire.STATUS:
            raise wire.Rejected("a STATUS (this end receives: is the other end a receiving bridge too?)")
        if header.type == wire.HELLO and len(frames) != 1:
            raise wire.Rejected(f"a HELLO of {len(frames)} frames")
        self._check_frame_count(header, len(frames))
        session = self._admit(identity, header)
        if session is None:
            return
        payload = frames[2:]
        landing = self._land(header, session, frames[1], [len(frame) for frame in payload])
        deliver.scatter(payload, landing.regions)
        self._complete(header, session, landing, sum(len(frame) for frame in payload))

    @staticmethod
    def _check_frame_count(header: wire.Header, count: int) -> None:
        if header.type == wire.END and count != 1:
            raise wire.Rejected(f"an END of {count} frames")
        if header.type == wire.DATA and count < 3:
            raise wire.Rejected(f"a DATA message of {count} frames (at least 3)")

    def _admit(self, identity: Optional[bytes], header: wire.Header) -> Optional[Session]:
        """Where a HELLO, DATA or END stands in its session: the session when this DATA is the
        next to deliver, else None (answered already: a HELLO, a duplicate, a gap, the end)."""
        self.link.heard()
        session = self._session(header)
        session.heard = time.monotonic()
        if identity is not None or not self.link.bind:  # a lane's message: its session's identity, if known
            self.peers[identity] = (session.heard, header.session)
            session.identity = identity
        if header.type == wire.HELLO:
            self._status(identity, header.session, session, 0)
            return None
        if header.seq <= session.last:
            self._status(identity, header.session, session, 0)  # a duplicate: say again where we are
            return None
        if header.seq > session.last + 1:
            self._status(identity, header.session, session, wire.GAP)
            return None
        if header.type == wire.END:
            session.last, session.ended = header.seq, True
            self.end_failed = self.end_failed or header.failed
            # Acknowledged before the local stream ends: its consumer may close this end at once.
            self._status(identity, header.session, session, 0)
            # Several sending ends may feed this one: the local stream ends with the last of
            # them (those heard lately that have not ended).
            self._end_if_last()
            return None
        if self.ended_at is not None:
            raise wire.Rejected("a message after the end of the stream")
        return session

    def _land(
        self, header: wire.Header, session: Session, meta: memoryview, sizes: list[int]
    ) -> deliver.Landing:
        """The local message a DATA becomes, allocated, its payload still to be written."""
        try:
            if header.kind == _codec.KIND_OBJECT and not self.allow_objects:
                raise wire.Rejected(
                    "an object message (a pickle, which a consumer's get() would unpickle) from an "
                    "unauthenticated peer: use keys (--allowed-keys) or --allow-objects on a trusted network "
                    "(hakobu.Bridge(allowed_keys=...) or allow_objects=True)"
                )
            return deliver.land(self.channel, header.kind, meta, sizes, self.limit)
        except (wire.Rejected, _errors.InvalidArgument, _errors.Corrupt, _errors.TooLarge) as error:
            self._refused(header, session, error)
        except (
            MemoryError
        ) as error:  # OutOfSharedMemory: not acknowledged, so the sender sends it again later
            raise wire.Rejected(f"a message this host has no shared memory for now ({error})") from None

    def _complete(
        self, header: wire.Header, session: Session, landing: deliver.Landing, nbytes: int, lane: bool = False
    ) -> None:
        """Puts a landed message (its payload written) into the local queue and records it."""
        try:
            self._put(landing.seal(), session.identity, header.session, session)
        except Stopping:
            return  # not acknowledged: the sender keeps it
        except (
            _errors.InvalidArgument,
            _errors.Corrupt,
            _errors.TooLarge,
            _errors.Closed,
            _errors.Unlinked,
        ) as error:
            self._refused(header, session, error)  # (Closed: the local stream ended meanwhile)
        session.last = max(session.last, header.seq)
        self._persist(header.session, session.last)
        counters = self.link.counters
        counters.messages += 1
        counters.bytes += nbytes
        counters.lane_messages += lane
        if not self.unacknowledged:
            self.unacknowledged_since = time.monotonic()
        self.unacknowledged[(session.identity, header.session)] = session  # acknowledged with the batch
        self.batched += 1
        self.batched_bytes += nbytes

    def _refused(self, header: wire.Header, session: Session, error: Exception) -> NoReturn:
        """Whatever the peer's bytes make the core refuse is bad input too: dropped, counted,
        acknowledged (numbered, so sending it again would not help); the bridge goes on."""
        session.last = header.seq
        self._status(session.identity, header.session, session, 0)
        if isinstance(error, wire.Rejected):
            raise error
        raise wire.Rejected(f"a message the local queue refused ({type(error).__name__}: {error})") from None

    # --- data lanes -------------------------------------------------------------------
    def _read_lanes(self) -> None:
        if self.listener is None:
            return
        try:
            for _ in range(MAX_LANES):
                accepted = self.listener.accept()
                if accepted is None:
                    if self.listener.exhausted_at is not None:
                        self.link.unwatch(self.listener.fileno())  # watched again by _timers
                    break
                self._open_lane(*accepted)
            for lane in list(self.lanes):
                if lane in self.lanes and not lane.pump():  # (another lane's parser may have closed it)
                    self._close_lane(lane)
        finally:
            self.link.counters.lane = any(lane.session is not None for lane in self.lanes)

    def _open_lane(self, connection: Any, address: str) -> None:
        if len(self.lanes) >= MAX_LANES:
            # Room is made from a lane silent for LOST_SECONDS; otherwise the newcomer is refused
            # (its sending end stays on ZeroMQ and tries again later): lanes that carry are kept.
            quietest = min(self.lanes, key=lambda lane: lane.heard)
            if time.monotonic() - quietest.heard < LOST_SECONDS:
                connection.close()
                return
            self._close_lane(quietest)
        lane = LaneIn(connection, address)
        self.lanes.append(lane)
        self.link.watch(lane.fileno())
        lane.start(self._lane_parser(lane))

    def _close_lane(self, lane: LaneIn) -> None:
        if lane in self.lanes:
            self.lanes.remove(lane)
            self.link.unwatch(lane.fileno())
        lane.close()

    def _lane_parser(self, lane: LaneIn) -> Parser:
        """Reads one lane's messages: yields each buffer to fill, handles each message when it
        is read. Returns (the lane is closed) when the lane is out of step."""
        try:
            hello = bytearray(wire.LANE_HELLO_BYTES)
            yield memoryview(hello)
            session_id, receiver = wire.parse_lane_hello(hello)
            if receiver != self.receiver_id:
                raise wire.Rejected("a lane opened for another receiving end (this one restarted?)")
            for other in [o for o in self.lanes if o.session == session_id]:
                self._close_lane(other)  # the sending end opened a new one: the old one is stale
            lane.session = session_id
            while True:
                prefix = bytearray(wire.LANE_PREFIX_BYTES)
                yield memoryview(prefix)
                count, total = wire.parse_lane_prefix(prefix)
                lane.busy = True
                if count > self.link.frame_cap:
                    self.link.reject(lane.address, f"a message of more than {self.link.frame_cap} frames")
                    yield from self._read_past(4 * count + total)
                else:
                    raw_sizes = bytearray(4 * count)
                    yield memoryview(raw_sizes)
                    yield from self._lane_message(
                        lane, session_id, wire.parse_lane_sizes(raw_sizes, count, total)
                    )
                lane.busy = False
        except wire.Rejected as error:
            self.link.reject(lane.address, f"a data lane out of step, closed: {error}")
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as error:
            # A check that missed a case: still the peer's bytes; the lane cannot be trusted to be in step.
            self.link.reject(
                lane.address, f"a malformed message on a data lane, closed ({type(error).__name__}: {error})"
            )

    def _lane_message(self, lane: LaneIn, session_id: bytes, sizes: list[int]) -> Parser:
        """One message of a lane, whose frame sizes are read: its header and meta frames, then
        its payload straight into the local message (or read past if it is refused)."""
        header_bytes, meta_bytes = sizes[0], (sizes[1] if len(sizes) > 1 else 0)
        payload = sizes[2:]
        unread = sum(sizes)  # what is read past if the message is refused
        try:
            if header_bytes > 64 or meta_bytes > wire.MAX_META_BYTES or max(sizes) > wire.LARGEST_FRAME:
                raise wire.Rejected(f"a message with a frame of {max(sizes)} bytes on the data lane")
            head = bytearray(header_bytes + meta_bytes)
            yield memoryview(head)
            unread = sum(payload)
            header = wire.parse_header(memoryview(head)[:header_bytes])
            if header.type not in (wire.DATA, wire.END) or header.session != session_id:
                raise wire.Rejected("a message of another type or session than the data lane's")
            self._check_frame_count(header, len(sizes))
            session = self._admit(self._identity(session_id), header)
            if session is None:
                yield from self._read_past(unread)
                return
            landing = self._land(header, session, memoryview(head)[header_bytes:], payload)
        except wire.Rejected as error:
            self.link.reject(lane.address, str(error))
            yield from self._read_past(unread)
            return
        yield from landing.regions
        if self.sessions.get(session_id) is not session or session.last != header.seq - 1 or self.ended_at:
            # While its payload came, the message arrived through ZeroMQ too (sent again after the
            # sending end gave up this lane), or the stream ended: delivered once already, or too late.
            landing.seal()
            self._status(session.identity, session_id, session, 0)
            return
        try:
            self._complete(header, session, landing, sum(payload), lane=True)
        except wire.Rejected as error:
            self.link.reject(lane.address, str(error))
        self._batch_acknowledged()

    def _read_past(self, nbytes: int) -> Iterator[memoryview]:
        """Buffers that ``nbytes`` of the lane are read into and dropped."""
        while nbytes > 0:
            step = min(nbytes, DISCARD_BYTES)
            yield self._discard[:step]
            nbytes -= step

    def _identity(self, session_id: bytes) -> Optional[bytes]:
        session = self.sessions.get(session_id)
        return session.identity if session is not None else None

    def _put(self, put: deliver.Put, identity: Optional[bytes], session_id: bytes, session: Session) -> None:
        while True:
            try:
                put(PUT_SLICE)
                return
            except _errors.Full:
                pass
            if self.stop.is_set():
                raise Stopping
            self._status(identity, session_id, session, wire.BUSY)

    def _persisted(self, session_id: bytes) -> int:
        """The last message of the session delivered by this end or an earlier one (0: none)."""
        from .._store import Store

        if self.progress_name is None:
            return 0
        try:
            if self.progress is None:
                self.progress = Store(
                    self.progress_name, create=False, domain=self.domain, allow_pickle=False
                )
            value = self.progress.get(session_id.hex())
        except _errors.NotFound:
            return 0
        if type(value) is bytes and len(value) == 8:
            return int.from_bytes(value, "little")
        return value if type(value) is int and value >= 0 else 0  # (as an earlier version kept it)

    def _persist(self, session_id: bytes, seq: int) -> None:
        from .._store import Store

        if self.progress_name is None:
            return
        if self.progress is None:
            self.progress = Store(self.progress_name, domain=self.domain, allow_pickle=False)
        self.progress[session_id.hex()] = seq.to_bytes(8, "little")  # (bytes: no pickling, once per message)

    def _end(self, failed: bool) -> None:
        """The sending end's stream ended: so does the local queue's, through this handle."""
        self.ended_at = time.monotonic()
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if self.progress_name is not None:
            try:
                _core.remove_store(self.progress_name, self.domain or "")
            except _errors.NotFound:
                pass
        self.end_failed = failed
        if self.queue is not None:
            self.queue.close(failed=failed)

    def _end_if_last(self) -> None:
        """Ends the local stream once a session ended and no other is alive (heard within
        LOST_SECONDS: a sending end says HELLO every HEARTBEAT_SECONDS)."""
        if self.ended_at is not None or not any(s.ended for s in self.sessions.values()):
            return
        now = time.monotonic()
        if not any(not s.ended and now - s.heard < LOST_SECONDS for s in self.sessions.values()):
            self._end(self.end_failed)

    def _status(
        self, identity: Optional[bytes], session_id: bytes, session: Optional[Session], flags: int
    ) -> None:
        last = 0
        if session is not None:
            last = session.last
            if session.ended:
                flags |= wire.ENDED
        if any(lane.session == session_id and lane.receiving() for lane in self.lanes):
            # A message is on its way on the lane (slowly, on a slow link): none is overdue.
            flags |= wire.BUSY
        lane_port = self.listener.port if self.listener is not None else 0
        self.link.send(identity, [wire.status(self.receiver_id, session_id, last, flags, lane_port)])

    def _timers(self) -> None:
        self._end_if_last()
        now = time.monotonic()
        listener = self.listener
        if listener is not None and listener.exhausted_at is not None and now - listener.exhausted_at > 1.0:
            listener.exhausted_at = None
            self.link.watch(listener.fileno())
        for lane in list(self.lanes):
            if (lane.session is None and now - lane.opened > LANE_HELLO_SECONDS) or (
                lane.busy and lane.starved_since is not None and now - lane.starved_since > LANE_STALL_SECONDS
            ):
                self._close_lane(lane)
        if now - self.heartbeat_at >= HEARTBEAT_SECONDS:
            self.heartbeat_at = now
            if not self.link.bind:
                # The one peer (a binding sending end learns of this end from it).
                session_id = next(reversed(self.sessions), bytes(16)) if self.sessions else bytes(16)
                self._status(None, session_id, self.sessions.get(session_id), 0)
            for identity, (heard, session_id) in list(self.peers.items()):
                if now - heard > PEER_MEMORY_SECONDS:
                    del self.peers[identity]
                elif self.link.bind:
                    self._status(identity, session_id, self.sessions.get(session_id), 0)
        if self.timeout is not None and not self.link.connected():
            since = self.link.counters.last_heard or self.started
            if now - since > self.timeout:
                raise _errors.PeerTimeout(
                    f"hakobu bridge at {self.link.endpoint}: no sending end heard for {self.timeout:g} s "
                    f"(is `hakobu bridge ... --to` running there, and the address and keys right?)"
                )

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def close(self) -> None:
        if self.unacknowledged:
            # What was delivered is acknowledged before leaving (its sending end would send it
            # again, to be dropped as a duplicate): best effort, the socket may be gone.
            try:
                self._acknowledge()
            except self.link.zmq.ZMQError:
                pass
        for lane in list(self.lanes):
            self._close_lane(lane)
        if self.listener is not None:
            self.listener.close()
        if self.queue is not None and self.ended_at is None:
            # The remote stream did not end: the local one is cut short, not complete.
            self.queue.close(failed=True)
        if self.topic_handle is not None:
            self.topic_handle.close()
        if self.progress is not None:
            self.progress.close()
        # Let go of the handles: a Bridge object that lives on must not keep the domain attached.
        self.queue = self.topic_handle = self.channel = self.progress = None
