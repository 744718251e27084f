"""hakobu.serve: pipeline stages as separately started programs over named queues
(tests/python/programs/serve_stage.py), in either order; the end of a stream, a stage's
failure, a killed producer and Ctrl-C flow downstream, and nothing blocks forever."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import DOMAIN, finish, start
from test_pool import eventually

import hakobu
from hakobu._pipeline import board
from hakobu._pipeline.outputs import SKIP
from hakobu._pipeline.serve import _stage_name

WATCHDOG = 60.0  # seconds: against a deadlock, never a measure of speed
COUNT = 10  # arrays a test's producer sends (serve_stage.CAPACITY holds them all)
CAPACITY = 16  # serve_stage.CAPACITY


@pytest.fixture
def queues(name: str) -> Iterator[list[str]]:
    """Names for a pipeline's queues (name-0, name-1, ...); each is removed after the test."""
    names = [f"{name}-{index}" for index in range(4)]
    yield names
    for queue in names:
        try:
            hakobu.remove(queue)
        except hakobu.NotFound:
            pass


def live_blocks() -> int:
    return int(hakobu._core.domain_stats()["live_blocks"])


def queued(queue: str) -> int:
    """Messages waiting on ``queue``; the handle is gone when this returns (a closed handle
    that still exists keeps a removed queue's messages)."""
    with hakobu.Queue(queue, create=False) as handle:
        return handle.qsize()


def lines(output: str, prefix: str) -> list[str]:
    return [line[len(prefix) :] for line in output.splitlines() if line.startswith(prefix)]


def stages_on_boards() -> list[dict[str, Any]]:
    """The stages the domain's boards show (one per running serve)."""
    return [stage for shown in board.running(DOMAIN) for stage in shown["stages"]]


def finish_all(*programs: subprocess.Popen) -> list[tuple[int, str, str]]:
    return [finish(program, WATCHDOG) for program in programs]


def run_stages(*argvs: tuple[object, ...]) -> list[tuple[int, str, str]]:
    """Starts a serve_stage program per argument tuple, in this order, and waits for them all."""
    programs = [start("serve_stage", *argv) for argv in argvs]
    try:
        return finish_all(*programs)
    finally:
        kill_all(*programs)


def kill_all(*programs: subprocess.Popen) -> None:
    for program in programs:
        if program.poll() is None:
            program.kill()
            program.communicate()


@pytest.mark.parametrize("order", ["producer first", "consumers first"])
def test_three_programs_in_either_order_deliver_every_item_in_order(queues: list[str], order: str) -> None:
    frames, features = queues[:2]
    producer_args = ("produce", frames, COUNT)
    stage_args, last_args = ("stage", frames, features), ("last", features)
    programs: list[subprocess.Popen] = []
    try:
        if order == "producer first":
            programs = [start("serve_stage", *producer_args)]
            programs += [start("serve_stage", *stage_args), start("serve_stage", *last_args)]
        else:
            last = start("serve_stage", *last_args)
            programs = [start("serve_stage", *stage_args), last]
            # Both serve and wait (a queue nobody ever sent on never ends): each shows on a board.
            eventually(lambda: len(stages_on_boards()) == 2, "both consumers serve", WATCHDOG)
            shown = {(stage["input"], stage["output"]) for stage in stages_on_boards()}
            assert shown == {(frames, features), (features, None)}
            programs.insert(0, start("serve_stage", *producer_args))
        (p_code, p_out, p_err), (s_code, s_out, s_err), (l_code, l_out, l_err) = finish_all(*programs)
    finally:
        kill_all(*programs)
    assert p_code == 0 and p_out == f"sent {COUNT}\n", p_err
    assert s_code == 0 and s_out == f"served {COUNT}\n", s_err
    assert l_code == 0, l_err
    assert lines(l_out, "got ") == [str(k + 1) for k in range(COUNT)]  # every item, in order, once
    assert lines(l_out, "served ") == [str(COUNT)]
    assert stages_on_boards() == [], "each serve removes its board when it returns"


