"""The bridge benchmark (hakobu_bench.micro.bridge), run small: every method's messages are checked
by its receiving program; the run prints each method beside raw TCP with the ratio, the goal, the
method and the machine, writes valid JSON, and leaves no namespace, process or shared memory behind.
Between two namespaces as root, over loopback otherwise (and always with --loopback). No test
asserts how fast anything is."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hakobu_bench", reason="hakobu-bench is not installed (pip install ./bench/python)")
pytest.importorskip("zmq", reason='pyzmq is not installed (pip install "hakobu[bridge]")')

from hakobu_bench import netns
from hakobu_bench.micro import bridge

WATCHDOG = 240  # s, for the whole command: only against a hang
SMALL = ["--size-mib", "4", "--messages", "3", "--warmup", "1", "--rounds", "1"]


def run(*options: str) -> tuple[int, str, str, int]:
    command = [sys.executable, "-m", "hakobu_bench.micro.bridge", *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=WATCHDOG)
    finally:
        process.kill()
        process.communicate()
    return process.returncode, out, err, process.pid


def namespaces_of(pid: int) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=60)
    return [line for line in listed.stdout.splitlines() if line.startswith(f"hkb{pid}-")]


def check_run(code: int, out: str, err: str, pid: int, data: dict[str, object]) -> None:
    assert code == 0, out + err
    assert "machine:" in out and "method:" in out and "goal: hakobu bridge >= 0.8x raw TCP" in out
    for label in bridge.LABELS.values():
        assert label in out, (label, out)
    rows = data["results"]
    assert isinstance(rows, list) and {r["method"] for r in rows} == set(bridge.METHODS)
    for row in rows:
        assert "error" not in row, row
        assert row["messages"] == 3 and row["message_bytes"] == 4 * 2**20 and row["throughput_gb_s"] > 0
    for method in bridge.BRIDGE_METHODS:
        stats = next(r for r in rows if r["method"] == method)["bridge_stats"]
        # Warm-up and timed messages, each acknowledged once, nothing rejected.
        assert stats["sending_bridge"]["messages"] == stats["receiving_bridge"]["messages"] == 4, stats
        assert stats["receiving_bridge"]["rejected"] == 0
        # The default rows travel on the data lane, the --no-lane row through ZeroMQ alone.
        on_lane = 0 if method == "hakobu-zeromq" else 4
        assert stats["receiving_bridge"]["lane_messages"] == on_lane, (method, stats)
    ratios = data["ratio_to_tcp"]
    assert isinstance(ratios, dict) and ratios["tcp"] == 1.0 and ratios["hakobu"] > 0
    of_ceiling = data["ratio_to_zmq_shm"]
    assert isinstance(of_ceiling, dict) and set(of_ceiling) == set(bridge.BRIDGE_METHODS)
    assert all(value > 0 for value in of_ceiling.values())
    met = data["goal"]["met"]  # type: ignore[index]
    assert set(met) == set(bridge.JUDGED_METHODS) and all(v in (True, False) for v in met.values())
    for method in bridge.JUDGED_METHODS:
        assert f"goal: hakobu bridge >= 0.8x raw TCP ({method}): " in out
    assert data["machine"]["cores"]  # type: ignore[index]
    assert glob.glob(f"/dev/shm/hakobu:bridgebench?{pid}r*") == []


def test_the_small_run_between_two_hosts(tmp_path: Path) -> None:
    if netns.unavailable() is not None:
        pytest.skip(str(netns.unavailable()))
    out_file = tmp_path / "bridge.json"
    code, out, err, pid = run(*SMALL, "--json", str(out_file))
    data = json.loads(out_file.read_text())
    assert data["mode"] == "namespaces" and "two hosts (network namespaces)" in out
    check_run(code, out, err, pid, data)
    assert namespaces_of(pid) == []


def test_the_small_run_over_loopback_says_so(tmp_path: Path) -> None:
    out_file = tmp_path / "bridge.json"
    code, out, err, pid = run(*SMALL, "--loopback", "--json", str(out_file))
    data = json.loads(out_file.read_text())
    assert data["mode"] == "loopback" and "note: --loopback" in out
    check_run(code, out, err, pid, data)


def test_a_link_rate_shapes_the_hosts_links_and_says_so() -> None:
    if netns.unavailable() is not None:
        pytest.skip(str(netns.unavailable()))
    options = ["--methods", "tcp,hakobu", "--link-rate", "10gbit", "--window-mib", "32"]
    code, out, err, pid = run(*SMALL, *options)
    assert code == 0, out + err
    assert "link: each host sends at most 10gbit" in out
    assert "goal: hakobu bridge >= 0.8x raw TCP (hakobu): " in out
    assert namespaces_of(pid) == [] and glob.glob(f"/dev/shm/hakobu:bridgebench?{pid}r*") == []


def test_small_messages_are_counted_per_second_and_not_judged(tmp_path: Path) -> None:
    """--size-kib: 4 KiB messages, each checked by its receiving program; every row gives
    messages per second, and the goal (for large arrays) is said not to be judged."""
    out_file = tmp_path / "bridge.json"
    options = [
        "--size-kib",
        "4",
        "--quick",
        "--loopback",
        "--methods",
        "tcp,zmq,hakobu",
        "--json",
        str(out_file),
    ]
    code, out, err, pid = run(*options)
    assert code == 0, out + err
    data = json.loads(out_file.read_text())
    rows = data["results"]
    assert {r["method"] for r in rows} == {"tcp", "zmq", "hakobu"}
    for row in rows:
        assert "error" not in row and row["message_bytes"] == 4096 and row["messages"] == 200, row
        assert row["messages_per_s"] > 0
    assert set(data["median_messages_per_s"]) == {"tcp", "zmq", "hakobu"}
    assert "met" not in data["goal"] and "not judged for 4 KiB messages" in out and "msg/s" in out
    stats = next(r for r in rows if r["method"] == "hakobu")["bridge_stats"]
    assert stats["receiving_bridge"]["lane_messages"] == 220, stats  # warm-up and timed, all on the lane
    assert glob.glob(f"/dev/shm/hakobu:bridgebench?{pid}r*") == []


def test_wrong_options_are_refused() -> None:
    for wrong in (
        ["--methods", "tcp,carrier-pigeon"],
        ["--messages", "0"],
        ["--warmup", "-1"],
        ["--size-kib", "0"],
        ["--size-kib", "4", "--size-mib", "4"],
        ["--window-mib", "0"],
        ["--link-rate", "fast"],
        ["--link-rate", "10gbit", "--loopback"],
    ):
        code, _, err, _ = run(*wrong)
        assert code == 2 and "python -m hakobu_bench.micro.bridge" in err, (wrong, err)
