"""hakobu.serve: one stage of a pipeline, run in the calling program over named queues.

Each stage is a program of its own (started by hand, by a supervisor, in any
order; one of them may be C++): the stages find each other by queue name, and
the queues' end of stream tells each stage when the one before it finished,
failed or died. Several programs serving the same input share it (each item
goes to one of them).
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Optional

from .. import _errors
from .._processes import process_exists
from .._queue import Queue
from .._store import Store
from .._sync import Array
from .board import Board, StageInfo, WorkerRow, board_name
from .outputs import outputs

# The longest board name a stage may have: a name has at most 64 characters,
# and the board's objects add board.SUFFIX to it.
_MAX_NAME = 64 - len(board_name(""))


def serve(
    fn: Callable[[Any], Any],
    input: str = "frames",
    output: Optional[str] = "features",
    *,
    domain: Optional[str] = None,
    capacity: Optional[int] = None,
    max_bytes: Optional[int] = None,
    name: Optional[str] = None,
    allow_pickle: bool = True,
) -> int:
    """Runs ``fn`` as a pipeline stage over the named queues ``input`` and ``output``
    until the input's stream ends; returns the number of inputs handled.

    Each input is passed to ``fn``; what it returns is put on ``output``:
    nothing for hakobu.SKIP, each element for a list (a fan-out), else the
    value itself. An array received and returned (or changed in place and
    returned) is forwarded without a copy. Both queues are created, or
    attached to when they exist, so the stages' programs may start in any
    order: a stage started before anything was ever sent on its input waits.

    The output counts this stage as a sender from the start, so the next stage
    does not see the stream end before this one sent anything. When the input
    ends (every sender closed it and it is drained: hakobu.EndOfStream),
    ``serve`` closes its output, so the next stage's ``serve`` returns in turn
    once it drained what was sent.

    Raises what ``fn`` raised, and hakobu.SendersLost when a stage before
    this one failed or died (the input may be incomplete), KeyboardInterrupt
    on Ctrl-C: in each case after closing the output as failed, so that the
    next stage raises SendersLost after draining what was sent. Raises
    hakobu.AlreadyExists when a running ``serve`` in the domain has the same
    ``name``, and what opening the queues raises (InvalidName, ...).

    While it runs, the stage shows itself on a board in the domain (what
    ``hakobu top`` lists): one stage, one worker, with its items, errors and
    time spent computing, waiting for input and waiting for room; the board
    is removed when ``serve`` returns or raises. ``serve`` never removes the
    queues: other programs may still use them (``hakobu rm`` does).

    ``fn``: the stage's function, called with one input at a time.
    ``input``: the name of the queue the inputs come from.
    ``output``: the name of the queue the results go to; None for a last
    stage, whose function's results are dropped.
    ``domain``: the domain of the queues and the board (None: the default).
    ``capacity``: messages each queue holds, when this call creates it (None:
    the queue's default, 1024).
    ``max_bytes``: payload bytes each queue holds, when this call creates it
    (None: half of /dev/shm; 0: no limit); a put waits for room beyond it.
    ``name``: the stage's name on the board (None:
    ``f"{fn.__qualname__}-{pid}"``); at most 55 characters.
    ``allow_pickle``: as for hakobu.Queue: False accepts only objects made of
    plain built-in types from the input.

    Raises InvalidArgument when ``fn`` is not callable or ``input`` and
    ``output`` are the same queue.
    """
    if not callable(fn):
        raise _errors.InvalidArgument(f"serve needs a function to call on each input, got {fn!r}")
    if input == output:
        raise _errors.InvalidArgument(
            f"a stage's input and output are different queues, got {input!r} for both"
        )
    stage_name = _stage_name(fn) if name is None else name
    options: dict[str, Any] = {"domain": domain, "max_bytes": max_bytes, "allow_pickle": allow_pickle}
    if capacity is not None:
        options["capacity"] = capacity
    # The output first, counted as a sender at once: from here on the next stage cannot see an
    # end of stream that this stage did not make.
    sink = Queue(output, sends=True, **options) if output is not None else None
    failed = True
    try:
        source = Queue(input, **options)
        # A stage started before the one that feeds it waits on a queue nobody sent on yet:
        # the normal case here, not the misspelt name NoSenderWarning is for.
        source._watch_for_sender = False
        try:
            board = _open_board(stage_name, input, output, source.domain)
            try:
                handled = _run(fn, source, sink, WorkerRow(stage_name, 0, 0, board.domain))
            finally:
                board.remove()
        finally:
            source.close()
        failed = False
        return handled
    finally:
        if sink is not None:
            sink.close(failed=failed)


def _run(fn: Callable[[Any], Any], source: Queue, sink: Optional[Queue], row: WorkerRow) -> int:
    """The stage's loop: inputs until the end of the input's stream (returns how many)."""
    handled = 0
    try:
        while True:
            try:
                item = source.get()
            except _errors.SendersLost:
                raise  # an EndOfStream, but the stream may be incomplete: a failure to pass on
            except _errors.EndOfStream:
                return handled
            row.computing()
            try:
                result = fn(item)
            except BaseException:
                row.sending(failed=True)
                raise
            del item  # the input's memory goes back as soon as nothing holds it
            row.sending(failed=False)
            if sink is not None:
                for value in outputs(result):
                    sink.put(value)
            del result
            row.waiting()
            handled += 1
    finally:
        row.exited()


def _stage_name(fn: Callable[[Any], Any]) -> str:
    """The default board name: the function's qualified name and this process's id, in the
    characters a name may have (a lambda's ``<lambda>`` becomes ``_lambda_``)."""
    suffix = f"-{os.getpid()}"
    qualname = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__)
    base = re.sub(r"[^A-Za-z0-9._-]", "_", qualname)
    base = re.sub(r"\.{2,}", ".", base).lstrip(".-") or "stage"
    return base[: _MAX_NAME - len(suffix)] + suffix


def _open_board(name: str, input: str, output: Optional[str], domain: str) -> Board:
    """The stage's board; one left by a killed stage of the same name is replaced."""
    stages = [StageInfo(name, 1, input, output)]
    try:
        return Board(name, stages, None, domain)
    except _errors.AlreadyExists:
        if not _remove_if_abandoned(name, domain):
            raise _errors.AlreadyExists(
                f"a running stage is called {name!r} in domain {domain!r} already: give each serve its own name"
            ) from None
    return Board(name, stages, None, domain)


def _remove_if_abandoned(name: str, domain: str) -> bool:
    """Removes the board ``name`` if the process that made it is gone; True if removed."""
    try:
        with Store(board_name(name), 4, create=False, domain=domain) as store:
            pid = int(store["description"]["pid"])
            if process_exists(pid):
                return False
            store.unlink()
    except (_errors.NotFound, KeyError):
        pass  # half made or half removed: try the rest
    try:
        Array.remove(board_name(name), domain)
    except _errors.NotFound:
        pass
    return True


__all__ = ["serve"]
