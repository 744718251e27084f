"""pytest setup: every run works in its own hakobu domain, and fails if it
leaves anything of that domain in /dev/shm (or on a hugetlbfs mount). Under
pytest-xdist (`pytest -n 2`) each worker is such a run: its own domain, its own
leftover check."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Set before hakobu is used, and inherited by every program a test starts. A process of the run
# that imports this module again (a Dask worker unpickling a test's function) keeps the run's
# domain, and whatever domain its starter gave it. A pytest-xdist worker (PYTEST_XDIST_WORKER set:
# "gw0", "gw1", ...) inherits the variables of the controller that started it, which ran no test:
# it takes a domain of its own, so that two workers never judge each other's files.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if "HAKOBU_TEST_DOMAIN" in os.environ and os.environ.get("HAKOBU_TEST_WORKER", "") == _WORKER:
    DOMAIN = os.environ["HAKOBU_TEST_DOMAIN"]
else:
    DOMAIN = f"py{os.getpid()}"
    os.environ["HAKOBU_TEST_DOMAIN"] = DOMAIN
    os.environ["HAKOBU_TEST_WORKER"] = _WORKER
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


@pytest.fixture(autouse=True)
def one_at_a_time(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under pytest-xdist: tests marked `serial(NAME)` never run at the same time as another test of
    that NAME in any worker of the run (see `serial`), and a test marked `alone` (it measures the whole machine: the
    huge pages in use, say) runs while no other test of the run does. The locks are files in the
    run's temporary directory, which its workers share. Every test holds the run's lock shared; an
    `alone` test first closes a gate, so that no test starts meanwhile, then waits for it alone."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield  # one process runs one test at a time
        return
    import fcntl
    from contextlib import ExitStack

    shared = tmp_path_factory.getbasetemp().parent  # .../pytest-N/, above popen-gw0, popen-gw1
    alone = request.node.get_closest_marker("alone") is not None
    with ExitStack() as held:
        gate = held.enter_context(open(shared / "alone.gate", "a"))
        lock = held.enter_context(open(shared / "alone.lock", "a"))
        if alone:
            fcntl.flock(gate, fcntl.LOCK_EX)
            held.callback(fcntl.flock, gate, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            fcntl.flock(gate, fcntl.LOCK_SH)  # waits while an `alone` test closes the gate
            fcntl.flock(lock, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        held.callback(fcntl.flock, lock, fcntl.LOCK_UN)
        for mark in request.node.iter_markers("serial"):
            held.enter_context(serial(mark.args[0], tmp_path_factory))
        yield


@contextmanager
def serial(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under pytest-xdist, waits until no other worker of the run is inside serial(`name`) (the marker
    `serial(name)` holds it for the whole test)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    import fcntl

    with open(tmp_path_factory.getbasetemp().parent / f"serial-{name}.lock", "a") as group:
        fcntl.flock(group, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(group, fcntl.LOCK_UN)


def domains_of_run() -> list[str]:
    """This run's domain and those its tests made from it (DOMAIN + a suffix not starting with a
    digit: "py123k", "py123h0"; "py1234" is another run's)."""
    from hakobu import _core

    return [
        name
        for name in _core.domain_names()
        if name == DOMAIN or (name.startswith(DOMAIN) and not name[len(DOMAIN)].isdigit())
    ]


def shared_memory_segments() -> set[str]:
    """This user's multiprocessing.shared_memory segments (/dev/shm/psm_*), but those that a program
    outside this process and the programs it started has mapped: the segments of a run beside this
    one (another pytest-xdist worker, a benchmark) come and go meanwhile, while one that this run left
    is mapped by nobody, or by this process or one of its programs."""
    import glob

    segments = {p for p in glob.glob("/dev/shm/psm_*") if os.stat(p).st_uid == os.getuid()}
    if not segments:
        return segments
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # it exited meanwhile
    ours = {os.getpid()}
    for pid in parents:
        chain = [pid]
        while chain[-1] in parents and chain[-1] not in ours and len(chain) < 64:
            chain.append(parents[chain[-1]])
        if chain[-1] in ours:
            ours.update(chain)
    for pid in set(parents) - ours:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        segments -= {path for path in segments if path in maps}
    return segments


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
