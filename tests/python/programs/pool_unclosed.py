"""Leaves a pool running at exit (no close, terminate or join): a ResourceWarning says so,
as multiprocessing's Pool does, and the pool is terminated.

    pool_unclosed.py     run with -W always::ResourceWarning (PYTHONWARNINGS)
"""

from pool_tasks import square

import hakobu

pool = hakobu.Pool(1)
print("result", pool.apply(square, (4,)), flush=True)
closed = hakobu.Pool(1)
closed.close()  # closed, not joined: no warning for this one
