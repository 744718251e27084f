"""Tries to open a queue and reports how it went, as one line of JSON.

Arguments: user ("-" for this one), domain, queue name, action (open | attach | remove | put).
"""

import json
import sys

from iso_user import become

import hakobu

if sys.argv[1] != "-":
    become(sys.argv[1])
domain, name, action = sys.argv[2], sys.argv[3], sys.argv[4]
try:
    if action == "remove":
        hakobu.remove(name, domain=domain)
    else:
        q = hakobu.Queue(name, domain=domain, create=False if action == "attach" else None)
        if action == "put":
            q.put(b"intruder")
    outcome = {"ok": True}
except hakobu.HakobuError as error:
    outcome = {"ok": False, "type": type(error).__name__, "message": str(error)}
print(json.dumps(outcome), flush=True)
