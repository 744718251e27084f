"""Fan-out: one publisher, 1, 2 and 4 subscriber programs: hakobu.Topic beside ZeroMQ PUB/SUB,
iceoryx2, Ray and multiprocessing, in the same run.

The situation
-------------
A publisher (this process) sends messages of 64 B, 1 MiB, 64 MiB and 1 GiB; 1,
2 and 4 subscribers, each a separate process started before the first message,
receive every one. A message is a NumPy ``uint64`` array at NumPy's natural
alignment (hakobu zero-copy: one made with ``hakobu.empty``); its first and
last elements carry a tag (the message's number) and its second what it is
for, so each subscriber checks that it holds the message it should, whole.

* **latency**, per subscriber: from the moment the publisher starts publishing
  (the array is made and filled already) to the moment a subscriber holds a
  view of it (an ndarray of the message), both read from the system-wide
  monotonic clock (``time.monotonic_ns``). One message at a time: the next is
  published once every subscriber has reported the previous one (the reports
  travel on the subscriber's own pipe, after its clock was read). Median and
  p90 over every subscriber and repeat, and the median of the slowest
  subscriber per message ("last").
* **publish call**: how long the publisher's call (or calls: one per
  subscriber where the method has no fan-out) takes, median over the repeats.
  It shows what the publisher pays per subscriber.
* **throughput**: a stream of M messages published back to back;
  M × subscribers × size ÷ (the time the last subscriber holds the last
  message - the first publish). Nothing may be lost: every subscriber counts M.
  The copy methods publish the same array M times (it is not written while
  the method may still read it); hakobu zero-copy makes a new ``hakobu.empty``
  array per message, as a producer of frames does, and writes only its tags
  (what a producer writes into its frame is its own work, not the transport's).
  Its "throughput" is thus bytes made visible to subscribers per second, not
  bytes moved: it grows with the size because nothing is copied. An untimed
  stream of up to 3 messages goes first (memory for messages in flight is
  touched there, not in the timed stream).

Methods
-------
* hakobu (copy): ``hakobu.Topic(name).publish(array)`` of an ordinary NumPy
  array: one copy into shared memory, whatever the number of subscribers;
  each subscriber ``topic.subscribe(on_full="block")`` and ``sub.get()``
  returns a read-only view of the one block.
* hakobu (zero-copy): the same, the array made with ``hakobu.empty``: its block
  is published by reference, no copy.
* ZeroMQ PUB/SUB over ``ipc://``: ``send(array, copy=False)``, subscribers
  ``recv(copy=False)`` and view the frame with ``np.frombuffer(frame.buffer)``.
  The high-water marks are 0 (no limit) on both ends, so nothing is dropped in
  the stream (ZeroMQ drops at the HWM silently otherwise); the kernel copies the
  message once per subscriber through its socket.
* iceoryx2 publish-subscribe from Python (iceoryx2's loan API, as in
  ``hakobu_bench.methods.iceoryx2_pubsub``): the publisher loans a sample,
  copies the array into it (from Python a sample is filled by a copy), sends it
  and notifies an event service; subscribers view the sample without a copy.
  The service never overflows and the publisher retries until delivered, so
  nothing is dropped.
* Ray object store: ``ray.put(array)`` once per message (one copy into the
  object store), then one task per subscriber actor (a Ray worker process)
  that takes it with ``ray.get``: a read-only view of the object store.
* multiprocessing: one ``multiprocessing.Queue`` per subscriber (spawned
  processes); the publisher puts the array into each queue (each put is
  pickled by the queue's feeder thread, after ``put`` returned: a copy per
  subscriber, then one more as the subscriber unpickles it).

A method that cannot take a size here (not enough memory or /dev/shm for its
copies) is skipped with the reason; a missing library skips the method.
multiprocessing skips 1 GiB unless sizes are named (``--sizes``): about 4.6 s
per message and subscriber here, minutes for the default run.

Subscribers block (``on_full="block"``, no high-water mark, iceoryx2 retrying):
nothing is dropped, so every figure is of messages that all arrived. With more
subscriber processes than cores, the last ones to run wait for a core: the
"slowest" column shows it.

Run: python -m hakobu_bench.micro.fanout [--subscribers 1,2,4] [--sizes 64B,1MiB,64MiB,1GiB]
         [--methods ...] [--repeat N] [--quick] [--json FILE]
The same measurement runs as ``hakobu bench --fanout [COUNTS]``.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.util
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..channel import as_bytes
from ..machine import with_versions as machine
from ..methods.iceoryx2_pubsub import ArrayHeader, Ports, domain_config
from ..report import format_time, versions
from .store import Program, enough_memory, say

MODULE = "hakobu_bench.micro.fanout"  # subscribers run this module again (python -m)
STEP_TIMEOUT = 300.0  # s a subscriber may take to report before the run is declared stuck (a watchdog)
POLL = 1.0  # s: a waiting subscriber wakes up this often to check that the publisher lives

# What a message is for (its element 1; a stream message adds its length times 256).
HELLO, PING, STREAM, STOP = 1, 2, 3, 4
CONTROL_ELEMENTS = 16  # HELLO and STOP messages: 128 bytes

SIZES = {"64B": 64, "1MiB": 1 << 20, "64MiB": 64 << 20, "1GiB": 1 << 30}
QUICK_SIZES = ("64B", "1MiB")
SUBSCRIBERS = (1, 2, 4)
# Per size: (latency repeats, stream messages), default and --quick.
REPEATS = {64: (200, 1000), 1 << 20: (40, 100), 64 << 20: (5, 6), 1 << 30: (3, 2)}
QUICK_REPEATS = (5, 10)
WARMUP = 2  # untimed messages first (each size; 1 from 64 MiB)
STREAM_WARMUP = 3  # untimed stream messages first (each size)
BIG = 64 << 20  # from this size on, one untimed latency message is enough

GOAL_HANDOFF_US = 100.0  # a 1 GiB hakobu.empty array reaches each of 4 subscribers within this
GOAL_THROUGHPUT_RATIO = 5.0  # 64 MiB with a copy to 4 subscribers: hakobu's throughput ÷ ZeroMQ's
GOAL_WAKE_US = 10.0  # what one more subscriber may add to a publish call: one wake-up (a generous bound)
JUDGED_CALL_US = 200.0  # publish calls longer than this (copies of megabytes) are shown, not judged


def parse_size(text: str) -> int:
    """64B, 1MiB, 64MiB, 1GiB, or a number of bytes (a multiple of 8, at least 24)."""
    size = SIZES.get(text)
    if size is None:
        try:
            size = int(text)
        except ValueError:
            raise ValueError(f"unknown size {text!r}: use {', '.join(SIZES)} or a number of bytes") from None
    if size < 24 or size % 8:
        raise ValueError(f"a message size must be a multiple of 8 bytes, at least 24 (got {size})")
    return size


def size_name(size: int) -> str:
    return next((name for name, value in SIZES.items() if value == size), f"{size}B")


# --- messages ----------------------------------------------------------------------------------


def stamp(array: np.ndarray, tag: int, kind: int, count: int = 0) -> np.ndarray:
    """Writes the tag (first and last element) and what the message is for (second)."""
    array[0] = tag
    array[1] = kind | (count << 8)
    array[-1] = tag
    return array


def control(kind: int) -> np.ndarray:
    return stamp(np.zeros(CONTROL_ELEMENTS, np.uint64), 0, kind)


class Tally:
    """A subscriber's bookkeeping, the same in every method: what to report for each message."""

    def __init__(self) -> None:
        self.greeted = False
        self.stream_tag = -1
        self.stream_count = 0

    def on_message(self, view: np.ndarray, viewed_ns: int) -> Optional[dict[str, Any]]:
        """The report for a message held since ``viewed_ns`` (None: nothing to report yet)."""
        if not isinstance(view, np.ndarray) or view.dtype != np.uint64 or view.ndim != 1 or len(view) < 3:
            return {
                "error": f"received {type(view).__name__} {getattr(view, 'dtype', '')}, not a uint64 array"
            }
        tag, code, last = int(view[0]), int(view[1]), int(view[-1])
        kind = code & 0xFF
        if tag != last:
            return {"error": f"a torn message: first tag {tag}, last {last}"}
        if kind == HELLO:
            if self.greeted:
                return None
            self.greeted = True
            return {"hello": True}
        if kind == PING:
            return {
                "tag": tag,
                "view_ns": viewed_ns,
                "bytes": view.nbytes,
                "writeable": bool(view.flags.writeable),
            }
        if kind == STREAM:
            if tag != self.stream_tag:
                self.stream_tag, self.stream_count = tag, 0
            self.stream_count += 1
            if self.stream_count == code >> 8:
                return {"stream": tag, "view_ns": viewed_ns, "count": self.stream_count}
            return None
        if kind == STOP:
            return {"stop": True}
        return {"error": f"unknown message kind {kind}"}


