"""The README's Python examples run as written, as separate programs, and leave nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"
WATCHDOG = 300  # seconds: against a hang, not a time limit on the examples


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / args[0]), *args[1:]], capture_output=True, text=True, timeout=WATCHDOG
    )


def test_the_queue_demo_carries_every_frame() -> None:
    done = run_example("demo.py")
    assert done.returncode == 0, done.stderr


def test_the_store_example_gives_every_reader_the_same_array() -> None:
    """Three reader programs wait for the event, read the published array and log their sums under the lock."""
    done = run_example("store_readers.py", "3", "16")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 readers summed 16 MiB each" in done.stdout
