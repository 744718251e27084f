"""Makes two "hosts" (hakobu_bench.netns.hosts(2)), starts a long sleep in the first, says the
namespaces' names and the sleeper's pid on one line, then waits for its stdin to close. The test
kills it with SIGKILL, so its `with` block never ends: what it made is left behind, as by a run
that was itself killed, for netns.remove_stale() to find."""

import subprocess
import sys

from hakobu_bench import netns

with netns.hosts(2) as (first, second):
    # Not on this program's pipes: the test reads them to their end once this program is killed.
    sleeper = first.start(["sleep", "600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hub = first.namespace.rsplit("-", 1)[0] + "-hub"
    print(hub, first.namespace, second.namespace, sleeper.pid, flush=True)
    sys.stdin.read()
    sleeper.kill()
    sleeper.wait()
