"""`hakobu top`, run as a separate process next to separately started programs that put and get on
a queue, publish on a topic, hold a store and run a pipeline's board (tests/python/programs/top_*.py);
assertions are on --json and --once output and exit codes, and on a live run under a pseudo-terminal
that Ctrl-C ends."""

from __future__ import annotations

import fcntl
import itertools
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from conftest import DOMAIN, finish, said, start
from test_cli import cli_json, run_cli

import hakobu
from hakobu import _core
from hakobu._pipeline import board
from hakobu._pipeline.board import board_name

_names = itertools.count()

HELD = 5  # messages top_queue.py leaves queued
MESSAGE_BYTES = 10_000  # each of them an array of that many bytes
STORE_ENTRIES, STORE_VALUE_BYTES = 3, 1000
INTERVAL = "0.3"  # between top's two samples (rates need both); no assertion depends on it


@dataclass
class Traffic:
    queue: str
    topic: str
    store: str
    pipeline: str
    programs: dict[str, subprocess.Popen[str]]


def _fresh(request: pytest.FixtureRequest, what: str) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name[:30])
    return f"{base}-{what}{next(_names)}"


def _remove_board(pipeline: str) -> None:
    """A board is a store and an array of one name; a killed pipeline leaves both."""
    for remove in (_core.remove_store, _core.remove_sync):
        try:
            remove(board_name(pipeline), "")
        except hakobu.NotFound:
            pass


def _stop(program: subprocess.Popen[str]) -> None:
    """Tells a top_*.py program to finish (a line on stdin) and checks it did."""
    if program.poll() is None:
        program.stdin.write("\n")  # type: ignore[union-attr]
        program.stdin.flush()  # type: ignore[union-attr]
    code, out, err = finish(program)
    assert code == 0 and out.endswith("done\n"), err


@pytest.fixture
def traffic(request: pytest.FixtureRequest) -> Iterator[Traffic]:
    """The four programs, each past its "ready"; stopped and their objects removed afterwards."""
    names = Traffic(
        _fresh(request, "q"), _fresh(request, "t"), _fresh(request, "s"), _fresh(request, "p"), {}
    )
    commands = {
        "top_queue": (names.queue, HELD, MESSAGE_BYTES),
        "top_topic": (names.topic,),
        "top_store": (names.store, STORE_ENTRIES, STORE_VALUE_BYTES),
        "top_board": (names.pipeline, names.queue),  # decode's input: the queue with traffic
    }
    try:
        for program, args in commands.items():
            names.programs[program] = start(program, *args, stdin=subprocess.PIPE)
        for program in names.programs.values():
            said(program, "ready")
        yield names
    finally:
        for program in names.programs.values():
            if program.poll() is None:
                _stop(program)
        for remove, name in (
            (hakobu.remove, names.queue),
            (hakobu.Topic.remove, names.topic),
            (_core.remove_store, names.store),
        ):
            try:
                remove(name)
            except hakobu.NotFound:
                pass
        _remove_board(names.pipeline)