def test_two_workers_serving_one_input_share_it(queues: list[str]) -> None:
    frames, features = queues[:2]
    results = run_stages(
        ("last", features),
        ("stage", frames, features),
        ("stage", frames, features),
        ("produce", frames, COUNT),
    )
    for code, _out, err in results:
        assert code == 0, err
    (_, last_out, _), workers = results[0], results[1:3]
    # The stream ends for the last stage only once both workers closed their part of it.
    assert sorted(int(value) for value in lines(last_out, "got ")) == [k + 1 for k in range(COUNT)]
    assert sum(int(lines(out, "served ")[0]) for _code, out, _err in workers) == COUNT


def test_a_stage_that_raises_ends_every_later_stage_with_senders_lost(queues: list[str]) -> None:
    frames, first, second = queues[:3]
    fails_at = 4
    before = live_blocks()
    (p_code, _, p_err), (f_code, _, f_err), (s_code, s_out, s_err), (l_code, l_out, l_err) = run_stages(
        ("produce", frames, COUNT),
        ("stage", frames, first, fails_at),
        ("stage", first, second),
        ("last", second),
    )
    assert p_code == 0, p_err
    assert f_code == 1 and f_err.rstrip().endswith(f"ValueError: the stage fails on {fails_at:g}"), f_err
    # What was sent before the failure arrives; then SendersLost, at the next stage and the one after.
    assert s_code == 3 and s_out == f"lost after {fails_at}\n", s_err
    assert l_code == 3, l_err
    assert lines(l_out, "got ") == [str(k + 2) for k in range(fails_at)]
    assert lines(l_out, "lost after ") == [str(fails_at)]
    # The arrays after the failing one stay in the first queue until it is removed.
    assert queued(frames) == COUNT - fails_at - 1
    assert live_blocks() > before
    for queue in (frames, first, second):
        hakobu.remove(queue)
    assert live_blocks() == before, "removing the queues gave their memory back"


def test_a_killed_producer_ends_the_other_stages_with_senders_lost(queues: list[str]) -> None:
    frames, features = queues[:2]
    producer = start("serve_stage", "produce", frames, COUNT, "hang")
    stage = start("serve_stage", "stage", frames, features)
    last = start("serve_stage", "last", features)
    try:
        assert producer.stdout.readline() == f"sent {COUNT}\n"  # type: ignore[union-attr]
        producer.send_signal(signal.SIGKILL)  # not reaped before the others end: a zombie is dead too
        (s_code, s_out, s_err), (l_code, l_out, l_err) = finish_all(stage, last)
        finish(producer, WATCHDOG)
    finally:
        kill_all(producer, stage, last)
    assert s_code == 3 and s_out == f"lost after {COUNT}\n", s_err
    assert l_code == 3, l_err
    assert lines(l_out, "got ") == [str(k + 1) for k in range(COUNT)]  # all it sent, then the loss


def test_a_producer_that_finishes_ends_every_stage_normally(queues: list[str]) -> None:
    frames, first, second = queues[:3]
    results = run_stages(
        ("last", second), ("stage", first, second), ("stage", frames, first), ("produce", frames, COUNT)
    )
    for code, _out, err in results:
        assert code == 0, err
    assert [lines(out, "served ") for _code, out, _err in results[:3]] == [[str(COUNT)]] * 3
    for queue in (frames, first, second):  # each ended normally: a new reader sees EndOfStream
        with hakobu.Queue(queue, create=False) as ended:
            stats = ended.stats()
            assert stats["ended"] and not stats["senders_lost"] and stats["size"] == 0
            with pytest.raises(hakobu.EndOfStream) as raised:
                ended.get_nowait()
            assert type(raised.value) is hakobu.EndOfStream


