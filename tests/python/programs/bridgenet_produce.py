"""Producer of a two-host bridge test: puts messages 0..COUNT-1 of a stream of bridgenet_messages
("variety" or "numbered") on queue NAME of its domain ($HAKOBU_DOMAIN), PAUSE seconds apart, then
closes the queue (the end of the stream, which the bridges carry to the other host) and says "done".

    bridgenet_produce.py NAME STREAM COUNT [PAUSE]
"""

import sys
import time

import bridgenet_messages as messages

import hakobu

WATCHDOG = 120.0  # s: a put waits no longer (a bridge that never drains the queue)

name, stream, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
make = messages.variety if stream == "variety" else messages.numbered
with hakobu.Queue(name) as queue:
    for k in range(count):
        queue.put(make(k), timeout=WATCHDOG)
        if pause:
            time.sleep(pause)
print("done", flush=True)
