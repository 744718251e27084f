"""iceoryx2 publish-subscribe: the array written into a loaned shared-memory sample, an event wakes the reader.

Two publish-subscribe services, ``hakobu-bench-<pid>-to`` and ``-from``, each
with a payload of bytes (``Slice[c_uint8]``) and a user header that carries
dtype and shape, and an event service of the same name that wakes the
subscriber. The sender loans a sample sized to the array from its publisher
(the loan API: the sample is shared memory the subscriber maps), copies the
array into it (the one copy: the bench hands over an array that already
exists), sends it and notifies. The peer rebuilds the array as a read-only
``np.frombuffer`` view of the received sample (no copy), answers the same way
(a loan, one copy, send, notify), and the sender returns a view of the
answer's sample too. A view keeps its sample borrowed until the array is
dropped.

Publishers start small and grow with iceoryx2's ``PowerOfTwo`` allocation
strategy (new data segments of the next power of two), so one pair of
publishers serves every shape. Waiting is ``Listener.timed_wait`` on the
event service (a blocking wait that releases the GIL), woken by the
notifier; it times out every second to check that the other side lives.

Every resource lives in a private iceoryx2 domain: a file prefix of its own
(``hakobu-bench.<pid>.iox2_``) for the shared memory in /dev/shm and the
method's work directory as root path instead of /tmp/iceoryx2, so closing
removes all of it, the domain's node registry included.
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..channel import MAX_DIMS, Channel, PeerEnd, PeerFailed

_WAKE = 1.0  # s: a wait for an event times out this often to check that the other side lives
_INITIAL_SLICE = 4096  # bytes a publisher's samples hold before the first growth
_SOCKET_PATH = 107  # bytes a Unix socket path may have (iceoryx2's events are sockets in the root path)
_DATA, _STOP = 0, 1


def _iox2() -> Any:
    import iceoryx2

    return iceoryx2


class ArrayHeader(ctypes.Structure):
    """The user header of every sample: what the payload bytes are."""

    _fields_ = [
        ("kind", ctypes.c_uint32),
        ("ndim", ctypes.c_uint32),
        ("dtype", ctypes.c_char * 16),
        ("shape", ctypes.c_uint64 * MAX_DIMS),
    ]

    @staticmethod
    def type_name() -> str:
        return "hakobu::bench::ArrayHeader"  # the name both ends must agree on


def domain_config(prefix: str, root: str) -> Any:
    """iceoryx2's default configuration, in a private domain: own file prefix, own root path."""
    iox2 = _iox2()
    config = iox2.config.default()  # not the user's iceoryx2.toml: the bench sets what it needs
    config.global_cfg.prefix = iox2.FileName.new(prefix)
    config.global_cfg.root_path = iox2.Path.new(root.rstrip("/") + "/")
    return config


class Ports:
    """One process's end: a publisher and notifier out, a subscriber and listener in."""

    def __init__(self, config: dict[str, Any], outgoing: str, incoming: str, create: bool) -> None:
        iox2 = _iox2()
        iox2.set_log_level_from_env_or(iox2.LogLevel.Error)  # quiet unless IOX2_LOG_LEVEL asks
        self.node = (
            iox2.NodeBuilder.new()
            .config(domain_config(config["prefix"], config["root"]))
            .signal_handling_mode(iox2.SignalHandlingMode.Disabled)  # Ctrl-C stays the bench's
            .create(iox2.ServiceType.Ipc)
        )
        self.services = [self.service(outgoing, create), self.service(incoming, create)]
        events = [self.event(outgoing, create), self.event(incoming, create)]
        self.services += events
        self.publisher = (
            self.services[0]
            .publisher_builder()
            .initial_max_slice_len(max(_INITIAL_SLICE, int(config["largest"])))
            .allocation_strategy(iox2.AllocationStrategy.PowerOfTwo)  # grows for larger arrays
            .create()
        )
        self.notifier = events[0].notifier_builder().create()
        self.subscriber = self.services[1].subscriber_builder().create()
        self.listener = events[1].listener_builder().create()
        self.wake = iox2.Duration.from_secs_f64(_WAKE)

    def service(self, name: str, create: bool) -> Any:
        iox2 = _iox2()
        builder = (
            self.node.service_builder(iox2.ServiceName.new(name))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .user_header(ArrayHeader)
            .payload_alignment(iox2.Alignment.new(64))  # arrays start on a cache line
            .max_publishers(1)
            .max_subscribers(1)
            .max_nodes(2)
        )
        # The subscriber's buffer and borrowed samples keep iceoryx2's defaults (2): with
        # fewer, a publisher cannot grow its data segment more than once (LoanError.OutOfMemory).
        return builder.create() if create else builder.open()

    def event(self, name: str, create: bool) -> Any:
        builder = self.node.service_builder(_iox2().ServiceName.new(name)).event().max_nodes(2)
        return builder.create() if create else builder.open()

    def publish(self, array: Optional[np.ndarray]) -> None:
        """Loans a sample sized to ``array``, copies the array into it, sends it and notifies."""
        nbytes = 0 if array is None else array.nbytes
        sample = self.publisher.loan_slice_uninit(nbytes)
        header = sample.user_header().contents
        if array is None:
            header.kind = _STOP
        else:
            if array.ndim > MAX_DIMS:
                raise ValueError(f"at most {MAX_DIMS} dimensions")
            header.kind, header.ndim, header.dtype = _DATA, array.ndim, array.dtype.str.encode()
            for axis, extent in enumerate(array.shape):
                header.shape[axis] = extent
            if nbytes:
                memory = (ctypes.c_uint8 * nbytes).from_address(sample.payload_ptr)
                np.ndarray(array.shape, array.dtype, buffer=memoryview(memory))[...] = (
                    array  # into shared memory
                )
                del memory
        sample.assume_init().send()
        self.notifier.notify()

    def take(self, check: Callable[[], None]) -> Any:
        """The next sample, waiting for the notifier (None for the stop message)."""
        while True:
            sample = self.subscriber.receive()
            if sample is not None:
                break
            if not self.listener.timed_wait(self.wake):
                check()
        return None if sample.user_header().contents.kind == _STOP else sample

    @staticmethod
    def view(sample: Any) -> np.ndarray:
        """The array of a sample: a read-only view of its shared memory, no copy."""
        header = sample.user_header().contents
        dtype = np.dtype(header.dtype.decode())
        shape = tuple(int(header.shape[axis]) for axis in range(header.ndim))
        nbytes = int(sample.header.number_of_elements)  # bytes, for a slice of u8
        memory = (ctypes.c_uint8 * nbytes).from_address(sample.payload_ptr)
        memory._sample = sample  # type: ignore[attr-defined]  # the view keeps its sample borrowed
        array: np.ndarray = np.frombuffer(memoryview(memory), dtype).reshape(shape)
        array.flags.writeable = False  # the publisher's memory: read, never write
        return array

    def close(self) -> None:
        """Drops the ports, the services and the node (iceoryx2 removes what they own)."""
        for port in (self.publisher, self.notifier, self.subscriber, self.listener):
            port.delete()
        self.services.clear()
        del self.node


