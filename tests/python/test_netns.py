"""The "hosts" harness (hakobu_bench.netns): network namespaces on one private segment stand for
machines in the tests and benchmarks of what crosses hosts. These tests check what those rely on:
two hosts reach each other by address and nothing else (not the machine's own services, not the
machine's network, not the hosts of another run); a pulled cable cuts a host off until it is
plugged back; everything made is removed, with the programs started in it, even on an exception;
and what a killed run left behind is removed by the next one. Needs root (skipped otherwise)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PROGRAMS, finish, said, start

netns = pytest.importorskip(
    "hakobu_bench.netns", reason="hakobu-bench is not installed (pip install ./bench/python)"
)

WATCHDOG = 60  # s, for any one program: only against a hang
PORT = 7311

pytestmark = pytest.mark.skipif(netns.unavailable() is not None, reason=str(netns.unavailable()))


def namespaces(creator: int | None = None) -> set[str]:
    """The network namespaces that process ``creator`` made through netns.hosts() (named hkb<pid>-...),
    this process's by default: those of another run (a pytest-xdist worker beside this one, a benchmark)
    come and go meanwhile and are none of this test's business."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=WATCHDOG)
    names = {line.split()[0] for line in listed.stdout.splitlines() if line.split()}
    prefix = f"hkb{os.getpid() if creator is None else creator}-"
    return {name for name in names if name.startswith(prefix)}


def gone(pid: int) -> bool:
    """True once process ``pid`` has ended (a zombie not yet reaped by its new parent counts)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def tcp(host: netns.Host, *args: object) -> subprocess.Popen[str]:
    """tests/python/programs/bridgenet_tcp.py run in ``host``."""
    argv = [sys.executable, str(PROGRAMS / "bridgenet_tcp.py"), *map(str, args)]
    return host.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def connect(host: netns.Host, address: str, port: int = PORT) -> str:
    """What a client in ``host`` got from ``address:port``: the server's token or "error ERRNO"."""
    code, out, err = finish(tcp(host, "connect", address, port), WATCHDOG)
    assert code == 0, err
    return out.strip()


@pytest.fixture
def two() -> Iterator[list[netns.Host]]:
    with netns.hosts(2) as made:
        yield made


def test_two_hosts_reach_each_other_by_address(two: list[netns.Host]) -> None:
    a, b = two
    assert a.address != b.address and a.address.startswith(netns.NETWORK + ".")
    server = tcp(b, "serve", PORT, "from-b")
    try:
        said(server, "listening")
        assert connect(a, b.address) == "from-b"
        assert connect(b, b.address) == "from-b"  # a host reaches itself by its own address too
        assert server.pid in b.pids() and server.pid not in a.pids()
    finally:
        server.kill()
        server.communicate(timeout=WATCHDOG)


def test_a_host_is_isolated_from_the_machine_network(two: list[netns.Host]) -> None:
    """A host has only its loopback and its cable: the machine's loopback services and any address
    outside the test network are out of reach, as from another machine."""
    a, _ = two
    links = a.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=WATCHDOG)
    assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()) == [
        "eth0",
        "lo",
    ]
    on_the_machine = start("bridgenet_tcp", "serve", PORT, "from-the-machine")
    try:
        said(on_the_machine, "listening")
        # The machine (this namespace) reaches its own service; the host's 127.0.0.1 is its own.
        code, out, err = finish(start("bridgenet_tcp", "connect", "127.0.0.1", PORT), WATCHDOG)
        assert (code, out.strip()) == (0, "from-the-machine"), err
        assert connect(a, "127.0.0.1") == "error ECONNREFUSED"
    finally:
        on_the_machine.kill()
        on_the_machine.communicate(timeout=WATCHDOG)
    assert connect(a, "192.0.2.1") == "error ENETUNREACH"  # TEST-NET-1: no route leaves the host


def test_two_sets_of_hosts_do_not_see_each_other() -> None:
    """Each set has its own hub: the first host of two sets has the same address, and a client
    reaches the one of its own set."""
    with netns.hosts(1) as (alone,), netns.hosts(2) as (first, second):
        assert alone.address == first.address
        server = tcp(alone, "serve", PORT, "other-set")
        try:
            said(server, "listening")
            assert connect(second, first.address) == "error ECONNREFUSED"
        finally:
            server.kill()
            server.communicate(timeout=WATCHDOG)


