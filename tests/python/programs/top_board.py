"""A running pipeline's board for `hakobu top` (tests/python/test_cli_top.py), made directly with
hakobu._pipeline.board: pipeline argv[1] with stages "decode" (1 worker), "infer" (2 workers) and
"post" (1 worker); decode's input queue is argv[2] if given (else "frames"). This process plays
every worker: each decode and infer row takes an item, computes for 2 ms and sends it, over and
over (every 4th infer item fails); the post row waits for input all along. Says "ready" once every
row has finished 4 items (so each infer row has failed one), and runs until a line (or end of
file) arrives on stdin: then the rows exit and the board is removed. Killed, it leaves the board
behind."""

import signal
import sys
import threading
import time

from hakobu import _core
from hakobu._pipeline import board

signal.alarm(300)  # a forgotten program ends

name = sys.argv[1]
domain = _core.default_domain()
stop = threading.Event()


def wait_for_stdin() -> None:
    sys.stdin.readline()
    stop.set()


stages = [
    board.StageInfo("decode", 1, sys.argv[2] if len(sys.argv) > 2 else "frames", "decoded"),
    board.StageInfo("infer", 2, "decoded", "features"),
    board.StageInfo("post", 1, "features", None),
]
published = board.Board(name, stages, results=None, domain=domain)
rows = [board.WorkerRow(name, row, stage, domain) for row, stage in enumerate((0, 1, 1, 2))]
busy = rows[:3]  # the post worker (row 3) waits for input all along
threading.Thread(target=wait_for_stdin, daemon=True).start()
item = 0
while not stop.is_set():
    for row in busy:
        row.computing()
        time.sleep(0.002)
        row.sending(failed=row is not rows[0] and item % 4 == 3)
        row.waiting()
    item += 1
    if item == 4:
        print("ready", flush=True)
for row in rows:
    row.exited()
published.remove()
print("done", flush=True)
