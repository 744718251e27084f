"""Deployments an unlucky user meets: processes of two PID namespaces sharing
/dev/shm, a producer in another network namespace, another Unix user on the
machine, a /dev/shm that is nearly full.

These need root (CI runs as root) to make the namespaces, the second user and
the small tmpfs; each test removes what it creates.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DOMAIN, PROGRAMS, files_of_domain, finish, start_with_small_dev_shm

import hakobu

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create namespaces, users and mounts")
OTHER_USER = "hakobu-test-other"


def try_open(
    user: str | None, domain: str, name: str, action: str, watchdog: float = 60
) -> dict[str, object]:
    """Runs iso_open.py (as `user` when given) with a watchdog against hangs; its outcome."""
    command = [sys.executable, str(PROGRAMS / "iso_open.py"), user or "-", domain, name, action]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=watchdog)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{command} did not finish within the {watchdog} s watchdog (a hang): {expired.stderr!r}")
    assert result.returncode == 0, result.stderr
    outcome: dict[str, object] = json.loads(result.stdout)
    return outcome


@pytest.fixture(scope="module")
def other_user() -> Iterator[str]:
    """A second Unix user, created for these tests and removed after them."""
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed")
    created = False
    try:
        pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER], check=True
        )
        created = True
    yield OTHER_USER
    if created:
        subprocess.run(["userdel", OTHER_USER], check=False)


@needs_root
def test_two_creators_with_the_same_pid_in_two_pid_namespaces_lose_nothing(name: str) -> None:
    # Two containers of one pod share /dev/shm and can both be pid 1: they
    # create the same queue at the same moment, and both messages arrive.
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    receiver = hakobu.Queue(name)
    for round_ in range(5):
        at = time.time() + 1.0
        creators = [
            subprocess.Popen(
                [
                    "unshare",
                    "--pid",
                    "--fork",
                    sys.executable,
                    str(PROGRAMS / "iso_create_put.py"),
                    DOMAIN,
                    name,
                    f"{round_}-{k}",
                    str(at),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(2)
        ]
        for creator in creators:
            code, _, err = finish(creator)
            assert code == 0, err
        got = sorted(receiver.get(timeout=30) for _ in range(2))
        assert got == [f"{round_}-0", f"{round_}-1"]
    assert receiver.qsize() == 0
    assert not [f for f in files_of_domain() if ":new:" in f], "no half-built queue is left"
    receiver.unlink()


def squat(user: str, path: str, mode: str) -> subprocess.Popen[str]:
    squatter = subprocess.Popen(
        [sys.executable, str(PROGRAMS / "iso_squat.py"), user, path, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert squatter.stdout is not None
    line = squatter.stdout.readline()
    assert line.strip() == "ready", squatter.stderr.read() if squatter.stderr else line
    return squatter


def release(squatter: subprocess.Popen[str], path: str) -> None:
    squatter.communicate(input="", timeout=60)
    Path(path).unlink(missing_ok=True)


@needs_root
@pytest.mark.parametrize("mode", ["0666", "0600"])
def test_a_squatted_domain_is_a_clear_error_never_a_wait(other_user: str, mode: str) -> None:
    # Another user plants the domain's registry (readable by all, or not) and
    # holds its lock: opening must fail at once, naming the owner and the way out.
    domain = f"{DOMAIN}-sq{mode}"
    path = f"/dev/shm/hakobu:{domain}:registry"
    squatter = squat(other_user, path, mode)
    try:
        outcome = try_open(None, domain, "q", "open")
        assert not outcome["ok"]
        assert outcome["type"] == "AccessDenied", outcome
        assert other_user in str(outcome["message"]), outcome["message"]
        assert "HAKOBU_DOMAIN" in str(outcome["message"]), outcome["message"]
    finally:
        release(squatter, path)
    assert not files_of_domain(domain)


@needs_root
def test_a_squatted_queue_is_a_clear_error_never_a_wait(other_user: str, name: str) -> None:
    hakobu.Queue(name + "-mine").unlink()  # the domain exists, as the user's own
    path = f"/dev/shm/hakobu:{DOMAIN}:q:{name}"
    squatter = squat(other_user, path, "0666")
    try:
        outcome = try_open(None, DOMAIN, name, "open")
        assert outcome["type"] == "AccessDenied", outcome
        assert other_user in str(outcome["message"])
    finally:
        release(squatter, path)


@needs_root
@pytest.mark.parametrize("action", ["open", "attach", "put", "remove"])
def test_another_user_can_neither_attach_nor_remove(other_user: str, name: str, action: str) -> None:
    mine = hakobu.Queue(name)
    mine.put("private")
    outcome = try_open(other_user, DOMAIN, name, action)
    assert not outcome["ok"], outcome
    assert outcome["type"] == "AccessDenied", outcome
    assert mine.get(timeout=5) == "private", "the queue is untouched"
    assert mine.qsize() == 0
    mine.unlink()


@needs_root
def test_async_receivers_hear_from_a_producer_in_another_network_namespace(name: str) -> None:
    # Containers may share /dev/shm but not their network namespace, where a putter
    # cannot reach an event loop's wake-up socket (abstract sockets belong to one
    # namespace). The receivers must still get every message, a little later.
    import asyncio

    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    count = 3
    # A handle that did not create the queue: no NoSenderWarning timer wakes its waiters.
    with hakobu.Queue(name, create=True) as owner, hakobu.Queue(name, create=False) as q:

        async def receive() -> list[object]:
            waiting = [
                asyncio.ensure_future(q.get_async()) for _ in range(count)
            ]  # no timeout: a lost signal would hang
            await asyncio.sleep(0.2)  # parked on the loop's socket by now (either way they must finish)
            producer = subprocess.Popen(
                [
                    "unshare",
                    "--net",
                    sys.executable,
                    str(PROGRAMS / "waiting_peer.py"),
                    "produce",
                    name,
                    str(count),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            code, _, err = await asyncio.to_thread(finish, producer)
            assert code == 0, err
            return list(await asyncio.gather(*waiting))

        assert sorted(asyncio.run(asyncio.wait_for(receive(), 60))) == list(range(count))  # type: ignore[type-var]
        owner.unlink()


@needs_root
def test_a_nearly_full_dev_shm(tmp_path: Path) -> None:
    process = start_with_small_dev_shm("iso_small_shm", 64)  # a 48 MiB /dev/shm, no huge pages
    code, out, err = finish(process)
    assert code == 0, err
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["second_open"]["code"] == 0, seen["second_open"]
    assert seen["second_open"]["out"] == "1", "create-or-attach of an existing queue attaches"
    assert "asked for 64.0 MiB" in str(seen["too_big"]), seen["too_big"]
    assert "free of" in str(seen["too_big"])
    assert seen["kept"] and seen["left"] == 0