def parent_gone(parent: int) -> bool:
    return os.getppid() != parent


# --- subscriber programs (python -m hakobu_bench.micro.fanout --subscriber METHOD) ---------------


def serve(
    receive: Callable[[], Any], view_of: Callable[[Any], np.ndarray], release: Callable[[Any], None]
) -> None:
    """A subscriber's loop: receive, read the clock once it holds a view, report, let go."""
    tally = Tally()
    while True:
        raw = receive()
        view = view_of(raw)
        viewed = time.monotonic_ns()
        report = tally.on_message(view, viewed)
        # Let go before the next receive: the block (or sample) goes back while this waits.
        del view
        release(raw)
        del raw
        if report is not None:
            say(report)
            if "stop" in report or "error" in report:
                return


def subscribe_hakobu(config: dict[str, Any]) -> None:
    import hakobu

    topic = hakobu.Topic(config["name"])
    subscription = topic.subscribe(on_full="block")
    parent = os.getppid()
    say({"ready": os.getpid()})

    def receive() -> Any:
        while True:
            try:
                return subscription.get(timeout=POLL)
            except hakobu.Empty:
                if parent_gone(parent):
                    raise SystemExit(1) from None

    try:
        serve(receive, lambda message: message, lambda message: None)
    finally:
        subscription.close()
        topic.close()


def subscribe_zeromq(config: dict[str, Any]) -> None:
    import zmq

    context = zmq.Context()
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)  # no limit: nothing is dropped
    sock.setsockopt(zmq.RCVTIMEO, int(POLL * 1000))
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(config["address"])
    parent = os.getppid()
    say({"ready": os.getpid()})

    def receive() -> Any:
        while True:
            try:
                return sock.recv(copy=False)
            except zmq.Again:
                if parent_gone(parent):
                    raise SystemExit(1) from None

    try:
        serve(receive, lambda frame: np.frombuffer(frame.buffer, np.uint64), lambda frame: None)
    finally:
        sock.close(linger=0)
        context.term()


