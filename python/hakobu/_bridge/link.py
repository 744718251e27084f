"""The ZeroMQ side of a bridge end: the socket, who the peer is, bounded receiving, warnings.

The binding end has a ROUTER socket (it may hear several peers and answers each
by its identity), the connecting end a DEALER (one peer). Both ends send only
with NOBLOCK: a bridge thread never blocks in ZeroMQ; what could not be sent is
sent again by the protocol (see sender.py). ZMTP heartbeats make ZeroMQ drop a
connection whose peer went silent (a link down), so it reconnects by itself.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from .. import _errors
from . import keys, wire

HEARTBEAT_SECONDS = 0.5  # each end makes itself heard this often
LOST_SECONDS = 3.0  # a peer not heard for this long is taken as gone (noisy VMs stall for a second)
WARN_EVERY_SECONDS = 5.0  # at most one BridgeInputWarning per bridge this often
ZAP_DOMAIN = "hakobu-bridge"  # the authentication domain of a binding end (its ZAP handler serves this one)


@dataclass
class Counters:
    """What Bridge.stats() reports; written by the bridge's thread only."""

    messages: int = 0
    bytes: int = 0
    resent: int = 0
    rejected: int = 0
    in_flight: int = 0
    in_flight_bytes: int = 0
    dropped: int = 0  # a topic subscription skipped ahead (on_full="drop_oldest")
    lane: bool = False  # messages travel on a data lane (lane.py)
    lane_messages: int = 0  # of ``messages``, those that travelled on a data lane
    last_heard: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Security:
    secret_key: Optional[str] = None
    peer_key: Optional[str] = None
    allowed_keys: Optional[str] = None


