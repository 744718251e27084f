"""The pipeline benchmark (hakobu_bench.micro.pipeline, `hakobu bench --pipeline`): three stages in
three processes, every method's messages checked at stage 3; the quick run prints its rows and
writes valid JSON, the command writes pipeline.json, a spoiled message is caught, and nothing is
left in /dev/shm or /tmp. No test asserts how fast anything is."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_memory_segments

pytest.importorskip("hakobu_bench", reason="hakobu-bench is not installed (pip install ./bench/python)")

from hakobu_bench.micro import pipeline

WATCHDOG = 240  # s, for whole commands: only against a hang

# Under pytest-xdist, one at a time, and not beside test_bench.py's bench runs (its fixture `clean`):
# a shared memory segment has a random name, and one that a bench run beside this one has just handed
# over (closed by its maker, not yet attached by its reader) would look left behind.
pytestmark = pytest.mark.serial("bench")


def leftovers(pid: int) -> list[str]:
    """What a pipeline run of process ``pid`` may leave: its work directory, Ray's, its domain."""
    return (
        glob.glob(os.path.join(tempfile.gettempdir(), f"hakobu-bench-pipeline-{pid}-*"))
        + glob.glob(f"/tmp/hb-ray-{pid}-*")
        + glob.glob(f"/dev/shm/hakobu:bench{pid}:*")
    )


def run_command(command: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str, int]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = process.communicate(timeout=WATCHDOG)
    finally:
        process.kill()
    return process.returncode, stdout, stderr, process.pid


def test_the_quick_pipeline_runs_every_method_and_cleans_up(tmp_path: Path) -> None:
    """--quick: every method has a compute and an identity row per shape, figures from messages stage 3
    checked, or the reason it was skipped; the goals and machine are printed; the JSON is complete."""
    segments_before = shared_memory_segments()
    out = tmp_path / "pipeline.json"
    command = [sys.executable, "-m", "hakobu_bench.micro.pipeline", "--quick", "--messages", "3"]
    code, stdout, stderr, pid = run_command([*command, "--json", str(out)])
    assert code == 0, stdout + stderr
    assert "machine:" in stdout and "goal: " in stdout and "memcpy" in stdout
    data = json.loads(out.read_text())
    assert data["machine"]["cores"] and data["versions"]["numpy"]
    assert set(data["memcpy_us"]) == set(pipeline.QUICK_SHAPES)
    assert {g["goal"] for g in data["goals"]} and all("met" in g for g in data["goals"])
    rows = data["results"]
    # hakobu's own rows are never skipped: queues in stage processes, and hakobu.Pipeline's stages.
    for name in ("hakobu-zero-copy", "hakobu", "hakobu-pipeline"):
        assert len([r for r in rows if r["method"] == name and "hop1_us_median" in r]) == 4, (name, rows)
    for name, transport in pipeline.TRANSPORTS.items():
        mine = [r for r in rows if r["method"] == name]
        assert transport.label in stdout, (name, stdout)
        if len(mine) == 1 and "shape" not in mine[0]:  # the library is missing: one row says so
            assert mine[0]["skipped"] and mine[0]["skipped"] in stdout
            continue
        assert {(r["shape"], r["mode"]) for r in mine} == {
            (s, m) for s in pipeline.QUICK_SHAPES for m in ("compute", "identity")
        }
        for r in mine:
            assert "error" not in r and "skipped" not in r, r
            assert r["messages"] == 3
            assert 0 < r["hop1_us_median"] <= r["hop1_us_p90"] and r["hop2_us_median"] > 0, r
            assert r["hop1_us_median"] < r["end_to_end_us_median"] <= r["end_to_end_us_p90"], r
            assert r["throughput_gb_s"] > 0 and r["messages_per_s"] > 0 and r["make_us_median"] >= 0, r
    assert leftovers(pid) == []
    assert shared_memory_segments() <= segments_before


