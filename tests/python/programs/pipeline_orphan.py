"""Starts a two-stage pipeline holding an item, prints its queue prefix and board name, and
waits to be killed (its workers must then leave and remove what the pipeline made).

argv: DIRECTORY (pipeline_tasks.ticket's files).
"""

import sys
import time

from pipeline_tasks import double, ticket

import hakobu

pipe = hakobu.Pipeline(hakobu.Stage(ticket), hakobu.Stage(double, workers=2), name="orphaned")
pipe.submit((sys.argv[1], 0))
print(pipe._prefix, pipe.name, flush=True)
time.sleep(120)
