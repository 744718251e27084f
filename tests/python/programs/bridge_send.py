"""A producer in its own process: argv NAME COUNT [fail]. Puts 0..COUNT-1 on the local queue
NAME, then closes it (with "fail": as failed, so the stream ends with SendersLost)."""

import sys

import hakobu

name, count = sys.argv[1], int(sys.argv[2])
queue = hakobu.Queue(name)
for i in range(count):
    queue.put(i)
queue.close(failed=len(sys.argv) > 3 and sys.argv[3] == "fail")
print("sent", count, flush=True)
