"""Several "hosts" on one machine: Linux network namespaces on one private Ethernet segment.

The tests and benchmarks of what crosses machines (the Dask engine, the
``hakobu://`` comm's peers, ``hakobu bridge``) run their two ends in different
network namespaces, so that traffic really leaves one network stack and enters
another, as between hosts:

>>> with hosts(2) as (a, b):
...     server = b.start(["python", "-m", "http.server", "8000"])
...     client = a.start(["curl", f"http://{b.address}:8000/"])

Layout: a hub namespace holds a Linux bridge; each host is a namespace joined
to it by a veth pair, with one address in 198.18.0.0/24 (RFC 2544's range for
network benchmarks: it never routes to a real network). Each set of hosts has
its own hub, so parallel runs never see each other's traffic even though they
use the same addresses. Shared memory is not isolated: /dev/shm is the
machine's, as the mount namespace is untouched (a test that wants two separate
hosts' worth of hakobu gives each side its own ``HAKOBU_DOMAIN``).

Everything is removed when the ``with`` block ends, even on an exception:
processes still running in a host are stopped (SIGTERM, then SIGKILL after a
grace period), then the namespaces (which takes
their veth ends and the bridge with them). Names carry the creating process's
id (``hkb<pid>-…``); ``remove_stale()`` removes those of dead creators, left by a
run that was itself killed. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and
iproute2's ``ip``; ``unavailable()`` says why not otherwise.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any, Optional

from hakobu._processes import process_exists

NETWORK = "198.18.0"  # /24, host k (1-based) at NETWORK.(10 + k)
_PREFIX = "hkb"
STOP_GRACE_SECONDS = 5.0  # at the end, how long a host's programs may take to stop on SIGTERM
_sets = itertools.count()


def unavailable() -> Optional[str]:
    """None when namespaces can be made here, else why not (for a skip message)."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (Debian: apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    probe = f"{_PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "delete", probe)
    return None


