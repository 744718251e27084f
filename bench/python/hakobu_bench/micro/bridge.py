"""hakobu's bridge between two hosts measured beside a raw TCP socket and pyzmq, in the same run.

Method
------
* Two "hosts": network namespaces joined by veth pairs on a private bridge
  (``hakobu_bench.netns.hosts(2)``), so every byte leaves one network stack and
  enters another as between machines (without a physical wire: the figures are
  bounded by the CPU's copies, not by a network card). Host A sends, host B
  receives; each side of hakobu has its own domain (``HAKOBU_DOMAIN``), as two
  machines would. Without root (or with ``--loopback``) everything runs in this
  namespace over 127.0.0.1, and the output says so.
* The message: a 64 MiB float64 array (``--size-mib``; ``--size-kib`` for small
  messages, 20000 of them by default, shown as messages per second too, no goal
  judged: the per-message cost of each path), an ordinary NumPy array
  of the sending program; the first and last element carry the message's number
  and the receiving program checks both for every message (order, nothing
  lost, nothing twice). Each method moves ``--warmup`` messages (untimed: first
  touches of buffers and shared memory, connection set-up), then ``--messages``
  timed ones. Time: from just before the first timed message is handed over in
  A to just after the last one is in hand in B (both processes read the same
  CLOCK_MONOTONIC); throughput = timed bytes / that time.
* Methods, each a sending and a receiving program started in their hosts:
  - ``tcp``: a raw TCP socket, ``sendall`` of the array's buffer and
    ``recv_into`` a preallocated buffer: the baseline (one copy into the kernel,
    one out);
  - ``zmq``: pyzmq PUSH/PULL with ``copy=False`` frames (the sender reuses a
    ring of 4 arrays, each refilled once ZeroMQ is done with it, ``track=True``):
    the ceiling of the library the bridge is built on;
  - ``zmq-1mib``: the same, each message sent as one multipart message of 1 MiB
    frames (views of the array, no copy). libzmq receives every frame into a
    buffer it allocates: a 64 MiB one is a fresh mmap each time, faulted in page
    by page, while 1 MiB ones are recycled by malloc. This row shows what the
    library reaches when frames stay small (the bridge too sends an array as 1 MiB
    frames, wire.CHUNK) and the data stays in ZeroMQ's buffers;
  - ``zmq-1mib-shm``: the same, and the receiving program copies each message
    out of ZeroMQ's buffers into a block of shared memory (``hakobu.empty``),
    as any receiver built on ZeroMQ must to hand the data to another process:
    the ceiling of a ZeroMQ bridge that delivers into shared memory (ZeroMQ
    cannot receive into memory it did not allocate, so this copy is one more
    than raw TCP's);
  - ``hakobu``: the bridge end to end, queue to queue: a producer in A
    ``put``s the array into queue Q of A's domain; ``hakobu.Bridge(Q,
    send_to=...)`` in a process of A carries it; ``hakobu.Bridge(Q,
    receive_at=...)`` in B puts it into queue Q of B's domain; a consumer in B
    ``get``s it. Four processes; on the way: the producer's copy into shared
    memory, the sending bridge's write of that memory to its data lane (a TCP
    socket beside ZeroMQ: one copy into the kernel, as raw TCP), the receiving
    bridge's read from the socket straight into B's heap (one copy out of the
    kernel, as raw TCP), and the consumer's view of it (no copy). Both queues hold at most ``--queue-mib`` (default 4 messages), so a
    producer faster than the network waits, as in use. The end of the stream
    travels through both bridges; the consumer checks it arrives.
  - ``hakobu-shared``: the same, the producer making each message with
    ``hakobu.empty`` (an array in shared memory, put by reference: no copy in A),
    the way hakobu's users send large arrays; like the TCP sender's array, it is
    not refilled between messages (only its first and last element are written).
    Without the producer's copy this row is the bridge's own throughput, queue
    to queue.
  - ``hakobu-zeromq``: the same with ``lane=False`` (everything through
    ZeroMQ, as with keys or ``--no-lane``): the receiving bridge copies each
    payload out of ZeroMQ's buffers, one copy more. Shown beside the others,
    not judged.
* Rounds (``--rounds``): the methods take turns in each round; the figure per
  method is the median over rounds, the ratio that of medians. Goal: the
  bridge >= 0.8x the raw TCP socket (judged for the two rows on the data lane,
  the default); the bridge rows are also given as a fraction of
  ``zmq-1mib-shm``, the ceiling of a bridge that receives through ZeroMQ.
  On a machine with few cores the figures are bounded by CPU time (every copy
  and the network stacks share the same cores), not by a network card.
* The machine and versions are printed with the results (``--json FILE`` also
  writes every figure).

Run: ``python -m hakobu_bench.micro.bridge`` (about a minute; ``--quick``: a few
seconds). Needs pyzmq (``pip install "hakobu[bridge]"``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np

from .. import netns
from ..machine import with_versions as machine

MODULE = "hakobu_bench.micro.bridge"  # the programs of each method run this module again (python -m)
KIB = 2**10
MIB = 2**20
GOAL_FROM_BYTES = MIB  # the goal is judged for messages of this size and more
METHODS = ("tcp", "zmq", "zmq-1mib", "zmq-1mib-shm", "hakobu", "hakobu-shared", "hakobu-zeromq")
BRIDGE_METHODS = ("hakobu", "hakobu-shared", "hakobu-zeromq")
JUDGED_METHODS = ("hakobu", "hakobu-shared")  # the bridge as it runs by default (on its data lane)
LABELS = {
    "tcp": "raw TCP socket (sendall / recv_into)",
    "zmq": "pyzmq PUSH/PULL, copy=False",
    "zmq-1mib": "pyzmq PUSH/PULL, copy=False, 1 MiB frames",
    "zmq-1mib-shm": "pyzmq, 1 MiB frames, copied into shm",
    "hakobu": "hakobu bridge, queue -> queue",
    "hakobu-shared": "hakobu bridge, hakobu.empty arrays",
    "hakobu-zeromq": "hakobu bridge --no-lane, hakobu.empty",
}
FRAME_BYTES = {"zmq": 0, "zmq-1mib": MIB, "zmq-1mib-shm": MIB}  # 0: the message in one frame
GOAL = 0.8  # the bridge's throughput >= GOAL x raw TCP's
WATCHDOG = 120.0  # s: no program of a method waits longer for anything (only against a hang)
ZMQ_RING = 4  # arrays the zmq sender refills in turn


# --- the programs of each method (run with --role) -----------------------------------------------


def stamp(**fields: Any) -> None:
    """The one line a program says at its end, read by the run that started it."""
    print(json.dumps(fields), flush=True)


def numbered(array: np.ndarray, number: int) -> np.ndarray:
    array[0] = array[-1] = number
    return array


def check(array: np.ndarray, number: int, size: int) -> None:
    if array.nbytes != size or array[0] != number or array[-1] != number:
        raise SystemExit(
            f"message {number} arrived wrong: {array.nbytes} bytes (expected {size}), "
            f"numbered {array[0]!r} / {array[-1]!r}"
        )


def tcp_send(address: str, port: int, count: int, size: int) -> None:
    array = np.ones(size // 8)
    deadline = time.monotonic() + WATCHDOG
    while True:  # the receiver may not listen yet
        try:
            connection = socket.create_connection((address, port), timeout=WATCHDOG)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with connection:
        started = 0.0
        for number in range(count):
            if number == WARMUP:
                started = time.perf_counter()
            connection.sendall(numbered(array, number).data.cast("B"))
        connection.shutdown(socket.SHUT_WR)
        connection.recv(1)  # the receiver closes once it has everything
    stamp(started=started)


def tcp_receive(port: int, count: int, size: int) -> None:
    array = np.empty(size // 8)
    view = array.data.cast("B")
    with socket.create_server(("", port)) as listener:
        listener.settimeout(WATCHDOG)
        print("ready", flush=True)
        connection, _ = listener.accept()
    with connection:
        connection.settimeout(WATCHDOG)
        for number in range(count):
            got = 0
            while got < size:
                n = connection.recv_into(view[got:])
                if n == 0:
                    raise SystemExit(f"the sender closed after {number} messages and {got} bytes")
                got += n
            check(array, number, size)
        finished = time.perf_counter()
    stamp(finished=finished)


def zmq_send(address: str, port: int, count: int, size: int, frame_bytes: int) -> None:
    import zmq

    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, int(WATCHDOG * 1000))
    push.setsockopt(zmq.SNDTIMEO, int(WATCHDOG * 1000))
    push.connect(f"tcp://{address}:{port}")
    ring = [np.ones(size // 8) for _ in range(ZMQ_RING)]
    trackers: list[Any] = [None] * ZMQ_RING
    started = 0.0
    for number in range(count):
        if number == WARMUP:
            started = time.perf_counter()
        slot = number % ZMQ_RING
        if trackers[slot] is not None:
            trackers[slot].wait(WATCHDOG)  # ZeroMQ is done with this array: refill it
        view = numbered(ring[slot], number).data.cast("B")
        step = frame_bytes or size
        parts = [view[start : start + step] for start in range(0, size, step)]
        # The frames go out in order: the last one's tracker says ZeroMQ is done with them all.
        trackers[slot] = push.send_multipart(parts, copy=False, track=True)
    push.close()  # lingers until everything is sent
    context.term()
    stamp(started=started)


def zmq_receive(port: int, count: int, size: int, domain: str) -> None:
    """``domain`` not empty: each message is copied into a block of shared memory there."""
    import zmq

    if domain:
        import hakobu
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVTIMEO, int(WATCHDOG * 1000))
    pull.bind(f"tcp://*:{port}")
    print("ready", flush=True)
    for number in range(count):
        frames = pull.recv_multipart(copy=False)
        if domain:
            block = hakobu.empty(size // 8, domain=domain)
            into, at = block.view(np.uint8), 0
            for frame in frames:
                part = np.frombuffer(frame.buffer, dtype=np.uint8)
                into[at : at + part.size] = part
                at += part.size
            del frames, into, part
            check(block, number, size)
            del block
            continue
        first = np.frombuffer(frames[0].buffer, dtype=np.float64)
        last = np.frombuffer(frames[-1].buffer, dtype=np.float64)
        total = sum(len(frame.buffer) for frame in frames)
        if total != size or first[0] != number or last[-1] != number:
            raise SystemExit(
                f"message {number} arrived wrong: {total} bytes, numbered {first[0]} / {last[-1]}"
            )
        del frames, first, last
    finished = time.perf_counter()
    pull.close(linger=0)
    context.term()
    stamp(finished=finished)


def hakobu_produce(domain: str, name: str, count: int, size: int, shared: bool) -> None:
    """``shared``: each message a new ``hakobu.empty`` array (put by reference), else one
    ordinary array put again and again (copied into shared memory by each put)."""
    import hakobu

    array = np.ones(size // 8)
    started = 0.0
    with hakobu.Queue(name, domain=domain, create=False) as queue:
        for number in range(count):
            if number == WARMUP:
                started = time.perf_counter()
            if shared:
                array = hakobu.empty(size // 8, domain=domain)
            queue.put(numbered(array, number), timeout=WATCHDOG)
    # Leaving the block closes the queue: the end of the stream, which the bridges carry over.
    stamp(started=started)


def hakobu_consume(domain: str, name: str, count: int, size: int) -> None:
    import hakobu

    with hakobu.Queue(name, domain=domain, create=False) as queue:
        print("ready", flush=True)
        for number in range(count):
            check(queue.get(timeout=WATCHDOG), number, size)
        finished = time.perf_counter()
        try:
            extra = queue.get(timeout=WATCHDOG)
        except hakobu.SendersLost as error:
            raise SystemExit(f"the stream ended as failed (SendersLost), not cleanly: {error}") from None
        except hakobu.EndOfStream:
            stamp(finished=finished)
            return
    raise SystemExit(f"a message after the last one: {type(extra).__name__}")


def hakobu_bridge(domain: str, name: str, role: str, endpoint: str, window_bytes: int, lane: bool) -> None:
    import hakobu

    options: dict[str, Any] = {"window_bytes": window_bytes} if window_bytes else {}
    options["lane"] = lane
    if role == "send":
        bridge = hakobu.Bridge(name, send_to=endpoint, domain=domain, timeout=WATCHDOG, **options)
    else:
        bridge = hakobu.Bridge(name, receive_at=endpoint, domain=domain, timeout=WATCHDOG, **options)
    print("ready", flush=True)
    try:
        if not bridge.join(timeout=WATCHDOG * 2):
            raise SystemExit(f"the bridge ({role}) did not end within {WATCHDOG * 2:g} s: {bridge.stats()}")
    finally:
        bridge.close()
    stamp(stats=bridge.stats())


WARMUP = 0  # set from --warmup in every program (messages numbered below it are not timed)


def role_main(argv: Sequence[str]) -> None:
    """A method's program: ``--role ROLE WARMUP ARGS...`` (started by ``run_method``)."""
    global WARMUP
    role, warmup, *rest = argv
    WARMUP = int(warmup)
    if role == "tcp-send":
        tcp_send(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    elif role == "tcp-receive":
        tcp_receive(int(rest[0]), int(rest[1]), int(rest[2]))
    elif role == "zmq-send":
        zmq_send(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]))
    elif role == "zmq-receive":
        zmq_receive(int(rest[0]), int(rest[1]), int(rest[2]), rest[3] if len(rest) > 3 else "")
    elif role == "hakobu-produce":
        hakobu_produce(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4] == "shared")
    elif role == "hakobu-consume":
        hakobu_consume(rest[0], rest[1], int(rest[2]), int(rest[3]))
    elif role == "hakobu-bridge":
        hakobu_bridge(rest[0], rest[1], rest[2], rest[3], int(rest[4]), rest[5] == "lane")
    else:
        raise SystemExit(f"unknown role {role!r}")


