"""Traffic on topic argv[1] for `hakobu top` (tests/python/test_cli_top.py): creates it with a ring of
16 messages and one subscriber that never reads (on_full="drop_oldest"), publishes 40 messages, says
"ready", then publishes one every 10 ms until a line (or end of file) arrives on stdin."""

import signal
import sys
import threading
import time

import hakobu

signal.alarm(300)  # a forgotten program ends

stop = threading.Event()


def wait_for_stdin() -> None:
    sys.stdin.readline()
    stop.set()


threading.Thread(target=wait_for_stdin, daemon=True).start()
topic = hakobu.Topic(sys.argv[1], capacity=16, create=True)
with topic.subscribe(on_full="drop_oldest"):
    for _ in range(40):
        topic.publish(b"x" * 100)
    print("ready", flush=True)
    while not stop.is_set():
        topic.publish(b"x" * 100)
        time.sleep(0.01)
topic.close()
print("done", flush=True)
