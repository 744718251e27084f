"""A separately started sender or receiver for the end-of-stream and byte-capacity tests.

argv[1] says what it does:
put NAME N HOW [BYTES]  puts the ints 0..N-1 (or N arrays of BYTES uint8, first element i)
                        on NAME, then ends as HOW says: "close" (close()), "fail"
                        (close(failed=True)), "kill" (SIGKILLs itself), "exit" (leaves
                        without closing), "raise" (an uncaught exception)
drain NAME              prints "ready", then receives with `for item in queue` until the end
                        of the stream, printing each item (an array: its first element)
                        and then "ended" or "lost: <message>"
drain-async NAME        the same with `async for`
block-put NAME BYTES N  puts N arrays of BYTES uint8 (blocking), printing "put i" after each
"""

import asyncio
import os
import signal
import sys

import numpy as np

import hakobu


def show(item: object) -> str:
    return str(int(item[0])) if isinstance(item, np.ndarray) else str(item)


what, name = sys.argv[1], sys.argv[2]
if what == "put":
    count, how = int(sys.argv[3]), sys.argv[4]
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    queue = hakobu.Queue(name, create=False)
    for i in range(count):
        if size:
            array = np.zeros(size, np.uint8)
            array[0] = i
            queue.put(array)
        else:
            queue.put(i)
    if how == "close":
        queue.close()
    elif how == "fail":
        queue.close(failed=True)
    elif how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(0)  # no finalizers: the handle is never closed
    elif how == "raise":
        raise RuntimeError("the stage failed")
elif what in ("drain", "drain-async"):
    queue = hakobu.Queue(name, create=False)
    print("ready", flush=True)

    async def drain_async() -> None:
        async for item in queue:
            print(show(item), flush=True)

    try:
        if what == "drain":
            for item in queue:
                print(show(item), flush=True)
        else:
            asyncio.run(drain_async())
    except hakobu.SendersLost as error:
        print(f"lost: {error}", flush=True)
    else:
        print("ended", flush=True)
elif what == "block-put":
    queue = hakobu.Queue(name, create=False)
    size, count = int(sys.argv[3]), int(sys.argv[4])
    for i in range(count):
        array = np.zeros(size, np.uint8)
        array[0] = i
        queue.put(array, timeout=60)
        print(f"put {i}", flush=True)
    queue.close()
else:
    sys.exit(f"unknown mode {what}")