class FanoutPorts(Ports):
    """iceoryx2 ports of one fan-out end: the publisher's (publisher, notifier) or a subscriber's
    (subscriber, listener), on one publish-subscribe service and one event service.

    ``publish``, ``take`` and ``view`` are the round-trip method's; only the
    services differ: up to ``subscribers`` subscribers, no overflow (a full
    subscriber buffer makes the publisher retry, nothing is lost).
    """

    def __init__(self, config: dict[str, Any], publisher: bool) -> None:
        import iceoryx2 as iox2

        iox2.set_log_level_from_env_or(iox2.LogLevel.Error)
        self.is_publisher = publisher
        self.node = (
            iox2.NodeBuilder.new()
            .config(domain_config(config["prefix"], config["root"]))
            .signal_handling_mode(iox2.SignalHandlingMode.Disabled)
            .create(iox2.ServiceType.Ipc)
        )
        subscribers = int(config["subscribers"])
        name = iox2.ServiceName.new(config["service"])
        data = (
            self.node.service_builder(name)
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .user_header(ArrayHeader)
            .payload_alignment(iox2.Alignment.new(64))
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(2)
            .subscriber_max_borrowed_samples(1)
            .max_publishers(1)
            .max_subscribers(subscribers)
            .max_nodes(subscribers + 1)
        )
        events = self.node.service_builder(name).event().max_nodes(subscribers + 1).max_listeners(subscribers)
        self.services = [data.create(), events.create()] if publisher else [data.open(), events.open()]
        self.wake = iox2.Duration.from_secs_f64(POLL)
        if publisher:
            self.publisher = (
                self.services[0]
                .publisher_builder()
                .initial_max_slice_len(int(config["largest"]))
                .allocation_strategy(iox2.AllocationStrategy.PowerOfTwo)
                .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
                .max_loaned_samples(1)
                .create()
            )
            self.notifier = self.services[1].notifier_builder().create()
        else:
            self.subscriber = self.services[0].subscriber_builder().create()
            self.listener = self.services[1].listener_builder().create()

    def publish(self, array: Optional[np.ndarray]) -> None:
        """Ports.publish, waiting while every sample is still in use (LoanError.OutOfMemory).

        A sample a subscriber released comes back to the publisher's pool a moment
        later; until then a loan can fail although nothing is lost. A user retries.
        """
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            try:
                super().publish(array)
                return
            except Exception as error:  # iceoryx2's LoanError is retried, anything else raised
                if type(error).__name__ != "LoanError" or "OutOfMemory" not in str(error):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0)

    def close(self) -> None:
        ports = (self.publisher, self.notifier) if self.is_publisher else (self.subscriber, self.listener)
        for port in ports:
            port.delete()
        self.services.clear()
        del self.node


def iceoryx2_segment_bytes(size: int, subscribers: int) -> int:
    """The shared memory an iceoryx2 publisher reserves for samples of ``size`` bytes.

    iceoryx2 sizes its data segment for every sample that may be alive at once:
    each subscriber's buffer and borrowed samples, and the publisher's loans.
    """
    samples = subscribers * (2 + 1) + 1
    return samples * (size + 4096)


def subscribe_iceoryx2(config: dict[str, Any]) -> None:
    ports = FanoutPorts(config, publisher=False)
    parent = os.getppid()
    say({"ready": os.getpid()})

    def check() -> None:
        if parent_gone(parent):
            raise SystemExit(1)

    def view_of(sample: Any) -> np.ndarray:
        return control(STOP) if sample is None else ports.view(sample)

    try:
        serve(lambda: ports.take(check), view_of, lambda sample: None)
    finally:
        ports.close()


def subscribe_mp(inbox: Any, outbox: Any) -> None:
    """A multiprocessing subscriber (spawned): messages from ``inbox``, reports to ``outbox``."""
    parent = os.getppid()
    outbox.put({"ready": os.getpid()})
    tally = Tally()
    while True:
        try:
            array = inbox.get(timeout=POLL)
        except queue.Empty:
            if parent_gone(parent):
                return
            continue
        report = tally.on_message(array, time.monotonic_ns())
        del array
        if report is not None:
            outbox.put(report)
            if "stop" in report or "error" in report:
                return


SUBSCRIBE = {"hakobu": subscribe_hakobu, "zeromq": subscribe_zeromq, "iceoryx2": subscribe_iceoryx2}


# --- the publisher's side of each method ---------------------------------------------------------