def test_ctrl_c_of_a_stage_ends_the_next_with_senders_lost(queues: list[str]) -> None:
    frames, features = queues[:2]
    producer = start("serve_stage", "produce", frames, COUNT, "hang")
    stage = start("serve_stage", "stage", frames, features)
    last = start("serve_stage", "last", features)
    try:
        for k in range(COUNT):  # the stage waits for more input once these are through
            assert last.stdout.readline() == f"got {k + 1}\n"  # type: ignore[union-attr]
        stage.send_signal(signal.SIGINT)
        (s_code, _, s_err), (l_code, l_out, l_err) = finish_all(stage, last)
    finally:
        kill_all(producer, stage, last)
    assert s_code == -signal.SIGINT and s_err.rstrip().endswith("KeyboardInterrupt"), s_err
    assert l_code == 3 and l_out == f"lost after {COUNT}\n", l_err


def test_a_stage_name_is_taken_while_its_serve_runs_and_free_once_it_was_killed(queues: list[str]) -> None:
    frames = queues[0]
    stage = ("serve_stage", "last", frames, "--name", "decoder")
    programs = [start(*stage)]
    try:
        eventually(
            lambda: [s["name"] for s in stages_on_boards()] == ["decoder"], "the stage serves", WATCHDOG
        )
        programs.append(start(*stage))
        code, _, err = finish(programs[-1], WATCHDOG)
        assert code == 1 and "AlreadyExists: a running stage is called 'decoder'" in err, err
        programs[0].send_signal(signal.SIGKILL)
        finish(programs[0], WATCHDOG)
        # The killed stage's board stays (hakobu top shows it dead); a new stage of the name replaces it.
        assert [shown["alive"] for shown in board.running(DOMAIN)] == [False]
        programs += [start(*stage), start("serve_stage", "produce", frames, 1)]
        (code, out, err), _ = finish_all(*programs[-2:])
    finally:
        kill_all(*programs)
    assert code == 0 and out == "got 0\nserved 1\n", err
    assert stages_on_boards() == []


# --- in one process: what a function's results become, and the arguments -----------------


def test_skip_and_lists_decide_what_a_stage_sends(queues: list[str]) -> None:
    source_name, sink_name = queues[:2]
    with hakobu.Queue(source_name, CAPACITY) as source:
        for k in range(5):
            source.put(k)
    # This process's handle sent and closed: the stream is over once serve drained it.

    def fan(k: int) -> Any:
        return SKIP if k % 2 else [k, np.arange(k)]

    assert hakobu.serve(fan, source_name, sink_name, capacity=CAPACITY) == 5
    with hakobu.Queue(sink_name, create=False) as sink:
        received = list(sink)  # until the EndOfStream serve's close made
    assert [item for item in received if isinstance(item, int)] == [0, 2, 4]
    assert [item.tolist() for item in received if isinstance(item, np.ndarray)] == [[], [0, 1], [0, 1, 2, 3]]


def test_a_raising_function_closes_the_output_as_failed(queues: list[str]) -> None:
    source_name, sink_name = queues[:2]
    with hakobu.Queue(source_name, CAPACITY) as source:
        source.put(1)
        source.put(0)

    def invert(x: int) -> float:
        return 1 / x

    with pytest.raises(ZeroDivisionError):
        hakobu.serve(invert, source_name, sink_name, name="invert")
    with hakobu.Queue(sink_name, create=False) as sink:
        assert sink.get_nowait() == 1.0
        with pytest.raises(hakobu.SendersLost):
            sink.get_nowait()
    assert stages_on_boards() == []


def test_a_stage_name_is_made_of_what_names_may_hold() -> None:
    def inner(x: int) -> int:
        return x

    suffix = f"-{os.getpid()}"
    longest = 64 - len(board.SUFFIX)  # a board's name is the stage's name and the suffix
    qualified = "test_a_stage_name_is_made_of_what_names_may_hold._locals_.inner"
    assert _stage_name(inner) == qualified[: longest - len(suffix)] + suffix  # cut to fit
    made = _stage_name(lambda x: x)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", made) and made.endswith(suffix)
    assert len(made) == longest  # "<locals>.<lambda>" made valid, then cut
    with pytest.raises(hakobu.InvalidArgument):
        hakobu.serve("not a function", "x", None)  # type: ignore[arg-type]
    with pytest.raises(hakobu.InvalidArgument):
        hakobu.serve(inner, "x", "x")
