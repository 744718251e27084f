"""The sending end: reads the local queue (or a subscription to the local topic) and sends.

Each message gets the next sequence number of this end's session (16 random bytes,
new for every Bridge) and stays in the window until the receiving end acknowledges
it (a STATUS whose ``last`` reaches it). While the window is full (``window``
messages or ``window_bytes`` bytes, one message always allowed), the local queue is
not read: its producers fill it and block. That is the backpressure.

Sending again: everything unacknowledged goes again when the peer is (re)gained (first
contact, a new receiving end, heard again after LOST_SECONDS), when the receiver says
it saw a gap (once per acknowledgement progress), and when acknowledgements stalled
while everything sent had left this end and the peer, not busy, was heard since without
acknowledging it (after ACK_TIMEOUT, doubling up to 30 s; a large message still being
written out over a slow link, or a receiving end too busy to answer, is not a stall). The receiving end drops what it has delivered already, so the
stream arrives once, in order.

An array leaves from shared memory without a copy: its frame is the received block's
memory (pyzmq's zero-copy frames hold the buffer until ZeroMQ has sent it; the window
holds it until it is acknowledged).

The data lane (lane.py): when the receiving end announces a lane port and this end may
use one (no keys), it connects to it and, once connected, sends its numbered messages
there. It switches only when everything sent through ZeroMQ before is acknowledged (it
takes nothing from the local queue meanwhile), so the two paths never overtake each
other. A lane lost (an error, the receiving end closed it, the peer regained after a
silence) is closed, what is unacknowledged goes again through ZeroMQ, and a new lane is
tried after LANE_RETRY_SECONDS (doubling while attempts fail).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .. import _codec, _core, _errors
from . import deliver, wire
from .lane import LaneOut, tcp_host
from .link import HEARTBEAT_SECONDS, Link

ACK_TIMEOUT = 2.0
MAX_ACK_TIMEOUT = 30.0
# How long a local get may wait while the window has room: the loop looks at the
# socket in between (acknowledgements), so this bounds their delay while idle.
LOCAL_WAIT = 0.02
# close(): how long to wait for the acknowledgements of what is in flight, so that as
# little as possible goes back into the local queue (and arrives twice).
CLOSE_DRAIN_SECONDS = 0.5
# close(): how long putting the unacknowledged messages back may wait for room.
GIVE_BACK_SECONDS = 2.0
# Queued on the lane, written at once from this many bytes on (the loop writes the rest after
# taking what the local queue has): a large message starts crossing while the next is taken.
LANE_FLUSH_BYTES = 1 << 20
LANE_CONNECT_SECONDS = 3.0  # a lane not connected by then is given up (a port filtered on the way)
LANE_RETRY_SECONDS = 2.0  # the wait before the next lane after one is lost (doubles while attempts fail)
MAX_LANE_RETRY_SECONDS = 60.0


@dataclass
class Outgoing:
    kind: int
    meta: bytes
    payload: list[Any]
    nbytes: int
    hold: Any  # the received local message (or array) whose memory the frames are
    epoch: int = -1  # the peer epoch it was last sent in (-1: not sent)
    on_lane: bool = False  # last sent on the data lane
    leaving: Any = None  # sent through ZeroMQ: its zmq.MessageTracker (done once written out)


class SendingEnd:
    def __init__(
        self,
        link: Link,
        name: str,
        topic: bool,
        domain: Optional[str],
        window: int,
        window_bytes: int,
        timeout: Optional[float],
        stop: threading.Event,
        lane: bool = False,
    ) -> None:
        from .._queue import Queue
        from .._topic import Topic

        self.link = link
        # The data lane's host: the receiving end's (this end connects to it), when a lane is allowed.
        self.lane_host = tcp_host(link.endpoint) if lane and not link.bind else None
        self.lane: Optional[LaneOut] = None
        self.lane_watched_writable = False  # how the loop's poll watches the lane's socket
        self.lane_retry_at = 0.0
        self.lane_backoff = LANE_RETRY_SECONDS
        # Messages up to lane_from went through ZeroMQ: they are acknowledged before the lane is used.
        self.lane_from = 0
        # The first lane is waited for (at most LANE_CONNECT_SECONDS) before anything is taken
        # from the local queue, so that the whole stream travels on it.
        self.lane_first = True
        self.topic = topic
        self.window = window
        self.window_bytes = window_bytes
        self.timeout = timeout
        self.stop = stop
        self.session = os.urandom(16)
        self.seq = 0
        self.acked = 0
        self.unacked: collections.OrderedDict[int, Outgoing] = collections.OrderedDict()
        self.end_seq: Optional[int] = None
        self.done = False
        self.peer: Optional[bytes] = None  # the receiving end's ROUTER identity (binding sender)
        self.receiver_id: Optional[bytes] = None
        self.epoch = 0
        self.was_connected = False
        self.stall_wait = ACK_TIMEOUT
        self.progress_at = time.monotonic()
        self.gap_resent_at: Optional[int] = None
        self.hello_at = 0.0
        self.started = time.monotonic()
        self.given_back = 0
        self.not_given_back = 0
        if topic:
            self.topic_handle: Optional[Topic] = Topic(name, domain=domain)
            self.subscriber: Any = self.topic_handle.subscribe()
            self.queue: Optional[Queue] = None
        else:
            self.topic_handle = None
            self.subscriber = None
            self.queue = Queue(name, domain=domain)

    # --- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        counters = self.link.counters
        while not self.stop.is_set() and not self.done:
            # Nothing is taken from the local queue while the other end is not heard: a message
            # waits there (surviving this process) rather than in this process's window.
            room = self.end_seq is None and self._has_room() and self.link.connected()
            # ZeroMQ writes in a thread of its own, a lane only when this loop does: while the lane
            # has bytes to write, the loop waits for its socket (poll), never for the local queue.
            if self.link.poll(0 if room and not self._lane_writing() else 0.1):
                self._read_socket()
            self._flush_lane()
            self._timers()
            # Up to a window's worth from the local queue between looks at the socket.
            for _ in range(self.window):
                wait = 0.0 if self._lane_writing() else LOCAL_WAIT
                if not (room and not self.done and self._take_local(wait)):
                    break
                room = self.end_seq is None and self._has_room()
            if self._lane_writing():
                self._flush_lane()  # what was taken, in one write (small messages are not written one by one)
            counters.in_flight = len(self.unacked)
        if self.done:
            return
        self._drain_before_close()

    def _has_room(self) -> bool:
        counters = self.link.counters
        if self.lane is not None and self.lane.connected and self.acked < self.lane_from:
            return False  # switching to the lane: what went through ZeroMQ is acknowledged first
        if self.lane is not None and self.lane_first:
            return False  # the first lane is being connected
        if not self.unacked:
            return True
        return len(self.unacked) < self.window and counters.in_flight_bytes < self.window_bytes

    def _take_local(self, wait: float) -> bool:
        """Takes one local message (waiting up to ``wait`` seconds) and sends it; False when none
        came (or the stream ended)."""
        try:
            if self.subscriber is not None:
                item = self.subscriber._core.get_object(wait, False)
                self.link.counters.dropped = self.subscriber.dropped
            else:
                assert self.queue is not None
                item = self.queue._core.get(wait)
        except _errors.Empty:
            return False
        except _errors.Corrupt as error:
            # A damaged or foreign message (another kind, from a C++ producer): the core dropped
            # it; so does the bridge, and it goes on with the next.
            self.link.reject("the local queue", str(error))
            return True
        except _errors.SendersLost:
            self._queue_end(failed=True)
            return False
        except _errors.EndOfStream:
            self._queue_end(failed=False)
            return False
        except _errors.Unlinked:
            self._queue_end(failed=not self.topic)  # a topic's end; a queue removed under its readers
            return False
        try:
            outgoing = self._frames_of(item)
        except wire.Rejected as error:
            self.link.reject("the local queue", str(error))
            return True
        self.seq += 1
        self.unacked[self.seq] = outgoing
        self.link.counters.in_flight_bytes += outgoing.nbytes
        self._send(self.seq, outgoing)
        return True

    def _frames_of(self, item: Any) -> Outgoing:
        """A received local message as frames (see wire.py), without copying its memory."""
        if isinstance(item, bytes):  # a subscriber's bytes (decoded by the extension)
            return Outgoing(_codec.KIND_BYTES, b"", wire.chunks(memoryview(item)), len(item), item)
        if isinstance(item, np.ndarray):
            meta, payload = wire.array_frames(item)
            return Outgoing(_codec.KIND_ARRAY, meta, payload, item.nbytes, item)
        if type(item) is not _core.Message:
            raise wire.Rejected(
                f"a local message read as {type(item).__name__} (a bridge forwards raw messages)"
            )
        kind = item.kind
        if kind == _codec.KIND_BYTES:
            view = memoryview(item).cast("B")
            return Outgoing(kind, b"", wire.chunks(view), len(view), item)
        if kind == _codec.KIND_ARRAY:
            array = _codec.decode(item)  # a view of the message's memory: no copy, nothing unpickled
            meta, payload = wire.array_frames(array)
            return Outgoing(kind, meta, payload, array.nbytes, array)
        if kind == _codec.KIND_OBJECT:
            attachments = [memoryview(item.attachment(k)) for k in range(item.attachment_count)]
            meta, payload = wire.object_frames(memoryview(item), attachments)
            return Outgoing(kind, meta, payload, sum(len(memoryview(p)) for p in payload), item)
        raise wire.Rejected(f"a local message of unknown kind {kind}")

    def _queue_end(self, failed: bool) -> None:
        self.seq += 1
        self.end_seq = self.seq
        self.unacked[self.seq] = Outgoing(-1 if failed else 0, b"", [], 0, None)
        self._send(self.seq, self.unacked[self.seq])

    def _send(self, seq: int, outgoing: Outgoing) -> None:
        if outgoing.kind <= 0:  # the end: 0 clean, -1 failed
            parts: list[Any] = [wire.end(self.session, seq, self.acked, outgoing.kind < 0)]
        else:
            header = wire.data_header(self.session, seq, self.acked, outgoing.kind)
            parts = [header, outgoing.meta, *outgoing.payload]
        lane = self.lane
        if lane is not None and lane.connected and self.acked >= self.lane_from:
            if not lane.waiting(seq):  # (a resend of what the socket has not taken yet adds nothing)
                lane.queue(seq, [wire.lane_prefix([memoryview(part).nbytes for part in parts]), *parts])
                if lane.pending_bytes >= LANE_FLUSH_BYTES:
                    self._flush_lane()  # (smaller messages are written together, by the loop)
            if self.lane is lane:  # (else it was lost, and this message went again through ZeroMQ)
                outgoing.epoch, outgoing.on_lane, outgoing.leaving = self.epoch, True, None
        else:
            leaving = self.link.send_tracked(self.peer, parts)
            if leaving is not None:
                outgoing.epoch, outgoing.on_lane, outgoing.leaving = self.epoch, False, leaving

    # --- the data lane ------------------------------------------------------------------
    def _lane_writing(self) -> bool:
        """The lane has bytes the socket has not taken yet (or is still connecting)."""
        return self.lane is not None and self.lane.wants_write()

    def _open_lane(self, status: wire.Header) -> None:
        """Connects a lane to the port the receiving end announced, unless one is open or the
        last one was lost too recently."""
        if (
            self.lane_host is None
            or not status.lane_port
            or self.lane is not None
            or time.monotonic() < self.lane_retry_at
        ):
            return
        self.lane = LaneOut(self.lane_host, status.lane_port, wire.lane_hello(self.session, status.receiver))
        if self.lane.fileno() >= 0:
            self.link.watch(self.lane.fileno(), writable=True)
            self.lane_watched_writable = True

    def _flush_lane(self) -> None:
        """Writes what the lane's socket takes; notices a lane connected, or lost."""
        lane = self.lane
        if lane is None:
            return
        was_connected = lane.connected
        if lane.failed(LANE_CONNECT_SECONDS) or not lane.flush():
            self._lose_lane(resend=was_connected)
            return
        if lane.connected and not was_connected:
            self.lane_from = self.seq
            self.lane_backoff = LANE_RETRY_SECONDS
            self.lane_first = False
        writable = lane.wants_write()
        if writable != self.lane_watched_writable:
            self.link.watch(lane.fileno(), writable=writable)
            self.lane_watched_writable = writable
        self.link.counters.lane = lane.connected and self.acked >= self.lane_from

    def _lose_lane(self, resend: bool) -> None:
        """Closes the lane; with ``resend``, what is unacknowledged goes again (through ZeroMQ):
        what the lane took may not have arrived."""
        lane, self.lane = self.lane, None
        if lane is None:
            return
        self.link.unwatch(lane.fileno())
        lane.close()
        self.link.counters.lane = self.lane_first = False
        self.lane_retry_at = time.monotonic() + self.lane_backoff
        self.lane_backoff = min(2 * self.lane_backoff, MAX_LANE_RETRY_SECONDS)
        if resend:
            self.epoch += 1
            self._resend(self.acked)

    def _resend(self, after: int, unsent_only: bool = False) -> None:
        lane = self.lane
        for seq, outgoing in list(self.unacked.items()):
            if self.lane is not lane:
                return  # the lane was lost meanwhile, and everything went again through ZeroMQ
            if seq > after and not (unsent_only and outgoing.epoch != -1):
                if outgoing.epoch != -1:  # sent before (else this is its first send)
                    self.link.counters.resent += 1
                self._send(seq, outgoing)

    # --- what the receiving end says -----------------------------------------------------
    def _read_socket(self) -> None:
        for identity, header, frames, address in self.link.incoming():
            try:
                if header.type != wire.STATUS or len(frames) != 1:
                    raise wire.Rejected(
                        f"a type-{header.type} message of {len(frames)} frames (a STATUS expected)"
                    )
                if header.session == self.session and header.last > self.seq:
                    raise wire.Rejected(
                        f"an acknowledgement of message {header.last}, never sent (last {self.seq})"
                    )
            except wire.Rejected as error:
                self.link.reject(address, str(error))
                continue
            self._on_status(identity, header)

    def _on_status(self, identity: Optional[bytes], status: wire.Header) -> None:
        regained = not self.link.connected()
        self.link.heard()
        first = self.receiver_id is None
        new_peer = status.receiver != self.receiver_id or (self.link.bind and identity != self.peer)
        if new_peer or regained:
            # Someone else, or heard again after a silence: what was in flight may be lost
            # (at first contact only what could not be sent yet: ZeroMQ took the rest to it).
            # So may a lane be (to a receiving end gone, or stalled): a new one is opened.
            if self.lane is not None:
                self._lose_lane(resend=False)
                self.lane_retry_at, self.lane_backoff = 0.0, LANE_RETRY_SECONDS
            self.receiver_id, self.peer = status.receiver, identity
            self.epoch += 1
            self.progress_at = time.monotonic()
            self._say_hello()
            if status.session != self.session:
                self._resend(self.acked, unsent_only=first)
        self._open_lane(status)
        if status.session != self.session:
            return  # a heartbeat of a receiving end that does not know this session yet (HELLO told it)
        if status.last > self.acked:
            while self.unacked and next(iter(self.unacked)) <= status.last:
                _, outgoing = self.unacked.popitem(last=False)
                self.link.counters.in_flight_bytes -= outgoing.nbytes
                if outgoing.kind > 0:
                    self.link.counters.messages += 1
                    self.link.counters.bytes += outgoing.nbytes
                    self.link.counters.lane_messages += outgoing.on_lane
            self.acked = status.last
            self.progress_at = time.monotonic()
            self.stall_wait = ACK_TIMEOUT
        if self.end_seq is not None and self.acked >= self.end_seq:
            self.done = True
            return
        if new_peer or regained:
            self._resend(self.acked, unsent_only=first)
        elif status.flags & wire.GAP and self.gap_resent_at != self.acked:
            self.gap_resent_at = self.acked
            self._resend(self.acked)
        if status.flags & wire.BUSY:
            self.progress_at = time.monotonic()  # waiting for room over there is not a stall

    def _say_hello(self) -> None:
        self.hello_at = time.monotonic()
        self.link.send(self.peer, [wire.hello(self.session, self.acked)])

    def _timers(self) -> None:
        now = time.monotonic()
        if now - self.hello_at >= HEARTBEAT_SECONDS:
            self._say_hello()
        connected = self.link.connected()
        if self.was_connected and not connected:
            self.epoch += 1  # lost: what is sent from now on may go nowhere
        self.was_connected = connected
        stalled = bool(self.unacked) and connected and now - self.progress_at > self.stall_wait
        if stalled and self._still_leaving():
            # ZeroMQ is still writing what is unacknowledged (a large message on a slow link): the
            # acknowledgements are not late yet. (On the lane the receiving end says BUSY instead.)
            self.progress_at = now
        elif stalled and (self.link.counters.last_heard or 0.0) - self.progress_at > self.stall_wait:
            # Late, and the receiving end has spoken since without acknowledging (a receiving end
            # too busy or starved of CPU to say anything is not taken for one that lost a message).
            self.stall_wait = min(2 * self.stall_wait, MAX_ACK_TIMEOUT)
            self.progress_at = now
            if self.lane is not None and self.lane.connected and self.acked >= self.lane_from:
                # Acknowledgements stopped while the lane carries: it may lead nowhere (a middlebox
                # that accepts and drops): back to ZeroMQ, which sends everything again.
                self._lose_lane(resend=True)
            else:
                self._resend(self.acked)
        if self.timeout is not None and not connected:
            since = self.link.counters.last_heard or self.started
            if now - since > self.timeout:
                raise _errors.PeerTimeout(
                    f"hakobu bridge {self._describe()}: no answer from the receiving end for {self.timeout:g} s "
                    f"(is `hakobu bridge ... --at` running there, and the address and keys right?)"
                )

    def _still_leaving(self) -> bool:
        """Whether ZeroMQ has not yet written out a message that is unacknowledged."""
        return any(o.leaving is not None and not o.leaving.done for o in self.unacked.values())

    def _describe(self) -> str:
        return f"to {self.link.endpoint}"

    # --- closing ----------------------------------------------------------------------
    def _drain_before_close(self) -> None:
        deadline = time.monotonic() + CLOSE_DRAIN_SECONDS
        while self.unacked and self.link.connected() and time.monotonic() < deadline:
            if self.link.poll(0.05):
                self._read_socket()
            self._flush_lane()

    def give_back(self) -> int:
        """Puts what was never acknowledged back into the local queue (at its end, in order);
        returns how many. A topic's messages are not put back (publishing them again would
        reach the local subscribers twice)."""
        data = [o for o in self.unacked.values() if o.kind > 0]
        self.unacked.clear()
        self.link.counters.in_flight = self.link.counters.in_flight_bytes = 0
        if self.queue is None or not data:
            return 0
        self._put_back(data)
        self.not_given_back = len(data) - self.given_back
        data.clear()  # the error's traceback must not hold the messages (and so the domain)
        if self.not_given_back:
            raise _errors.BridgeError(
                f"hakobu bridge {self._describe()}: {self.not_given_back} messages the other end had not "
                f"acknowledged could not be put back into the local queue {self.queue.name!r} (full for "
                f"{GIVE_BACK_SECONDS:g} s, its only reader being this bridge); {self.given_back} were put back. "
                f"The {self.not_given_back} others are lost: stop the producers before the bridge, or give "
                "the queue room"
            )
        return self.given_back

    def _put_back(self, data: list[Outgoing]) -> None:
        """Puts ``data`` back into the local queue, in order, counting into ``given_back``."""
        assert self.queue is not None
        # Bounded: under backpressure the local queue may be full, and its one consumer is this
        # bridge. What finds no room within GIVE_BACK_SECONDS is counted (not_given_back) and
        # reported by join(), never waited for forever.
        deadline = time.monotonic() + GIVE_BACK_SECONDS
        for outgoing in data:
            frames = [memoryview(p) if not isinstance(p, memoryview) else p for p in outgoing.payload]
            meta = memoryview(outgoing.meta)
            put = deliver.rebuild(
                self.queue._core, outgoing.kind, meta, [f.cast("B") for f in frames], 1 << 62
            )
            try:
                put(max(0.0, deadline - time.monotonic()))
            except _errors.Full:
                break
            self.given_back += 1

    def close(self, failed: bool) -> None:
        if self.lane is not None:
            self._lose_lane(resend=False)
        if self.subscriber is not None:
            self.subscriber.close()
        if self.topic_handle is not None:
            self.topic_handle.close()
        if self.queue is not None:
            self.queue.close(failed=failed)
        # Let go of the handles and of any received message: a Bridge object that lives on
        # (its stats are still read) must not keep this process attached to the domain.
        self.subscriber = self.topic_handle = self.queue = None
        self.unacked.clear()
