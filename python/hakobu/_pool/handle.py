"""The engine's handle on one worker process, and the bookkeeping of what a worker holds.

The engine (engine.py) keeps one WorkerHandle per worker: the process, its
inbox and progress slot, the tasks sent and not yet reported (in the order
sent), the messages in flight, a mirror of the worker's function cache, and
how long its recent tasks took, from which it decides prefetch and batch
sizes. When a worker dies, what_died reads its progress slot to tell the
task it was running from the tasks to run again. Every field is guarded by
the engine's lock.

What pools and pipelines share about worker processes is here too: how one
is started (start_worker_process), how one ended (how_process_ended), and
how a queue the parent made for it is removed (discard_queue).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Optional

import numpy as np

from .._errors import HakobuError
from .._queue import Queue
from .tasks import Task
from .threads import worker_threads
from .tuning import (
    BATCH_SECONDS,
    IN_FLIGHT_PER_WORKER,
    MAX_BATCH,
    PREFETCH_BELOW_SECONDS,
    PREFETCH_SEND_SHARE,
)


class WorkerHandle:
    """The engine's handle on one worker process (guarded by the engine's lock): its process,
    inbox and progress slot, the tasks it holds, its function cache mirror and its pace."""

    def __init__(
        self, number: int, process: subprocess.Popen[bytes], inbox: Queue, progress: np.ndarray
    ) -> None:
        self.number = number
        self.process = process
        self.inbox = inbox
        self.progress = progress  # shared with the worker: [started task id, finished task id]
        self.outstanding: collections.OrderedDict[int, Task] = collections.OrderedDict()  # in the order sent
        self.in_flight: collections.deque[list[float]] = collections.deque()  # [tasks unreported, sent at]
        self.known: collections.OrderedDict[bytes, None] = collections.OrderedDict()  # its function cache
        self.ready = False
        self.sent = 0
        self.stopping = False  # told to exit once its inbox is done
        self.last_done = 0.0  # when its last result arrived
        self.service_seconds: Optional[float] = None  # how long its recent tasks took (unknown at first)
        self.send_seconds = 0.0  # how long sending its last message took

    def has_room(self) -> bool:
        """Room for another message: 1 in flight, or 2 when sending takes a noticeable share of
        a task (see engine.py)."""
        limit = 1
        service = self.service_seconds
        if service is not None and (
            service < PREFETCH_BELOW_SECONDS or service < PREFETCH_SEND_SHARE * self.send_seconds
        ):
            limit = IN_FLIGHT_PER_WORKER
        return len(self.in_flight) < limit

    def batch_size(self, pending: int, sharing: int, max_tasks: Optional[int]) -> int:
        """Tasks for its next message: short ones share the pending tasks out, a batch lasting
        about BATCH_SECONDS; otherwise one."""
        size = 1
        service = self.service_seconds
        if service is not None and service < PREFETCH_BELOW_SECONDS:
            share = -(-pending // max(1, sharing))
            size = max(1, min(share, int(BATCH_SECONDS / max(service, 1e-7)), MAX_BATCH))
        if max_tasks is not None:
            size = max(1, min(size, max_tasks - self.sent))
        return size

    def done(self, count: int) -> None:
        """Notes that its ``count`` oldest unreported tasks ended (one message of results): they
        started when their message was sent or when the results before them came."""
        now = time.monotonic()
        took = (now - max(self.in_flight[0][1], self.last_done)) / count
        # A slow task counts at once (no more prefetch, no more batches); fast ones bring the
        # figure down gradually, so a single hiccup does not make batches short for long.
        previous = self.service_seconds
        self.service_seconds = took if previous is None or took > previous else 0.5 * (previous + took)
        self.last_done = now
        while count and self.in_flight:
            head = self.in_flight[0]
            taken = min(count, int(head[0]))
            head[0] -= taken
            count -= taken
            if head[0] <= 0:
                self.in_flight.popleft()

    def how_it_ended(self) -> str:
        return how_process_ended(self.process)

    def what_died(self, tasks: list[Task]) -> tuple[Optional[Task], list[Task]]:
        """(the task this dead worker was running, or None; the tasks to run again) from the tasks
        it had not reported, in the order sent, and its progress slot.

        Those before the running one finished, but their results were held and died
        with the worker: they run again, like those that never started. The slot
        is shared memory: an id that is not among ``tasks`` means none of them
        started (the task before them was reported).
        """
        started, finished = int(self.progress[0]), int(self.progress[1])
        for index, task in enumerate(tasks):
            if task.id == started:
                if finished == started:  # it finished too: it died between tasks
                    return None, tasks
                return task, tasks[:index] + tasks[index + 1 :]
        return None, tasks

    def kill(self) -> None:
        """Kills the worker on purpose (SIGKILL: it cannot be caught); its exit is then expected."""
        self.stopping = True
        try:
            self.process.kill()
        except ProcessLookupError:
            pass


def start_worker_process(
    module: str, arguments: Sequence[str], *, domain: str, workers: int, threads_per_worker: Optional[int]
) -> subprocess.Popen[bytes]:
    """A fresh interpreter running ``python -m module *arguments THREADS`` (pools and pipelines).

    It has this interpreter's options (-I, -O, -X ..., passed on as
    multiprocessing does), the parent's environment with the pool's ``domain``
    and the thread caps of threads.py (THREADS, its last argument: the
    threadpoolctl limit to set, or 0), no stdin, and its own process group, so
    that Ctrl-C in a terminal goes to the parent alone.
    """
    environment = dict(os.environ)
    environment["HAKOBU_DOMAIN"] = domain
    threads = worker_threads(environment, workers, threads_per_worker)
    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    command = [sys.executable, *flags, "-m", module, *arguments, str(threads)]
    if sys.version_info >= (3, 11):
        return subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL, process_group=0)
    return subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL, start_new_session=True)


def how_process_ended(process: subprocess.Popen[bytes]) -> str:
    """How a worker process that exited ended: its signal or its exit code (pools and pipelines)."""
    code = process.returncode
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def discard_queue(queue: Queue) -> None:
    """Removes a queue the parent created and lets go of it; its messages are freed when the
    last holder lets go (pools and pipelines)."""
    try:
        queue.unlink()
    except HakobuError:
        pass  # already removed (a worker whose parent died, or hakobu rm)
    try:
        queue.close()
    except HakobuError:
        pass
