"""hakobu.Bridge: a queue or a topic carried to another host over ZeroMQ."""

from __future__ import annotations

import threading
import time
from typing import Any, Optional, Union

from .. import _checks, _errors
from . import wire
from .lane import LaneListener, tcp_host
from .link import Link, Security
from .receiver import ReceivingEnd
from .sender import SendingEnd

# How long closing a receiving end may take to write its last acknowledgements (ZeroMQ's linger):
# nothing when they are out already, at most this when the sending end cannot be reached.
CLOSING_ACKNOWLEDGEMENTS_MS = 1000


class Bridge:
    """Carries the local queue (or topic) ``name`` to or from another host, over ZeroMQ.

    Give exactly one of ``send_to`` and ``receive_at`` (ZeroMQ endpoints,
    ``tcp://host:port``). ``send_to``: this end reads the local queue ``name``
    (with ``topic=True``: subscribes to the local topic) and sends each message
    to the other end; it connects by default. ``receive_at``: this end puts each
    message it receives into the local queue ``name`` (publishes it on the local
    topic); it binds by default. ``bind=True/False`` says otherwise: either end
    may be the one that binds (``tcp://*:port``; port 0 or ``*`` picks a free
    one, ``endpoint`` tells which).

    Messages keep their kind, dtype and shape. Objects travel as their pickle
    and are unpickled by the final consumer only (as its queue's
    ``allow_pickle`` says), never by a bridge. Arrays leave shared memory without
    a copy and are written once into the receiving host's heap.

    Nothing is lost or duplicated by a network fault: the sending end keeps
    what the receiving end has not acknowledged (at most ``window`` messages and
    ``window_bytes`` bytes; while that is full it stops reading its local
    queue, whose producers then block) and sends it again after a reconnect;
    the receiving end drops what it has delivered already. When the local
    stream ends (``hakobu.EndOfStream``), the end travels too: the receiving
    end closes its sending handle of its queue (``failed=True`` after
    SendersLost), so its consumers see the end; then both bridges end.

    Input from the network is checked (versioned frames, sizes before any
    allocation, messages larger than ``max_message_bytes``: by default the
    local queue's ``max_bytes``, else 1 GiB); what fails is dropped, counted in
    ``stats()["rejected"]`` and warned about (BridgeInputWarning), and the bridge
    goes on.

    CurveZMQ (encryption and authentication): ``secret_key`` is this end's
    secret key file (``hakobu bridge keys DIR`` writes a pair), ``peer_key``
    the binding end's public key file (on the connecting end), ``allowed_keys``
    a directory of the public keys the binding end accepts. Without keys the
    bridge is plain TCP: for trusted networks only.

    Object messages (pickles, which a consumer's ``get()`` unpickles: code
    execution for whoever wrote them) are delivered by a receiving end only
    when it authenticates its peers (``allowed_keys`` on a binding end,
    ``peer_key`` on a connecting one) or ``allow_objects=True`` says the
    network is trusted; otherwise each is dropped, counted in ``rejected`` and
    warned about. Arrays and bytes flow either way.

    The data lane: without keys, a receiving end that binds also listens on a
    TCP port (``lane_port``, 0: any free one; ``lane_port`` attribute) on the
    address it binds, and a sending end that reaches it carries the messages
    there instead of through ZeroMQ, so each payload is read straight into
    its block (ZeroMQ would copy it once more). ZeroMQ still carries the
    acknowledgements and heartbeats, and everything when the lane cannot be
    reached (a filtered port: the bridge falls back by itself). ``lane=False``
    keeps everything in ZeroMQ.

    ``timeout``: seconds without hearing from the peer after which the bridge
    stops with PeerTimeout (None: keep trying). The bridge runs in a background
    thread from construction; ``join()`` waits for its end, ``close()`` stops it
    (what was not acknowledged goes back into the local queue), ``with`` closes
    on exit.
    """

    def __init__(
        self,
        name: str,
        *,
        send_to: Optional[str] = None,
        receive_at: Optional[str] = None,
        topic: bool = False,
        bind: Optional[bool] = None,
        domain: Optional[str] = None,
        secret_key: Optional[Union[str, Any]] = None,
        peer_key: Optional[Union[str, Any]] = None,
        allowed_keys: Optional[Union[str, Any]] = None,
        window: int = 64,
        window_bytes: int = 256 * 2**20,
        max_message_bytes: Optional[int] = None,
        timeout: Optional[float] = None,
        allow_objects: bool = False,
        lane: bool = True,
        lane_port: int = 0,
    ) -> None:
        _checks.name(name, "topic" if topic else "queue")
        if (send_to is None) == (receive_at is None):
            raise _errors.InvalidArgument(
                "give exactly one of send_to= (this end sends: the other end's address) and "
                "receive_at= (this end receives: its own address), e.g. receive_at='tcp://*:5555'"
            )
        endpoint = send_to if send_to is not None else receive_at
        if not isinstance(endpoint, str) or "://" not in endpoint:
            raise _errors.InvalidArgument(
                f"a ZeroMQ endpoint such as 'tcp://host:5555' is needed, got {endpoint!r}"
            )
        self.sending = send_to is not None
        binds = (not self.sending) if bind is None else _checks.flag(bind, "bind")
        window = _positive(window, "window")
        window_bytes = _positive(window_bytes, "window_bytes")
        if max_message_bytes is not None:
            max_message_bytes = _positive(max_message_bytes, "max_message_bytes")
        if timeout is not None:
            timeout = _checks.duration(timeout, "timeout")
        self.name = name
        self.topic = _checks.flag(topic, "topic")
        allow_objects = _checks.flag(allow_objects, "allow_objects")
        lane = _checks.flag(lane, "lane")
        if type(lane_port) is not int or not 0 <= lane_port <= 65535:
            raise _errors.InvalidArgument(
                f"lane_port must be an int from 0 (any free port) to 65535, got {lane_port!r}"
            )
        security = Security(
            None if secret_key is None else str(secret_key),
            None if peer_key is None else str(peer_key),
            None if allowed_keys is None else str(allowed_keys),
        )
        # The largest frame the receiving end lets ZeroMQ take (a chunk: a peer's larger frame
        # is refused before anything is allocated for it); a sending end hears small STATUS frames.
        frame_limit = wire.LARGEST_FRAME if not self.sending else 65536
        self._stop = threading.Event()
        # Set by the thread as its very last step. Waited on instead of Thread.join: a join
        # that Ctrl-C interrupts can leave the Thread looking ended while it still runs (CPython
        # 3.11), and close() must not return before the unacknowledged messages are back.
        self._finished = threading.Event()
        self._error: Optional[BaseException] = None
        receive_hwm = 1000 if self.sending else window + 8  # a sending end hears only STATUS messages
        self._link = Link(endpoint, binds, security, frame_limit, window, receive_hwm)
        # The data lane is plain TCP: only without keys. A receiving end listens for it where it
        # binds ZeroMQ; a sending end connects to the port the receiving end announces.
        lane = lane and security.secret_key is None
        listener: Optional[LaneListener] = None
        try:
            lane_host = tcp_host(self._link.endpoint)
            if lane and binds and not self.sending and lane_host is not None:
                try:
                    listener = LaneListener(lane_host, lane_port)
                except OSError as error:
                    raise _errors.BridgeError(
                        f"cannot listen for the data lane on {lane_host or '*'}:{lane_port}: {error} "
                        "(give another lane_port=, or lane=False to carry everything through ZeroMQ)"
                    ) from None
            self._end: Union[SendingEnd, ReceivingEnd]
            if self.sending:
                self._end = SendingEnd(
                    self._link, name, self.topic, domain, window, window_bytes, timeout, self._stop, lane=lane
                )
            else:
                # CurveZMQ authenticates the peer: the binding end by its allowed keys, the
                # connecting end by the binding end's key.
                authenticated = (allowed_keys if binds else peer_key) is not None
                receiving = ReceivingEnd(
                    self._link,
                    name,
                    self.topic,
                    domain,
                    max_message_bytes,
                    timeout,
                    self._stop,
                    allow_objects=allow_objects or authenticated,
                    lane=listener,
                )
                self._end = receiving
                self._link.frame_cap = wire.max_frames(receiving.limit)
        except BaseException:
            if listener is not None:
                listener.close()
            self._link.close()
            raise
        self.endpoint: str = self._link.endpoint
        self.lane_port: Optional[int] = listener.port if listener is not None else None
        self._thread = threading.Thread(target=self._run, name=f"hakobu-bridge-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._end.run()
        except BaseException as error:  # noqa: BLE001 - handed to join()
            self._error = error
        finally:
            try:
                if isinstance(self._end, SendingEnd):
                    try:
                        if not self._end.done:
                            self._end.give_back()
                    finally:
                        self._end.close(failed=False)
                else:
                    self._end.close()
            except BaseException as error:  # noqa: BLE001
                if self._error is None:
                    self._error = error
            finally:
                # A receiving end's last acknowledgements (the end of the stream's, sent just before
                # its program closes it) still go out; a sending end has nothing to write that matters.
                self._link.close(0 if self.sending else CLOSING_ACKNOWLEDGEMENTS_MS)
                self._finished.set()

    # --- the public API ---------------------------------------------------------------
    def join(self, timeout: Optional[float] = None) -> bool:
        """Waits for the bridge to end (the stream ended, or close()); at most ``timeout``
        seconds (None: no limit). Returns True when it ended; re-raises what stopped it."""
        limit = None if timeout is None else _checks.timeout(timeout)
        if not self._finished.wait(limit):
            return False
        if self._error is not None:
            raise self._error
        return True

    def close(self) -> None:
        """Stops the bridge. On the sending end, messages not acknowledged by the other end go
        back into the local queue (nothing is lost; a message the other end received but whose
        acknowledgement was still on its way arrives twice). A receiving end closes its
        sending handle of the local queue as failed if the stream had not ended."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._finished.wait()

    @property
    def running(self) -> bool:
        return not self._finished.is_set()

    def stats(self) -> dict[str, Any]:
        """messages and bytes carried (acknowledged by the receiving end, or delivered here),
        resent, rejected (bad input dropped), connected (the peer was heard lately),
        in_flight (sent, not acknowledged), in_flight_bytes, dropped (a topic subscription
        skipped ahead), given_back (put back into the local queue on close), lane (messages
        travel on the data lane now), lane_messages (of messages, those that travelled on
        it), role, endpoint."""
        counters = self._link.counters
        return {
            "messages": counters.messages,
            "bytes": counters.bytes,
            "resent": counters.resent,
            "rejected": counters.rejected,
            "connected": self._link.connected() and not self._finished.is_set(),
            "in_flight": counters.in_flight,
            "in_flight_bytes": counters.in_flight_bytes,
            "dropped": counters.dropped,
            "given_back": self._end.given_back if isinstance(self._end, SendingEnd) else 0,
            "not_given_back": self._end.not_given_back if isinstance(self._end, SendingEnd) else 0,
            "lane": counters.lane and not self._finished.is_set(),
            "lane_messages": counters.lane_messages,
            "role": "send" if self.sending else "receive",
            "endpoint": self.endpoint,
            "running": not self._finished.is_set(),
            "uptime": time.monotonic() - (self._end.started if hasattr(self._end, "started") else 0.0),
        }

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "send_to" if self.sending else "receive_at"
        kind = "topic" if self.topic else "queue"
        return f"hakobu.Bridge({self.name!r} {kind}, {role}={self.endpoint!r}, running={self.running})"


def _positive(value: object, what: str) -> int:
    if type(value) is not int or value <= 0:
        raise _errors.InvalidArgument(f"{what} must be an int > 0, got {value!r}")
    return value
