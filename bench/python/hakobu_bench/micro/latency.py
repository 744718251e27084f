"""Small-message round trips between two separately started Python programs, hakobu beside its baselines.

Method
------
* Two programs: this one and an echo peer started as a separate interpreter
  (``python -m hakobu_bench.micro.latency --peer METHOD ...``), each method with its own
  peer, started fresh for its turn and stopped after it. Methods take turns
  within each round (several rounds), so a noisy spell of the machine falls on
  all of them.
* A round trip: this program sends a 64-byte message, the peer receives it and
  sends it back, this program receives it. Median and 99th percentile of the
  round trip over many trips after a warm-up, and the ratio of each median to
  the Unix domain socket's of the same round.
* Payloads: 64 ``bytes``, and a 64-byte float64 array (8 elements). hakobu
  sends both natively (``q.put(a)`` / ``q.get()``). The Unix socket (SOCK_STREAM,
  a path in a private directory), ``multiprocessing.connection`` (Listener /
  Client over a Unix socket) and pyzmq (PAIR over ipc://) send bytes with
  their bytes calls; for the array, ``a.tobytes()`` out and ``np.frombuffer``
  (+copy) in on both sides, the cheapest a user would write (the peer rebuilds
  the array before it answers). iceoryx2 (publish-subscribe + event service,
  hakobu bench's method) runs where it is importable.
* hakobu runs in each latency mode (both programs in the same mode):
  adaptive (the default), spin, sleep; and ``await q.get_async()`` in an
  asyncio loop beside the blocking ``q.get()`` (both adaptive).
* "slow peer": the peer does ~50 us of work (a busy loop) per message before
  answering, as a Python peer that computes something does; that is where
  adaptive spinning matters (a 20 us fixed spin sleeps on every message).
* Idle receivers: a program blocked in ``q.get()`` with no sender for a few
  seconds, in each mode, reports the CPU time it used (getrusage in the
  program itself); and one with 1000 ``get_async`` waiters on one loop.
* CPU per trip: user + system time of this program per round trip.
The machine (CPU, cores, kernel) is printed with the results.

Run: python -m hakobu_bench.micro.latency [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing.connection as mpc
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

import hakobu

from ..machine import with_versions as machine

MODULE = "hakobu_bench.micro.latency"  # the peers run this module again (python -m)

MESSAGE_BYTES = 64
SLOW_PEER_WORK = 50e-6  # seconds of work per message in the "slow peer" variant


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def busy(seconds: float) -> None:
    if seconds <= 0:
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- peers: each echoes until told to stop ---------------------------------------------------

STOP = b"stop"


def peer_hakobu(args: argparse.Namespace) -> None:
    inbox = hakobu.Queue(args.name + "-to", create=False, domain=args.domain, latency=args.mode)
    outbox = hakobu.Queue(args.name + "-from", create=False, domain=args.domain, latency=args.mode)
    while True:
        item = inbox.get()
        if isinstance(item, bytes) and item == STOP:
            break
        busy(args.work)
        outbox.put(item)
    inbox.close()
    outbox.close()


def as_payload(data: bytes, array: bool) -> Any:
    return np.frombuffer(data, dtype=np.float64).copy() if array else data


def to_bytes(item: Any) -> bytes:
    return item.tobytes() if isinstance(item, np.ndarray) else bytes(item)


def peer_unix(args: argparse.Namespace) -> None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(args.address)
    while True:
        data = recv_exactly(connection, MESSAGE_BYTES)
        if data.startswith(STOP):
            break
        item = as_payload(data, args.array)
        busy(args.work)
        connection.sendall(to_bytes(item))
    connection.close()


def recv_exactly(connection: socket.socket, size: int) -> bytes:
    data = connection.recv(size)
    while len(data) < size:
        more = connection.recv(size - len(data))
        if not more:
            raise ConnectionError("peer closed")
        data += more
    return data


def peer_mp(args: argparse.Namespace) -> None:
    connection = mpc.Client(args.address, family="AF_UNIX")
    while True:
        data = connection.recv_bytes()
        if data.startswith(STOP):
            break
        item = as_payload(data, args.array)
        busy(args.work)
        connection.send_bytes(to_bytes(item))
    connection.close()


def peer_zmq(args: argparse.Namespace) -> None:
    import zmq

    context = zmq.Context()
    pair = context.socket(zmq.PAIR)
    pair.connect(args.address)
    while True:
        data = pair.recv()
        if data.startswith(STOP):
            break
        item = as_payload(data, args.array)
        busy(args.work)
        pair.send(to_bytes(item))
    pair.close(linger=0)
    context.term()


PEERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "hakobu": peer_hakobu,
    "unix": peer_unix,
    "mp": peer_mp,
    "zmq": peer_zmq,
}


def start_peer(method: str, extra: list[str], work: float, array: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", MODULE, "--peer", method, "--work", str(work), *extra]
    if array:
        command.append("--array")
    return subprocess.Popen(command)


# --- the sender's side of each method ---------------------------------------------------------


class Run:
    """One method's turn: start the peer, bounce messages, stop the peer."""

    def __init__(self, label: str) -> None:
        self.label = label

    def measure(self, payload: Any, trips: int, warmup: int, work: float) -> tuple[list[float], float]:
        raise NotImplementedError


