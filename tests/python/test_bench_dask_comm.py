"""The Dask comm benchmark (hakobu_bench.micro.dask_comm) runs small, measures both
protocols in one run, and leaves nothing in shared memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hakobu_bench", reason="hakobu-bench is not installed (pip install ./bench/python)")
pytest.importorskip("distributed", reason="Dask is not installed (pip install 'hakobu[dask]')")


def test_the_dask_comm_benchmark_runs_both_protocols_and_reports_ratios(tmp_path: Path) -> None:
    figures = tmp_path / "dask_comm.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hakobu_bench.micro.dask_comm",
            "--arrays",
            "2",
            "--mib",
            "4",
            "--repeats",
            "2",
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=300,  # a watchdog, not a measurement
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "machine: {" in done.stdout
    assert "worker to worker" in done.stdout and "worker to client" in done.stdout
    results = json.loads(figures.read_text())
    assert "LocalCluster" in results["method"] and results["machine"]["cores"] >= 1
    assert [row["transfer"] for row in results["rows"]] == ["worker_to_worker", "to_client"]
    for row in results["rows"]:
        assert set(row["mib_per_s"]) == {"tcp", "hakobu"}
        assert all(rate > 0 for rate in row["mib_per_s"].values())
        assert row["ratio"] == pytest.approx(row["mib_per_s"]["hakobu"] / row["mib_per_s"]["tcp"])
        assert all(len(seconds) == 2 for seconds in row["seconds"].values())  # every repeat, each protocol


def test_the_dask_comm_benchmark_refuses_nonsense_sizes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hakobu_bench.micro.dask_comm", "--arrays", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "at least 1" in done.stderr