class Iceoryx2Peer(PeerEnd):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.ports = Ports(config, config["from"], config["to"], create=False)
        self.ports.notifier.notify()  # ready: the subscriber is connected, samples will not be lost

    def receive_raw(self) -> Any:
        return self.ports.take(lambda: None)  # the parent watch ends this process if the bench dies

    def rebuild(self, raw: Any) -> np.ndarray:
        return self.ports.view(raw)

    def send_back(self, array: np.ndarray) -> None:
        self.ports.publish(array)

    def close(self) -> None:
        self.ports.close()


class Iceoryx2PubSub(Channel):
    name = "iceoryx2"
    label = "iceoryx2 pub/sub (loan)"
    order = 71
    description = (
        "iceoryx2 publish-subscribe of a u8 slice + dtype/shape user header: the array copied into a loaned"
        " shared-memory sample, event notification; the receiver views the sample (no copy)"
    )
    requires = ("iceoryx2",)
    install = "pip install iceoryx2"
    peer_end = Iceoryx2Peer
    ports: Optional[Ports] = None
    own_root: Optional[Path] = None  # a short root path, when the work directory's is too long
    prefix = ""  # the private domain's file prefix, once started

    def start(self) -> None:
        prefix = f"hakobu-bench.{os.getpid()}.iox2_"
        root = self.workdir
        # An event's socket is ROOT/PREFIX<40 characters>.event, and socket paths are short.
        if len(str(root)) + 1 + len(prefix) + 40 > _SOCKET_PATH:
            root = self.own_root = Path(tempfile.mkdtemp(prefix="hb-iox2-", dir="/tmp"))
        self.prefix = prefix
        base = f"hakobu-bench-{os.getpid()}"
        # Publishers are sized for the run's largest message up front: a data segment can
        # only be grown a few times (a run from 64 B to 1 GiB ran out: LoanError.OutOfMemory).
        config: dict[str, Any] = {
            "prefix": prefix,
            "root": str(root),
            "to": f"{base}-to",
            "from": f"{base}-from",
            "largest": self.largest_message,
        }
        self.ports = Ports(config, config["to"], config["from"], create=True)
        self.spawn_peer(config)
        # The peer's notification says its subscriber is connected: nothing sent is lost.
        self.wait_until(self.ready, "connecting")

    def ready(self) -> Optional[bool]:
        assert self.ports is not None
        return True if self.ports.listener.try_wait() else None

    def send(self, array: np.ndarray) -> None:
        assert self.ports is not None
        self.ports.publish(array)

    def receive(self) -> np.ndarray:
        assert self.ports is not None
        sample = self.ports.take(self.check_peer)
        if sample is None:
            raise PeerFailed(f"the {self.name} peer sent a stop message")
        return self.ports.view(sample)  # read-only; the answer's sample stays borrowed until it is dropped

    def close(self) -> None:
        try:
            if self.ports is not None and self.peer_alive():
                try:
                    self.ports.publish(None)  # tells the peer to finish
                except Exception:  # noqa: BLE001 - a broken channel: the peer is stopped below anyway
                    pass
            self.stop_peer()
        finally:
            if self.ports is not None:
                self.ports.close()
                self.ports = None
            # The domain is this run's alone: whatever is left under its prefix (the node
            # registry iceoryx2 keeps, or the segments of a peer that was killed) goes.
            for path in glob.glob(f"/dev/shm/{glob.escape(self.prefix)}*") if self.prefix else []:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            if self.own_root is not None:
                shutil.rmtree(self.own_root, ignore_errors=True)


METHOD = Iceoryx2PubSub
