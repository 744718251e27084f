"""Opens (creating or attaching) a queue at an agreed moment and puts its tag.

Run in a PID namespace of its own, so that two of these have the same pid.
Arguments: domain, queue name, tag, start time (time.time() seconds).
"""

import sys
import time

import hakobu

domain, name, tag, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))  # both creators open at the same moment
q = hakobu.Queue(name, domain=domain)
q.put(tag)
print("put", tag, flush=True)
