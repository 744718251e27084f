"""The `hakobu` command, run as a separate process (`python -m hakobu ...`) next to separately
started programs that hold queues; assertions are on --json output and exit codes."""

from __future__ import annotations

import gc
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DOMAIN, files_of_domain, finish, start

import hakobu

_domains = itertools.count()


def run_cli(*args: str, watchdog: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs `python -m hakobu ARGS` in this run's domain (the watchdog only guards against a hang)."""
    command = [sys.executable, "-m", "hakobu", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=watchdog)


def cli_json(*args: str, expect_code: int = 0) -> Any:
    """Runs the command with --json and returns what it printed."""
    result = run_cli(*args, "--json")
    assert result.returncode == expect_code, result.stderr
    return json.loads(result.stdout)


def queue_entry(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((q for q in report["queues"] if q["name"] == name), None)


@pytest.fixture
def other_domain() -> Iterator[str]:
    """A fresh domain (under this run's prefix, so the leftover check covers it); removed afterwards."""
    domain = f"{DOMAIN}-cli{next(_domains)}"
    yield domain
    run_cli("rm", "--domain", domain, "--everything", "--force")
    assert not files_of_domain(domain)


def start_holder(
    queue: str, capacity: int, messages: int, domain: str | None = None
) -> subprocess.Popen[str]:
    """Starts cli_hold_open.py, which keeps `queue` open until told to exit, and waits until it is ready."""
    env = dict(os.environ)
    if domain is not None:
        env["HAKOBU_DOMAIN"] = domain
    holder = start("cli_hold_open", queue, capacity, messages, stdin=subprocess.PIPE, env=env)
    line = holder.stdout.readline()  # type: ignore[union-attr]
    assert line == "ready\n", holder.stderr.read()  # type: ignore[union-attr]
    return holder


def let_exit(holder: subprocess.Popen[str]) -> None:
    holder.stdin.write("\n")  # type: ignore[union-attr]
    holder.stdin.flush()  # type: ignore[union-attr]
    code, out, err = finish(holder)
    assert code == 0 and out == "done\n", err


# --- ls and info -----------------------------------------------------------------------------


def test_ls_shows_the_queue_its_size_and_the_program_that_holds_it(name: str) -> None:
    holder = start_holder(name, capacity=8, messages=3)
    try:
        report = cli_json("ls")
        assert report["domain"] == DOMAIN and report["exists"] and report["error"] is None
        queue = queue_entry(report, name)
        assert queue is not None, report
        assert (queue["size"], queue["capacity"]) == (3, 8)
        assert queue["pids"] == [holder.pid], "found by inode: its creator mapped it under a temporary name"
        assert queue["creator_pid"] == holder.pid and queue["creator_alive"]
        assert queue["memory_bytes"] >= queue["file_bytes"] > 0
        attached = [p["pid"] for p in report["summary"]["processes"] if p["alive"]]
        assert holder.pid in attached
        assert report["summary"]["processes_alive"] >= 1

        info = cli_json("info", name)
        assert (info["size"], info["capacity"], info["put_count"], info["get_count"]) == (3, 8, 3, 0)
        assert info["pids"] == [holder.pid]

        text = run_cli("ls")
        assert text.returncode == 0 and name in text.stdout and "3 / 8" in text.stdout, text.stderr
        text = run_cli("info", name)
        assert text.returncode == 0 and str(holder.pid) in text.stdout, text.stderr
        rows = dict(
            re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.stdout.splitlines() if line
        )
        assert rows["stream"] == "1 sender(s)", text.stdout  # the holder put, and has not closed
        assert rows["bytes in flight"].startswith("0 B / "), text.stdout  # small messages ride in the ring
        assert rows["waiting (get / put)"] == "0 / 0", text.stdout

        every = cli_json("ls", "--all")
        assert any(d["domain"] == DOMAIN and queue_entry(d, name) for d in every["domains"])
    finally:
        let_exit(holder)
    report = cli_json("ls")
    queue = queue_entry(report, name)
    assert queue is not None and queue["pids"] == [] and not queue["creator_alive"], (
        "the queue outlives its creator"
    )


def test_info_of_a_missing_queue_exits_1_with_what_to_do(name: str) -> None:
    with hakobu.Queue(name):  # the domain exists; the queue asked for does not
        result = run_cli("info", f"{name}-missing")
    assert result.returncode == 1 and result.stdout == ""
    assert f"no queue '{name}-missing' in domain '{DOMAIN}'" in result.stderr
    assert "hakobu ls" in result.stderr

    result = run_cli("info", "bad/name")
    assert result.returncode == 2 and "invalid object name" in result.stderr


def test_a_domain_that_does_not_exist_is_reported_and_not_created() -> None:
    domain = f"{DOMAIN}-nothing"
    result = run_cli("ls", "--domain", domain)
    assert result.returncode == 0 and f"no domain '{domain}'" in result.stdout, result.stderr
    assert cli_json("ls", "--domain", domain)["exists"] is False
    assert cli_json("gc", "--domain", domain) == {"domain": domain, "exists": False, "reclaimed": 0}
    assert run_cli("info", "q", "--domain", domain).returncode == 1
    assert run_cli("rm", "q", "--domain", domain).returncode == 1
    assert run_cli("rm", "--everything", "--domain", domain).returncode == 0
    assert files_of_domain(domain) == [], "looking must not create the domain"


# --- rm -------------------------------------------------------------------------------------


def test_rm_removes_a_queue_whoever_created_it(name: str) -> None:
    holder = start_holder(name, capacity=4, messages=1)
    try:
        assert queue_entry(cli_json("ls"), name) is not None
        removed = cli_json("rm", name)
        assert removed["removed"] == [name] and removed["missing"] == []
        assert queue_entry(cli_json("ls"), name) is None
        again = run_cli("rm", name)
        assert again.returncode == 1 and f"no queue '{name}'" in again.stderr
    finally:
        let_exit(holder)  # its handle keeps working until it closes


def test_rm_everything_refuses_while_a_process_is_attached(other_domain: str) -> None:
    holder = start_holder("q", capacity=4, messages=2, domain=other_domain)
    try:
        refused = run_cli("rm", "--domain", other_domain, "--everything")
        assert refused.returncode == 1 and str(holder.pid) in refused.stderr and "--force" in refused.stderr
        assert files_of_domain(other_domain), "nothing was removed"
    finally:
        let_exit(holder)
    assert files_of_domain(other_domain), "the queue outlives the program"
    removed = cli_json("rm", "--domain", other_domain, "--everything")
    assert removed["existed"] and removed["live_pids"] == [] and len(removed["removed"]) >= 3
    assert files_of_domain(other_domain) == []


def test_rm_everything_with_force_removes_a_domain_in_use(other_domain: str) -> None:
    holder = start_holder("q", capacity=4, messages=2, domain=other_domain)
    try:
        removed = cli_json("rm", "--domain", other_domain, "--everything", "--force")
        assert holder.pid in removed["live_pids"]
        assert files_of_domain(other_domain) == []
    finally:
        let_exit(holder)  # it keeps its mappings and exits cleanly
    assert files_of_domain(other_domain) == []


def fake(path: Path | str, data: bytes) -> Path:
    """Writes a file as the library makes its own (mode 0600: the library refuses files others may change)."""
    path = Path(path)
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_rm_everything_removes_a_damaged_domain(other_domain: str) -> None:
    # A registry that fails validation (overwritten with 0xff) and a garbage queue.
    registry = fake(f"/dev/shm/hakobu:{other_domain}:registry", b"\xff" * (1 << 20))
    fake(f"/dev/shm/hakobu:{other_domain}:heap", b"")
    fake(f"/dev/shm/hakobu:{other_domain}:q:x", b"garbage")
    listed = run_cli("ls", "--domain", other_domain)
    assert listed.returncode == 1 and f"hakobu rm --domain {other_domain} --everything" in listed.stderr
    removed = cli_json("rm", "--domain", other_domain, "--everything")
    assert len(removed["removed"]) == 3 and files_of_domain(other_domain) == []

    # Without a heap the domain cannot be attached to at all: ls says so and touches nothing.
    fake(registry, b"")
    report = cli_json("ls", "--domain", other_domain, expect_code=1)
    assert report["damaged"] and "--everything" in report["error"] and report["queues"] == []
    assert cli_json("rm", "--domain", other_domain, "--everything")["removed"] == [str(registry)]


# --- gc -------------------------------------------------------------------------------------


def hold_an_array_and_get_killed(name: str) -> tuple[int, int, hakobu.Queue]:
    """A program receives an 8 MiB array and is SIGKILLed holding it. Returns (its pid, the
    domain's live bytes `hakobu ls` saw while it held the array, the queue). Keep the queue
    open until `hakobu gc` has run: the last process to leave a domain reclaims the dead itself."""
    queue = hakobu.Queue(name)
    holder = start("hold", name)
    queue.put(np.ones(2**20))
    line = holder.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("holding 8388608"), holder.stderr.read()  # type: ignore[union-attr]
    held = cli_json("ls")["summary"]["live_bytes"]
    assert held >= 8 << 20
    holder.kill()
    finish(holder)
    return holder.pid, held, queue


def test_gc_reclaims_a_killed_program_holding_an_array(name: str) -> None:
    pid, held, _queue = hold_an_array_and_get_killed(name)
    result = cli_json("gc")
    assert result["exists"] and result["live_bytes_after"] <= held - (8 << 20), result
    assert pid not in [p["pid"] for p in result["processes"]]
    text = run_cli("gc")
    assert text.returncode == 0 and "reclaimed" in text.stdout, text.stderr


def test_gc_counts_the_killed_program(name: str) -> None:
    _pid, _held, _queue = hold_an_array_and_get_killed(name)
    result = cli_json("gc")
    assert result["reclaimed"] == 1 and result["live_bytes_before"] > result["live_bytes_after"]


def test_the_last_process_to_leave_reclaims_the_killed_program(name: str) -> None:
    _pid, _held, queue = hold_an_array_and_get_killed(name)
    del queue
    gc.collect()  # this process lets go of the domain: it is the last one out
    result = cli_json("gc")
    assert result["reclaimed"] == 0 and result["live_bytes_before"] == 0, result


# --- doctor and the rest -----------------------------------------------------------------------


def test_doctor_reports_dev_shm_figures() -> None:
    result = run_cli("doctor", "--json")
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] == (result.returncode == 0)
    by_name = {check["name"]: check for check in report["checks"]}
    assert {"/dev/shm", "huge pages", "open files", "vm.max_map_count", "vm.overcommit_memory"} <= set(
        by_name
    )
    assert all(check["status"] in ("ok", "note", "problem") for check in report["checks"])
    assert all(check["action"] for check in report["checks"] if check["status"] == "problem")
    shm = by_name["/dev/shm"]["data"]
    fs = os.statvfs("/dev/shm")
    assert shm["total_bytes"] == fs.f_blocks * fs.f_frsize
    assert 0 < shm["free_bytes"] <= shm["total_bytes"]

    text = run_cli("doctor")
    assert text.returncode in (0, 1) and "/dev/shm" in text.stdout, text.stderr


def test_doctor_flags_a_stale_domain(other_domain: str) -> None:
    # What a crash leaves: the domain's files, no queue, and nobody attached.
    fake(f"/dev/shm/hakobu:{other_domain}:registry", bytes(64))
    fake(f"/dev/shm/hakobu:{other_domain}:heap", b"")
    report = cli_json("doctor", expect_code=1)
    stale = next(c for c in report["checks"] if c["name"] == f"domain {other_domain}")
    assert stale["status"] == "problem" and f"hakobu gc --domain {other_domain}" in stale["action"]
    # The suggested action works: gc attaches, finds nothing left, and the domain goes.
    collected = cli_json("gc", "--domain", other_domain)
    assert collected["domain_removed"] and files_of_domain(other_domain) == []


def test_doctor_calls_a_domain_kept_by_a_topic_idle_not_stale(other_domain: str) -> None:
    # Named objects of any kind keep a domain (the last process out leaves it): nothing to gc.
    fake(f"/dev/shm/hakobu:{other_domain}:registry", bytes(64))
    fake(f"/dev/shm/hakobu:{other_domain}:heap", b"")
    fake(f"/dev/shm/hakobu:{other_domain}:t:camera", b"")
    done = run_cli("doctor", "--json")  # exits 1 if this machine has problems of its own
    assert done.returncode in (0, 1), done.stderr
    idle = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == f"domain {other_domain}")
    assert idle["status"] == "note" and "1 named object(s)" in idle["summary"], idle
    assert idle["data"]["topics"] == ["camera"] and idle["data"]["queues"] == []


def test_version_help_and_options_before_the_subcommand() -> None:
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"hakobu {hakobu.__version__}"
    assert run_cli().returncode == 2, "no subcommand: usage"
    assert json.loads(run_cli("--json", "ls").stdout)["domain"] == DOMAIN
