"""hakobu.Bridge between two "hosts": network namespaces on a private segment (hakobu_bench.netns),
each with its own hakobu domain, as two machines would have. In host A a producer puts into queue Q
and a sending bridge carries Q away; in host B a receiving bridge puts into B's queue Q and a
consumer gets from it. Every program is a separately started process.

What must hold: every kind of message arrives intact and in order, the end of the stream with it;
with the cable pulled mid-stream for a few seconds, everything arrives once, in order; with the
receiving host's programs killed and restarted, nothing is lost and no acknowledged message comes
twice; with CurveZMQ keys the stream flows and a host with a key not allowed gets nothing in; a
hostile third host sending garbage does not stop or spoil the stream. Needs root (skipped otherwise).
Every wait is bounded (a watchdog kills every program of the hosts); everything is removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DOMAIN, PROGRAMS, files_of_domain, finish

netns = pytest.importorskip(
    "hakobu_bench.netns", reason="hakobu-bench is not installed (pip install ./bench/python)"
)
pytest.importorskip("zmq", reason='pyzmq is not installed (pip install "hakobu[bridge]")')

pytestmark = pytest.mark.skipif(netns.unavailable() is not None, reason=str(netns.unavailable()))

sys.path.insert(0, str(PROGRAMS))
import bridgenet_messages as messages  # noqa: E402 - the programs' own module, found on their path

from hakobu._bridge import wire  # noqa: E402

WATCHDOG = 240.0  # s: every program of a test is killed by then (only against a hang)
PORT = 7600
NAME = "bridged"


class World:
    """The hosts of one test, a hakobu domain per host, and the programs started in them."""

    def __init__(self, hosts: list[netns.Host]) -> None:
        self.hosts = hosts
        self.domains = [f"{DOMAIN}h{k}" for k in range(len(hosts))]
        self.logs: list[tuple[str, subprocess.Popen[str]]] = []
        self._stopped = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        if not self._stopped.wait(WATCHDOG):
            for host in self.hosts:
                host.kill_all()

    def start(self, host: int, program: str, *args: object) -> subprocess.Popen[str]:
        """tests/python/programs/<program>.py in host ``host`` (0 = A, 1 = B, ...), in its domain."""
        return self.run(host, [sys.executable, str(PROGRAMS / f"{program}.py"), *map(str, args)], program)

    def run(self, host: int, argv: list[str], program: str) -> subprocess.Popen[str]:
        """``argv`` in host ``host``, in its domain."""
        env = {**os.environ, "HAKOBU_DOMAIN": self.domains[host]}
        process = self.hosts[host].start(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.logs.append((f"{program} in host {'ABC'[host]}", process))
        return process

    def address(self, host: int) -> str:
        return f"tcp://{self.hosts[host].address}:{PORT}"

    def close(self) -> None:
        self._stopped.set()
        for host in self.hosts:
            host.kill_all()
        for _, process in self.logs:
            process.kill()
            process.communicate()
        for domain in self.domains:
            import hakobu

            try:
                hakobu.remove(NAME, domain=domain)
            except hakobu.NotFound:
                pass


@pytest.fixture
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    count = getattr(request, "param", 2)
    with netns.hosts(count) as hosts:
        made = World(hosts)
        try:
            yield made
        finally:
            made.close()
    for domain in made.domains:
        assert files_of_domain(domain) == [], f"left in shared memory: {files_of_domain(domain)}"


def line(process: subprocess.Popen[str], prefix: str) -> str:
    """The next line of ``process``, which must start with ``prefix`` (else the test fails with its stderr)."""
    assert process.stdout is not None
    got = process.stdout.readline()
    if not got.startswith(prefix):
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"expected {prefix!r}, got {got!r}; stderr: {err[-3000:]}")
    return got.strip()


def ended(bridge: subprocess.Popen[str]) -> dict[str, Any]:
    """A bridge program's stats once its bridge ended by itself (the stream's end travelled)."""
    line(bridge, "ended")
    stats: dict[str, Any] = json.loads(line(bridge, "{"))
    return stats


def stats_now(bridge: subprocess.Popen[str]) -> dict[str, Any]:
    assert bridge.stdin is not None
    bridge.stdin.write("stats\n")
    bridge.stdin.flush()
    stats: dict[str, Any] = json.loads(line(bridge, "{"))
    return stats


def consumed(consumer: subprocess.Popen[str]) -> tuple[list[str], str, str]:
    """Every line of a consumer until it exits: (its lines, the end it saw, its stderr)."""
    _code, out, err = finish(consumer, WATCHDOG)
    lines = out.splitlines()
    ends = [x for x in lines if x.startswith("end ")]
    return lines, ends[-1] if ends else "", err


def receiving_bridge(world: World, options: dict[str, Any] | None = None) -> subprocess.Popen[str]:
    """Host B's receiving bridge; objects from a peer without keys are allowed (the test's private
    network is trusted) unless ``options`` say otherwise."""
    options = {"allow_objects": True, **(options or {})}
    bridge = world.start(1, "bridgenet_bridge", "receive", NAME, f"tcp://*:{PORT}", json.dumps(options))
    line(bridge, "ready")
    return bridge


def sending_bridge(
    world: World, host: int = 0, options: dict[str, Any] | None = None
) -> subprocess.Popen[str]:
    bridge = world.start(host, "bridgenet_bridge", "send", NAME, world.address(1), json.dumps(options or {}))
    line(bridge, "ready")
    return bridge


def test_every_kind_arrives_intact_and_in_order(world: World) -> None:
    """Arrays of many dtypes, shapes and orders (two of 64 MiB), bytes and objects, each compared
    whole with what the producer made; the end of the stream arrives after the last message."""
    count = 2 * len(messages.VARIETY)
    receiving = receiving_bridge(world)
    consumer = world.start(1, "bridgenet_consume", NAME, "variety")
    line(consumer, "ready")
    sending = sending_bridge(world)
    producer = world.start(0, "bridgenet_produce", NAME, "variety", count)
    lines, end, err = consumed(consumer)
    assert consumer.returncode == 0, (lines[-3:], err)
    assert [x for x in lines if x.startswith("ok ")] == [f"ok {k}" for k in range(count)], err
    assert end == "end EndOfStream"
    line(producer, "done")
    sent, received = ended(sending), ended(receiving)
    assert sent["messages"] == received["messages"] == count, (sent, received)
    assert sent["rejected"] == received["rejected"] == 0
    assert sent["in_flight"] == 0
    # Without keys the whole stream travels on the data lane (ZeroMQ carries the acknowledgements).
    assert sent["lane_messages"] == received["lane_messages"] == count, (sent, received)


def test_a_pulled_cable_loses_and_doubles_nothing(world: World) -> None:
    """Host A's cable is pulled mid-stream for 4 s (longer than the bridge takes to notice a silent
    peer) and plugged back: every message arrives once, in order, then the end."""
    count = 400
    receiving = receiving_bridge(world)
    consumer = world.start(1, "bridgenet_consume", NAME, "numbered")
    line(consumer, "ready")
    sending = sending_bridge(world)
    producer = world.start(0, "bridgenet_produce", NAME, "numbered", count, 0.01)
    seen = [int(line(consumer, "got ").split()[1]) for _ in range(count // 4)]
    world.hosts[0].link(False)
    time.sleep(4.0)  # the fault lasts this long (nothing is asserted about time)
    world.hosts[0].link(True)
    lines, end, err = consumed(consumer)
    seen += [int(x.split()[1]) for x in lines if x.startswith("got ")]
    assert seen == list(range(count)), f"{len(seen)} messages; stderr: {err[-2000:]}"
    assert end == "end EndOfStream"
    line(producer, "done")
    sent, received = ended(sending), ended(receiving)
    assert sent["messages"] == received["messages"] == count, (sent, received)


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "zeromq"])
def test_a_slow_link_sends_nothing_twice_while_a_large_message_crosses(lane: bool) -> None:
    """At 150 Mbit/s the 64 MiB array of the stream takes over 3 s, longer than a sending end
    waits for an acknowledgement. On the lane the receiving end says a message is on its way
    (STATUS flagged BUSY), so the sending end keeps the lane; through ZeroMQ alone (as with keys)
    the sending end sees its messages still leaving. Either way nothing is sent twice."""
    count = len(messages.VARIETY)
    with netns.hosts(2, rate="150mbit") as hosts:
        world = World(hosts)
        try:
            receiving = receiving_bridge(world)
            consumer = world.start(1, "bridgenet_consume", NAME, "variety")
            line(consumer, "ready")
            sending = sending_bridge(world, options={"lane": lane})
            world.start(0, "bridgenet_produce", NAME, "variety", count)
            lines, end, err = consumed(consumer)
            assert [x for x in lines if x.startswith("ok ")] == [f"ok {k}" for k in range(count)], err
            assert end == "end EndOfStream"
            sent, received = ended(sending), ended(receiving)
        finally:
            world.close()
    on_lane = count if lane else 0
    assert sent["resent"] == 0 and sent["lane_messages"] == received["lane_messages"] == on_lane, (
        sent,
        received,
    )
    for domain in world.domains:
        assert files_of_domain(domain) == [], f"left in shared memory: {files_of_domain(domain)}"


def put_count(domain: str) -> int:
    """How many messages were ever put on queue NAME of ``domain`` (asked by a short-lived process,
    so that this one never attaches the domain, whose files must be gone at the end)."""
    probe = f"import hakobu; print(hakobu.Queue({NAME!r}, create=False).stats()['put_count'])"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "HAKOBU_DOMAIN": domain},
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_the_receiving_host_killed_and_restarted(world: World) -> None:
    """Host B's programs are killed mid-stream (its consumer between messages, its bridge wherever it
    is) and started again: the new consumer gets what was left in B's queue, then the rest. Nothing
    is lost; a message comes twice only if B had put it into its queue and host A had no
    acknowledgement of it yet."""
    count = 300
    first_life = 60
    receiving = receiving_bridge(world)
    consumer = world.start(1, "bridgenet_consume", NAME, "numbered", 0, first_life)
    line(consumer, "ready")
    sending = sending_bridge(world)
    producer = world.start(0, "bridgenet_produce", NAME, "numbered", count, 0.005)
    seen = [int(line(consumer, "got ").split()[1]) for _ in range(first_life)]
    line(consumer, "paused")
    time.sleep(0.5)  # the bridge goes on filling B's queue meanwhile
    world.hosts[1].kill_all()
    for process in (consumer, receiving):
        process.communicate(timeout=WATCHDOG)
    acknowledged = stats_now(sending)["messages"]  # what A knows B has, as B died
    delivered = put_count(world.domains[1])  # what B had put into its queue
    assert first_life <= acknowledged <= delivered < count, (acknowledged, delivered)
    receiving = receiving_bridge(world)
    consumer = world.start(1, "bridgenet_consume", NAME, "numbered")
    line(consumer, "ready")
    lines, end, err = consumed(consumer)
    seen += [int(x.split()[1]) for x in lines if x.startswith("got ")]
    firsts = list(dict.fromkeys(seen))
    lost = sorted(set(range(count)) - set(seen))
    assert firsts == list(range(count)), f"lost {lost} or out of order; ({acknowledged}, {delivered}); {err}"
    doubled = sorted({k for k in seen if seen.count(k) > 1})
    assert all(acknowledged <= k < delivered for k in doubled), (acknowledged, delivered, doubled)
    # The first bridge of B died as a sender of B's queue: the core may call the end SendersLost.
    assert end in ("end EndOfStream", "end SendersLost"), end
    line(producer, "done")
    sent, received = ended(sending), ended(receiving)
    assert sent["messages"] == count, sent
    # B's new bridge delivers the rest once: from where A's acknowledgements stood, or (if the
    # receiving end remembers what it delivered) from where B's queue stood.
    assert count - delivered <= received["messages"] <= count - acknowledged, (
        acknowledged,
        delivered,
        received,
    )


def keys(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A CurveZMQ key pair as zmq.auth writes it: (public key file, secret key file)."""
    import zmq.auth

    directory = tmp_path / name
    directory.mkdir()
    public, secret = zmq.auth.create_certificates(str(directory), name)
    return Path(public), Path(secret)


