"""argv: QUEUE produce|consume FRAMES. Speaks the C++ examples' protocol.

Frame k is a 2-d float32 array whose element i (in C order) is k + i % 1000;
a zero-length bytes message ends the stream.
"""

import sys

import numpy as np

import hakobu

name, role = sys.argv[1], sys.argv[2]
queue = hakobu.Queue(name)
if role == "produce":
    frames = int(sys.argv[3])
    pattern = (np.arange(240 * 320) % 1000).astype(np.float32).reshape(240, 320)
    for k in range(frames):
        queue.put(pattern + np.float32(k))
    queue.put(b"")
else:
    count = bad = 0
    while True:
        frame = queue.get(timeout=60)
        if isinstance(frame, bytes) and frame == b"":
            break
        expected = (np.arange(frame.size) % 1000).astype(np.float32).reshape(frame.shape) + np.float32(count)
        bad += int(frame.dtype != np.float32 or not np.array_equal(frame, expected))
        count += 1
    print(f"received {count} frames, {bad} wrong", flush=True)
    queue.unlink() if queue.is_creator else hakobu.remove(name)
