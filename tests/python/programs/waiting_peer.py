"""A separately started peer for the waiting and asyncio tests; argv[1] says what it does.

echo IN OUT MODE N        receives N messages on IN (latency MODE) and sends each back on OUT
idle NAME MODE SECONDS    blocks in get() on NAME with no sender; prints {"cpu": s, "wall": s}
produce NAME N            puts the ints 0..N-1 on NAME, now and then pausing
consume NAME N            gets N messages from NAME (blocking), prints them
own NAME                  creates NAME, prints "ready", unlinks it when a line arrives on stdin
"""

import json
import random
import resource
import sys
import time

import hakobu


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


WATCHDOG = 60.0  # no single wait should come near this
what = sys.argv[1]
if what == "echo":
    source = hakobu.Queue(sys.argv[2], create=False, latency=sys.argv[4])
    target = hakobu.Queue(sys.argv[3], create=False, latency=sys.argv[4])
    for _ in range(int(sys.argv[5])):
        target.put(source.get(timeout=WATCHDOG), timeout=WATCHDOG)
elif what == "idle":
    queue = hakobu.Queue(sys.argv[2], create=False, latency=sys.argv[3])
    cpu, wall = cpu_seconds(), time.monotonic()
    try:
        queue.get(timeout=float(sys.argv[4]))
    except hakobu.Empty:
        pass
    print(json.dumps({"cpu": cpu_seconds() - cpu, "wall": time.monotonic() - wall}))
elif what == "produce":
    queue = hakobu.Queue(sys.argv[2], create=False)
    for i in range(int(sys.argv[3])):
        queue.put(i, timeout=WATCHDOG)
        if random.random() < 0.05:
            time.sleep(random.random() * 1e-3)  # let consumers go idle now and then
elif what == "consume":
    queue = hakobu.Queue(sys.argv[2], create=False)
    for _ in range(int(sys.argv[3])):
        print(queue.get(timeout=WATCHDOG), flush=True)
elif what == "own":
    queue = hakobu.Queue(sys.argv[2], create=True)
    print("ready", flush=True)
    sys.stdin.readline()
    queue.unlink()
else:
    sys.exit(f"unknown: {what}")