@pytest.mark.parametrize("world", [3], indirect=True)
def test_curve_keys_let_the_allowed_host_in_and_no_other(world: World, tmp_path: Path) -> None:
    """B binds with its secret key and accepts A's public key only. A's stream flows, encrypted. C,
    with a key pair of its own (and B's right public key), never gets a message in. B authenticates its
    peers, so A's objects are delivered without allow_objects."""
    count = 60
    server_public, server_secret = keys(tmp_path, "server")
    client_public, client_secret = keys(tmp_path, "client")
    _, intruder_secret = keys(tmp_path, "intruder")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "client.key").write_bytes(client_public.read_bytes())
    receiving = receiving_bridge(
        world, {"secret_key": str(server_secret), "allowed_keys": str(allowed), "allow_objects": False}
    )
    consumer = world.start(1, "bridgenet_consume", NAME, "variety")
    line(consumer, "ready")
    intruder = sending_bridge(world, 2, {"secret_key": str(intruder_secret), "peer_key": str(server_public)})
    world.start(2, "bridgenet_produce", NAME, "variety", count)  # what it would like to get in
    sending = sending_bridge(world, 0, {"secret_key": str(client_secret), "peer_key": str(server_public)})
    world.start(0, "bridgenet_produce", NAME, "variety", count)
    lines, end, err = consumed(consumer)
    assert consumer.returncode == 0, (lines[-3:], err)
    assert [x for x in lines if x.startswith("ok ")] == [f"ok {k}" for k in range(count)], err
    assert end == "end EndOfStream"
    assert ended(sending)["messages"] == count
    shut_out = stats_now(intruder)
    assert shut_out["messages"] == 0 and not shut_out["connected"], shut_out
    received = ended(receiving)
    assert received["messages"] == count
    assert received["lane_messages"] == 0  # with keys, everything stays encrypted in ZeroMQ


