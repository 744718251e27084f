"""`import hakobu` loads the library only: not the benchmark distribution (hakobu-bench), not its
plot (matplotlib), not the libraries it compares hakobu with. Checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

# What hakobu-bench imports for `hakobu bench` and its micro-benchmarks.
NOT_BY_THE_LIBRARY = [
    "hakobu_bench",
    "matplotlib",
    "ray",
    "iceoryx2",
    "mpi4py",
    "zmq",
    "fastapi",
    "uvicorn",
    "httpx",
    "websockets",
    "joblib",
]


def test_import_hakobu_loads_neither_the_bench_nor_its_peers() -> None:
    program = "import sys, hakobu; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "hakobu" in loaded and "hakobu._core" in loaded  # the check sees what the import loaded
    assert {m.split(".")[0] for m in loaded} & set(NOT_BY_THE_LIBRARY) == set()
