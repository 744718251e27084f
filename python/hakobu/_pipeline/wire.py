"""What a pipeline's processes say to each other: the envelope of an item, the records on the
results queue, a worker's slot. Both the parent (pipeline.py) and the stage workers (worker.py)
import this module and nothing of each other.

Messages
--------
Every message on a pipeline's queues is a tuple; the pool's pickling (``pack``)
carries the value, so that the main script's functions and classes go by
reference and large buffers travel out of band (an array received from
shared memory and sent on goes by reference: no copy):

* ``(ITEM, seq, attempt, path, stream, buffers)``: a value on its way. ``seq``
  numbers the caller's input, ``attempt`` its run (a retry starts a new one:
  records of older runs are dropped), ``path`` the fan-outs it came through:
  a tuple of ``(index, count)``, one per stage that returned a list. On the
  results queue it is one output of the pipeline.
* ``(ERROR, seq, attempt, path, stage, stream, buffers)``: the stage's function
  raised; the exception packed with its traceback (pack_error). Sent on the
  results queue, whatever the stage: the item goes no further.
* ``(DROP, seq, attempt, path, stage)``: the stage returned SKIP or an empty
  list; on the results queue.

An input is done when the records of all its branches have come: a record
with path ``((i1, k1), ..., (in, kn))`` stands for 1/(k1*...*kn) of the input
(``share``).

Each worker also gets, on its own control queue, a slot (SLOT_FIELDS int64 of
shared memory, alone in its message so that it travels by reference), the
pool's HELLO message (its initializer field: the stage's function, packed) and
a StageSetup, plain data.

The slot
--------
Written by the worker alone, read by the parent when the worker dies, to tell
what it held: ``state`` (STARTING, WAITING before each get, HOLDING once it has
recorded the item's ``seq`` and ``attempt``, EXITED when it left at the end of
its input) and
``takes`` (items taken). The parent treats what it reads as untrusted: a seq it
does not know is ignored.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple, Optional

ITEM, ERROR, DROP = 1, 2, 3

# The slot's fields, and its states.
STATE, SEQ, ATTEMPT, TAKES = range(4)
SLOT_FIELDS = 4
STARTING, WAITING, HOLDING, EXITED = 0, 1, 2, 3


class StageSetup(NamedTuple):
    """A stage worker's third control message (plain data: read before any user code runs)."""

    stage: int  # the stage's index
    name: str  # its name, in error messages
    row: int  # the worker's row of the board
    results: str  # the queue errors and drops go to


def read_setup(message: Any) -> Optional[StageSetup]:
    """The setup message's fields, checked; None if it is not one."""
    if not isinstance(message, tuple) or len(message) != len(StageSetup._fields):
        return None
    setup = StageSetup(*message)
    if (
        type(setup.stage) is not int
        or type(setup.name) is not str
        or type(setup.row) is not int
        or type(setup.results) is not str
    ):
        return None
    return setup


Path = tuple[tuple[int, int], ...]


def valid_path(path: Any) -> Optional[Path]:
    """``path`` if it is a well-formed fan-out path (it came through shared memory), else None."""
    if type(path) is not tuple:
        return None
    for step in path:
        if (
            type(step) is not tuple
            or len(step) != 2
            or type(step[0]) is not int
            or type(step[1]) is not int
            or not 0 <= step[0] < step[1]
        ):
            return None
    return path


def share(path: Path) -> Fraction:
    """The part of its input a branch with this path stands for."""
    whole = 1
    for _, count in path:
        whole *= count
    return Fraction(1, whole)