# --- the run ---------------------------------------------------------------------------------------


class Place:
    """Where a method's side runs: a host (network namespace), or this namespace (loopback)."""

    def __init__(self, host: Optional[netns.Host]) -> None:
        self.host = host
        self.address = host.address if host is not None else "127.0.0.1"

    def start(self, argv: list[str], env: Optional[dict[str, str]] = None) -> subprocess.Popen[str]:
        popen: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        if env is not None:
            popen["env"] = env
        if self.host is not None:
            return self.host.start(argv, **popen)
        return subprocess.Popen(argv, **popen)


class MethodFailed(Exception):
    """A program of a method failed or hung; the text says which and what it said."""


@contextlib.contextmanager
def programs() -> Iterator[list[tuple[str, subprocess.Popen[str]]]]:
    """The programs of one method's run: killed at the end, whatever happened."""
    started: list[tuple[str, subprocess.Popen[str]]] = []
    try:
        yield started
    finally:
        for _, process in started:
            if process.poll() is None:
                process.kill()
            process.communicate()


def start_role(
    started: list[tuple[str, subprocess.Popen[str]]], place: Place, what: str, args: Sequence[object]
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", MODULE, "--role", *map(str, args)]
    process = place.start(argv)
    started.append((what, process))
    return process


def wait_ready(what: str, process: subprocess.Popen[str]) -> None:
    line = process.stdout.readline() if process.stdout else ""
    if line.strip() != "ready":
        process.kill()
        _, err = process.communicate()
        raise MethodFailed(f"{what} did not start: {line.strip()} {err.strip()[-2000:]}")


def outcome(what: str, process: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = process.communicate(timeout=WATCHDOG * 2)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise MethodFailed(
            f"{what} did not finish within {WATCHDOG * 2:g} s: {err.strip()[-2000:]}"
        ) from None
    if process.returncode != 0:
        raise MethodFailed(f"{what} failed (exit {process.returncode}): {err.strip()[-2000:]}")
    lines = out.strip().splitlines()
    try:
        stamped: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise MethodFailed(f"{what} said nothing readable: {out[-500:]!r} {err[-2000:]}") from None
    return stamped


def run_method(
    method: str, a: Place, b: Place, port: int, args: argparse.Namespace, run_id: str
) -> dict[str, Any]:
    """One round of ``method``: its programs in A and B; returns the figures (or raises MethodFailed)."""
    size = args.size
    count = args.warmup + args.messages
    common = [args.warmup]
    stats: dict[str, Any] = {}
    with programs() as started:
        if method not in BRIDGE_METHODS:
            kind = method.split("-")[0]
            into = [f"bridgebenchb{run_id}"] if method == "zmq-1mib-shm" else []
            receiver = start_role(
                started, b, "receiver", [f"{kind}-receive", *common, port, count, size, *into]
            )
            wait_ready("receiver", receiver)
            extra = [FRAME_BYTES[method]] if kind == "zmq" else []
            sender = start_role(
                started, a, "sender", [f"{kind}-send", *common, b.address, port, count, size, *extra]
            )
            finished = outcome("receiver", receiver)["finished"]
            began = outcome("sender", sender)["started"]
        else:
            import hakobu

            name = f"bridge-bench-{run_id}"
            window = (args.window_mib or 0) * MIB  # 0: the Bridge's default
            lane = "no-lane" if method == "hakobu-zeromq" else "lane"
            domains = (f"bridgebencha{run_id}", f"bridgebenchb{run_id}")
            # Both queues made here, bounded, so that neither side buffers more than a few messages.
            queues = [
                hakobu.Queue(name, domain=d, create=True, max_bytes=args.queue_mib * MIB) for d in domains
            ]
            try:
                receiving = start_role(
                    started,
                    b,
                    "receiving bridge",
                    ["hakobu-bridge", *common, domains[1], name, "receive", f"tcp://*:{port}", window, lane],
                )
                wait_ready("receiving bridge", receiving)
                consumer = start_role(
                    started, b, "consumer", ["hakobu-consume", *common, domains[1], name, count, size]
                )
                wait_ready("consumer", consumer)
                sending = start_role(
                    started,
                    a,
                    "sending bridge",
                    [
                        "hakobu-bridge",
                        *common,
                        domains[0],
                        name,
                        "send",
                        f"tcp://{b.address}:{port}",
                        window,
                        lane,
                    ],
                )
                wait_ready("sending bridge", sending)
                source = "copied" if method == "hakobu" else "shared"
                producer = start_role(
                    started, a, "producer", ["hakobu-produce", *common, domains[0], name, count, size, source]
                )
                finished = outcome("consumer", consumer)["finished"]
                began = outcome("producer", producer)["started"]
                stats = {
                    "sending_bridge": outcome("sending bridge", sending)["stats"],
                    "receiving_bridge": outcome("receiving bridge", receiving)["stats"],
                }
            finally:
                for queue in queues:
                    queue.unlink()
                    queue.close()
    seconds = finished - began
    row: dict[str, Any] = {
        "method": method,
        "messages": args.messages,
        "message_bytes": size,
        "seconds": seconds,
        "throughput_gb_s": args.messages * size / seconds / 1e9,
        "messages_per_s": args.messages / seconds,
    }
    if stats:
        row["bridge_stats"] = stats
    return row


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def measure(args: argparse.Namespace, a: Place, b: Place, loopback: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for round_number in range(args.rounds):
        for k, method in enumerate(args.methods):
            port = free_port() if loopback else 7400 + k
            run_id = f"{os.getpid()}r{round_number}"
            try:
                row = run_method(method, a, b, port, args, run_id)
            except MethodFailed as error:
                row = {"method": method, "error": str(error)}
                print(f"  round {round_number + 1}: {LABELS[method]:42s}: FAILED: {error}", flush=True)
            else:
                print(
                    f"  round {round_number + 1}: {LABELS[method]:42s}: {row['throughput_gb_s']:6.2f} GB/s "
                    f"{row['messages_per_s']:9,.0f} msg/s ({row['seconds'] * 1e3:7.1f} ms for "
                    f"{args.messages} x {size_text(args.size)})",
                    flush=True,
                )
            rows.append({**row, "round": round_number + 1})
    return rows


def size_text(size: int) -> str:
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{size // KIB} KiB"


def summary(rows: list[dict[str, Any]], methods: Sequence[str], size: int) -> dict[str, Any]:
    medians: dict[str, float] = {}
    rates: dict[str, float] = {}
    for method in methods:
        done = [r for r in rows if r["method"] == method and "error" not in r]
        if done:
            medians[method] = statistics.median(r["throughput_gb_s"] for r in done)
            rates[method] = statistics.median(r["messages_per_s"] for r in done)
    ratios = {m: v / medians["tcp"] for m, v in medians.items()} if "tcp" in medians else {}
    ceiling = medians.get("zmq-1mib-shm")
    of_ceiling = {m: medians[m] / ceiling for m in BRIDGE_METHODS if m in medians and ceiling}
    goal: dict[str, Any] = {"goal": f"hakobu bridge >= {GOAL}x raw TCP"}
    judged = {m: ratios[m] for m in JUDGED_METHODS if m in ratios}
    if size < GOAL_FROM_BYTES:
        goal["not_judged"] = f"the goal is for large arrays ({GOAL_FROM_BYTES // MIB} MiB and more)"
    elif judged:
        goal["ratios"] = judged
        goal["met"] = {m: r >= GOAL for m, r in judged.items()}
    return {
        "median_gb_s": medians,
        "median_messages_per_s": rates,
        "ratio_to_tcp": ratios,
        "ratio_to_zmq_shm": of_ceiling,
        "goal": goal,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--role", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument(
        "--messages",
        type=int,
        default=None,
        help="timed messages per method and round (default 32; 20000 with --size-kib)",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed messages first (default 16; 1000 with --size-kib)"
    )
    parser.add_argument("--size-mib", type=int, default=None, help="message size in MiB (default 64)")
    parser.add_argument(
        "--size-kib",
        type=int,
        default=None,
        help="message size in KiB instead: small messages, shown as messages per second too (no goal judged)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds; methods take turns in each")
    parser.add_argument(
        "--queue-mib", type=int, default=None, help="bound of each queue (default 4 messages)"
    )
    parser.add_argument(
        "--window-mib",
        type=int,
        default=None,
        help="the bridges' window_bytes in MiB (default: the Bridge's)",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: " + ",".join(METHODS))
    parser.add_argument("--loopback", action="store_true", help="one namespace over 127.0.0.1, even as root")
    parser.add_argument(
        "--link-rate",
        metavar="RATE",
        help="what each host's link sends at most, as a network card would (a tc rate: 10gbit, 25gbit)",
    )
    parser.add_argument("--quick", action="store_true", help="4 timed messages, 2 warm-up, 1 round")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args(argv)
    if args.role:
        role_main(args.role)
        return 0
    if args.size_mib is not None and args.size_kib is not None:
        parser.error("--size-mib and --size-kib: give one")
    small = args.size_kib is not None
    if args.messages is None:
        args.messages = 20000 if small else 32
    if args.warmup is None:
        args.warmup = 1000 if small else 16
    if args.quick:
        args.messages, args.warmup, args.rounds = (200, 20, 1) if small else (4, 2, 1)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        parser.error(f"unknown method(s) {unknown}: choose among {', '.join(METHODS)}")
    for option in ("messages", "size_mib", "size_kib", "rounds", "window_mib"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    args.size = args.size_kib * KIB if small else (args.size_mib or 64) * MIB
    if args.queue_mib is None:
        args.queue_mib = max(4, 4 * args.size // MIB)
    why_not = netns.unavailable()
    loopback = args.loopback or why_not is not None
    if args.link_rate is not None:
        if loopback:
            parser.error(f"--link-rate needs two hosts (network namespaces): {why_not or '--loopback given'}")
        try:
            netns.rate_bits(args.link_rate)
        except ValueError as error:
            parser.error(f"--link-rate: {error}")
    mode = "loopback in one network namespace (127.0.0.1)" if loopback else "two hosts (network namespaces)"
    print(f"hakobu bridge between {mode}: {size_text(args.size)} float64 arrays")
    if args.link_rate is not None:
        print(f"link: each host sends at most {args.link_rate} (a tc token bucket), as a network card would")
    print(f"machine: {json.dumps(machine())}")
    if loopback:
        reason = "--loopback" if args.loopback else f"namespaces unavailable: {why_not}"
        print(f"note: {reason}; the figures are loopback's, not those of two network stacks")
    print(
        f"method: {args.warmup} untimed then {args.messages} timed messages per method, from the first "
        f"timed hand-over in A to the last message in hand in B; median of {args.rounds} round(s), "
        f"methods taking turns (see `python -m {MODULE} --help` and the module's docstring)"
    )
    if loopback:
        rows = measure(args, Place(None), Place(None), loopback=True)
    else:
        with netns.hosts(2, rate=args.link_rate) as (a, b):
            rows = measure(args, Place(a), Place(b), loopback=False)
    result = summary(rows, args.methods, args.size)
    print("results (median over rounds):")
    for method in args.methods:
        if method not in result["median_gb_s"]:
            print(f"  {LABELS[method]:42s}: every round failed")
            continue
        ratio = result["ratio_to_tcp"].get(method)
        shown = f"{ratio:5.2f}x raw TCP" if ratio is not None else ""
        if method in result["ratio_to_zmq_shm"]:
            shown += f", {result['ratio_to_zmq_shm'][method]:4.2f}x ZeroMQ into shm"
        rate = result["median_messages_per_s"][method]
        print(
            f"  {LABELS[method]:42s}: {result['median_gb_s'][method]:6.2f} GB/s {rate:9,.0f} msg/s  {shown}"
        )
    goal = result["goal"]
    if "not_judged" in goal:
        print(f"goal: {goal['goal']}: not judged for {size_text(args.size)} messages ({goal['not_judged']})")
    for method, met in goal.get("met", {}).items():
        print(
            f"goal: {goal['goal']} ({method}): {goal['ratios'][method]:.2f}x, {'met' if met else 'NOT met'}"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "machine": machine(),
                    "mode": "loopback" if loopback else "namespaces",
                    "options": {k: v for k, v in vars(args).items() if k not in ("role", "json")},
                    "results": rows,
                    **result,
                },
                out,
                indent=2,
            )
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
