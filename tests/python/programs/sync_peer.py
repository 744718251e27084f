"""A program that uses hakobu.Lock / hakobu.Event for tests/python/test_sync.py.

sync_peer.py count LOCK FILE N   adds 1 to the number in FILE, N times, under LOCK
sync_peer.py hold LOCK           acquires LOCK, says "holding", sleeps until killed
sync_peer.py wait EVENT          says "waiting", waits for EVENT (60 s watchdog), says "woken True"
sync_peer.py block_lock LOCK     says "waiting", blocks on LOCK; exits 3 on Ctrl-C
sync_peer.py block_event EVENT   says "waiting", blocks on EVENT; exits 3 on Ctrl-C

The other kinds (tests/python/test_sync_kinds.py):
sync_peer.py add VALUE N         N atomic v.add(1) on hakobu.Value(VALUE, 'q'), says "done"
sync_peer.py locked_add VALUE N  N times `with v.get_lock(): v.value += 1`, says "done"
sync_peer.py sem_hold SEM        takes one count of SEM, says "holding", sleeps until killed
sync_peer.py sem_take SEM        says "waiting", takes one count (60 s watchdog), says "took True"
sync_peer.py barrier BAR N       says "waiting", waits at BAR of N parties (60 s), says its index or "broken"
sync_peer.py cond_wait COND      holding COND's lock says "waiting", waits (60 s), says "notified True"
sync_peer.py rlock_hold RLOCK    acquires RLOCK twice, says "holding", sleeps until killed
sync_peer.py block_sem SEM       says "waiting", blocks on SEM; exits 3 on Ctrl-C ("interrupted" and held counts)
sync_peer.py block_barrier BAR N says "waiting", blocks at BAR; exits 3 on Ctrl-C ("interrupted" and broken)
sync_peer.py block_cond COND     says "waiting", blocks in COND's wait; exits 3 on Ctrl-C ("interrupted" and lock held)
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
elif command == "add":
    value = hakobu.Value(target, "q")
    for _ in range(int(sys.argv[3])):
        value.add(1)
    print("done", flush=True)
elif command == "locked_add":
    value = hakobu.Value(target, "q")
    for _ in range(int(sys.argv[3])):
        with value.get_lock():
            value.value += 1
    print("done", flush=True)
elif command == "sem_hold":
    semaphore = hakobu.Semaphore(target)
    semaphore.acquire()
    print("holding", flush=True)
    time.sleep(600)
elif command == "sem_take":
    semaphore = hakobu.Semaphore(target)
    print("waiting", flush=True)
    print("took", semaphore.acquire(timeout=60), flush=True)
elif command == "barrier":
    barrier = hakobu.Barrier(target, int(sys.argv[3]))
    print("waiting", flush=True)
    try:
        print(barrier.wait(60), flush=True)
    except hakobu.BrokenBarrierError:
        print("broken", flush=True)
elif command == "cond_wait":
    condition = hakobu.Condition(target)
    with condition:
        print("waiting", flush=True)
        print("notified", condition.wait(60), flush=True)
elif command == "rlock_hold":
    rlock = hakobu.RLock(target)
    rlock.acquire()
    rlock.acquire()
    print("holding", flush=True)
    time.sleep(600)
elif command == "block_sem":
    semaphore = hakobu.Semaphore(target)
    print("waiting", flush=True)
    try:
        semaphore.acquire()
    except KeyboardInterrupt:
        print("interrupted", semaphore.info()["held_by_this_process"], flush=True)
        sys.exit(3)
    print("acquired", flush=True)
elif command == "block_barrier":
    barrier = hakobu.Barrier(target, int(sys.argv[3]))
    print("waiting", flush=True)
    try:
        barrier.wait()
    except KeyboardInterrupt:
        print("interrupted", barrier.broken, flush=True)
        sys.exit(3)
    print("tripped", flush=True)
elif command == "block_cond":
    condition = hakobu.Condition(target)
    with condition:
        print("waiting", flush=True)
        try:
            condition.wait()
        except KeyboardInterrupt:
            # The lock is held again: another acquire from this process would wait for itself.
            print("interrupted", not condition.acquire(blocking=False), flush=True)
            sys.exit(3)
    print("woken", flush=True)
else:
    sys.exit(f"unknown command {command!r}")