def test_a_spoiled_message_is_reported_not_measured() -> None:
    """Stage 3 checks each message: one that stage 2 spoiled fails its row (with what arrived), for
    stage processes and for hakobu.Pipeline's stages alike."""
    env = {**os.environ, "HAKOBU_BENCH_CORRUPT": "1"}
    command = [sys.executable, "-m", "hakobu_bench.micro.pipeline", "--quick", "--messages", "2"]
    command += ["--methods", "hakobu-zero-copy,mp-queue,hakobu-pipeline", "--shapes", "1x3x224x224"]
    segments_before = shared_memory_segments()
    code, stdout, stderr, pid = run_command(command, env)
    assert code == 1, stdout + stderr
    failed = [line for line in stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 6 and all("arrived as" in line for line in failed), stdout
    assert leftovers(pid) == []
    assert shared_memory_segments() <= segments_before


def test_command_pipeline_writes_its_table_and_json(tmp_path: Path) -> None:
    """`hakobu bench --pipeline` runs the same measurement through the command: its table, pipeline.json."""
    command = [sys.executable, "-m", "hakobu", "bench", "--pipeline", "--quick", "--repeat", "2"]
    command += ["--methods", "hakobu,hakobu-zero-copy", "--shapes", "2x1024x16x16", "--out", str(tmp_path)]
    code, stdout, stderr, pid = run_command(command)
    assert code == 0, stdout + stderr
    assert "hakobu bench --pipeline" in stdout and "machine:" in stdout and "goal:" in stdout
    data = json.loads((tmp_path / "pipeline.json").read_text())
    assert data["options"]["shapes"] == ["2x1024x16x16"] and data["options"]["messages"] == 2
    assert {(r["method"], r["mode"]) for r in data["results"]} == {
        (m, mode) for m in ("hakobu", "hakobu-zero-copy") for mode in ("compute", "identity")
    }
    assert all(r["messages"] == 2 and r["bytes"] == 2 * 1024 * 16 * 16 * 8 for r in data["results"])
    assert leftovers(pid) == []
    for wrong in (
        ["--pipeline", "--methods", "carrier-pigeon"],
        ["--pipeline", "--shapes", "3x0"],
        ["--pipeline", "--serialize", "pickle+base64"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "hakobu", "bench", *wrong, "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=WATCHDOG,
        )
        assert done.returncode == 2 and "hakobu bench:" in done.stderr, (wrong, done.stderr)


def test_shapes_and_message_counts() -> None:
    """Shapes by name or AxBxC; the peers' 1 GiB messages are capped and say so, hakobu's are not."""
    assert pipeline.parse_shape("2x1024x16x16") == (2, 1024, 16, 16)
    assert pipeline.parse_shape("4x5") == (4, 5)
    with pytest.raises(ValueError, match="unknown shape"):
        pipeline.parse_shape("big")
    with pytest.raises(ValueError, match="unknown pipeline method"):
        pipeline.plan(None, "hakobu,carrier-pigeon", quick=True)
    big = pipeline.SHAPES["128x1024x1024"]
    assert pipeline.messages_for("hakobu", big, False, None) == (pipeline.BIG_MESSAGES, "")
    count, why = pipeline.messages_for("mp-queue", big, False, None)
    assert count == pipeline.PEER_MIN_MESSAGES and "capped" in why
    count, why = pipeline.messages_for("websocket", pipeline.SHAPES["2x3x16x224x224"], False, None)
    assert count == pipeline.PEER_PHASE_BYTES // (2 * 3 * 16 * 224 * 224 * 8) and "capped" in why
    assert pipeline.messages_for("websocket", big, False, 1) == (1, "")  # fewer asked: not capped
    assert pipeline.messages_for("mp-queue", (1, 3, 224, 224), False, None) == (pipeline.MESSAGES, "")


def test_a_stage_that_dies_fails_its_rows_and_nothing_hangs() -> None:
    """Stage 2 dies on its second message: each row fails with the reason (stage 1 sees the process
    gone; hakobu.Pipeline's Future fails with WorkerLost), the run goes on to the next row and cleans up."""
    env = {**os.environ, "HAKOBU_BENCH_STAGE_DIES": "2"}
    command = [sys.executable, "-m", "hakobu_bench.micro.pipeline", "--quick", "--messages", "2"]
    command += ["--methods", "hakobu-zero-copy,mp-queue,hakobu-pipeline", "--shapes", "1x3x224x224"]
    code, stdout, stderr, pid = run_command(command, env)
    assert code == 1, stdout + stderr
    failed = [line for line in stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 6, stdout
    assert sum("WorkerLost" in line for line in failed) == 2, stdout
    assert all("exited" in line or "SendersLost" in line for line in failed), stdout
    assert leftovers(pid) == []


def test_pipeline_run_reports_stage_stamps_and_removes_its_array() -> None:
    """PipelineRun drives hakobu.Pipeline's two stages: stage 3's report carries the message (two
    increments when computing), stage 2's stamps come from the named array, which close() removes."""
    hakobu = pytest.importorskip("hakobu")
    assert pipeline.RUNS["hakobu-pipeline"] is pipeline.PipelineRun
    assert "hakobu-pipeline" in pipeline.plan(None, None, quick=True)[1]  # in the default set
    assert "hakobu-pipeline" not in pipeline.PEERS
    domain = f"pbtest{os.getpid()}"
    old = os.environ.get("HAKOBU_DOMAIN")
    os.environ["HAKOBU_DOMAIN"] = domain
    run = pipeline.PipelineRun("hakobu-pipeline", (4, 8), "compute", Path(tempfile.gettempdir()))
    try:
        run.start()
        for tag in (5, 6, 7):
            array = hakobu.empty((4, 8), np.float64)
            array[...] = tag
            run.send(array)
            del array
            got3, done3, first, last = run.done()
            assert first == last == tag + 2 and got3 <= done3
        stamps = run.stage2(2)
        assert len(stamps) == 2 and all(0 < got <= sent for got, sent in stamps)
        assert stamps[0][1] <= stamps[1][0]  # messages 6 then 7, one at a time
        name = run.stamps_name
    finally:
        run.close()
        if old is None:
            del os.environ["HAKOBU_DOMAIN"]
        else:
            os.environ["HAKOBU_DOMAIN"] = old
    with pytest.raises(hakobu.NotFound):
        hakobu.Array(name, np.int64, (pipeline.STAMP_ROWS, 2), create=False, domain=domain)
    assert glob.glob(f"/dev/shm/hakobu:{domain}:*") == []