def test_a_pulled_cable_cuts_the_host_off_until_plugged_back(two: list[netns.Host]) -> None:
    a, b = two
    server = tcp(b, "serve", PORT, "from-b")
    try:
        said(server, "listening")
        a.link(False)
        assert connect(a, b.address) == "error ENETUNREACH"
        a.link(True)  # returns once the link carries traffic again
        assert connect(a, b.address) == "from-b"
        b.link(False)
        b.link(True)
        assert connect(a, b.address) == "from-b"
    finally:
        server.kill()
        server.communicate(timeout=WATCHDOG)


def test_everything_is_removed_with_the_programs_in_it() -> None:
    before = namespaces()
    with netns.hosts(2) as (a, b):
        made = {a.namespace, b.namespace}
        assert made <= namespaces() and len(namespaces() - before) == 3  # and the hub
        # One stops when asked (SIGTERM); one ignores it and is killed after the grace period.
        sleepers = [a.start(["sleep", "600"]), b.start(["sh", "-c", "trap '' TERM; sleep 600"])]
    try:
        assert namespaces() == before
        assert [sleeper.wait(timeout=WATCHDOG) for sleeper in sleepers] == [-signal.SIGTERM, -signal.SIGKILL]
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait(timeout=WATCHDOG)


def test_everything_is_removed_when_the_block_raises() -> None:
    before = namespaces()
    with pytest.raises(ZeroDivisionError), netns.hosts(2) as (a, _):
        sleeper = a.start(["sleep", "600"])
        1 / 0  # noqa: B018 - the exception is the point
    try:
        assert namespaces() == before
        assert sleeper.wait(timeout=WATCHDOG) == -signal.SIGTERM  # asked to stop, and it did
    finally:
        sleeper.kill()
        sleeper.wait(timeout=WATCHDOG)


def test_what_a_killed_run_left_is_removed_by_the_next() -> None:
    """A run killed inside its `with` block leaves its namespaces and their programs; the next
    hosts() (through remove_stale) removes them and kills the programs, and leaves those of live
    runs (this one's) alone."""
    creator = start("bridgenet_netns_creator", stdin=subprocess.PIPE)
    try:
        line = creator.stdout.readline()  # type: ignore[union-attr]
        assert line, creator.communicate(timeout=WATCHDOG)
        *left, sleeper = line.split()
        assert set(left) <= namespaces(creator.pid)
    finally:
        creator.kill()
        finish(creator, WATCHDOG)
    try:
        with netns.hosts(1) as (mine,):
            assert not set(left) & namespaces(creator.pid)
            assert gone(int(sleeper))
            netns.remove_stale()  # a live creator's namespaces stay
            assert mine.namespace in namespaces()
    finally:
        for namespace in set(left) & namespaces(creator.pid):
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=WATCHDOG)


def test_hosts_checks_its_count() -> None:
    for wrong in (0, 201):
        with pytest.raises(ValueError, match="count must be between 1 and 200"), netns.hosts(wrong):
            pass


def test_a_link_rate_puts_a_token_bucket_on_each_hosts_cable() -> None:
    before = namespaces()
    with netns.hosts(2, rate="2.5gbit") as made:
        for host in made:
            shown = host.run(["tc", "qdisc", "show", "dev", "eth0"], capture_output=True, text=True)
            assert " tbf " in shown.stdout and "rate 2500Mbit" in shown.stdout, shown.stdout
        server = tcp(made[1], "serve", PORT, "shaped")
        try:
            said(server, "listening")
            assert connect(made[0], made[1].address) == "shaped"  # still a working link
        finally:
            server.kill()
            server.communicate(timeout=WATCHDOG)
    assert namespaces() == before


def test_a_wrong_link_rate_is_refused_before_anything_is_made() -> None:
    before = namespaces()
    for wrong in ("fast", "10", "0gbit", "-1mbit", "10gbps"):
        with pytest.raises(ValueError, match="a link rate like 10gbit"), netns.hosts(2, rate=wrong):
            pass
    assert netns.rate_bits("10gbit") == 10**10 and netns.rate_bits("800mbit") == 8 * 10**8
    assert netns.rate_bits("2.5gbit") == 25 * 10**8
    assert namespaces() == before


def test_unavailable_says_why_for_a_user_who_is_not_root() -> None:
    if subprocess.run(["which", "setpriv"], capture_output=True).returncode != 0:
        pytest.skip("setpriv (util-linux) is not installed")
    probe = "from hakobu_bench import netns; print(netns.unavailable())"
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
        cwd="/",
        env={**os.environ, "HOME": "/"},
    )
    assert done.returncode == 0, done.stderr
    assert "need root" in done.stdout
