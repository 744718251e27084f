"""Strict mypy passes whichever optional libraries are installed: the bench's peers (mpi4py, Ray,
iceoryx2) and its extras are hidden here as in an environment without them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Imported by hakobu_bench only when installed (its dependencies, and its extra: "pip install './bench/python[peers]'"),
# and by hakobu's optional parts (the bridge: pyzmq; Dask).
OPTIONAL = [
    "mpi4py",
    "ray",
    "iceoryx2",
    "fastapi",
    "uvicorn",
    "httpx",
    "websockets",
    "zmq",
    "matplotlib",
    "joblib",
    "dask",
    "distributed",
]


def test_mypy_passes_without_the_optional_libraries(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(REPO / "pyproject.toml", "rb") as pyproject:
        settings = tomllib.load(pyproject)["tool"]["mypy"]
    # The project's own settings, plus: treat the optional libraries as missing (Any), installed or not.
    overrides = settings.pop("overrides", [])
    lines = ["[tool.mypy]", *(f"{key} = {json.dumps(value)}" for key, value in settings.items())]
    for override in overrides:  # the project's per-module settings, as they are
        lines += [
            "[[tool.mypy.overrides]]",
            *(f"{key} = {json.dumps(value)}" for key, value in override.items()),
        ]
    lines += ["[[tool.mypy.overrides]]", f"module = {json.dumps([f'{m}.*' for m in OPTIONAL] + OPTIONAL)}"]
    lines += ['follow_imports = "skip"', "follow_imports_for_stubs = true"]
    config = tmp_path / "mypy.toml"
    config.write_text("\n".join(lines) + "\n")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,  # a watchdog
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
