"""The pool's tunables: batching, prefetch, capacities, polling and grace periods.

The figures that decide how much work goes where and how long anything
waits, in one place, with why each is what it is. The engine and the
worker read them; none of them is part of the wire protocol (protocol.py):
a worker works with any of them.
"""

from __future__ import annotations

# --- the engine (the parent) ------------------------------------------------------------------

# Messages in a worker's inbox at once: one running, one ready to start the moment it finishes.
IN_FLIGHT_PER_WORKER = 2
# Prefetch (see engine.py) for tasks shorter than this, or than
# PREFETCH_SEND_SHARE times the time it took to send them.
PREFETCH_BELOW_SECONDS = 0.02
PREFETCH_SEND_SHARE = 10
# A batch of short tasks lasts about this long (by the worker's recent tasks); at most
# MAX_BATCH tasks, and at most MAX_BATCH_BYTES of inline streams.
BATCH_SECONDS = 0.002
MAX_BATCH = 256
MAX_BATCH_BYTES = 1 << 20
# Functions a worker keeps unpickled (the engine mirrors each worker's cache).
FUNCTION_CACHE_SIZE = 32
# Longest wait on the results queue before the worker processes are polled.
POLL_SECONDS = 0.1
# How long workers told to stop may take before they are killed.
STOP_GRACE_SECONDS = 10.0
# Workers that die one after another before being ready: the pool cannot start workers.
START_FAILURES_TO_BREAK = 3
# Messages read in one go before the manager looks at anything else.
DRAIN_BATCH = 256
# Room in a worker's inbox: its progress slot, the hello, the messages in flight, the stop message.
INBOX_CAPACITY = 8
# Room in the results queue: a worker reports each task; it waits when the manager lags.
RESULTS_CAPACITY = 512

# --- the worker ----------------------------------------------------------------------------------

# A worker sends its results together while a batch runs: at most this many in a message,
# none held longer than this.
RESULT_BATCH = 64
RESULT_HOLD_SECONDS = 0.002
# How often a worker's watcher thread checks that its parent lives.
PARENT_WATCH_SECONDS = 0.5
# How long a hang-up waits to see whether the whole parent is exiting.
PARENT_EXIT_SECONDS = 2.0
# How long the main thread may take to unwind a task and exit once the parent is gone; a task
# stuck in native code never returns to Python, and the worker then leaves without it.
UNWIND_SECONDS = 10.0
