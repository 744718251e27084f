"""A receiving bridge in its own process: argv NAME ENDPOINT [KEY_DIR]. Prints "ready" once
bound, runs until the stream ends, then prints its stats as JSON (a test may kill it first)."""

import json
import sys

import hakobu

name, endpoint = sys.argv[1], sys.argv[2]
bridge = hakobu.Bridge(name, receive_at=endpoint, allow_objects=True)  # the tests' loopback: trusted
print("ready", bridge.endpoint, flush=True)
bridge.join()
print(json.dumps(bridge.stats()), flush=True)
