"""What the front-ends (hakobu.pool) hand to the engine: tasks, where their outcomes go, and the
engine's states.

A front-end turns calls into Tasks (a chunk of calls of one pickled Function,
with a Sink for the outcome) and submits them; the engine tells each task's
sink when the task starts and how it ends. This module knows no process and no
queue, so that a front-end imports it, not the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

from .pickling import Function, pack
from .protocol import Packed

# An engine's states: running, taking no more work (its workers finish what they have), ended.
RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"


class Sink(Protocol):
    """Where a task's outcome goes (a pool result, a future)."""

    def start(self) -> bool:
        """The task goes to a worker; False when it was cancelled meanwhile (it is dropped)."""

    def finish(self, ok: bool, value: Any) -> None:
        """The list of the chunk's results (ok), or the exception."""

    def cancel(self, error: BaseException) -> None:
        """The task will never start (the pool was terminated, or pending work cancelled)."""


@dataclass(eq=False)
class Task:
    """One call, or a chunk of calls: ``function`` applied to each of the pickled items."""

    function: Function
    mode: int  # protocol.MODE_*
    payload: Packed  # the list of items, pickled
    sink: Sink
    label: str  # says which calls these are, in error messages
    id: int = 0
    attempts: int = 0  # runs that ended with the worker's death
    started: bool = False


def make_task(
    fn: Function, mode: int, items: list[Any], sink: Sink, label: str, *, main_by_reference: bool = True
) -> Optional[Task]:
    """A task for ``items``; None, with the error given to the sink, if they cannot be pickled.

    ``main_by_reference``: False when the workers cannot run the main script
    (pickling.dumps): its classes in ``items`` then travel by value.
    """
    try:
        payload = pack(items, main_by_reference=main_by_reference)
    except Exception as error:  # noqa: BLE001 - as multiprocessing: the result carries the error
        sink.finish(False, error)
        return None
    return Task(fn, mode, payload, sink, label)


Outcome = tuple[Task, bool, Any]  # a task, and what its sink gets: (ok, value)
