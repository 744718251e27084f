"""Opens queue argv[1] (capacity argv[2]), puts argv[3] small messages, says "ready",
and keeps the queue open until a line (or end of file) arrives on stdin; then exits cleanly."""

import sys

import hakobu

with hakobu.Queue(sys.argv[1], capacity=int(sys.argv[2])) as queue:
    for k in range(int(sys.argv[3])):
        queue.put(k)
    print("ready", flush=True)
    sys.stdin.readline()
print("done", flush=True)