class Link:
    """One end's socket; made in the constructor's thread (so bind errors raise there), then
    used by the bridge's thread alone."""

    def __init__(
        self, endpoint: str, bind: bool, security: Security, max_frame: int, window: int, receive_hwm: int
    ) -> None:
        zmq = keys.zmq_module()
        self.zmq = zmq
        self.bind = bind
        self.context = zmq.Context()
        self.authenticator: Any = None
        self.counters = Counters()
        self.frame_cap = wire.MAX_FRAMES  # frames kept of one message (a receiving end: wire.max_frames)
        self._warned_at = -1e9
        self._unwarned = 0
        try:
            self.socket = self.context.socket(zmq.ROUTER if bind else zmq.DEALER)
            self._secure(security)
            socket = self.socket
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, max(1000, 4 * window))
            # What ZeroMQ may buffer per peer before this end reads it: each message up to
            # max_frame. A receiving end needs no more than the sender's window (give both ends
            # the same one); more from a peer waits in the peer's own buffers.
            socket.setsockopt(zmq.RCVHWM, receive_hwm)
            socket.setsockopt(zmq.MAXMSGSIZE, max_frame)  # ZeroMQ drops a peer that sends a larger frame
            socket.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
            if bind:
                socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a gone peer fails, not vanishes
                socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
                try:
                    socket.bind(endpoint)
                except zmq.ZMQError as error:
                    raise _errors.BridgeError(
                        f"cannot bind {endpoint!r}: {error} (is the port in use, or the address not this host's?)"
                    ) from None
            else:
                socket.setsockopt(zmq.IMMEDIATE, 1)  # nothing queued for a connection not made yet
                socket.setsockopt(zmq.RECONNECT_IVL, 100)
                socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
                try:
                    socket.connect(endpoint)
                except zmq.ZMQError as error:
                    raise _errors.BridgeError(f"cannot connect to {endpoint!r}: {error}") from None
            last = socket.getsockopt(zmq.LAST_ENDPOINT)
            self.endpoint: str = last.decode() if isinstance(last, bytes) and last else endpoint
            self.poller = zmq.Poller()
            self.poller.register(socket, zmq.POLLIN)
        except BaseException:
            self.close()
            raise

    def _secure(self, security: Security) -> None:
        zmq = self.zmq
        if security.secret_key is None:
            if security.peer_key is not None or security.allowed_keys is not None:
                raise _errors.BridgeError(
                    "peer_key and allowed_keys need secret_key (this end's secret key file)"
                )
            return
        if self.bind:
            if security.allowed_keys is None:
                raise _errors.BridgeError(
                    "the binding end with secret_key needs allowed_keys: a directory of the public keys "
                    "(NAME.key) of the ends allowed to connect"
                )
            keys.check_allowed_keys(security.allowed_keys)
            options = keys.server_options(security.secret_key)
            from zmq.auth.thread import ThreadAuthenticator

            self.authenticator = ThreadAuthenticator(self.context)
            self.authenticator.start()
            self.authenticator.configure_curve(domain=ZAP_DOMAIN, location=security.allowed_keys)
        else:
            if security.peer_key is None:
                raise _errors.BridgeError(
                    "the connecting end with secret_key needs peer_key: the public key file (NAME.key) of the binding end"
                )
            options = keys.client_options(security.secret_key, security.peer_key)
        for option, value in options.items():
            self.socket.setsockopt(option, value)
        if self.bind:
            self.socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())

    # --- receiving --------------------------------------------------------------------
    def poll(self, seconds: float) -> bool:
        """Waits up to ``seconds`` for the socket or a watched file descriptor (a data lane)."""
        return bool(self.poller.poll(int(seconds * 1000)))

    def watch(self, fd: int, writable: bool = False) -> None:
        """Makes poll() wake for ``fd`` too: readable, or writable (changes a watch already made)."""
        self.poller.register(fd, self.zmq.POLLOUT if writable else self.zmq.POLLIN)

    def unwatch(self, fd: int) -> None:
        if fd in self.poller:
            self.poller.unregister(fd)

    def receive(self) -> Optional[tuple[Optional[bytes], list[memoryview], str]]:
        """One message as (peer identity or None, frames, peer address), or None when none
        waits. At most ``frame_cap`` frames are kept; the rest of a longer one is read and
        dropped (then its frames are reported as [] to be rejected)."""
        zmq = self.zmq
        try:
            first = self.socket.recv(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        frames = [first]
        too_many = False
        while self.socket.getsockopt(zmq.RCVMORE):
            frame = self.socket.recv(copy=False)
            if len(frames) < self.frame_cap + 1:
                frames.append(frame)
            else:
                too_many = True
        identity = None
        if self.bind:
            identity = bytes(frames[0].buffer)
            frames = frames[1:]
        address = ""
        if frames:
            try:
                address = frames[0].get("Peer-Address")
            except (zmq.ZMQError, AttributeError, TypeError):
                address = ""
        if too_many:
            return identity, [], address
        return identity, [frame.buffer for frame in frames], address

    def incoming(
        self, most: int = 1000
    ) -> Iterator[tuple[Optional[bytes], wire.Header, list[memoryview], str]]:
        """The messages waiting, each as (peer identity, header, frames, peer address): at most
        ``most``, so that the caller's loop gets back to its timers. One with too many frames
        or a header that is not the bridge's is rejected (counted, warned) and skipped."""
        for _ in range(most):
            got = self.receive()
            if got is None:
                return
            identity, frames, address = got
            try:
                if not frames:
                    raise wire.Rejected(f"a message of more than {self.frame_cap} frames")
                header = wire.parse_header(frames[0])
            except wire.Rejected as error:
                self.reject(address, str(error))
                continue
            yield identity, header, frames, address

    # --- sending ----------------------------------------------------------------------
    def send(self, identity: Optional[bytes], parts: list[Any]) -> bool:
        """Sends without waiting; False if ZeroMQ cannot take it now (no connection, peer gone,
        queue full): the protocol sends it again later."""
        return self._send(identity, parts, track=False) is not None

    def send_tracked(self, identity: Optional[bytes], parts: list[Any]) -> Optional[Any]:
        """As send(); None if ZeroMQ cannot take it now, else a zmq.MessageTracker whose ``done``
        turns True once ZeroMQ has written the whole message to the network (so a sending end
        can tell a message still leaving over a slow link from one that left long ago)."""
        return self._send(identity, parts, track=True)

    def _send(self, identity: Optional[bytes], parts: list[Any], track: bool) -> Optional[Any]:
        zmq = self.zmq
        if self.bind:
            if identity is None:
                return None
            parts = [identity, *parts]
        # ZeroMQ writes a message's parts in order, so the last part it does not copy (pyzmq copies
        # those under copy_threshold) is released last: its tracker stands for the whole message.
        threshold = self.socket.copy_threshold
        tracked = -1
        if track:
            tracked = max(
                (k for k, part in enumerate(parts) if memoryview(part).nbytes >= threshold), default=-1
            )
        tracker = zmq.MessageTracker()  # (one without frames is done)
        try:
            if tracked < 0:
                self.socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            else:
                last = len(parts) - 1
                for k, part in enumerate(parts):
                    # Once the first part is taken, ZeroMQ takes the rest of the message.
                    flags = zmq.NOBLOCK | (zmq.SNDMORE if k < last else 0)
                    sent = self.socket.send(part, flags=flags, copy=False, track=k == tracked)
                    if k == tracked:
                        tracker = sent
        except zmq.Again:
            return None
        except zmq.ZMQError as error:
            if error.errno == zmq.EHOSTUNREACH:
                return None
            raise
        return tracker

    # --- bad input ----------------------------------------------------------------------
    def reject(self, address: str, what: str) -> None:
        """Counts a dropped input and warns about it (at most once every WARN_EVERY_SECONDS)."""
        self.counters.rejected += 1
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY_SECONDS:
            self._unwarned += 1
            return
        more = f" ({self._unwarned} more rejected since the last warning)" if self._unwarned else ""
        self._warned_at, self._unwarned = now, 0
        warnings.warn(
            f"hakobu bridge: dropped input from {wire.describe_peer(address)}: {what}{more}",
            _errors.BridgeInputWarning,
            stacklevel=2,
        )

    def heard(self) -> None:
        self.counters.last_heard = time.monotonic()

    def connected(self) -> bool:
        last = self.counters.last_heard
        return last is not None and time.monotonic() - last < LOST_SECONDS

    def close(self, linger_ms: int = 0) -> None:
        """Closes the socket; what ZeroMQ has not written yet is written for up to ``linger_ms``."""
        socket = getattr(self, "socket", None)
        if socket is not None:
            socket.close(linger=linger_ms)
        if self.authenticator is not None:
            self.authenticator.stop()
        self.context.term()
