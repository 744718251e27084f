"""The README's Python examples run as written, as separate programs, and leave nothing behind."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

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


def _example_module(file_name: str) -> ModuleType:
    """An example loaded as a module (its roles run only as __main__), for its frame maker."""
    spec = importlib.util.spec_from_file_location(file_name.removesuffix(".py"), EXAMPLES / file_name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_topic_example_records_every_frame_in_order_while_the_plot_may_skip(tmp_path: Path) -> None:
    """Producer, headless plot and recorder as three separately started programs on one topic."""
    pytest.importorskip(
        "matplotlib", reason="the live-plot example draws with matplotlib (not a test dependency)"
    )
    frames = 40
    name = f"live-plot-test-{os.getpid()}"
    recording, picture = tmp_path / "frames.npy", tmp_path / "last.png"
    example = str(EXAMPLES / "topic_live_plot.py")
    subscribers = [
        subprocess.Popen(
            [sys.executable, example, role, name, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, extra in (("record", [str(recording)]), ("plot", ["--png", str(picture)]))
    ]
    try:
        producer = run_example("topic_live_plot.py", "produce", name, "--frames", str(frames), "--rate", "0")
        assert producer.returncode == 0, producer.stdout + producer.stderr
        outputs = [p.communicate(timeout=WATCHDOG) for p in subscribers]
    finally:
        for p in subscribers:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(subscribers, outputs):
        assert p.returncode == 0, out + err
    record_out, plot_out = outputs[0][0], outputs[1][0]
    assert f"record: {frames} frames" in record_out and "(dropped 0)" in record_out, record_out
    assert "plot:" in plot_out and picture.stat().st_size > 0, plot_out

    stack = np.load(recording)
    assert stack.shape == (frames, 480, 640) and stack.dtype == np.float32
    make_frame = _example_module("topic_live_plot.py").make_frame
    expected = np.empty((480, 640), np.float32)
    for index in range(frames):  # every frame, in publication order, exactly as published
        np.testing.assert_array_equal(stack[index], make_frame(index, expected), err_msg=f"frame {index}")


@pytest.mark.parametrize("variant", ["python", "cpp"])
def test_the_pipeline_example_runs_as_three_separately_started_programs(variant: str, tmp_path: Path) -> None:
    """examples/pipeline/run.sh starts postprocess, infer (Python, or the C++ infer.cpp) and decode,
    consumers first: every clip arrives once, in order, with infer's +1; the queues are gone after."""
    import json

    from test_queue import _cpp_example

    import hakobu

    clips, shape = 12, (2, 3, 4, 8, 8)  # 3 KiB arrays: heap blocks, forwarded by reference
    frames, features = f"pipeline-frames-{os.getpid()}", f"pipeline-features-{os.getpid()}"
    summary = tmp_path / "summary.json"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "FRAMES": frames,
        "FEATURES": features,
        "RECORD": str(summary),
    }
    if variant == "cpp":
        env["HAKOBU_BUILD"] = str(_cpp_example("hakobu_pipeline_infer").parents[2])
    run = EXAMPLES.parent / "pipeline" / "run.sh"
    arguments = ["--count", str(clips), "--shape", ",".join(map(str, shape))]
    done = subprocess.run(
        ["bash", str(run), variant, *arguments], capture_output=True, text=True, timeout=WATCHDOG, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(summary.read_text()) == {
        "clips": list(range(clips)),
        "wrong": 0,
        "shape": list(shape),
        "ended": "finished",
    }
    said = {"python": f"infer: {clips} clips", "cpp": f"infer (C++): {clips} arrays, the stream ended"}
    assert f"decode: sent {clips} clips" in done.stdout and said[variant] in done.stdout, done.stdout
    for queue in (frames, features):
        with pytest.raises(hakobu.NotFound):
            hakobu.Queue(queue, create=False)
