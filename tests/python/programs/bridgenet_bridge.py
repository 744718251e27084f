"""One end of a bridge in a two-host test: hakobu.Bridge(NAME, send_to=ENDPOINT) ("send") or
hakobu.Bridge(NAME, receive_at=ENDPOINT) ("receive") in its domain ($HAKOBU_DOMAIN), with OPTIONS
(a JSON object of Bridge's keyword arguments: keys, window, timeout, ...). Says "ready ENDPOINT",
answers each line "stats" on stdin with the stats as JSON, and when the bridge ends says "ended"
and its stats as JSON (or "failed: ..." and exits 1).

    bridgenet_bridge.py send|receive NAME ENDPOINT [OPTIONS]
"""

import json
import sys
import threading
import warnings

import hakobu

WATCHDOG = 240.0  # s: the bridge ends by then, or this program fails (a hang)

role, name, endpoint = sys.argv[1], sys.argv[2], sys.argv[3]
options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
warnings.simplefilter("always", hakobu.BridgeInputWarning)  # each shows on stderr, for the test's log
if role == "send":
    bridge = hakobu.Bridge(name, send_to=endpoint, **options)
else:
    bridge = hakobu.Bridge(name, receive_at=endpoint, **options)
print("ready", bridge.endpoint, flush=True)
lock = threading.Lock()


def answer() -> None:
    for line in sys.stdin:
        if line.strip() == "stats":
            with lock:
                print(json.dumps(bridge.stats()), flush=True)


threading.Thread(target=answer, daemon=True).start()
try:
    if not bridge.join(timeout=WATCHDOG):
        bridge.close()
        print(f"failed: still running after {WATCHDOG:g} s: {bridge.stats()}", flush=True)
        sys.exit(1)
except Exception as error:  # noqa: BLE001 - whatever stopped the bridge is reported to the test
    print(f"failed: {type(error).__name__}: {error}", flush=True)
    sys.exit(1)
with lock:
    print("ended", flush=True)
    print(json.dumps(bridge.stats()), flush=True)
