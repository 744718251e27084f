"""One producer of frames, two kinds of subscriber: a live plot and a recorder, through hakobu.Topic.

    python examples/python/topic_live_plot.py [--frames N] [--rate HZ]     # all three, in a window
    python examples/python/topic_live_plot.py produce NAME [--frames N] [--rate HZ] [--subscribers K]
    python examples/python/topic_live_plot.py plot NAME [--png PATH]       # no window with --png
    python examples/python/topic_live_plot.py record NAME PATH

Without a role, this program starts the three roles as separate programs (this
file again) on a fresh topic and waits for them. Each role finds the topic by
name:

* produce: publishes `--frames` float32 frames of a moving 2-D pattern (480 x
  640, built in shared memory with hakobu.empty: published without a copy) at
  `--rate` frames a second (0: as fast as the subscribers allow), once
  `--subscribers` subscriptions exist; then removes the topic's name.
* plot: a matplotlib animation of the newest frame. It subscribes with
  on_full="drop_oldest": when drawing is slower than the producer, publishers
  skip it ahead and it shows how many frames it missed; it never slows the
  producer. With --png (or without a display) it draws without a window
  (Agg) and saves its last picture there.
* record: subscribes with on_full="block" (the producer waits for it rather
  than skip a frame) and writes every frame to PATH, a .npy stack of shape
  (frames, 480, 640).

Both subscribers stop once the producer removed the topic and they received
what was published before. Nothing is left in shared memory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import hakobu

SHAPE = (480, 640)
DTYPE = np.float32
# Frames a subscriber may fall behind; then the plot skips ahead and the recorder holds the producer.
CAPACITY = 16
HISTORY = 4  # frames kept for a subscriber that joins late
WAIT_FOR_TOPIC = 60.0  # seconds a subscriber waits for the producer to create the topic
# matplotlib's backends that draw no window (what it picks without a display)
NO_WINDOW_BACKENDS = ("agg", "pdf", "ps", "svg", "cairo", "template")


def make_frame(index: int, out: np.ndarray) -> np.ndarray:
    """Frame `index` of the pattern, written into `out` (float32, SHAPE): two waves drifting
    across each other, so that every frame differs and a missed one shows."""
    rows, cols = out.shape
    y = np.linspace(0.0, 4.0 * np.pi, rows, dtype=DTYPE)[:, None]
    x = np.linspace(0.0, 6.0 * np.pi, cols, dtype=DTYPE)[None, :]
    t = DTYPE(index * 0.15)
    np.multiply(np.sin(x + t), np.cos(y - 0.6 * t), out=out)
    return out


def open_topic(name: str) -> hakobu.Topic:
    """The topic made by the producer; a subscriber started first waits for it to exist."""
    deadline = time.monotonic() + WAIT_FOR_TOPIC
    while True:
        try:
            return hakobu.Topic(name, create=False)
        except hakobu.NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def produce(name: str, frames: int, rate: float, subscribers: int) -> None:
    topic = hakobu.Topic(name, capacity=CAPACITY, history=HISTORY, create=True)
    try:
        deadline = time.monotonic() + WAIT_FOR_TOPIC
        while topic.subscribers < subscribers:  # the recorder must not miss the first frames
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {topic.subscribers} of {subscribers} subscribers came")
            time.sleep(0.02)
        period = 1.0 / rate if rate > 0 else 0.0
        start = time.monotonic()
        for index in range(frames):
            frame = make_frame(index, hakobu.empty(SHAPE, DTYPE))  # in shared memory: no copy to publish
            topic.publish(frame, timeout=WAIT_FOR_TOPIC)  # waits only for on_full="block" subscribers
            del frame  # the subscribers' views keep the block while they need it
            if period:
                time.sleep(max(0.0, start + (index + 1) * period - time.monotonic()))
        print(f"produce: {frames} frames published in {time.monotonic() - start:.2f} s", flush=True)
    finally:
        topic.unlink()  # subscribers receive what was published, then their loops end


def record(name: str, path: Path) -> None:
    topic = open_topic(name)
    part = path.with_name(path.name + ".part")
    count = 0
    with topic.subscribe(on_full="block") as sub, open(part, "wb") as raw:
        for frame in sub:  # a read-only view of the shared frame, written out as it is
            raw.write(np.ascontiguousarray(frame, dtype=DTYPE).data)
            count += 1
        dropped = sub.dropped  # 0: with on_full="block" the producer waited instead
    topic.close()
    stack = (
        np.memmap(part, dtype=DTYPE, mode="r", shape=(count, *SHAPE))
        if count
        else np.empty((0, *SHAPE), DTYPE)
    )
    np.save(path, stack)
    del stack
    part.unlink()
    print(f"record: {count} frames in {path} (dropped {dropped})", flush=True)


def plot(name: str, png: str | None) -> None:
    import matplotlib

    if png is not None:
        matplotlib.use("Agg")  # no window: draw in memory, save at the end
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    # Without a display matplotlib picks a backend that draws no window: then draw as with --png.
    headless = png is not None or plt.get_backend().lower() in NO_WINDOW_BACKENDS

    topic = open_topic(name)
    sub = topic.subscribe(on_full="drop_oldest", history=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    image = ax.imshow(np.zeros(SHAPE, DTYPE), vmin=-1.0, vmax=1.0, cmap="viridis")
    ax.set_axis_off()
    shown = 0

    def show(frame: np.ndarray) -> None:
        nonlocal shown
        image.set_data(frame)  # matplotlib keeps its own copy: the shared block can go
        shown += 1
        ax.set_title(f"frame {sub.sequence}: {shown} shown, {sub.dropped} missed (last gap {sub.missed})")

    if headless:
        for frame in sub:  # drawing takes longer than a frame: publishers skip this subscriber ahead
            show(frame)
            fig.canvas.draw()
        if png is not None:
            fig.savefig(png)
    else:

        def update(_tick: int) -> list[Any]:
            try:
                while True:  # the newest frame there is; older ones are only drawn over
                    show(sub.get_nowait())
            except (hakobu.Empty, hakobu.Unlinked, hakobu.Closed):
                pass
            return [image]

        animation = FuncAnimation(fig, update, interval=30, cache_frame_data=False)
        plt.show()
        del animation
    print(f"plot: {shown} frames shown, {sub.dropped} missed", flush=True)
    sub.close()
    topic.close()


def run_all(frames: int, rate: float) -> int:
    """The three roles as separate programs on a fresh topic; the recording is checked."""
    name = f"live-plot-{os.getpid()}"
    here = [sys.executable, __file__]
    with tempfile.TemporaryDirectory() as scratch:
        recording = Path(scratch) / "frames.npy"
        subscribers = [
            subprocess.Popen([*here, "record", name, str(recording)]),
            subprocess.Popen([*here, "plot", name]),
        ]
        producer = subprocess.run([*here, "produce", name, "--frames", str(frames), "--rate", str(rate)])
        codes = [producer.returncode, *(p.wait() for p in subscribers)]
        if any(codes):
            return 1
        print(f"the recording holds {len(np.load(recording, mmap_mode='r'))} of {frames} frames")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", choices=("produce", "plot", "record"))
    parser.add_argument("name", nargs="?", help="the topic (every role but the first needs it)")
    parser.add_argument("path", nargs="?", help="record: the .npy file to write")
    parser.add_argument("--frames", type=int, default=300, help="produce: frames to publish")
    parser.add_argument("--rate", type=float, default=30.0, help="produce: frames a second (0: no limit)")
    parser.add_argument("--subscribers", type=int, default=2, help="produce: subscriptions to wait for")
    parser.add_argument("--png", help="plot: draw without a window and save the last picture here")
    args = parser.parse_args()
    if args.role is None:
        return run_all(args.frames, args.rate)
    if args.name is None:
        parser.error(f"{args.role} needs the topic's name")
    if args.role == "produce":
        produce(args.name, args.frames, args.rate, args.subscribers)
    elif args.role == "plot":
        plot(args.name, args.png)
    else:
        if args.path is None:
            parser.error("record needs the file to write")
        record(args.name, Path(args.path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