class Host:
    """One network namespace: a name, an address, and the programs started in it."""

    def __init__(self, namespace: str, address: str) -> None:
        self.namespace = namespace
        self.address = address
        # What start() began: a program just started may not have entered the namespace yet
        # (`ip netns exec` switches, then execs it), so pids() alone would miss it.
        self._started: list[subprocess.Popen[Any]] = []

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's network namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def start(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Starts ``argv`` in this host (``popen``: subprocess.Popen's arguments)."""
        process = subprocess.Popen(self.command(argv), **popen)
        self._started = [p for p in self._started if p.poll() is None]
        self._started.append(process)
        return process

    def run(self, argv: Sequence[str], **run: Any) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(self.command(argv), **run)

    def pids(self) -> list[int]:
        """The processes whose network namespace this is."""
        listed = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True)
        return [int(word) for word in listed.stdout.split()]

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to every process of this host: the host "dies" (a machine lost)."""
        for process in self._started:
            if process.poll() is None:
                process.send_signal(sig)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop_all(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Asks every process of this host to stop (SIGTERM), waits up to ``grace`` seconds, then
        kills what is left: programs that clean up on SIGTERM (Dask's, hakobu's) leave nothing."""
        self.kill_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (
            self.pids() or any(process.poll() is None for process in self._started)
        ):
            time.sleep(0.05)
        self.kill_all()

    def link(self, up: bool) -> None:
        """Plugs this host's cable in or out: a network fault that both ends outlive.

        Plugging in returns once the link carries traffic again (a veth end
        reports carrier a few ms after ``up``; a connect before that fails).
        """
        _ip("-n", self.namespace, "link", "set", "eth0", "up" if up else "down")
        if up:
            _wait_until_up(self.namespace)

    def __repr__(self) -> str:
        return f"<Host {self.namespace} {self.address}>"


@contextlib.contextmanager
def hosts(count: int, rate: Optional[str] = None) -> Iterator[list[Host]]:
    """``count`` hosts on one private segment; removed, with their processes, at the end.

    ``rate`` (a ``tc`` rate such as ``"10gbit"``): what each host's link sends at most, as
    a network card of that speed would (a token bucket on its end of the cable); else as
    fast as the CPUs copy."""
    if not 1 <= count <= 200:
        raise ValueError(f"count must be between 1 and 200, got {count!r}")
    if rate is not None:
        rate_bits(rate)  # a wrong rate fails before anything is made
    remove_stale()
    base = f"{_PREFIX}{os.getpid()}-{next(_sets)}"
    hub = f"{base}-hub"
    made: list[str] = []
    members: list[Host] = []
    try:
        _ip("netns", "add", hub)
        made.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        for k in range(1, count + 1):
            host = Host(f"{base}-{k}", f"{NETWORK}.{10 + k}")
            _ip("netns", "add", host.namespace)
            made.append(host.namespace)
            # Both ends are made in the host, then one moves to the hub: names stay local to a namespace.
            _ip("-n", host.namespace, "link", "add", "eth0", "type", "veth", "peer", "name", f"port{k}")
            _ip("-n", host.namespace, "link", "set", f"port{k}", "netns", hub)
            _ip("-n", hub, "link", "set", f"port{k}", "master", "br0")
            _ip("-n", hub, "link", "set", f"port{k}", "up")
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
            if rate is not None:
                _shape(host.namespace, rate)
            members.append(host)
        for host in members:
            _wait_until_up(host.namespace)
        yield members
    finally:
        for host in members:
            host.stop_all()
        for namespace in reversed(made):
            _delete_namespace(namespace)


def remove_stale() -> None:
    """Removes namespaces left by a run of these helpers whose process is gone."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        namespace = line.split()[0] if line.split() else ""
        if not namespace.startswith(_PREFIX):
            continue
        creator = namespace[len(_PREFIX) :].split("-", 1)[0]
        if creator.isdigit() and not process_exists(int(creator)):
            for pid in Host(namespace, "").pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _delete_namespace(namespace)


def _delete_namespace(namespace: str) -> None:
    # A namespace whose processes were just killed may be busy for a moment: retry briefly.
    for _ in range(50):
        if subprocess.run(["ip", "netns", "delete", namespace], capture_output=True).returncode == 0:
            return
        if namespace not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
            return
        time.sleep(0.1)


def _shape(namespace: str, rate: str) -> None:
    """Bounds what eth0 of ``namespace`` sends to ``rate`` (a token bucket filter). Its bucket
    holds 20 ms at that rate (at least 1 MiB), so that TCP's bursts of segments pass as they
    would through a card's queue, and packets wait at most 50 ms."""
    bits = rate_bits(rate)
    burst = max(1 << 20, bits // 8 // 50)
    command = ["tc", "-n", namespace, "qdisc", "replace", "dev", "eth0", "root", "tbf"]
    shaped = subprocess.run(
        [*command, "rate", rate, "burst", str(burst), "latency", "50ms"], capture_output=True, text=True
    )
    if shaped.returncode != 0:
        raise RuntimeError(f"could not limit eth0 of {namespace} to {rate}: {shaped.stderr.strip()}")


def rate_bits(rate: str) -> int:
    """A tc rate (``10gbit``, ``800mbit``, ``1000000bit``) in bits per second; ValueError else."""
    units = {"gbit": 10**9, "mbit": 10**6, "kbit": 10**3, "bit": 1}
    text = rate.strip().lower()
    for unit, scale in units.items():
        number = text[: -len(unit)]
        if text.endswith(unit) and number.replace(".", "", 1).isdigit() and float(number) > 0:
            return int(float(number) * scale)
    raise ValueError(f"a link rate like 10gbit, 2.5gbit or 800mbit, got {rate!r}")


def _wait_until_up(namespace: str, seconds: float = 10.0) -> None:
    """Waits until eth0 of ``namespace`` is operationally up (carrier on both veth ends)."""
    deadline = time.monotonic() + seconds
    while True:
        shown = subprocess.run(
            ["ip", "-n", namespace, "-o", "link", "show", "eth0"], capture_output=True, text=True
        )
        if " state UP " in shown.stdout:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"eth0 of network namespace {namespace} is not up after {seconds} s: {shown.stdout.strip()}"
            )
        time.sleep(0.01)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
