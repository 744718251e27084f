"""Receives frames from producer.py: python consumer.py QUEUE."""

import sys

import hakobu

name = sys.argv[1] if len(sys.argv) > 1 else "frames"
queue = hakobu.Queue(name)
count = 0
total = 0.0
while (frame := queue.get()) is not None:  # a writable view of shared memory, no copy
    total += float(frame[0, 0])
    count += 1
print(f"received {count} frames; sum of their first pixels: {total:.2f}")
queue.unlink() if queue.is_creator else hakobu.remove(name)  # the stream is over: remove the queue