@pytest.mark.parametrize("world", [3], indirect=True)
def test_a_hostile_host_does_not_stop_or_spoil_the_stream(world: World) -> None:
    """While A streams to B, C sends B garbage of every kind (see programs/bridgenet_hostile.py), from
    while messages flow until the producer, holding the stream open, lets it end: B drops the garbage,
    counts it, warns, and goes on; the consumer gets A's stream exactly."""
    count, hold_at = 300, 150
    receiving = receiving_bridge(world, {"max_message_bytes": 2**20, "lane_port": PORT + 1})
    consumer = world.start(1, "bridgenet_consume", NAME, "numbered")
    line(consumer, "ready")
    sending = sending_bridge(world)
    producer = world.start(0, "bridgenet_produce", NAME, "numbered", count, 0.01, hold_at)
    seen = [int(line(consumer, "got ").split()[1]) for _ in range(count // 5)]
    hostile = world.start(2, "bridgenet_hostile", world.address(1), 3, wire.VERSION, PORT + 1)
    line(hostile, "sent ")
    line(producer, "holding")
    assert producer.stdin is not None
    producer.stdin.write("go on\n")
    producer.stdin.flush()
    lines, end, err = consumed(consumer)
    seen += [int(x.split()[1]) for x in lines if x.startswith("got ")]
    assert seen == list(range(count)), f"{len(seen)} messages; stderr: {err[-2000:]}"
    assert end == "end EndOfStream"
    line(producer, "done")
    assert ended(sending)["messages"] == count
    received = ended(receiving)
    assert received["messages"] == count and received["rejected"] >= 3 * 10, received
    assert received["lane_messages"] == count, received  # A's stream kept its lane throughout
    _, warned = receiving.communicate(timeout=WATCHDOG)
    # Rate-limited: the first warning may be about the raw bytes, which ZeroMQ reads as a ZMTP 1.0
    # peer's frames (such a peer has no address to name); later ones name C.
    assert "BridgeInputWarning" in warned and "dropped input from" in warned, warned[-2000:]


def test_the_command_between_hosts_with_keys_it_made(world: World, tmp_path: Path) -> None:
    """What a user types on two machines: `hakobu bridge keys` for each end, then `hakobu bridge
    NAME --at` on B and `--to` on A, with CurveZMQ. Both commands end by themselves when the
    stream's end has travelled (exit 0) and print their stats as JSON."""
    count = len(messages.VARIETY)
    hakobu = [sys.executable, "-m", "hakobu", "bridge"]
    for name in ("server", "client"):
        made = subprocess.run(
            [*hakobu, "keys", str(tmp_path), "--name", name], capture_output=True, text=True, timeout=WATCHDOG
        )
        assert made.returncode == 0, made.stderr
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "client.key").write_bytes((tmp_path / "client.key").read_bytes())
    at = [*hakobu, NAME, "--at", f"tcp://*:{PORT}", "--json"]
    at += ["--secret-key", str(tmp_path / "server.key_secret"), "--allowed-keys", str(allowed)]
    receiving = world.run(1, at, "hakobu bridge --at")
    consumer = world.start(1, "bridgenet_consume", NAME, "variety")
    line(consumer, "ready")
    to = [*hakobu, NAME, "--to", world.address(1), "--json"]
    to += ["--secret-key", str(tmp_path / "client.key_secret"), "--peer-key", str(tmp_path / "server.key")]
    sending = world.run(0, to, "hakobu bridge --to")
    world.start(0, "bridgenet_produce", NAME, "variety", count)
    lines, end, err = consumed(consumer)
    assert [x for x in lines if x.startswith("ok ")] == [f"ok {k}" for k in range(count)], err
    assert end == "end EndOfStream"
    for command in (sending, receiving):
        out, err = command.communicate(timeout=WATCHDOG)
        assert command.returncode == 0, err[-2000:]
        assert json.loads(out)["messages"] == count, out