def timed(round_trip: Callable[[], Any], trips: int, warmup: int) -> tuple[list[float], float]:
    for _ in range(warmup):
        round_trip()
    times = []
    cpu = cpu_seconds()
    for _ in range(trips):
        start = time.perf_counter()
        round_trip()
        times.append(time.perf_counter() - start)
    return times, (cpu_seconds() - cpu) / trips


class HakobuRun(Run):
    def __init__(self, label: str, mode: str, use_async: bool = False) -> None:
        super().__init__(label)
        self.mode = mode
        self.use_async = use_async

    def measure(self, payload: Any, trips: int, warmup: int, work: float) -> tuple[list[float], float]:
        domain = f"lat{os.getpid()}"
        name = f"echo-{self.mode}-{int(self.use_async)}"
        to = hakobu.Queue(name + "-to", capacity=8, create=True, domain=domain, latency=self.mode)
        back = hakobu.Queue(name + "-from", capacity=8, create=True, domain=domain, latency=self.mode)
        peer = start_peer(
            "hakobu",
            ["--name", name, "--domain", domain, "--mode", self.mode],
            work,
            isinstance(payload, np.ndarray),
        )
        try:
            if self.use_async:
                result = asyncio.run(self._measure_async(to, back, payload, trips, warmup))
            else:

                def round_trip() -> Any:
                    to.put(payload)
                    return back.get()

                result = timed(round_trip, trips, warmup)
            to.put(STOP)
            peer.wait(30)
            return result
        finally:
            if peer.poll() is None:
                peer.kill()
            to.unlink()
            back.unlink()

    @staticmethod
    async def _measure_async(
        to: hakobu.Queue, back: hakobu.Queue, payload: Any, trips: int, warmup: int
    ) -> tuple[list[float], float]:
        for _ in range(warmup):
            to.put(payload)
            await back.get_async()
        times = []
        cpu = cpu_seconds()
        for _ in range(trips):
            start = time.perf_counter()
            to.put(payload)
            await back.get_async()
            times.append(time.perf_counter() - start)
        return times, (cpu_seconds() - cpu) / trips


class SocketRun(Run):
    """Unix socket, multiprocessing.connection or pyzmq: a listening end here, the peer connects."""

    def __init__(self, label: str, method: str) -> None:
        super().__init__(label)
        self.method = method

    def measure(self, payload: Any, trips: int, warmup: int, work: float) -> tuple[list[float], float]:
        array = isinstance(payload, np.ndarray)
        workdir = Path(tempfile.mkdtemp(prefix="hakobu-lat-"))
        closers: list[Callable[[], None]] = []
        peer: Optional[subprocess.Popen[bytes]] = None
        send: Callable[[bytes], Any]
        receive: Callable[[], bytes]
        try:
            if self.method == "unix":
                address = str(workdir / "s")
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(address)
                listener.listen(1)
                closers.append(listener.close)
                peer = start_peer("unix", ["--address", address], work, array)
                connection, _ = listener.accept()
                closers.append(connection.close)

                send = connection.sendall
                receive = lambda: recv_exactly(connection, MESSAGE_BYTES)  # noqa: E731

            elif self.method == "mp":
                address = str(workdir / "s")
                mp_listener = mpc.Listener(address, family="AF_UNIX")
                closers.append(mp_listener.close)
                peer = start_peer("mp", ["--address", address], work, array)
                mp_connection = mp_listener.accept()
                closers.append(mp_connection.close)
                send = mp_connection.send_bytes
                receive = mp_connection.recv_bytes
            else:
                import zmq

                context = zmq.Context()
                pair = context.socket(zmq.PAIR)
                address = f"ipc://{workdir / 's'}"
                pair.bind(address)
                closers.append(context.term)
                closers.append(lambda: pair.close(linger=0))
                peer = start_peer("zmq", ["--address", address], work, array)
                send = pair.send
                receive = pair.recv

            def round_trip() -> Any:
                send(to_bytes(payload))
                return as_payload(receive(), array)

            result = timed(round_trip, trips, warmup)
            send(STOP.ljust(MESSAGE_BYTES, b"\0"))
            peer.wait(30)
            return result
        finally:
            if peer is not None and peer.poll() is None:
                peer.kill()
            for close in reversed(closers):
                close()
            shutil.rmtree(workdir, ignore_errors=True)


