"""pytest setup: every run works in its own hakobu domain, and fails if it
leaves anything of that domain in /dev/shm (or on a hugetlbfs mount)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before hakobu is used, and inherited by every program a test starts. A process of the run
# that imports this module again (a Dask worker unpickling a test's function) keeps the run's
# domain, and whatever domain its starter gave it.
if "HAKOBU_TEST_DOMAIN" in os.environ:
    DOMAIN = os.environ["HAKOBU_TEST_DOMAIN"]
else:
    DOMAIN = f"py{os.getpid()}"
    os.environ["HAKOBU_TEST_DOMAIN"] = DOMAIN
    os.environ["HAKOBU_DOMAIN"] = DOMAIN

PROGRAMS = Path(__file__).parent / "programs"
_names = itertools.count()


def files_of_domain(domain: str = DOMAIN) -> list[str]:
    """Every file of `domain` in /dev/shm and on hugetlbfs mounts, as the core finds them."""
    from hakobu import _core  # imported late: HAKOBU_DOMAIN is set first

    return [path for path, _kind, _name in _core.domain_files(domain)]


@pytest.fixture(scope="session", autouse=True)
def nothing_left_in_shared_memory() -> Iterator[None]:
    yield
    import gc

    gc.collect()
    left = [path for domain in domains_of_run() for path in files_of_domain(domain)]
    assert not left, f"files left in shared memory: {left}"


def domains_of_run() -> list[str]:
    """This run's domain and those its tests made from it (DOMAIN + a suffix not starting with a
    digit: "py123k", "py123h0"; "py1234" is another run's)."""
    from hakobu import _core

    return [
        name
        for name in _core.domain_names()
        if name == DOMAIN or (name.startswith(DOMAIN) and not name[len(DOMAIN)].isdigit())
    ]


@pytest.fixture
def name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh queue name; the queue is removed after the test if it still exists."""
    import hakobu

    queue_name = f"{request.node.name[:40]}-{next(_names)}".replace("[", "-").replace("]", "")
    queue_name = "".join(c if c.isalnum() or c in "._-" else "-" for c in queue_name)
    yield queue_name
    try:
        hakobu.remove(queue_name)
    except hakobu.NotFound:
        pass


def start(program: str, *args: object, **popen: object) -> subprocess.Popen:
    """Starts tests/python/programs/<program>.py as a separate interpreter."""
    return subprocess.Popen(
        [sys.executable, str(PROGRAMS / f"{program}.py"), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )


def start_with_small_dev_shm(program: str, *args: object, mib: int = 48) -> subprocess.Popen:
    """Starts tests/python/programs/<program>.py in a private mount namespace with a
    `mib` MiB tmpfs on /dev/shm and no hugetlbfs mount (so large blocks cannot go to
    reserved huge pages instead). Needs root and unshare (skips without unshare)."""
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    no_huge_pages = 'for m in $(awk \'$3 == "hugetlbfs" {print $2}\' /proc/mounts); do umount "$m"; done'
    command = " ".join([sys.executable, str(PROGRAMS / f"{program}.py"), *map(str, args)])
    script = f"mount -t tmpfs -o size={mib}m tmpfs /dev/shm && {no_huge_pages} && exec {command}"
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, watchdog: float = 120) -> tuple[int, str, str]:
    """Waits for a program (the watchdog kills a deadlocked one) and returns (code, out, err).

    Its pipes are read through their file objects, not with communicate(): communicate() reads
    the descriptors and would miss lines a readline() of the test already took into the file's
    buffer (what a program printed right after the line the test waited for)."""
    streams = {"out": process.stdout, "err": process.stderr}
    read: dict[str, str] = {}

    def drain(key: str) -> None:
        stream = streams[key]
        read[key] = stream.read() if stream is not None else ""

    readers = [threading.Thread(target=drain, args=(key,), daemon=True) for key in streams]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=watchdog)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        for reader in readers:
            reader.join(timeout=10)
        pytest.fail(f"program did not finish within the {watchdog} s watchdog: {read.get('err', '')}")
    for reader in readers:
        reader.join(timeout=watchdog)  # a child of the program may hold a pipe open: not forever
    return process.returncode, read.get("out", ""), read.get("err", "")


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh topic name; the topic is removed after the test if it still exists."""
    import hakobu

    base = "".join(c if c.isalnum() else "-" for c in request.node.name[:40])
    topic = f"{base}-{next(_names)}"
    yield topic
    try:
        hakobu.Topic.remove(topic)
    except hakobu.NotFound:
        pass


@pytest.fixture
def sync_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh sync object name; the object is removed after the test if it still exists."""
    import hakobu

    base = "".join(c if c.isalnum() else "-" for c in request.node.name[:40])
    object_name = f"{base}-{next(_names)}"
    yield object_name
    try:
        hakobu.Lock.remove(object_name)  # any kind of sync object
    except hakobu.NotFound:
        pass


def said(program: subprocess.Popen, expected: str) -> None:
    """Reads one line of `program` and checks it (a dead program shows its stderr)."""
    line = program.stdout.readline()  # type: ignore[union-attr]
    if line != expected + "\n":
        program.kill()
        _, err = program.communicate()
        pytest.fail(f"expected {expected!r}, got {line!r}: {err}")


def stop(program: subprocess.Popen) -> None:
    program.kill()
    program.communicate()
