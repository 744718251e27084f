"""The programs of a pipeline for tests/python/test_serve.py, each started separately.

argv: ROLE ARGS. Arrays are 1000 float64 (heap blocks, not inline), array k filled with k.
  produce QUEUE COUNT [hang]   puts arrays 0..COUNT-1 on QUEUE, prints "sent COUNT", closes
                               QUEUE and exits; with "hang", prints "sent COUNT" and waits to
                               be killed, the queue left open.
  stage INPUT OUTPUT [RAISE_AT] hakobu.serve over INPUT and OUTPUT, adding 1 in place (the
                               array is forwarded without a copy); raises ValueError on an
                               array whose value, as it arrives, is RAISE_AT.
  last INPUT                   hakobu.serve as the last stage: prints "got VALUE" per array.
A serve role takes "--name NAME" as its last two arguments: serve's name= (its board's name).
A serve role prints "served N" (what serve returned) and exits 0 when its input ended; on
hakobu.SendersLost it prints "lost after N" and exits 3. Anything else propagates (exit 1;
KeyboardInterrupt: killed by SIGINT).
"""

import signal
import sys

import numpy as np

import hakobu

CAPACITY = 16  # every queue of a test's pipeline: more than its COUNTs, so a producer never waits
SIZE = 1000

role, arguments = sys.argv[1], sys.argv[2:]
if role == "produce":
    queue, count = hakobu.Queue(arguments[0], CAPACITY), int(arguments[1])
    for k in range(count):
        queue.put(np.full(SIZE, k, np.float64))
    print(f"sent {count}", flush=True)
    if arguments[2:] == ["hang"]:
        signal.pause()  # the test kills it (its watchdog kills the test's programs otherwise)
    queue.close()
    sys.exit(0)

handled = 0
name = None
if arguments[-2:-1] == ["--name"]:
    name, arguments = arguments[-1], arguments[:-2]


def add_one(array: np.ndarray) -> np.ndarray:
    global handled
    if raise_at is not None and array[0] == raise_at:
        raise ValueError(f"the stage fails on {raise_at:g}")
    array += 1
    handled += 1
    return array


def show(array: np.ndarray) -> None:
    global handled
    assert array.shape == (SIZE,) and np.all(array == array[0]), array
    handled += 1
    print(f"got {array[0]:g}", flush=True)


try:
    if role == "stage":
        raise_at = float(arguments[2]) if len(arguments) > 2 else None
        served = hakobu.serve(add_one, arguments[0], arguments[1], capacity=CAPACITY, name=name)
    elif role == "last":
        served = hakobu.serve(show, arguments[0], None, capacity=CAPACITY, name=name)
    else:
        sys.exit(f"unknown role {role!r}")
except hakobu.SendersLost:
    print(f"lost after {handled}", flush=True)
    sys.exit(3)
print(f"served {served}", flush=True)