class Iceoryx2Run(Run):
    """hakobu bench's iceoryx2 method (publish-subscribe + event service), its own peer program."""

    def measure(self, payload: Any, trips: int, warmup: int, work: float) -> tuple[list[float], float]:
        from ..channel import StampBoard
        from ..methods.iceoryx2_pubsub import Iceoryx2PubSub

        workdir = Path(tempfile.mkdtemp(prefix="hakobu-lat-"))
        stamps = StampBoard(workdir / "stamps", create=True)
        channel = Iceoryx2PubSub(workdir, stamps)
        array = np.frombuffer(payload, dtype=np.uint8) if isinstance(payload, bytes) else payload
        channel.largest_message = array.nbytes
        try:
            channel.start()

            def round_trip() -> Any:
                channel.send(array)
                return channel.receive()

            return timed(round_trip, trips, warmup)
        finally:
            channel.close()
            stamps.close()
            shutil.rmtree(workdir, ignore_errors=True)


def iceoryx2_available() -> bool:
    try:
        import iceoryx2  # noqa: F401

        from ..methods.iceoryx2_pubsub import Iceoryx2PubSub  # noqa: F401
    except ImportError:
        return False
    return True


# --- idle receivers -------------------------------------------------------------------------


def peer_idle(args: argparse.Namespace) -> None:
    """Blocks in get (or `args.waiters` get_async) for args.seconds with no sender; prints CPU and wall seconds."""
    queue = hakobu.Queue(args.name, create=False, domain=args.domain, latency=args.mode)
    cpu, wall = cpu_seconds(), time.monotonic()
    if args.waiters:

        async def idle() -> None:
            tasks = [
                asyncio.ensure_future(queue.get_async(timeout=args.seconds)) for _ in range(args.waiters)
            ]
            await asyncio.sleep(0.2)  # all parked
            settled_cpu, settled_wall = cpu_seconds(), time.monotonic()
            await asyncio.gather(*tasks, return_exceptions=True)
            print(json.dumps({"cpu": cpu_seconds() - settled_cpu, "wall": time.monotonic() - settled_wall}))

        asyncio.run(idle())
    else:
        try:
            queue.get(timeout=args.seconds)
        except hakobu.Empty:
            pass
        print(json.dumps({"cpu": cpu_seconds() - cpu, "wall": time.monotonic() - wall}))
    queue.close()


def idle_cpu(mode: str, seconds: float, waiters: int = 0) -> dict[str, float]:
    domain = f"lat{os.getpid()}"
    queue = hakobu.Queue("idle", create=True, domain=domain)
    try:
        command = [
            sys.executable,
            "-m",
            MODULE,
            "--peer",
            "idle",
            "--name",
            "idle",
            "--domain",
            domain,
            "--mode",
            mode,
        ]
        command += ["--seconds", str(seconds), "--waiters", str(waiters)]
        # One BLAS thread: NumPy's idle worker threads would be counted as the receiver's CPU.
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True, env=env
        )
        result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        queue.unlink()


# --- the run ----------------------------------------------------------------------------------