def top_text() -> str:
    """`hakobu top --once` as a wide screen shows it (cells of a narrow one wrap, names aside)."""
    command = [sys.executable, "-m", "hakobu", "top", "--once", "--interval", INTERVAL]
    env = {**os.environ, "COLUMNS": "250"}
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def only(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [item for item in items if item["name"] == name]
    assert len(found) == 1, items
    return found[0]


def test_json_reports_each_object_with_rates_while_traffic_flows(traffic: Traffic) -> None:
    view = cli_json("top", "--interval", INTERVAL)
    assert view["domain"] == DOMAIN and view["exists"] and view["error"] is None
    assert view["interval"] > 0
    pids = {name: program.pid for name, program in traffic.programs.items()}
    assert set(pids.values()) <= set(view["processes"]["pids"]), view["processes"]
    assert view["processes"]["alive"] >= len(pids) and view["memory"]["heap_used"] > 0

    queue = only(view["queues"], traffic.queue)
    assert queue["error"] is None and queue["capacity"] == 64
    assert queue["size"] in (HELD, HELD + 1), "the program holds HELD, one more between its put and get"
    assert queue["put_rate"] > 0 and queue["get_rate"] > 0, queue
    assert queue["put_count"] >= queue["get_count"] + HELD
    assert queue["pids"] == [pids["top_queue"]]
    # Bytes in flight: the held arrays (and their headers), one more between a put and its get.
    assert HELD * MESSAGE_BYTES <= queue["bytes"] <= (HELD + 1) * (MESSAGE_BYTES + 4096), queue
    assert queue["max_bytes"] > 0, "half of /dev/shm by default"
    assert (queue["senders"], queue["ended"], queue["senders_lost"]) == (1, False, False)

    topic = only(view["topics"], traffic.topic)
    assert topic["error"] is None and topic["subscribers"] == 1 and topic["subscribers_dead"] == 0
    assert topic["publish_rate"] > 0 and topic["published"] >= 40
    # The subscriber never reads: it lags by the ring's 16 messages, the rest were dropped.
    assert 0 < topic["max_lag"] <= 16 and topic["dropped"] >= 40 - 16, topic

    store = only(view["stores"], traffic.store)
    assert store["error"] is None and store["entries"] == STORE_ENTRIES
    assert STORE_ENTRIES * STORE_VALUE_BYTES <= store["bytes"] <= STORE_ENTRIES * (STORE_VALUE_BYTES + 1024)
    # A board's store is shown as its pipeline, not as a store.
    assert all(not s["name"].endswith(".pipeline") for s in view["stores"])

    pipeline = only(view["pipelines"], traffic.pipeline)
    assert pipeline["alive"] and pipeline["pid"] == pids["top_board"]
    stages = {stage["name"]: stage for stage in pipeline["stages"]}
    assert [(s["name"], s["workers"]) for s in pipeline["stages"]] == [
        ("decode", 1),
        ("infer", 2),
        ("post", 1),
    ]
    for busy in ("decode", "infer"):
        assert stages[busy]["rate"] > 0 and stages[busy]["items"] >= 4 * stages[busy]["workers"]
        assert sum(share for share in stages[busy]["shares"].values()) == pytest.approx(1.0)
    assert stages["decode"]["errors"] == 0 and stages["infer"]["errors"] >= 2
    # A stage's input queue, where the domain has it: how many items wait for the stage.
    assert stages["decode"]["input"] == traffic.queue
    assert stages["decode"]["input_queue"]["size"] in (HELD, HELD + 1)
    assert stages["decode"]["input_queue"]["capacity"] == 64
    assert stages["infer"]["input_queue"] is None  # no queue "decoded" in the domain
    post = stages["post"]
    assert post["items"] == 0 and post["rate"] == 0
    assert post["shares"] == {"computing": 0.0, "waiting_input": 1.0, "waiting_room": 0.0}
    assert [w["state"] for w in post["worker_states"]] == ["waiting for input"]
    workers = [w for stage in pipeline["stages"] for w in stage["worker_states"]]
    assert len(workers) == 4 and {w["pid"] for w in workers} == {pids["top_board"]}


def test_once_prints_every_object_by_name(traffic: Traffic) -> None:
    result = run_cli("top", "--once", "--interval", INTERVAL)  # names are never cut, however narrow
    assert result.returncode == 0, result.stderr
    for name in (traffic.queue, traffic.topic, traffic.store, f"pipeline {traffic.pipeline}"):
        assert name in result.stdout, result.stdout
    for stage in ("decode", "infer", "post"):
        assert stage in result.stdout


def test_piped_output_is_one_frame(traffic: Traffic) -> None:
    """Without --once, a stdout that is no terminal still gets one frame, and the command ends."""
    result = run_cli("top", "--interval", INTERVAL)
    assert result.returncode == 0, result.stderr
    assert traffic.queue in result.stdout and "\x1b[?1049h" not in result.stdout


def test_a_queue_whose_stream_ended_or_lost_a_sender_says_so(name: str) -> None:
    with hakobu.Queue(name, capacity=8) as queue:
        queue.put(1)  # this handle is the queue's one sender
        assert queue.get(timeout=60) == 1
    ended = only(cli_json("top", "--interval", INTERVAL)["queues"], name)
    assert (ended["senders"], ended["ended"], ended["senders_lost"], ended["size"]) == (0, True, False, 0)
    text = top_text()
    assert "ended" in text and "senders lost" not in text

    sender = start("top_queue", name, 1, 100, stdin=subprocess.PIPE)  # a sender from its first put
    said(sender, "ready")
    sender.send_signal(signal.SIGKILL)
    finish(sender)
    with hakobu.Queue(name) as queue, pytest.raises(hakobu.SendersLost):
        for _ in range(3):  # what the killed sender left (one or two messages), then the end
            queue.get(timeout=60)
    lost = only(cli_json("top", "--interval", INTERVAL)["queues"], name)
    assert (lost["senders"], lost["ended"], lost["senders_lost"]) == (0, True, True), lost
    assert "ended, senders lost" in top_text()


def test_a_pipeline_whose_process_died_is_shown_dead(request: pytest.FixtureRequest) -> None:
    pipeline = _fresh(request, "p")
    program = start("top_board", pipeline, stdin=subprocess.PIPE)
    try:
        said(program, "ready")
        program.send_signal(signal.SIGKILL)
        finish(program)
        view = cli_json("top", "--interval", INTERVAL)
        found = only(view["pipelines"], pipeline)
        assert not found["alive"] and found["pid"] == program.pid
        states = {w["state"] for stage in found["stages"] for w in stage["worker_states"]}
        assert states == {"dead"}
        assert all(stage["rate"] == 0 for stage in found["stages"])
        assert "its process died" in top_text()
    finally:
        if program.poll() is None:
            program.kill()
            program.communicate()
        _remove_board(pipeline)


def test_a_damaged_board_neither_breaks_the_view_nor_shows_nonsense(request: pytest.FixtureRequest) -> None:
    """A board lives in shared memory, written by other processes: rows of NaN, infinities and
    negative counts read as 0, and a description whose stages point past its rows is reported."""
    nonsense, bad_rows = _fresh(request, "p"), _fresh(request, "p")
    stages = [board.StageInfo("only", 2, "in", None)]
    made = [board.Board(name, stages, None, DOMAIN) for name in (nonsense, bad_rows)]
    try:
        made[1].rows[0, :] = np.nan
        made[1].rows[1, :] = [-1, np.inf, -5, np.inf, -np.inf, np.nan, 1e300, 99, -1]
        with hakobu.Store(board_name(nonsense), 4, create=False) as store:
            forged = dict(store["description"])
            forged["stages"] = [{"name": "only", "workers": 2, "first_row": 1, "input": "in", "output": None}]
            store["description"] = forged
        view = cli_json("top", "--interval", INTERVAL)
        report = only(view["pipelines"], nonsense)
        assert report["stages"] == [] and "makes no sense" in report["error"]
        (stage,) = only(view["pipelines"], bad_rows)["stages"]
        assert stage["items"] == 0 and stage["errors"] == 0 and stage["rate"] == 0
        assert [w["pid"] for w in stage["worker_states"]] == [0, 0]
        assert [w["state"] for w in stage["worker_states"]] == ["not started", "not started"]
        assert "makes no sense" in top_text()
    finally:
        for published in made:
            published.remove()


def test_a_board_described_by_a_stranger_object_leaves_the_rest_of_the_view(
    request: pytest.FixtureRequest, name: str
) -> None:
    pipeline = _fresh(request, "p")
    made = board.Board(pipeline, [board.StageInfo("only", 1, "in", None)], None, DOMAIN)
    queue = hakobu.Queue(name, capacity=8)
    try:
        with hakobu.Store(board_name(pipeline), 4, create=False) as store:
            store["description"] = "not a description"
        view = cli_json("top", "--interval", INTERVAL)
        assert view["pipelines"] == [] and "could not be read" in view["pipelines_error"]
        assert only(view["queues"], name)["capacity"] == 8
        assert "could not be read" in top_text()
    finally:
        queue.close()
        made.remove()


def test_no_such_domain_lists_the_domains_that_exist(name: str) -> None:
    hakobu.Queue(name, create=True).close()  # so that this run's domain exists
    result = run_cli("top", "--json", "--domain", f"{DOMAIN}-none")
    assert result.returncode == 1 and result.stdout == ""
    assert f"no domain '{DOMAIN}-none'" in result.stderr and DOMAIN in result.stderr.split("exist:")[1]


@pytest.mark.parametrize("interval", ["0", "-1", "soon"])
def test_a_bad_interval_is_a_usage_error(interval: str) -> None:
    result = run_cli("top", "--interval", interval)
    assert result.returncode == 2 and "--interval" in result.stderr


def _read_until(master: int, expected: bytes, seen: bytearray, watchdog: float) -> bool:
    """Reads the terminal's output into `seen` until it holds `expected`, the program closed its
    side, or the watchdog (against a hang, not a timed assertion) ran out."""
    deadline = time.monotonic() + watchdog
    while expected not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([master], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every holder of the terminal's other side closed it
            return expected in seen
        if not chunk:
            return expected in seen
        seen += chunk
    return True


def test_a_live_run_on_a_terminal_quits_on_ctrl_c_and_restores_the_screen(name: str) -> None:
    queue = hakobu.Queue(name, create=True)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    top = subprocess.Popen(
        [sys.executable, "-m", "hakobu", "top", "--interval", "0.2"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    seen = bytearray()
    try:
        # A frame with the queue in it: the live loop runs (on the alternate screen).
        assert _read_until(master, name.encode(), seen, watchdog=60), bytes(seen)
        assert b"\x1b[?1049h" in seen
        top.send_signal(signal.SIGINT)
        _read_until(master, b"\x1b[?1049l", seen, watchdog=60)
        code = top.wait(timeout=60)
        assert code == 0, bytes(seen)
        assert b"\x1b[?1049l" in seen, "the alternate screen is left: the terminal is restored"
        assert b"Traceback" not in seen
    finally:
        if top.poll() is None:
            top.kill()
            top.wait()
        os.close(master)
        queue.close()
