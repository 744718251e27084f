"""Producer of a two-host bridge test: puts messages 0..COUNT-1 of a stream of bridgenet_messages
("variety" or "numbered") on queue NAME of its domain ($HAKOBU_DOMAIN), PAUSE seconds apart, then
closes the queue (the end of the stream, which the bridges carry to the other host) and says "done".
With HOLD_AT, it says "holding" after that many messages and goes on once a line comes on stdin (so
that a test can do something while the stream is open and idle).

    bridgenet_produce.py NAME STREAM COUNT [PAUSE [HOLD_AT]]
"""

import sys
import time

import bridgenet_messages as messages

import hakobu

WATCHDOG = 120.0  # s: a put waits no longer (a bridge that never drains the queue)

name, stream, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
hold_at = int(sys.argv[5]) if len(sys.argv) > 5 else None
make = messages.variety if stream == "variety" else messages.numbered
with hakobu.Queue(name) as queue:
    for k in range(count):
        if k == hold_at:
            print("holding", flush=True)
            sys.stdin.readline()
        queue.put(make(k), timeout=WATCHDOG)
        if pause:
            time.sleep(pause)
print("done", flush=True)
