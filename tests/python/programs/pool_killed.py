"""Maps slowly over a shared-memory input (hakobu.zeros) with two workers, in its own domain
($HAKOBU_DOMAIN, set by the test), and says the pool's name: the test SIGKILLs it mid-map.

    pool_killed.py DIRECTORY     (the workers announce their tasks there)
"""

import sys

from pool_tasks import announce_and_sum

import hakobu

data = hakobu.zeros((256, 1024))  # 2 MiB the workers map, never copy
with hakobu.Pool(2) as pool:
    result = pool.starmap_async(announce_and_sum, [(sys.argv[1], data)] * 200, chunksize=1)
    print(pool._engine.name, flush=True)
    result.get()
print("the map finished before the test killed this program", flush=True)
