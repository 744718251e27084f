"""Starts a pool, says its name once its workers ran a task, and waits to be killed (SIGKILL)."""

import time

from pool_tasks import square

import hakobu

pool = hakobu.Pool(2)
assert pool.map(square, range(8), chunksize=1) == [x * x for x in range(8)]
print(pool._engine.name, flush=True)
time.sleep(600)
