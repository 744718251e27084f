"""A program that uses hakobu.Lock / hakobu.Event for tests/python/test_sync.py.

sync_peer.py count LOCK FILE N   adds 1 to the number in FILE, N times, under LOCK
sync_peer.py hold LOCK           acquires LOCK, says "holding", sleeps until killed
sync_peer.py wait EVENT          says "waiting", waits for EVENT (60 s watchdog), says "woken True"
sync_peer.py block_lock LOCK     says "waiting", blocks on LOCK; exits 3 on Ctrl-C
sync_peer.py block_event EVENT   says "waiting", blocks on EVENT; exits 3 on Ctrl-C
"""

import sys
import time
from pathlib import Path

import hakobu

command, target = sys.argv[1], sys.argv[2]
if command == "count":
    lock = hakobu.Lock(target)
    path = Path(sys.argv[3])
    for _ in range(int(sys.argv[4])):
        with lock:
            # Read, yield the CPU, write: without the lock, the other program's updates get lost.
            value = int(path.read_text())
            time.sleep(0)
            path.write_text(str(value + 1))
    print("done", flush=True)
elif command == "hold":
    lock = hakobu.Lock(target)
    lock.acquire()
    print("holding", flush=True)
    time.sleep(600)
elif command == "wait":
    event = hakobu.Event(target)
    print("waiting", flush=True)
    print("woken", event.wait(60), flush=True)
elif command == "block_lock":
    lock = hakobu.Lock(target)
    print("waiting", flush=True)
    try:
        lock.acquire()
    except KeyboardInterrupt:
        print("interrupted", lock.info()["held_by_this_process"], flush=True)
        sys.exit(3)
    print("acquired", flush=True)
elif command == "block_event":
    event = hakobu.Event(target)
    print("waiting", flush=True)
    try:
        event.wait()
    except KeyboardInterrupt:
        print("interrupted", event.is_set(), flush=True)
        sys.exit(3)
    print("woken", flush=True)
else:
    sys.exit(f"unknown command {command!r}")
