"""Runs long tasks in a pool until Ctrl-C (SIGINT) arrives.

argv: MODE DIRECTORY. MODE "with": a with-block around Pool.map, catches
KeyboardInterrupt after the block and exits 3; "bare": no with-block, no
close, the KeyboardInterrupt ends the program; "executor": a with-block around
Executor.map, exits 3. Each task makes a file in DIRECTORY when it starts.
"""

import sys

from pool_tasks import announce_and_sleep

import hakobu

mode, directory = sys.argv[1], sys.argv[2]
work = [(directory, index) for index in range(8)]
if mode == "bare":
    pool = hakobu.Pool(2)
    print("mapping", pool._engine.name, flush=True)
    pool.starmap(announce_and_sleep, work)
    sys.exit("map returned")
try:
    if mode == "with":
        with hakobu.Pool(2) as pool:
            print("mapping", pool._engine.name, flush=True)
            pool.starmap(announce_and_sleep, work)
    else:
        with hakobu.Executor(2) as executor:
            print("mapping", executor._engine.name, flush=True)
            list(executor.map(announce_and_sleep, *zip(*work)))
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
sys.exit("map returned")
