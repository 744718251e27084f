"""Streams frames to a consumer program started separately: python producer.py QUEUE [FRAMES]."""

import sys
import time

import numpy as np

import hakobu

name = sys.argv[1] if len(sys.argv) > 1 else "frames"
frames = int(sys.argv[2]) if len(sys.argv) > 2 else 100

queue = hakobu.Queue(name)  # create or attach: start the two programs in any order
image = np.random.default_rng(0).random((480, 640), dtype=np.float32)
start = time.perf_counter()
for k in range(frames):
    queue.put(image + k)  # one copy into shared memory
queue.put(None)  # end of stream
print(f"sent {frames} frames of {image.shape} {image.dtype} in {time.perf_counter() - start:.3f} s")