def table(
    runs: list[Run], payload: Any, work: float, rounds: int, trips: int, warmup: int
) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {run.label: [] for run in runs}
    cpu: dict[str, list[float]] = {run.label: [] for run in runs}
    for _ in range(rounds):
        for run in runs:
            measured, cpu_per_trip = run.measure(payload, trips, warmup, work)
            times[run.label] += measured
            cpu[run.label].append(cpu_per_trip)
    base = statistics.median(times["Unix domain socket"])
    rows = {}
    for run in runs:
        median = statistics.median(times[run.label])
        rows[run.label] = {
            "median_us": median * 1e6,
            "p99_us": percentile(times[run.label], 99) * 1e6,
            "ratio_to_unix_socket": median / base,
            "cpu_us_per_trip": statistics.median(cpu[run.label]) * 1e6,
        }
    return rows


def print_rows(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"  {'method':<44} {'median us':>10} {'p99 us':>10} {'x unix socket':>14} {'CPU us/trip':>12}")
    for label, row in rows.items():
        print(
            f"  {label:<44} {row['median_us']:>10.1f} {row['p99_us']:>10.1f} "
            f"{row['ratio_to_unix_socket']:>13.2f}x {row['cpu_us_per_trip']:>12.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer trips and rounds (a smoke run)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    for option in ("--name", "--domain", "--mode", "--address"):
        parser.add_argument(option, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--waiters", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--array", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        (peer_idle if args.peer == "idle" else PEERS[args.peer])(args)
        return 0

    rounds, trips, warmup, idle_seconds = (2, 500, 100, 1.0) if args.quick else (3, 1000, 200, 2.0)
    results: dict[str, Any] = {"machine": machine(), "method": __doc__}
    print(f"machine: {results['machine']}")
    print(f"method: {rounds} interleaved rounds x {trips} round trips (after {warmup} warm-up) per method")

    runs: list[Run] = [
        HakobuRun("hakobu latency='adaptive' (default)", "adaptive"),
        HakobuRun("hakobu latency='spin'", "spin"),
        HakobuRun("hakobu latency='sleep'", "sleep"),
        SocketRun("Unix domain socket", "unix"),
        SocketRun("multiprocessing.connection", "mp"),
    ]
    try:
        import zmq  # noqa: F401

        runs.append(SocketRun("pyzmq PAIR ipc://", "zmq"))
    except ImportError:
        print("pyzmq not installed: its rows are left out (pip install pyzmq)")
    if iceoryx2_available():
        runs.append(Iceoryx2Run("iceoryx2 (hakobu bench method)"))
    else:
        print("iceoryx2 not importable: its rows are left out (pip install iceoryx2)")

    payloads = {"64 B bytes": b"\x01" * MESSAGE_BYTES, "64 B float64 array": np.arange(8, dtype=np.float64)}
    for work, variant in ((0.0, "echo peer"), (SLOW_PEER_WORK, "slow peer (~50 us of work per message)")):
        for payload_name, payload in payloads.items():
            title = f"round trip, {payload_name}, {variant}"
            rows = table(runs, payload, work, rounds, trips, warmup)
            print_rows(title, rows)
            results[title] = rows

    # asyncio: await get_async() beside a blocking get() in the same run (both adaptive).
    async_runs: list[Run] = [
        HakobuRun("hakobu blocking q.get()", "adaptive"),
        HakobuRun("hakobu await q.get_async()", "adaptive", use_async=True),
        SocketRun("Unix domain socket", "unix"),
    ]
    for payload_name, payload in payloads.items():
        title = f"asyncio round trip, {payload_name}, echo peer"
        rows = table(async_runs, payload, 0.0, rounds, trips, warmup)
        print_rows(title, rows)
        blocking, awaited = rows["hakobu blocking q.get()"], rows["hakobu await q.get_async()"]
        print(
            f"  get_async / get (median): {awaited['median_us'] / blocking['median_us']:.2f}x (goal <= 1.5x)"
        )
        results[title] = rows

    print(f"\nidle receiver, no sender, {idle_seconds:g} s (CPU time the receiving program used)")
    idle: dict[str, dict[str, float]] = {}
    for mode in ("adaptive", "sleep", "spin"):
        idle[f"get(), latency='{mode}'"] = idle_cpu(mode, idle_seconds)
    idle["1000 x get_async(), latency='adaptive'"] = idle_cpu("adaptive", idle_seconds, waiters=1000)
    for label, row in idle.items():
        print(
            f"  {label:<44} CPU {row['cpu'] * 1e3:8.1f} ms over {row['wall']:.2f} s = {row['cpu'] / row['wall']:.2%}"
        )
    results["idle"] = idle
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