class Method:
    """One way to fan out: starts its subscribers, publishes, hears one report from each."""

    name = ""
    label = ""
    requires = ""  # the module it needs ("": none)
    copies = 1.0  # how many copies of a message (per subscriber: + copies_each) must fit in memory
    copies_each = 0.0
    needs_hello = False  # subscribers may miss what is published before they are connected
    min_repeats = 0  # latency repeats at least, whatever the size (when a message costs no copy)
    default_max_bytes: Optional[int] = (
        None  # larger sizes only when asked for by name (too slow for the default run)
    )
    program = ""  # the subscriber program (--subscriber), when not the method's name

    def __init__(self, workdir: Path, subscribers: int, largest: int) -> None:
        self.workdir = workdir
        self.subscribers = subscribers
        self.largest = largest
        self.programs: list[Program] = []

    @classmethod
    def missing(cls) -> Optional[str]:
        if cls.requires and importlib.util.find_spec(cls.requires) is None:
            return f"{cls.requires} is not installed (pip install './bench/python[peers]')"
        return None

    @classmethod
    def refuses(cls, size: int, subscribers: int) -> Optional[str]:
        return enough_memory(size, cls.copies + cls.copies_each * subscribers)

    def source(self, size: int) -> np.ndarray:
        """The array the latency test publishes (filled: its pages are in memory before the clock)."""
        return np.ones(size // 8, np.uint64)

    def stream_array(self, source: np.ndarray, tag: int, count: int) -> np.ndarray:
        """A stream message: the same array every time (the copy methods never write it meanwhile)."""
        if int(source[0]) != tag:
            stamp(source, tag, STREAM, count)
        return source

    def start_programs(self, config: dict[str, Any]) -> None:
        for _ in range(self.subscribers):
            command = [
                sys.executable,
                "-m",
                MODULE,
                "--subscriber",
                self.program or self.name,
                "--config",
                json.dumps(config),
            ]
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.programs.append(Program(process))
        for program in self.programs:
            program.receive()  # ready

    def start(self) -> None:
        raise NotImplementedError

    def publish(self, array: np.ndarray) -> None:
        raise NotImplementedError

    def reports(self) -> list[dict[str, Any]]:
        """One report from each subscriber, in subscriber order."""
        return [program.receive() for program in self.programs]

    def greet(self) -> None:
        """Publishes HELLO until every subscriber heard one: it is connected, nothing later is lost."""
        if not self.needs_hello:
            return
        hello = control(HELLO)
        waiting = set(range(len(self.programs)))
        deadline = time.monotonic() + STEP_TIMEOUT
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: subscribers {sorted(waiting)} never heard a message")
            self.publish(hello)
            for index in sorted(waiting):
                try:
                    line = self.programs[index].lines.get(timeout=0.02)
                except queue.Empty:
                    continue
                if not line:
                    raise RuntimeError(f"{self.name}: subscriber {index} ended")
                if "hello" not in json.loads(line):
                    raise RuntimeError(f"{self.name}: subscriber {index} said {line.strip()}")
                waiting.discard(index)

    def stop(self) -> None:
        """Asks the subscribers to finish (a STOP message), then makes sure they did."""
        try:
            self.publish(control(STOP))
        except Exception:  # noqa: BLE001 - a broken channel: the programs are ended below anyway
            pass
        for program in self.programs:
            try:
                program.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                program.process.kill()
                program.process.wait()
            program.stop()
        self.programs = []

    def close(self) -> None:
        """Releases the publisher's resources (after stop)."""


class HakobuCopy(Method):
    name = "hakobu"
    label = "hakobu Topic (copy)"
    copies = 2.2

    def start(self) -> None:
        import hakobu

        self.topic_name = f"fanout{os.getpid()}x{uuid.uuid4().hex[:8]}"
        self.topic = hakobu.Topic(self.topic_name, history=0, capacity=256)
        self.start_programs({"name": self.topic_name})
        if self.topic.subscribers != self.subscribers:
            raise RuntimeError(
                f"hakobu: the topic counts {self.topic.subscribers} subscribers, not {self.subscribers}"
            )

    def publish(self, array: np.ndarray) -> None:
        self.topic.publish(array)

    def close(self) -> None:
        topic = getattr(self, "topic", None)
        if topic is not None:
            topic.unlink()
            topic.close()


class HakobuZeroCopy(HakobuCopy):
    name = "hakobu-zero-copy"
    label = "hakobu Topic (zero-copy, hakobu.empty)"
    program = "hakobu"  # the copy method's subscribers: the same topic, the same subscription
    min_repeats = 30  # no copy: a 1 GiB message costs what a small one does
    copies = 1.1

    def source(self, size: int) -> np.ndarray:
        import hakobu

        array = hakobu.empty(size // 8, np.uint64)
        array.fill(1)
        return array

    def stream_array(self, source: np.ndarray, tag: int, count: int) -> np.ndarray:
        """A new block per message, as a producer of frames makes; only its tags are written."""
        import hakobu

        return stamp(hakobu.empty(len(source), np.uint64), tag, STREAM, count)


class ZeroMQ(Method):
    name = "zeromq"
    label = "ZeroMQ PUB/SUB ipc:// (copy=False)"
    requires = "zmq"
    copies = 1.2
    copies_each = 1.2
    needs_hello = True  # a SUB socket misses what is sent before it is connected (the slow joiner)

    def start(self) -> None:
        import zmq

        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, 0)  # no limit: nothing is dropped
        address = f"ipc://{self.workdir / 'pub.sock'}"
        self.sock.bind(address)
        self.start_programs({"address": address})
        self.greet()

    def publish(self, array: np.ndarray) -> None:
        self.sock.send(as_bytes(array), copy=False)  # libzmq keeps a reference to the array's buffer

    def close(self) -> None:
        if hasattr(self, "sock"):
            self.sock.close(linger=0)
        if hasattr(self, "context"):
            self.context.term()


class Iceoryx2(Method):
    name = "iceoryx2"
    label = "iceoryx2 pub/sub (loan + copy)"
    requires = "iceoryx2"
    copies = 1.2
    needs_hello = True  # a subscriber created after a send misses it

    @classmethod
    def refuses(cls, size: int, subscribers: int) -> Optional[str]:
        segment = iceoryx2_segment_bytes(size, subscribers)
        shm = os.statvfs("/dev/shm")
        if segment > shm.f_bavail * shm.f_frsize // 2:
            return (
                f"its data segment for {subscribers} subscriber(s) would take {segment / 2**30:.1f} GiB of /dev/shm "
                f"({shm.f_bavail * shm.f_frsize / 2**30:.1f} GiB free)"
            )
        return enough_memory(size, 4.2)  # the samples in use: one per subscriber's buffer at worst

    def start(self) -> None:
        self.prefix = f"hakobu-bench.{os.getpid()}.iox2_"
        self.root = Path(
            tempfile.mkdtemp(prefix=f"hb-iox2-{os.getpid()}-", dir="/tmp")
        )  # event sockets need a short path
        config = {
            "prefix": self.prefix,
            "root": str(self.root),
            "service": f"hakobu-bench-fanout-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            "subscribers": self.subscribers,
            "largest": self.largest,
        }
        self.ports = FanoutPorts(config, publisher=True)
        self.start_programs(config)
        self.greet()

    def publish(self, array: np.ndarray) -> None:
        self.ports.publish(array)

    def close(self) -> None:
        if not hasattr(self, "root"):
            return
        try:
            if hasattr(self, "ports"):
                self.ports.close()
        finally:
            for path in glob.glob(f"/dev/shm/{glob.escape(self.prefix)}*"):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            shutil.rmtree(self.root, ignore_errors=True)


class MpQueues(Method):
    name = "mp-queue"
    label = "multiprocessing.Queue per subscriber"
    copies = 1.2
    copies_each = 2.2  # the pickled message in the feeder, the unpickled array in the subscriber
    # 1 GiB: about 4.6 s per message and subscriber here (pickled, piped, unpickled), minutes for the run.
    default_max_bytes = 64 << 20

    def start(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.inboxes = [context.Queue() for _ in range(self.subscribers)]
        self.outboxes = [context.Queue() for _ in range(self.subscribers)]
        self.processes = [
            context.Process(target=subscribe_mp, args=(inbox, outbox), daemon=True)
            for inbox, outbox in zip(self.inboxes, self.outboxes)
        ]
        for process in self.processes:
            process.start()
        self.reports()  # ready

    def publish(self, array: np.ndarray) -> None:
        for inbox in self.inboxes:
            inbox.put(array)

    def reports(self) -> list[dict[str, Any]]:
        found = []
        for index, outbox in enumerate(self.outboxes):
            try:
                found.append(outbox.get(timeout=STEP_TIMEOUT))
            except queue.Empty:
                raise TimeoutError(
                    f"mp-queue: subscriber {index} said nothing for {STEP_TIMEOUT:.0f} s"
                ) from None
        return found

    def stop(self) -> None:
        try:
            self.publish(control(STOP))
        except Exception:  # noqa: BLE001 - the processes are ended below anyway
            pass
        for process in getattr(self, "processes", []):
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        for q in [*getattr(self, "inboxes", []), *getattr(self, "outboxes", [])]:
            q.close()
            q.join_thread()


class RayStore(Method):
    name = "ray"
    label = "Ray object store, N reader actors"
    requires = "ray"
    copies = 3.3  # the array, its object in the store, the stream's objects in flight

    ray_started = False  # one Ray instance serves every subscriber count of a run

    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            self.ray_dir = Path(
                tempfile.mkdtemp(prefix=f"hb-ray-{os.getpid()}-", dir="/tmp")
            )  # sockets need a short path
            store_bytes = max(3 * self.largest + (256 << 20), 128 << 20)
            shm = os.statvfs("/dev/shm")
            store_bytes = min(store_bytes, int(shm.f_bavail * shm.f_frsize * 0.9))
            import logging

            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                object_store_memory=store_bytes,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                _temp_dir=str(self.ray_dir),
            )
            RayStore.ray_started = True

        @ray.remote(num_cpus=0)
        class Reader:
            def __init__(self) -> None:
                self.tally = Tally()

            def take(self, boxed: list[Any]) -> Optional[dict[str, Any]]:
                view = ray.get(boxed[0])  # a read-only view of the object store
                report = self.tally.on_message(view, time.monotonic_ns())
                del view
                return report

        self.readers = [Reader.remote() for _ in range(self.subscribers)]  # type: ignore[attr-defined]
        self.pending: list[list[Any]] = [[] for _ in self.readers]
        ray.get([reader.take.remote([ray.put(control(HELLO))]) for reader in self.readers])  # started

    def publish(self, array: np.ndarray) -> None:
        import ray

        ref = ray.put(array)
        for reader, pending in zip(self.readers, self.pending):
            pending.append(reader.take.remote([ref]))

    def reports(self) -> list[dict[str, Any]]:
        """The first report of each reader's pending tasks (the others answered None)."""
        import ray

        found = []
        for index, pending in enumerate(self.pending):
            report = None
            while report is None:
                if not pending:
                    raise RuntimeError(f"ray: reader {index} has nothing more to report")
                report = ray.get(pending.pop(0), timeout=STEP_TIMEOUT)
            found.append(report)
        return found

    def stop(self) -> None:
        import ray

        for reader in getattr(self, "readers", []):
            ray.kill(reader, no_restart=True)
        self.readers = []

    @classmethod
    def shutdown(cls, ray_dir: Optional[Path]) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if ray_dir is not None:
            shutil.rmtree(ray_dir, ignore_errors=True)


METHODS: dict[str, type[Method]] = {
    m.name: m for m in (HakobuCopy, HakobuZeroCopy, ZeroMQ, Iceoryx2, RayStore, MpQueues)
}


# --- the measurement -----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def check(reports: list[dict[str, Any]], method: str, expect: dict[str, Any]) -> None:
    for index, report in enumerate(reports):
        if "error" in report:
            raise RuntimeError(f"{method}: subscriber {index}: {report['error']}")
        for key, value in expect.items():
            if report.get(key) != value:
                raise RuntimeError(f"{method}: subscriber {index} reported {report}, expected {key}={value}")


def measure_size(
    fan: Method, size: int, repeats: int, stream: int, tags: Callable[[], int]
) -> dict[str, Any]:
    """Latency (one message at a time) and throughput (a stream) of one size, subscribers running."""
    source = fan.source(size)
    latencies: list[float] = []
    slowest: list[float] = []
    calls: list[float] = []
    warmup = 1 if size >= BIG else WARMUP
    for trip in range(warmup + repeats):
        tag = tags()
        stamp(source, tag, PING)
        started = time.monotonic_ns()
        fan.publish(source)
        returned = time.monotonic_ns()
        reports = fan.reports()
        check(reports, fan.name, {"tag": tag, "bytes": size})
        if trip >= warmup:
            delays = [(r["view_ns"] - started) / 1e3 for r in reports]
            latencies += delays
            slowest.append(max(delays))
            calls.append((returned - started) / 1e3)
    # An untimed stream first, of up to STREAM_WARMUP messages: memory a method takes for messages
    # in flight (hakobu's heap, a ZeroMQ buffer, Ray's store) is touched for the first time there.
    for count in (min(stream, STREAM_WARMUP), stream):
        tag = tags()
        started = time.monotonic_ns()
        for _ in range(count):
            fan.publish(fan.stream_array(source, tag, count))
        reports = fan.reports()
        check(reports, fan.name, {"stream": tag, "count": count})
    seconds = (max(r["view_ns"] for r in reports) - started) / 1e9
    del source
    return {
        "latency_us_median": statistics.median(latencies),
        "latency_us_p90": percentile(latencies, 0.9),
        "last_us_median": statistics.median(slowest),
        "publish_us_median": statistics.median(calls),
        "repeats": repeats,
        "stream_messages": stream,
        "stream_seconds": seconds,
        "throughput_gb_s": stream * fan.subscribers * size / seconds / 1e9,
    }


def run_method(
    cls: type[Method],
    counts: Sequence[int],
    sizes: Sequence[int],
    quick: bool,
    repeat: Optional[int],
    limits: bool,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Every subscriber count and size of one method: a row each (figures, skipped or error)."""
    rows: list[dict[str, Any]] = []
    missing = cls.missing()
    if missing:
        return [{"method": cls.name, "label": cls.label, "skipped": missing}]
    counter = iter(range(1, 1 << 62))
    ray_dir: Optional[Path] = None
    try:
        for n in counts:
            todo = []
            for size in sizes:
                row = {"method": cls.name, "label": cls.label, "subscribers": n, "bytes": size}
                reason = cls.refuses(size, n)
                if limits and cls.default_max_bytes is not None and size > cls.default_max_bytes:
                    reason = (
                        f"too slow for the default run above {size_name(cls.default_max_bytes)} "
                        f"(ask for {size_name(size)} by name to measure it)"
                    )
                if reason:
                    rows.append({**row, "skipped": reason})
                else:
                    todo.append((size, row))
            if not todo:
                continue
            workdir = Path(tempfile.mkdtemp(prefix=f"hakobu-bench-fanout-{os.getpid()}-"))
            fan = cls(workdir, n, max(size for size, _ in todo))
            try:
                progress(f"{cls.label}: starting {n} subscriber(s)")
                fan.start()
                ray_dir = getattr(fan, "ray_dir", ray_dir)
                for size, row in todo:
                    repeats, stream = QUICK_REPEATS if quick else REPEATS.get(size, (10, 10))
                    if repeat is not None:
                        repeats = repeat
                    elif not quick:
                        repeats = max(repeats, cls.min_repeats)
                    progress(f"{cls.label}: {n} subscriber(s), {size_name(size)}")
                    try:
                        rows.append(
                            {**row, **measure_size(fan, size, repeats, stream, lambda: next(counter))}
                        )
                    except Exception as error:  # noqa: BLE001 - reported in the row; the subscribers are stopped
                        rows.append({**row, "error": f"{type(error).__name__}: {error}"})
                        rest = [
                            r
                            for s, r in todo
                            if s not in {x.get("bytes") for x in rows if x.get("subscribers") == n}
                        ]
                        rows += [{**r, "error": f"not run: {size_name(size)} failed before it"} for r in rest]
                        break
            except Exception as error:  # noqa: BLE001 - a failed start: every size of this count fails
                done = {r["bytes"] for r in rows if r.get("subscribers") == n}
                rows += [
                    {**row, "error": f"{type(error).__name__}: {error}"}
                    for size, row in todo
                    if size not in done
                ]
            finally:
                for step in (fan.stop, fan.close):  # each copes with a start that stopped half-way
                    try:
                        step()
                    except Exception as error:  # noqa: BLE001 - reported on this count's last row
                        mine = [r for r in rows if r.get("subscribers") == n and "skipped" not in r]
                        if mine and "error" not in mine[-1]:
                            mine[-1]["error"] = f"{step.__name__} failed: {type(error).__name__}: {error}"
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if cls is RayStore and RayStore.ray_started:
            RayStore.shutdown(ray_dir)
            RayStore.ray_started = False
    return rows


def plan(
    counts: str, sizes: Optional[str], methods: Optional[str], quick: bool
) -> tuple[list[int], list[int], list[str]]:
    """Subscriber counts, message sizes and methods from their comma-separated options (ValueError
    for a bad one); sizes and methods default to all, or the quick sizes."""
    try:
        chosen_counts = [int(c) for c in counts.split(",") if c.strip()]
    except ValueError:
        chosen_counts = []
    if not chosen_counts or min(chosen_counts) < 1:
        raise ValueError(f"subscriber counts {counts!r}: numbers of at least 1, e.g. 1,2,4")
    chosen_sizes = [
        parse_size(s.strip())
        for s in (sizes or ",".join(QUICK_SIZES if quick else SIZES)).split(",")
        if s.strip()
    ]
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else list(METHODS)
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown fan-out method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    return chosen_counts, chosen_sizes, chosen


def run(
    methods: Sequence[str],
    counts: Sequence[int],
    sizes: Sequence[int],
    quick: bool = False,
    repeats: Optional[int] = None,
    progress: Optional[Callable[[str], None]] = None,
    limits: bool = True,
) -> list[dict[str, Any]]:
    """Measures ``methods`` (names of METHODS) for every subscriber count and size; rows of figures.

    ``limits``: a method skips the sizes above its ``default_max_bytes`` (False when sizes were named)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown fan-out method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    rows: list[dict[str, Any]] = []
    for name in methods:
        rows += run_method(
            METHODS[name], counts, sizes, quick, repeats, limits, progress or (lambda what: None)
        )
    return rows


def find(rows: Sequence[dict[str, Any]], method: str, n: int, size: int) -> Optional[dict[str, Any]]:
    return next(
        (
            r
            for r in rows
            if r["method"] == method
            and r.get("subscribers") == n
            and r.get("bytes") == size
            and "latency_us_median" in r
        ),
        None,
    )


def goals(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's goals, each with the figures it was judged on (met: True/False, or None: not measured)."""
    out: list[dict[str, Any]] = []
    big = find(rows, "hakobu-zero-copy", 4, 1 << 30)
    out.append(
        {
            "goal": f"a 1 GiB hakobu.empty array reaches each of 4 subscribers in <= {GOAL_HANDOFF_US:.0f} µs",
            "met": None if big is None else big["latency_us_median"] <= GOAL_HANDOFF_US,
            "figures": None
            if big is None
            else f"median {big['latency_us_median']:.1f} µs, p90 {big['latency_us_p90']:.1f} µs, slowest of 4 {big['last_us_median']:.1f} µs",
        }
    )
    ours, zmq = find(rows, "hakobu", 4, 64 << 20), find(rows, "zeromq", 4, 64 << 20)
    goal = f"64 MiB with a copy to 4 subscribers: >= {GOAL_THROUGHPUT_RATIO:.0f}x ZeroMQ's throughput"
    if ours is None or zmq is None:
        out.append({"goal": goal, "met": None, "figures": None})
    else:
        ratio = ours["throughput_gb_s"] / zmq["throughput_gb_s"]
        out.append(
            {
                "goal": goal,
                "met": ratio >= GOAL_THROUGHPUT_RATIO,
                "figures": f"hakobu {ours['throughput_gb_s']:.2f} GB/s, ZeroMQ {zmq['throughput_gb_s']:.2f} GB/s: "
                f"{ratio:.1f}x",
            }
        )
    for method in ("hakobu", "hakobu-zero-copy"):
        sizes = sorted({r["bytes"] for r in rows if r["method"] == method and "publish_us_median" in r})
        for size in sizes:
            calls = {n: find(rows, method, n, size) for n in (1, 2, 4)}
            if any(c is None for c in calls.values()):
                continue
            per = {n: c["publish_us_median"] for n, c in calls.items() if c is not None}
            growth = (per[4] - per[1]) / 3
            # A call that copies for milliseconds varies by more than a wake-up from one copy to the next.
            judged = per[1] <= JUDGED_CALL_US
            out.append(
                {
                    "goal": f"{method} publish call, {size_name(size)}: each added subscriber costs at most one "
                    f"wake-up (<= {GOAL_WAKE_US:.0f} µs)",
                    "met": growth <= GOAL_WAKE_US if judged else None,
                    "figures": f"1/2/4 subscribers: {format_time(per[1])} / {format_time(per[2])} / "
                    f"{format_time(per[4])} ({growth:+.1f} µs per added subscriber"
                    + ("" if judged else "; the copy's own variation hides a wake-up: shown, not judged")
                    + ")",
                }
            )
    return out


def format_rate(gb_s: float) -> str:
    return f"{gb_s:.2f} GB/s" if gb_s >= 1 else f"{gb_s * 1e3:.1f} MB/s"


def table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The plain-text table: per size and subscriber count, each method beside hakobu (copy)."""
    header = (
        f"{'size':<7}{'subs':>5}  {'method':<40}{'latency':>11}{'p90':>11}{'slowest':>11}"
        f"{'publish':>11}{'throughput':>14}{'lat ÷ hakobu':>14}{'thr ÷ hakobu':>14}"
    )
    lines = [header]
    sizes = sorted({r["bytes"] for r in rows if "bytes" in r})
    counts = sorted({r["subscribers"] for r in rows if "subscribers" in r})
    for size in sizes:
        for n in counts:
            chunk = [r for r in rows if r.get("bytes") == size and r.get("subscribers") == n]
            if not chunk:
                continue
            for index, r in enumerate(chunk):
                lead = f"{size_name(size) if index == 0 else '':<7}{n if index == 0 else '':>5}  {r['label']:<40}"
                if "skipped" in r:
                    lines.append(f"{lead}skipped: {r['skipped']}")
                elif "error" in r:
                    lines.append(f"{lead}FAILED: {r['error']}")
                else:
                    lat, thr = ratio_to_hakobu(rows, r)
                    lines.append(
                        f"{lead}{format_time(r['latency_us_median']):>11}{format_time(r['latency_us_p90']):>11}"
                        f"{format_time(r['last_us_median']):>11}{format_time(r['publish_us_median']):>11}"
                        f"{format_rate(r['throughput_gb_s']):>14}{lat:>14}{thr:>14}"
                    )
        lines.append("")
    for r in rows:
        if "bytes" not in r:
            lines.append(f"{r['label']}: skipped: {r.get('skipped') or r.get('error')}")
    return lines


def ratio_to_hakobu(rows: Sequence[dict[str, Any]], row: dict[str, Any]) -> tuple[str, str]:
    """A row's latency and throughput, each divided by hakobu (copy)'s on the same size and count."""
    base = find(rows, "hakobu", row["subscribers"], row["bytes"])
    if base is None:
        return "-", "-"
    return (
        f"{row['latency_us_median'] / base['latency_us_median']:.2f}×",
        f"{row['throughput_gb_s'] / base['throughput_gb_s']:.2f}×",
    )


def machine_line(about: dict[str, Any]) -> str:
    return (
        f"machine: {about['cpu']}, {about['cores']} cores, kernel {about['kernel']}, Python {about['python']}, "
        f"NumPy {about['numpy']}, hakobu {about['hakobu']}"
    )


def render(rows: Sequence[dict[str, Any]], console: Any) -> None:
    """The rich table of `hakobu bench --fanout`: the rows of ``table_lines``, then the goals."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="hakobu bench --fanout: one publisher, N subscriber processes", box=box.SIMPLE_HEAD)
    for column in ("size", "subs", "method", "latency", "p90", "slowest", "publish", "throughput"):
        table.add_column(column, justify="left" if column in ("size", "method") else "right")
    table.add_column("latency ÷ hakobu", justify="right")
    table.add_column("throughput ÷ hakobu", justify="right")
    for size in sorted({r["bytes"] for r in rows if "bytes" in r}):
        for n in sorted({r["subscribers"] for r in rows if r.get("bytes") == size}):
            for index, r in enumerate(
                x for x in rows if x.get("bytes") == size and x.get("subscribers") == n
            ):
                lead = [size_name(size) if index == 0 else "", str(n) if index == 0 else ""]
                label = (
                    f"[bold cyan]{escape(r['label'])}[/]"
                    if r["method"].startswith("hakobu")
                    else escape(r["label"])
                )
                if "skipped" in r or "error" in r:
                    what = (
                        f"[yellow]skipped[/]: {escape(r['skipped'])}"
                        if "skipped" in r
                        else f"[red]failed[/]: {escape(r['error'])}"
                    )
                    table.add_row(*lead, label, what, "", "", "", "", "", "", "")
                    continue
                table.add_row(
                    *lead,
                    label,
                    format_time(r["latency_us_median"]),
                    format_time(r["latency_us_p90"]),
                    format_time(r["last_us_median"]),
                    format_time(r["publish_us_median"]),
                    format_rate(r["throughput_gb_s"]),
                    *ratio_to_hakobu(rows, r),
                )
            table.add_section()
    console.print(table)
    console.print(escape(machine_line(machine())), highlight=False)
    console.print(escape(METHOD_NOTES), highlight=False)
    for r in rows:
        if "bytes" not in r:
            console.print(f"[yellow]skipped[/] {escape(r['label'])}: {escape(r['skipped'])}")
    for line in goal_lines(rows):
        console.print(escape(line), highlight=False)


def to_json(rows: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    """Every figure, the goals, the machine and the library versions (fanout.json, --json FILE)."""
    return {
        "tool": "hakobu bench --fanout",
        "options": options,
        "notes": METHOD_NOTES,
        "clock": "CLOCK_MONOTONIC (time.monotonic_ns) in the publisher and every subscriber",
        "machine": machine(),
        "versions": versions(),
        "results": list(rows),
        "goals": goals(rows),
    }


def goal_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for g in goals(rows):
        verdict = "not measured" if g["met"] is None else ("MET" if g["met"] else "NOT MET")
        lines.append(f"goal: {g['goal']}: {verdict}" + (f" ({g['figures']})" if g["figures"] else ""))
    return lines


METHOD_NOTES = (
    "latency: publish start -> a subscriber holds a view (CLOCK_MONOTONIC in both), median and p90 over "
    "subscribers x repeats; slowest: median of the last subscriber per message; publish: the publisher's "
    "call(s); GB/s: a stream, messages x subscribers x size / (last subscriber's last message - first publish)"
)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.split("\n")[0] if __doc__ else ""
    )
    parser.add_argument(
        "--subscribers", default=",".join(map(str, SUBSCRIBERS)), help="counts (default 1,2,4)"
    )
    parser.add_argument(
        "--sizes", help=f"message sizes (default {','.join(SIZES)}; --quick: {','.join(QUICK_SIZES)})"
    )
    parser.add_argument("--methods", help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, a few repeats: check that every method runs"
    )
    parser.add_argument("--repeat", type=int, help="latency repeats per size (default: per size)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--domain", default=f"bench{os.getpid()}", help=argparse.SUPPRESS)
    parser.add_argument("--subscriber", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        SUBSCRIBE[args.subscriber](json.loads(args.config))
        return 0
    try:
        counts, sizes, methods = plan(args.subscribers, args.sizes, args.methods, args.quick)
        if args.repeat is not None and args.repeat < 1:
            raise ValueError("--repeat must be at least 1")
    except ValueError as error:
        parser.error(str(error))
    os.environ["HAKOBU_DOMAIN"] = args.domain  # the publisher, hakobu.empty and the subscriber programs
    about = machine()
    print(machine_line(about))
    print(
        f"fan-out: 1 publisher (this process) -> {', '.join(map(str, counts))} subscriber processes; "
        f"sizes {', '.join(size_name(s) for s in sizes)}\n{METHOD_NOTES}\n",
        flush=True,
    )
    rows = run(
        methods,
        counts,
        sizes,
        args.quick,
        args.repeat,
        lambda what: print(f"  {what}", file=sys.stderr, flush=True),
        limits=args.sizes is None,
    )
    print("\n".join(table_lines(rows)))
    print("\n".join(goal_lines(rows)))
    if args.json:
        options = {
            "quick": args.quick,
            "methods": methods,
            "subscribers": counts,
            "sizes": sizes,
            "repeat": args.repeat,
        }
        with open(args.json, "w") as out:
            json.dump(to_json(rows, options), out, indent=2)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    # Run as the module of its package, not as __main__: Ray's actors and multiprocessing's
    # spawned subscribers then find its classes and functions by name.
    from hakobu_bench.micro.fanout import main as main_of_the_module

    raise SystemExit(main_of_the_module())
