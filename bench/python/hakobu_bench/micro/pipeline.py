"""A three-stage pipeline: hakobu queues beside multiprocessing, HTTP + a SharedMemory name,
WebSocket, multiprocessing.connection and Ray, in the same run.

The situation
-------------
Step 1 → Step 2 → Step 3, each in its own process, passing float64 arrays of
the shapes (1,3,224,224), (2,1024,16,16), (2,3,16,224,224) and (128,1024,1024)
(1.2 MB, 4 MiB, 38.5 MB and 1 GiB). Stage 1 is this process: it makes each
array (the producer: a decoder) and sends it; stages 2 and 3 are processes
started for the run (``multiprocessing``'s spawn context: fresh interpreters),
each receiving from the stage before it. Stages 2 and 3 do ``a += 1`` in
place ("compute" runs); in "identity" runs they pass the array on untouched,
which leaves the transport alone.

Every stage reads CLOCK_MONOTONIC (``time.monotonic_ns``, one clock for the
machine) and reports its stamps to this process on a pipe of its own, after
the message moved on, so the stamps never travel on the transport measured.

* **hop 1→2, hop 2→3**: a stage's overhead, the transport time of a message:
  from the moment the sending stage starts its send (put, POST, send...) to the
  moment the receiving stage's receive returns an array it can use (``a += 1``
  needs a writable one). ``a += 1`` itself is not in it.
* **end to end**: from stage 1's send to stage 3 being done with the message
  (after its ``a += 1``). Median and p90 over messages sent one at a time (the
  next is sent once stage 3 reported the previous one).
* **throughput**: the same number of messages streamed back to back, at most
  ``window`` in flight; messages × bytes ÷ (stage 3 done with the last - stage
  1's first send). A slow stage slows stage 1, as in a real pipeline.
* **make**: how long stage 1 takes to make a message's array before its send:
  a new ``hakobu.empty`` array per message for hakobu (zero-copy), what a
  producer of frames in shared memory pays; writing two tags into the one
  reused array for the others. Not in the end to end, but in the throughput
  (stage 1 makes every array of the stream). hakobu (zero-copy)'s throughput
  is thus bytes made visible to the next stages per second, not bytes moved.
* **memcpy**: one copy of the array into memory already touched (``np.copyto``),
  median of five, measured in the same run: the yardstick of "copied in once".

Methods
-------
* hakobu (zero-copy): stage 1 makes each array with ``hakobu.empty`` (in shared
  memory, the way a producer fills a frame) and puts it on ``hakobu.Queue``
  stage2; stage 2 gets a view of the same block, adds one in place and puts the
  view on; stage 3 gets it and lets go. No byte of the array is copied.
* hakobu (copied in once): the same, stage 1's array an ordinary ``np.zeros``
  one: ``put`` copies it into shared memory once; from there the same.
* hakobu.Pipeline (hakobu.empty): stages 2 and 3 are the two stages of a
  ``hakobu.Pipeline`` (one worker process each, its queues between them);
  stage 1 makes each array with ``hakobu.empty`` and ``submit``s it; stage 2
  adds one in place and returns the array (it goes on by reference), stage 3
  returns its stamps, which come back as the Future's result. Stage 2 writes
  its stamps into a named ``hakobu.Array`` (a row per message tag) that this
  process reads (``PipelineRun``). The hops include the pipeline's pickling of
  the item and its worker's bookkeeping around the stage function.
* multiprocessing.Queue: ``put`` pickles in a feeder thread, ``get`` unpickles
  (a writable private array): a copy on each side of every hop.
* multiprocessing.connection: each receiving stage listens on a Unix socket
  (``Listener``), the stage before it connects (``Client``); ``send``/``recv``.
* HTTP + SharedMemory name: stage 1 copies the array into a new
  ``multiprocessing.shared_memory`` segment and POSTs its name (JSON, httpx,
  FastAPI under uvicorn in stages 2 and 3); stage 2 attaches, adds one in place
  and POSTs the same name on (no copy); stage 3 attaches, adds, unlinks.
  A stage's endpoint answers as soon as the message is in its inbox.
* WebSocket binary frames: a header frame, then the raw bytes (``websockets``'
  sync client, FastAPI/uvicorn endpoint); the received bytes are read-only, so
  a stage that adds one in place copies them first (in the hop's time).
* Ray actors: stages 2 and 3 are actors; stage 1 ``ray.put``s the array and
  chains ``stage3.work.remote(stage2.work.remote(ref))``; Ray hands an actor a
  read-only view of its object store, so an actor that adds one in place
  copies first; a return value is copied into the object store. The hop 1→2
  includes Ray's task submission, 2→3 the store of stage 2's return.

The transports are those of ``hakobu_bench.methods`` (the round-trip
benchmark's): their framing, segments and servers are reused here, with the
stages arranged in a line instead of an echo.

Message counts: hakobu runs 100 messages per phase (20 at 1 GiB), after 2
untimed ones and an untimed stream of ``window`` (where memory for messages in
flight is touched). The peers take up to seconds per message at the large
shapes, so that the whole run stays within minutes each moves at most
``PEER_PHASE_BYTES`` per phase (at least ``PEER_MIN_MESSAGES`` messages: 13 of
38.5 MB, 2 of 1 GiB, after 1 untimed one at 1 GiB; each capped row says so),
and runs identity stages only up to ``PEER_IDENTITY_MAX`` (the compute run's
hops exclude ``a += 1`` already). At most ``window`` messages are in flight
(1 GiB: 2, Ray 1), hakobu's queues hold 1 message each at 1 GiB (4 below), so
/dev/shm holds a few GiB at most.

Run: python -m hakobu_bench.micro.pipeline [--shapes ...] [--methods ...] [--messages N]
         [--quick] [--json FILE]
The same measurement runs as ``hakobu bench --pipeline``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import itertools
import json
import math
import multiprocessing
import os
import queue
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from ..channel import corrupt_answers, decode_header, encode_header, parent_watch
from ..machine import with_versions as machine
from ..report import format_time, versions

MODULE = "hakobu_bench.micro.pipeline"
STEP_TIMEOUT = 180.0  # s stage 3 may take to report a message before the run is declared stuck
START_TIMEOUT = 60.0  # s a stage may take to start (Ray actors, uvicorn)

SHAPES: dict[str, tuple[int, ...]] = {
    "1x3x224x224": (1, 3, 224, 224),
    "2x1024x16x16": (2, 1024, 16, 16),
    "2x3x16x224x224": (2, 3, 16, 224, 224),
    "128x1024x1024": (128, 1024, 1024),
}
QUICK_SHAPES = ("1x3x224x224", "2x1024x16x16")
BIG = 512 << 20  # from this size on: fewer messages, a smaller window, queues of one message
MESSAGES, BIG_MESSAGES = 100, 20  # per phase (one at a time, then streamed)
PEER_PHASE_BYTES = 512 << 20  # a peer moves at most this much per phase (seconds per GiB)...
PEER_MIN_MESSAGES = 2  # ...but at least this many messages
PEER_IDENTITY_MAX = 16 << 20  # the peers' identity stages run up to this size
QUICK_MESSAGES = 5
WARMUP = 2  # untimed messages first (memory of messages in flight is touched there)
WINDOW, BIG_WINDOW = 4, 2

GOAL_HOP_MS = 1.0  # a 1 GiB hakobu.empty array moves from one stage to the next in this
GOAL_COPY_RATIO = 1.3  # 1 GiB copied in once, through three stages: at most this many memcpys
HTTP_JSON_S_PER_GIB = 259.0  # published figure of HTTP + JSON (the comparison)
GOAL_JSON_RATIO = 1000.0


def shape_name(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def parse_shape(text: str) -> tuple[int, ...]:
    if text in SHAPES:
        return SHAPES[text]
    try:
        shape = tuple(int(part) for part in text.split("x"))
    except ValueError:
        raise ValueError(f"unknown shape {text!r}: use {', '.join(SHAPES)} or AxBxC") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"a shape has positive dimensions (got {text!r})")
    return shape


def nbytes_of(shape: Sequence[int]) -> int:
    return math.prod(shape) * 8


def now() -> int:
    return time.monotonic_ns()


# --- transports: one class per method, both ends ---------------------------------------------
#
# A stage process holds one transport for its input (``listen``, then ``receive``
# until None) and, for stage 2, one for its output (``connect``, ``forward``,
# ``stop``). Stage 1 (this process) ``connect``s and ``send``s. ``config`` is the
# method's run configuration, made by ``prepare`` in this process.


class Transport:
    name: ClassVar[str]
    label: ClassVar[str]
    order: ClassVar[int]
    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""
    zero_copy_source: ClassVar[bool] = False  # stage 1 builds with hakobu.empty

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    @classmethod
    def missing(cls) -> Optional[str]:
        for module in cls.requires:
            try:
                __import__(module)
            except ImportError as error:
                return f"{module} is not installed ({error}); install it with: {cls.install}"
        return None

    @classmethod
    def prepare(cls, workdir: Path, run: str, big: bool, context: Any) -> dict[str, Any]:
        """What the stages of one run share (names, queues, paths), made before they start."""
        return {"run": run, "workdir": str(workdir)}

    @classmethod
    def cleanup(cls, config: dict[str, Any]) -> None:
        """Removes what ``prepare`` made (after the stages are gone)."""

    def source(self, shape: tuple[int, ...]) -> Optional[np.ndarray]:
        """Stage 1's array, reused for every message (None: a new one each message, ``fresh``)."""
        array = np.zeros(shape, np.float64)
        return array

    def fresh(self, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    # receiving end
    def listen(self, hop: int) -> Any:
        """Opens the input of the stage at the end of ``hop`` (1: stage 2's, 2: stage 3's); returns the
        address the stage before it connects to (JSON)."""
        return None

    def receive(self) -> Optional[np.ndarray]:
        """The next array, or None at the stop message."""
        raise NotImplementedError

    def release(self, last: bool) -> None:
        """The stage dropped the array ``receive`` returned (``last``: the final stage)."""

    # sending end
    def connect(self, hop: int, address: Any) -> None:
        raise NotImplementedError

    def send(self, array: np.ndarray) -> None:
        """Stage 1: sends a new message."""
        raise NotImplementedError

    def forward(self, array: np.ndarray, received: Transport) -> None:
        """Stage 2: sends on what its input ``received``."""
        self.send(array)

    def stop(self) -> None:
        raise NotImplementedError

    def close(self, failed: bool = False) -> None:
        """Lets go of both ends (``failed``: the stage is failing)."""


class HakobuQueues(Transport):
    name = "hakobu"
    label = "hakobu (copied in once)"
    order = 1
    created: ClassVar[dict[str, list[Any]]] = {}  # run -> the queues this process created

    @classmethod
    def prepare(cls, workdir: Path, run: str, big: bool, context: Any) -> dict[str, Any]:
        import hakobu

        names = [f"pipe-{run}-{hop}" for hop in (1, 2)]
        # The creating handles stay here until cleanup: only the creator may unlink a queue.
        cls.created[run] = [hakobu.Queue(name, capacity=1 if big else 4, create=True) for name in names]
        return {"run": run, "queues": names}

    @classmethod
    def cleanup(cls, config: dict[str, Any]) -> None:
        for q in cls.created.pop(config["run"], []):
            q.unlink()
            q.close()

    def _open(self, hop: int) -> Any:
        import hakobu

        return hakobu.Queue(self.config["queues"][hop - 1], create=False)

    def listen(self, hop: int) -> Any:
        self.inbox = self._open(hop)
        return None

    def receive(self) -> Optional[np.ndarray]:
        import hakobu

        try:
            item = self.inbox.get()
        except hakobu.SendersLost:  # the stage before failed or died: this run failed
            raise
        except hakobu.EndOfStream:  # the stage before closed its end: the stream is over
            return None
        assert isinstance(item, np.ndarray)
        return item

    def connect(self, hop: int, address: Any) -> None:
        self.outbox = self._open(hop)

    def send(self, array: np.ndarray) -> None:
        self.outbox.put(array)

    def stop(self) -> None:
        # No stop message: closing the sending handle ends the stream, and the next stage's get
        # raises EndOfStream once it took every message (hakobu's end of stream flows downstream).
        self.outbox.close()
        self.outbox = None

    def close(self, failed: bool = False) -> None:
        inbox, outbox = getattr(self, "inbox", None), getattr(self, "outbox", None)
        if outbox is not None:
            outbox.close(failed=failed)  # failed: the next stage gets SendersLost, not a clean end
        if inbox is not None:
            inbox.close()


class HakobuZeroCopy(HakobuQueues):
    name = "hakobu-zero-copy"
    label = "hakobu (hakobu.empty, zero-copy)"
    order = 0
    zero_copy_source = True

    def source(self, shape: tuple[int, ...]) -> Optional[np.ndarray]:
        return None

    def fresh(self, shape: tuple[int, ...]) -> np.ndarray:
        import hakobu

        return hakobu.empty(shape, np.float64)


class HakobuPipeline(Transport):
    """hakobu.Pipeline's stages are its workers, driven from stage 1 (``PipelineRun``), not stage
    processes over a transport; stage 1 makes each array with ``hakobu.empty`` (as HakobuZeroCopy)."""

    name = "hakobu-pipeline"
    label = "hakobu.Pipeline (hakobu.empty)"
    order = 2
    zero_copy_source = True

    def source(self, shape: tuple[int, ...]) -> Optional[np.ndarray]:
        return None

    def fresh(self, shape: tuple[int, ...]) -> np.ndarray:
        import hakobu

        return hakobu.empty(shape, np.float64)


class MpQueues(Transport):
    name = "mp-queue"
    label = "multiprocessing.Queue"
    order = 10

    @classmethod
    def prepare(cls, workdir: Path, run: str, big: bool, context: Any) -> dict[str, Any]:
        return {"run": run, "queues": [context.Queue(), context.Queue()]}

    @classmethod
    def cleanup(cls, config: dict[str, Any]) -> None:
        for q in config["queues"]:
            q.close()
            q.join_thread()

    def listen(self, hop: int) -> Any:
        self.inbox = self.config["queues"][hop - 1]
        return None

    def receive(self) -> Optional[np.ndarray]:
        item = self.inbox.get()
        assert item is None or isinstance(item, np.ndarray)
        return item

    def connect(self, hop: int, address: Any) -> None:
        self.outbox = self.config["queues"][hop - 1]

    def send(self, array: np.ndarray) -> None:
        self.outbox.put(array)

    def stop(self) -> None:
        self.outbox.put(None)

    def close(self, failed: bool = False) -> None:
        outbox = getattr(self, "outbox", None)
        if outbox is not None:
            outbox.close()
            outbox.join_thread()  # what the feeder thread holds goes out before the stage ends


class MpConnection(Transport):
    name = "mp-connection"
    label = "multiprocessing.connection"
    order = 11

    @classmethod
    def prepare(cls, workdir: Path, run: str, big: bool, context: Any) -> dict[str, Any]:
        return {"run": run, "workdir": str(workdir), "key": os.urandom(16).hex()}

    def listen(self, hop: int) -> Any:
        from multiprocessing.connection import Listener

        path = os.path.join(self.config["workdir"], f"hop{hop}.sock")
        self.listener = Listener(path, family="AF_UNIX", authkey=bytes.fromhex(self.config["key"]))
        self.inbox: Any = None
        return path

    def receive(self) -> Optional[np.ndarray]:
        if self.inbox is None:
            self.inbox = self.listener.accept()
        item = self.inbox.recv()
        assert item is None or isinstance(item, np.ndarray)
        return item

    def connect(self, hop: int, address: Any) -> None:
        from multiprocessing.connection import Client

        self.outbox = Client(address, family="AF_UNIX", authkey=bytes.fromhex(self.config["key"]))

    def send(self, array: np.ndarray) -> None:
        self.outbox.send(array)

    def stop(self) -> None:
        self.outbox.send(None)

    def close(self, failed: bool = False) -> None:
        for end in ("inbox", "outbox", "listener"):
            thing = getattr(self, end, None)
            if thing is not None:
                thing.close()


class Inbox:
    """What a uvicorn endpoint hands its messages to (an ``Echo`` for ``web.WebPeer``): a queue the
    stage's main thread takes them from."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()

    def arrived(self) -> None:
        pass

    def answer(self, array: np.ndarray) -> np.ndarray:
        return array

    def deliver(self, message: Any) -> None:
        self.messages.put(message)


class WebTransport(Transport):
    """A uvicorn server (``web.WebPeer``) in a thread of the receiving stage, on a port of its own."""

    install = "pip install fastapi uvicorn httpx websockets   (dependencies of hakobu-bench)"

    def peer(self, config: dict[str, Any]) -> Any:
        """The ``web.WebPeer`` that serves this stage's input."""
        raise NotImplementedError

    def listen(self, hop: int) -> Any:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = int(listener.getsockname()[1])
        self.inbox = Inbox()
        self.server_end = self.peer({"fd": listener.detach()})  # uvicorn's socket owns it now
        self.server_thread = threading.Thread(
            target=self.server_end.serve, args=(self.inbox,), name="uvicorn", daemon=True
        )
        self.server_thread.start()
        return port

    def take(self) -> Any:
        return self.inbox.messages.get()

    def close(self, failed: bool = False) -> None:
        thread = getattr(self, "server_thread", None)
        if thread is not None:
            while self.server_end.server is None and thread.is_alive():
                time.sleep(0.01)
            if self.server_end.server is not None:
                self.server_end.stop()
            thread.join(10.0)


class HttpShm(WebTransport):
    name = "http-shm"
    label = "HTTP + SharedMemory name"
    order = 12
    requires = ("fastapi", "uvicorn", "httpx")

    def peer(self, config: dict[str, Any]) -> Any:
        from ..web import HttpPeer

        class Stage(HttpPeer):
            def reply(self, body: bytes, echo: Any) -> dict[str, Any]:
                echo.deliver(json.loads(body))
                return {}

        return Stage(config)

    def connect(self, hop: int, address: Any) -> None:
        import httpx

        self.sent: list[str] = []  # the segments stage 1 made (stage 3 unlinks them)
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{address}", timeout=httpx.Timeout(None), trust_env=False
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.client.get("/ready", timeout=10.0).raise_for_status()
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def post(self, message: dict[str, Any]) -> None:
        self.client.post("/echo", json=message).raise_for_status()

    def send(self, array: np.ndarray) -> None:
        from ..methods.shared_memory import copy_into_answer_segment

        # A new segment per message, as the module is used; stage 3 unlinks it (so this process's
        # resource tracker forgets it, as an answer segment's creator does).
        segment = copy_into_answer_segment(array)
        self.sent.append(segment.name)
        try:
            self.post({"name": segment.name, "dtype": array.dtype.str, "shape": list(array.shape)})
        finally:
            segment.close()

    def receive(self) -> Optional[np.ndarray]:
        from ..methods.shared_memory import attach

        message = self.take()
        if message.get("stop"):
            return None
        self.message = message
        self.segment = attach(message["name"])
        view: np.ndarray = np.ndarray(
            tuple(message["shape"]), np.dtype(message["dtype"]), buffer=self.segment.buf
        )
        return view

    def forward(self, array: np.ndarray, received: Transport) -> None:
        assert isinstance(received, HttpShm)
        self.post(received.message)  # the same segment: the next stage attaches to it

    def release(self, last: bool) -> None:
        self.segment.close()
        if last:
            shared_memory.SharedMemory(self.message["name"]).unlink()  # registers, then unregisters

    def stop(self) -> None:
        self.post({"stop": True})

    def close(self, failed: bool = False) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        super().close(failed)
        for name in getattr(self, "sent", ()):  # stage 3 unlinked each; a failed run leaves none either
            try:
                shared_memory.SharedMemory(name).unlink()
            except FileNotFoundError:
                pass


class WebSocketFrames(WebTransport):
    name = "websocket"
    label = "WebSocket (binary frames)"
    order = 13
    requires = ("fastapi", "uvicorn", "websockets")

    def peer(self, config: dict[str, Any]) -> Any:
        from ..web import WebSocketPeer

        class Stage(WebSocketPeer):
            async def exchange(self, websocket: Any, echo: Any) -> bool:
                header = await websocket.receive_bytes()
                if decode_header(header) is None:
                    echo.deliver(None)
                    return False
                echo.deliver((header, await websocket.receive_bytes()))
                return True

        return Stage(config)

    def connect(self, hop: int, address: Any) -> None:
        import inspect

        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        options: dict[str, Any] = {"max_size": None, "compression": None, "ping_interval": None}
        accepted = inspect.signature(connect).parameters
        if "proxy" in accepted:
            options["proxy"] = None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.ws = connect(f"ws://127.0.0.1:{address}/ws", **options)
                return
            except (OSError, WebSocketException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def send(self, array: np.ndarray) -> None:
        from ..methods.websocket import raw_bytes

        self.ws.send(encode_header(array))
        self.ws.send(raw_bytes(array))

    def receive(self) -> Optional[np.ndarray]:
        from ..methods.websocket import rebuild

        message = self.take()
        if message is None:
            return None
        array = rebuild(*message)  # a read-only view of the received bytes
        return array.copy() if self.config.get("writable") else array

    def stop(self) -> None:
        self.ws.send(encode_header(None))

    def close(self, failed: bool = False) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        super().close(failed)


class RayActors(Transport):
    """Ray's stages are actors, driven from stage 1 (``RayRun``), not stage processes."""

    name = "ray"
    label = "Ray actors"
    order = 14
    requires = ("ray",)
    install = "pip install ray   (or hakobu-bench's peers extra: pip install './bench/python[peers]')"


TRANSPORTS: dict[str, type[Transport]] = {
    t.name: t
    for t in sorted(
        (
            HakobuZeroCopy,
            HakobuQueues,
            HakobuPipeline,
            MpQueues,
            MpConnection,
            HttpShm,
            WebSocketFrames,
            RayActors,
        ),
        key=lambda t: t.order,
    )
}
PEERS = [name for name in TRANSPORTS if not name.startswith("hakobu")]


# --- a stage process --------------------------------------------------------------------------


def stage_main(method: str, config: dict[str, Any], hop: int, last: bool, reports: Any) -> None:
    """Stage 2 (``hop`` 1) or 3 (``hop`` 2, ``last``): receive, (add one), send on, report stamps.

    Reports, on ``reports`` (a pipe to stage 1): ("ready", address) once listening,
    then per message (got, sent) for stage 2 or (got, done, first, last element)
    for stage 3, and ("error", text) if it fails.
    """
    parent_watch()
    if "domain" in config:
        os.environ["HAKOBU_DOMAIN"] = config["domain"]
    compute = config["mode"] == "compute"
    corrupt = corrupt_answers() and not last  # HAKOBU_BENCH_CORRUPT=1: stage 2 spoils every message (tests)
    # HAKOBU_BENCH_STAGE_DIES=N (tests): stage 2 dies abruptly on receiving its Nth message.
    dies_at = 0 if last else int(os.environ.get("HAKOBU_BENCH_STAGE_DIES", "0"))
    received = 0
    inbound = TRANSPORTS[method]({**config, "writable": compute})
    outbound = None if last else TRANSPORTS[method](config)
    failed = False
    try:
        reports.send(("ready", inbound.listen(hop)))
        if outbound is not None:
            outbound.connect(hop + 1, config["next"])
        while True:
            array = inbound.receive()
            got = now()
            if array is None:
                if outbound is not None:
                    outbound.stop()
                break
            received += 1
            if received == dies_at:
                os._exit(3)  # as a crash or a kill would: nothing closed, nothing reported
            if compute:
                array += 1
            if corrupt:  # both ends: whole, but not the message that was sent
                array.reshape(-1)[0] += 0.5
                array.reshape(-1)[-1] += 0.5
            if outbound is not None:
                sent = now()
                outbound.forward(array, inbound)
                del array
                inbound.release(last=False)
                reports.send((got, sent))
            else:
                done = now()
                flat = array.reshape(-1)
                first, final = float(flat[0]), float(flat[-1])
                del array, flat
                inbound.release(last=True)
                reports.send((got, done, first, final))
    except BaseException as error:
        failed = True
        reports.send(("error", f"stage {hop + 1}: {type(error).__name__}: {error}"))
        raise
    finally:
        if outbound is not None:
            outbound.close(failed)
        inbound.close()


# --- stage 1 and the run ----------------------------------------------------------------------


class StageFailed(RuntimeError):
    pass


class ProcessRun:
    """Stages 2 and 3 as spawned processes over ``method``'s transport; stage 1 is this process."""

    def __init__(self, method: str, shape: tuple[int, ...], mode: str, workdir: Path) -> None:
        self.method, self.shape, self.mode = method, shape, mode
        self.kind = TRANSPORTS[method]
        self.context = multiprocessing.get_context("spawn")
        run = f"{os.getpid()}-{method}-{mode}-{shape_name(shape)}"
        self.config = self.kind.prepare(workdir, run, nbytes_of(shape) >= BIG, self.context)
        self.config["mode"] = mode
        if "HAKOBU_DOMAIN" in os.environ:
            self.config["domain"] = os.environ["HAKOBU_DOMAIN"]
        self.processes: list[Any] = [None, None]  # stage 2, stage 3
        self.pipes: list[Any] = [None, None]  # their reports
        self.early: list[list[Any]] = [[], []]  # reports read while waiting for the other stage
        self.sender: Optional[Transport] = None

    def start(self) -> None:
        address = None
        for hop in (2, 1):  # stage 3 first: stage 2 connects to it
            mine, theirs = self.context.Pipe(duplex=False)
            config = {**self.config, "next": address}
            process = self.context.Process(
                target=stage_main,
                args=(self.method, config, hop, hop == 2, theirs),
                name=f"hakobu-bench-stage{hop + 1}",
                daemon=True,
            )
            self.processes[hop - 1], self.pipes[hop - 1] = process, mine
            process.start()
            theirs.close()
            ready = self.report(hop - 1, START_TIMEOUT)
            if ready[0] != "ready":
                raise StageFailed(f"stage {hop + 1} did not start: {ready}")
            address = ready[1]
        self.sender = self.kind(self.config)
        self.sender.connect(1, address)

    def report(self, index: int, timeout: float) -> Any:
        """The next report of stage ``index + 2``; StageFailed when either stage failed or died, or
        nothing came within ``timeout`` (a watchdog: the run never waits forever)."""
        if self.early[index]:
            return self.early[index].pop(0)
        pipe = self.pipes[index]
        deadline = time.monotonic() + timeout
        while not pipe.poll(0.5):
            for other, process in enumerate(self.processes):
                if process is None:
                    continue
                if self.pipes[other].poll() and other != index:
                    item = self.pipes[other].recv()
                    if item and item[0] == "error":
                        raise StageFailed(item[1])
                    self.early[other].append(item)
                if not process.is_alive() and not pipe.poll():
                    raise StageFailed(f"stage {other + 2} exited (code {process.exitcode})")
            if time.monotonic() > deadline:
                raise StageFailed(f"stage {index + 2} reported nothing within {timeout:.0f} s")
        try:
            item = pipe.recv()
        except EOFError:
            raise StageFailed(f"stage {index + 2} exited (code {self.processes[index].exitcode})") from None
        if item and item[0] == "error":
            raise StageFailed(item[1])
        return item

    def send(self, array: np.ndarray) -> None:
        assert self.sender is not None
        self.sender.send(array)

    def done(self) -> tuple[int, int, float, float]:
        """Stage 3's report of the oldest message it has not reported yet."""
        got, finished, first, last = self.report(1, STEP_TIMEOUT)
        return got, finished, first, last

    def stage2(self, count: int) -> list[tuple[int, int]]:
        return [self.report(0, STEP_TIMEOUT) for _ in range(count)]

    def close(self) -> None:
        stopped = False
        try:
            if self.sender is not None:
                try:
                    if all(p is not None and p.is_alive() for p in self.processes):
                        self.sender.stop()
                        stopped = True
                finally:
                    self.sender.close()
            # Told to stop, the stages finish what they hold and exit; a run that failed (a stage
            # died, a message was wrong) has nothing left to wait for: the stages are killed.
            for process in self.processes if stopped else ():
                if process is not None and process.pid is not None:
                    process.join(30.0)
        finally:
            for process in self.processes:
                if process is not None and process.pid is not None and process.is_alive():
                    process.kill()
                    process.join()
            for pipe in self.pipes:
                if pipe is not None:
                    pipe.close()
            self.kind.cleanup(self.config)


class RayStage:
    """A Ray actor: stage 2 (returns the array on) or stage 3 (returns its report)."""

    def __init__(self, compute: bool, last: bool) -> None:
        self.compute, self.last = compute, last
        self.stamps: list[tuple[int, int]] = []

    def ready(self) -> int:
        return os.getpid()

    def work(self, array: np.ndarray) -> Any:
        got = now()
        if self.compute:
            array = array.copy()  # Ray delivers a read-only view of its object store
        got_writable = now()
        if self.compute:
            array += 1
        if not self.last:
            self.stamps.append((got_writable, now()))
            return array
        flat = array.reshape(-1)
        return (got_writable, now(), float(flat[0]), float(flat[-1]), got)

    def reports(self) -> list[tuple[int, int]]:
        return self.stamps


class RayRun:
    """Stages 2 and 3 as Ray actors (a private local Ray instance, started once per benchmark run)."""

    started = False
    ray_dir: Optional[str] = None

    def __init__(self, method: str, shape: tuple[int, ...], mode: str, workdir: Path) -> None:
        self.shape, self.mode = shape, mode
        self.pending: list[Any] = []

    @classmethod
    def ensure_ray(cls, largest: int) -> None:
        if cls.started:
            return
        import logging

        import ray

        from ..methods.ray_object_store import object_store_bytes

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        cls.ray_dir = tempfile.mkdtemp(prefix=f"hb-ray-{os.getpid()}-", dir="/tmp")  # short socket paths
        ray.init(
            address="local",
            num_cpus=2,
            object_store_memory=object_store_bytes(largest),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=True,
            _temp_dir=cls.ray_dir,
        )
        cls.started = True

    @classmethod
    def shutdown(cls) -> None:
        if cls.started:
            import ray

            ray.shutdown()
            cls.started = False
        if cls.ray_dir is not None:
            shutil.rmtree(cls.ray_dir, ignore_errors=True)
            cls.ray_dir = None

    def start(self) -> None:
        import ray

        actor: Any = ray.remote(RayStage)  # its handles' methods gain .remote: typed as Any
        compute = self.mode == "compute"
        self.actors: list[Any] = [actor.remote(compute, False), actor.remote(compute, True)]
        ray.get([a.ready.remote() for a in self.actors], timeout=START_TIMEOUT)

    def send(self, array: np.ndarray) -> None:
        import ray

        ref = ray.put(array)
        self.pending.append(self.actors[1].work.remote(self.actors[0].work.remote(ref)))

    def done(self) -> tuple[int, int, float, float]:
        import ray

        got, finished, first, last, _ = ray.get(self.pending.pop(0), timeout=STEP_TIMEOUT)
        return got, finished, first, last

    def stage2(self, count: int) -> list[tuple[int, int]]:
        import ray

        stamps: list[tuple[int, int]] = ray.get(self.actors[0].reports.remote(), timeout=STEP_TIMEOUT)
        return stamps[-count:]

    def close(self) -> None:
        import ray

        self.pending.clear()
        for a in getattr(self, "actors", []):
            ray.kill(a)


# --- hakobu.Pipeline: stages 2 and 3 as its stages --------------------------------------------------
#
# The stage functions run in the pipeline's workers, which import them from this module by name
# (their settings come as functools.partial arguments). Stage 2 writes its stamps into a named
# hakobu.Array of int64, shape (STAMP_ROWS, 2): row ``tag % STAMP_ROWS`` holds (got, sent) of the
# message whose first element is ``tag`` (stage 1 writes it); PipelineRun made it and reads it.

STAMP_ROWS = 1 << 16  # rows of the stamp array (1 MiB): more than any run's messages
_stamp_arrays: dict[str, Any] = {}  # a worker's handles of stamp arrays, by name (opened once)
_stage2_received = 0  # messages this worker's stage 2 took (HAKOBU_BENCH_STAGE_DIES)
_pipeline_runs = itertools.count(1)


def pipeline_stage2(array: np.ndarray, *, stamps: str, compute: bool) -> np.ndarray:
    """hakobu.Pipeline's first stage (the benchmark's stage 2): adds one in place (``compute``),
    records (entry, just before returning) in row ``tag`` of the array ``stamps``, returns the array."""
    got = now()
    global _stage2_received
    table = _stamp_arrays.get(stamps)
    if table is None:
        import hakobu

        table = _stamp_arrays[stamps] = hakobu.Array(stamps, np.int64, (STAMP_ROWS, 2), create=False)
    flat = array.reshape(-1)
    tag = int(flat[0])
    _stage2_received += 1
    if _stage2_received == int(os.environ.get("HAKOBU_BENCH_STAGE_DIES", "0")):
        os._exit(3)  # as a crash or a kill would (tests)
    if compute:
        array += 1
    if corrupt_answers():  # HAKOBU_BENCH_CORRUPT=1 (tests): whole, but not the message that was sent
        flat[0] += 0.5
        flat[-1] += 0.5
    del flat
    sent = now()
    table.array[tag % STAMP_ROWS] = (got, sent)
    return array


def pipeline_stage3(array: np.ndarray, *, compute: bool) -> tuple[int, int, float, float]:
    """hakobu.Pipeline's last stage (the benchmark's stage 3): adds one in place (``compute``) and
    returns its report (got, done, first element, last element)."""
    got = now()
    if compute:
        array += 1
    done = now()
    flat = array.reshape(-1)
    return got, done, float(flat[0]), float(flat[-1])


class PipelineRun:
    """Stages 2 and 3 as the two stages of a ``hakobu.Pipeline`` (one worker each); stage 1 is this
    process's ``submit``. Its queues hold one message at 1 GiB, four below (as HakobuQueues')."""

    def __init__(self, method: str, shape: tuple[int, ...], mode: str, workdir: Path) -> None:
        self.shape, self.mode = shape, mode
        self.capacity = 1 if nbytes_of(shape) >= BIG else 4
        self.stamps_name = f"pb-stamps-{os.getpid()}-{next(_pipeline_runs)}"
        self.stamps: Any = None  # the stage 2 stamp array (hakobu.Array), made by start()
        self.pipeline: Any = None
        self.pending: list[concurrent.futures.Future[Any]] = []  # stage 3's reports to come, in order
        self.tags: list[int] = []  # every message's tag, in the order sent

    def start(self) -> None:
        import hakobu

        self.stamps = hakobu.Array(self.stamps_name, np.int64, (STAMP_ROWS, 2), create=True)
        compute = self.mode == "compute"
        self.pipeline = hakobu.Pipeline(
            hakobu.Stage(
                functools.partial(pipeline_stage2, stamps=self.stamps_name, compute=compute), name="stage 2"
            ),
            hakobu.Stage(functools.partial(pipeline_stage3, compute=compute), name="stage 3"),
            capacity=self.capacity,
        )

    def send(self, array: np.ndarray) -> None:
        tag = int(array.reshape(-1)[0])
        self.stamps.array[tag % STAMP_ROWS] = 0  # stage 2 writes it again
        self.tags.append(tag)
        self.pending.append(self.pipeline.submit(array))

    def done(self) -> tuple[int, int, float, float]:
        """Stage 3's report of the oldest message sent whose report was not taken yet."""
        future = self.pending.pop(0)
        try:
            got, finished, first, last = future.result(timeout=STEP_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise StageFailed(f"stage 3 reported nothing within {STEP_TIMEOUT:.0f} s") from None
        return got, finished, first, last

    def stage2(self, count: int) -> list[tuple[int, int]]:
        if count > STAMP_ROWS:
            raise ValueError(f"stage 2's stamps hold the last {STAMP_ROWS} messages, {count} asked")
        stamps = []
        for tag in self.tags[len(self.tags) - count :]:
            got, sent = (int(v) for v in self.stamps.array[tag % STAMP_ROWS])
            if not got or not sent:
                raise StageFailed(f"stage 2 recorded no stamps for message {tag}")
            stamps.append((got, sent))
        return stamps

    def close(self) -> None:
        pending, self.pending = self.pending, []
        pipeline, self.pipeline = self.pipeline, None
        try:
            if pipeline is not None:
                if all(future.done() for future in pending):
                    pipeline.close()  # nothing in flight: the workers leave at the end of their input
                    pipeline.join(STEP_TIMEOUT)
                pipeline.terminate()  # a failed run (or a stuck one): the workers are killed
        finally:
            stamps, self.stamps = self.stamps, None
            if stamps is not None:
                stamps.unlink()


# Methods whose stages are not stage processes over a Transport: what drives them (same interface as
# ProcessRun: start, send, done, stage2, close).
RUNS: dict[str, Any] = {"ray": RayRun, "hakobu-pipeline": PipelineRun}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def memcpy_us(shape: tuple[int, ...]) -> float:
    """One copy of the array into memory already touched: median of five (µs)."""
    source = np.ones(shape, np.float64)
    target = np.zeros(shape, np.float64)
    times = []
    for _ in range(5):
        start = now()
        np.copyto(target, source)
        times.append((now() - start) / 1e3)
    return statistics.median(times)


def messages_for(
    method: str, shape: tuple[int, ...], quick: bool, messages: Optional[int]
) -> tuple[int, str]:
    """Messages per phase and why fewer than asked (empty: not capped)."""
    if quick:
        return messages or QUICK_MESSAGES, ""
    nbytes = nbytes_of(shape)
    asked = messages or (BIG_MESSAGES if nbytes >= BIG else MESSAGES)
    if method.startswith("hakobu"):
        return asked, ""
    count = min(asked, max(PEER_MIN_MESSAGES, PEER_PHASE_BYTES // nbytes))
    if count == asked:
        return count, ""
    return count, (
        f"capped at {count} messages per phase: a peer moves at most {PEER_PHASE_BYTES >> 20} MiB per phase "
        f"(at least {PEER_MIN_MESSAGES} messages), so that the whole run takes minutes"
    )


def measure(
    method: str, shape: tuple[int, ...], mode: str, count: int, workdir: Path, progress: Callable[[str], None]
) -> dict[str, Any]:
    """One row: ``count`` messages one at a time, then ``count`` streamed, after the warm-up."""
    kind = TRANSPORTS[method]
    big = nbytes_of(shape) >= BIG
    window = 1 if (method == "ray" and big) else (BIG_WINDOW if big else WINDOW)
    increments = 2.0 if mode == "compute" else 0.0
    slow = big and method in PEERS  # seconds per message: one untimed message, no untimed stream
    warmup, stream_warmup = (1, 0) if slow else (WARMUP, window)
    run: Any = RUNS.get(method, ProcessRun)(method, shape, mode, workdir)
    source = None if kind.zero_copy_source else kind({}).source(shape)
    maker = kind({})
    hops1: list[float] = []
    hops2: list[float] = []
    ends: list[float] = []
    stage2_compute: list[float] = []
    makes: list[float] = []  # stage 1 making (hakobu.empty) or tagging its array, before the send

    def array_for(tag: int, stamp: bool) -> np.ndarray:
        array = maker.fresh(shape) if source is None else source
        if stamp or source is None:
            flat = array.reshape(-1)
            flat[0] = flat[-1] = float(tag)
        return array

    def check(tag: Optional[int], first: float, last: float) -> None:
        if first != last:
            raise StageFailed(f"a torn message: first element {first}, last {last}")
        if tag is not None and first != tag + increments:
            raise StageFailed(f"message {tag} arrived as {first - increments}")

    try:
        if method == "ray":
            RayRun.ensure_ray(nbytes_of(shape))
        run.start()
        tag = 0
        sent_at: list[int] = []
        dones: list[tuple[int, int, float, float]] = []
        for index in range(warmup + count):  # one at a time
            tag += 1
            made = now()
            array = array_for(tag, True)
            start = now()
            if index >= warmup:
                makes.append((start - made) / 1e3)
            run.send(array)
            del array
            done = run.done()
            check(tag, done[2], done[3])
            if index >= warmup:
                sent_at.append(start)
                dones.append(done)
        progress(f"{method} {shape_name(shape)} {mode}: one at a time done")
        stamps2 = run.stage2(warmup + count)[warmup:]
        for start, (got2, sent2), (got3, done3, _, _) in zip(sent_at, stamps2, dones):
            hops1.append((got2 - start) / 1e3)
            hops2.append((got3 - sent2) / 1e3)
            ends.append((done3 - start) / 1e3)
            stage2_compute.append((sent2 - got2) / 1e3)
        for _ in range(stream_warmup):  # untimed: the memory of messages in flight is touched here
            run.send(array_for(tag, False))
        for _ in range(stream_warmup):
            got3, last_done, first, last = run.done()
            check(None, first, last)
        run.stage2(stream_warmup)
        first_send = now()
        in_flight = 0
        last_done = first_send
        for _ in range(count):  # streamed
            tag += 1
            array = array_for(tag, False)
            run.send(array)
            del array
            in_flight += 1
            while in_flight >= window:
                got3, last_done, first, last = run.done()
                check(None, first, last)
                in_flight -= 1
        while in_flight:
            got3, last_done, first, last = run.done()
            check(None, first, last)
            in_flight -= 1
        run.stage2(count)
        seconds = (last_done - first_send) / 1e9
    except Exception as error:  # noqa: BLE001 - one method's failure is reported, the run goes on
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        run.close()
    nbytes = nbytes_of(shape)
    return {
        "messages": count,
        "end_to_end_us_median": statistics.median(ends),
        "end_to_end_us_p90": percentile(ends, 0.9),
        "hop1_us_median": statistics.median(hops1),
        "hop1_us_p90": percentile(hops1, 0.9),
        "hop2_us_median": statistics.median(hops2),
        "hop2_us_p90": percentile(hops2, 0.9),
        "stage2_work_us_median": statistics.median(stage2_compute),
        "throughput_gb_s": count * nbytes / seconds / 1e9,
        "messages_per_s": count / seconds,
        "make_us_median": statistics.median(makes),
        "window": window,
    }


def run(
    methods: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    quick: bool = False,
    messages: Optional[int] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Measures ``methods`` on ``shapes`` in compute and identity modes; the rows and memcpy per shape."""
    say = progress or (lambda what: None)
    unknown = [m for m in methods if m not in TRANSPORTS]
    if unknown:
        raise ValueError(f"unknown pipeline method(s) {', '.join(unknown)}; known: {', '.join(TRANSPORTS)}")
    rows: list[dict[str, Any]] = []
    copies = {shape_name(s): memcpy_us(s) for s in shapes}
    workdir = Path(tempfile.mkdtemp(prefix=f"hakobu-bench-pipeline-{os.getpid()}-"))
    try:
        for name in methods:
            kind = TRANSPORTS[name]
            missing = kind.missing()
            if missing is not None:
                rows.append({"method": name, "label": kind.label, "skipped": missing})
                continue
            for shape in shapes:
                for mode in ("compute", "identity"):
                    row: dict[str, Any] = {
                        "method": name,
                        "label": kind.label,
                        "shape": shape_name(shape),
                        "bytes": nbytes_of(shape),
                        "mode": mode,
                    }
                    if (
                        mode == "identity"
                        and name in PEERS
                        and nbytes_of(shape) > PEER_IDENTITY_MAX
                        and not quick
                    ):
                        row["skipped"] = (
                            f"the peers' identity stages run up to {PEER_IDENTITY_MAX >> 20} MiB "
                            "(the compute run's hops exclude a += 1)"
                        )
                        rows.append(row)
                        continue
                    count, capped = messages_for(name, shape, quick, messages)
                    if capped:
                        row["note"] = capped
                    say(f"{kind.label} {shape_name(shape)} {mode}: {count} messages")
                    row.update(measure(name, shape, mode, count, workdir, say))
                    rows.append(row)
    finally:
        RayRun.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows, copies


def plan(
    shapes: Optional[str], methods: Optional[str], quick: bool
) -> tuple[list[tuple[int, ...]], list[str]]:
    chosen_shapes = [
        parse_shape(s.strip())
        for s in (shapes or ",".join(QUICK_SHAPES if quick else SHAPES)).split(",")
        if s.strip()
    ]
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else list(TRANSPORTS)
    unknown = [m for m in chosen if m not in TRANSPORTS]
    if unknown:
        raise ValueError(f"unknown pipeline method(s) {', '.join(unknown)}; known: {', '.join(TRANSPORTS)}")
    return chosen_shapes, chosen


# --- the report ---------------------------------------------------------------------------------


def find(rows: Sequence[dict[str, Any]], method: str, shape: str, mode: str) -> Optional[dict[str, Any]]:
    return next(
        (
            r
            for r in rows
            if r["method"] == method
            and r.get("shape") == shape
            and r.get("mode") == mode
            and "hop1_us_median" in r
        ),
        None,
    )


def hop_us(row: dict[str, Any]) -> float:
    """The per-hop transport time of a row: the mean of its two hops' medians."""
    return (float(row["hop1_us_median"]) + float(row["hop2_us_median"])) / 2


def goals(rows: Sequence[dict[str, Any]], copies: dict[str, float]) -> list[dict[str, Any]]:
    big = shape_name(SHAPES["128x1024x1024"])
    out: list[dict[str, Any]] = []
    zero = [find(rows, "hakobu-zero-copy", big, mode) for mode in ("identity", "compute")]
    goal = f"1 GiB hakobu.empty arrays through three stages: <= {GOAL_HOP_MS:g} ms per stage (hop)"
    measured = [r for r in zero if r is not None]
    out.append(
        {
            "goal": goal,
            "met": None
            if not measured
            else all(max(r["hop1_us_median"], r["hop2_us_median"]) <= GOAL_HOP_MS * 1e3 for r in measured),
            "figures": "; ".join(
                f"{r['mode']}: hop 1→2 {format_time(r['hop1_us_median'])}, hop 2→3 {format_time(r['hop2_us_median'])}"
                for r in measured
            )
            or None,
        }
    )
    copied = find(rows, "hakobu", big, "identity")
    goal = f"1 GiB copied in once, through three stages: <= {GOAL_COPY_RATIO:g}x one memcpy"
    if copied is None or big not in copies:
        out.append({"goal": goal, "met": None, "figures": None})
    else:
        ratio = copied["end_to_end_us_median"] / copies[big]
        out.append(
            {
                "goal": goal,
                "met": ratio <= GOAL_COPY_RATIO,
                "figures": f"identity stages, stage 1's put -> stage 3 holds it: "
                f"{format_time(copied['end_to_end_us_median'])}, memcpy {format_time(copies[big])}: {ratio:.2f}x",
            }
        )
    goal = f">= {GOAL_JSON_RATIO:g}x the published HTTP + JSON figure ({HTTP_JSON_S_PER_GIB:g} s per GiB)"
    if copied is None:
        out.append({"goal": goal, "met": None, "figures": None})
    else:
        s_per_gib = copied["end_to_end_us_median"] / 1e6 / (copied["bytes"] / 2**30)
        ratio = HTTP_JSON_S_PER_GIB / s_per_gib
        out.append(
            {
                "goal": goal,
                "met": ratio >= GOAL_JSON_RATIO,
                "figures": f"hakobu (copied in once) moves 1 GiB through three stages in {s_per_gib * 1e3:.0f} ms: "
                f"{ratio:,.0f}x faster",
            }
        )
    return out


def goal_lines(rows: Sequence[dict[str, Any]], copies: dict[str, float]) -> list[str]:
    lines = []
    for g in goals(rows, copies):
        verdict = "not measured" if g["met"] is None else ("MET" if g["met"] else "NOT MET")
        lines.append(f"goal: {g['goal']}: {verdict}" + (f" ({g['figures']})" if g["figures"] else ""))
    return lines


def format_rate(gb_s: float) -> str:
    return f"{gb_s:.2f} GB/s" if gb_s >= 1 else f"{gb_s * 1e3:.1f} MB/s"


def ratio_to_hakobu(rows: Sequence[dict[str, Any]], row: dict[str, Any]) -> str:
    """The row's per-hop time divided by hakobu (copied in once)'s, same shape and mode."""
    base = find(rows, "hakobu", row["shape"], row["mode"])
    if base is None or hop_us(base) <= 0:
        return "-"
    return f"{hop_us(row) / hop_us(base):.2f}×"


COLUMNS = (
    "shape",
    "method",
    "stages",
    "end to end",
    "p90",
    "hop 1→2",
    "hop 2→3",
    "hop ÷ hakobu",
    "throughput",
    "msgs/s",
    "n",
    "make",
)


def cells(rows: Sequence[dict[str, Any]], row: dict[str, Any]) -> list[str]:
    return [
        format_time(row["end_to_end_us_median"]),
        format_time(row["end_to_end_us_p90"]),
        format_time(row["hop1_us_median"]),
        format_time(row["hop2_us_median"]),
        ratio_to_hakobu(rows, row),
        format_rate(row["throughput_gb_s"]),
        f"{row['messages_per_s']:.1f}",
        str(row["messages"]),
        format_time(row["make_us_median"]),
    ]


def grouped(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    shapes: list[str] = []
    for r in rows:
        if "shape" in r and r["shape"] not in shapes:
            shapes.append(r["shape"])
    return [(s, [r for r in rows if r.get("shape") == s]) for s in shapes]


def table_lines(rows: Sequence[dict[str, Any]], copies: dict[str, float]) -> list[str]:
    widths = (15, 34, 9, 11, 11, 11, 11, 13, 12, 9, 5, 11)
    lines = ["".join(f"{c:<{w}}" if i < 3 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(COLUMNS, widths)))]
    for shape, chunk in grouped(rows):
        for index, r in enumerate(chunk):
            lead = f"{shape if index == 0 else '':<15}{r['label']:<34}{r['mode']:<9}"
            if "skipped" in r:
                lines.append(f"{lead}skipped: {r['skipped']}")
            elif "error" in r:
                lines.append(f"{lead}FAILED: {r['error']}")
            else:
                lines.append(lead + "".join(f"{c:>{w}}" for c, w in zip(cells(rows, r), widths[3:])))
            if r.get("note"):
                lines.append(f"{'':<15}  ({r['note']})")
        if shape in copies:
            lines.append(f"{'':<15}memcpy of one array (same run): {format_time(copies[shape])}")
        lines.append("")
    lines += [f"{r['label']}: skipped: {r['skipped']}" for r in rows if "shape" not in r]
    return lines


def machine_line(about: dict[str, Any]) -> str:
    return (
        f"machine: {about['cpu']}, {about['cores']} cores, kernel {about['kernel']}, Python {about['python']}, "
        f"NumPy {about['numpy']}, hakobu {about['hakobu']}, /dev/shm {(about['dev_shm_bytes'] or 0) / 2**30:.1f} GiB"
    )


METHOD_NOTES = (
    "stage 1 (this process) makes each array and sends it; stages 2 and 3 (spawned processes) receive it, "
    "add one in place (compute) or not (identity) and pass it on. hop: the sender's send starts -> the next "
    "stage's receive returns a writable array (a += 1 excluded); end to end: stage 1's send -> stage 3 done "
    "(median and p90, one message at a time); throughput: the same messages streamed (at most `window` in "
    "flight), messages x bytes / (stage 3 done with the last - first send); make: stage 1 makes its array "
    "(hakobu.empty) or writes its tags, before the send (not in end to end). CLOCK_MONOTONIC in every stage."
)


def render(rows: Sequence[dict[str, Any]], copies: dict[str, float], console: Any) -> None:
    """The rich table of `hakobu bench --pipeline`."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="hakobu bench --pipeline: three stages, three processes", box=box.SIMPLE_HEAD)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("shape", "method", "stages") else "right")
    for shape, chunk in grouped(rows):
        for index, r in enumerate(chunk):
            label = (
                f"[bold cyan]{escape(r['label'])}[/]"
                if r["method"].startswith("hakobu")
                else escape(r["label"])
            )
            lead = [shape if index == 0 else "", label, r["mode"]]
            if "skipped" in r or "error" in r:
                what = (
                    f"[yellow]skipped[/]: {escape(r['skipped'])}"
                    if "skipped" in r
                    else f"[red]failed[/]: {escape(r['error'])}"
                )
                table.add_row(*lead, what, *[""] * (len(COLUMNS) - 4))
                continue
            table.add_row(*lead, *cells(rows, r))
            if r.get("note"):
                table.add_row("", f"[dim]{escape(r['note'])}[/]", *[""] * (len(COLUMNS) - 2))
        if shape in copies:
            table.add_row("", f"memcpy (same run): {format_time(copies[shape])}", *[""] * (len(COLUMNS) - 2))
        table.add_section()
    console.print(table)
    console.print(escape(machine_line(machine())), highlight=False)
    console.print(escape(METHOD_NOTES), highlight=False)
    for r in rows:
        if "shape" not in r:
            console.print(f"[yellow]skipped[/] {escape(r['label'])}: {escape(r['skipped'])}")
    for line in goal_lines(rows, copies):
        console.print(escape(line), highlight=False)


def to_json(
    rows: Sequence[dict[str, Any]], copies: dict[str, float], options: dict[str, Any]
) -> dict[str, Any]:
    return {
        "tool": "hakobu bench --pipeline",
        "options": options,
        "notes": METHOD_NOTES,
        "clock": "CLOCK_MONOTONIC (time.monotonic_ns) in every stage",
        "machine": machine(),
        "versions": versions(),
        "memcpy_us": copies,
        "results": list(rows),
        "goals": goals(rows, copies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.split("\n")[0] if __doc__ else ""
    )
    parser.add_argument(
        "--shapes", help=f"comma-separated (default {','.join(SHAPES)}; --quick: {','.join(QUICK_SHAPES)})"
    )
    parser.add_argument("--methods", help="comma-separated subset of " + ",".join(TRANSPORTS))
    parser.add_argument(
        "--messages", type=int, help=f"messages per phase (default {MESSAGES}, {BIG_MESSAGES} at 1 GiB)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small shapes, {QUICK_MESSAGES} messages: check that every method runs",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--domain", default=f"bench{os.getpid()}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        shapes, methods = plan(args.shapes, args.methods, args.quick)
        if args.messages is not None and args.messages < 1:
            raise ValueError("--messages must be at least 1")
    except ValueError as error:
        parser.error(str(error))
    os.environ["HAKOBU_DOMAIN"] = args.domain
    print(machine_line(machine()))
    print(
        f"pipeline: 3 stages; shapes {', '.join(map(shape_name, shapes))} float64\n{METHOD_NOTES}\n",
        flush=True,
    )
    rows, copies = run(
        methods,
        shapes,
        args.quick,
        args.messages,
        progress=lambda what: print(f"  {what}", file=sys.stderr, flush=True),
    )
    print("\n".join(table_lines(rows, copies)))
    print("\n".join(goal_lines(rows, copies)))
    if args.json:
        options = {
            "quick": args.quick,
            "methods": methods,
            "shapes": [shape_name(s) for s in shapes],
            "messages": args.messages,
        }
        with open(args.json, "w") as out:
            json.dump(to_json(rows, copies, options), out, indent=2)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    # Run as the module of its package: spawned stages and Ray's actors find its functions by name.
    from hakobu_bench.micro.pipeline import main as main_of_the_module

    raise SystemExit(main_of_the_module())
