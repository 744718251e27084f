"""Maps long items through a pipeline until Ctrl-C (SIGINT) arrives.

argv: MODE DIRECTORY. Each item makes a file ``took-<n>-<pid>`` in DIRECTORY
and waits for ``go-<n>`` (pipeline_tasks.ticket). MODE "with": a with-block
around Pipeline.map, catches KeyboardInterrupt after the block and exits 3;
"usable": catches KeyboardInterrupt around map, lets the interrupted items
finish, maps again on the same pipeline, prints that result, closes and exits 3;
"bare": no with-block, no close, the KeyboardInterrupt ends the program.
"""

import os
import sys

from pipeline_tasks import ticket

import hakobu

mode, directory = sys.argv[1], sys.argv[2]
work = [(directory, index) for index in range(8)]
if mode == "bare":
    pipe = hakobu.Pipeline(hakobu.Stage(ticket, workers=2))
    print("mapping", pipe._prefix, flush=True)
    pipe.map(work)
    sys.exit("map returned")
try:
    if mode == "with":
        with hakobu.Pipeline(hakobu.Stage(ticket, workers=2)) as pipe:
            print("mapping", pipe._prefix, flush=True)
            pipe.map(work)
    else:
        pipe = hakobu.Pipeline(hakobu.Stage(ticket, workers=2))
        print("mapping", pipe._prefix, flush=True)
        pipe.map(work)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    if mode == "usable":
        for index in range(9):
            with open(os.path.join(directory, f"go-{index}"), "w"):
                pass
        print("again", pipe.map([(directory, 8)]), flush=True)
        pipe.close()
        pipe.join()
    sys.exit(3)
sys.exit("map returned")
