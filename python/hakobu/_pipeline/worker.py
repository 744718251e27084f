"""A pipeline stage's worker process:
``python -m hakobu._pipeline.worker CONTROL INPUT OUTPUT PIPELINE PARENT_PID THREADS``.

Started by the pipeline (pipeline.py) as a fresh interpreter, as hakobu.Pool
starts its workers, and built from the pool's worker parts: it leaves when
its parent dies (``_die_with_parent``: the dead parent's queues are removed,
the running function is unwound with ParentGone), it takes the parent's
sys.path and argv and finds the main script's functions as a pool worker
does (HELLO, ScriptImport), it caps its OpenMP/BLAS threads.

Its first three messages come on its own control queue CONTROL (see wire.py):
its slot, HELLO (the stage's function) and its StageSetup; it removes the
control queue once it has them. Then it takes items from INPUT, calls the
function, and puts what comes of it (outputs.py) on OUTPUT: each element of a
returned list as an item of its own, nothing for SKIP. An array it received and
returns (modified in place or not) goes on by reference. Errors and drops go to
the results queue. It leaves at the end of its input's stream (EndOfStream, or
SendersLost), or when its input goes away; leaving, it closes its part of its
output's stream, so that the next stage's workers leave after it.

Before each get it marks its slot WAITING, and HOLDING with the item's seq and
attempt as soon as it has one, so that the parent knows what it held should it
die; the few instructions between the get and that mark are the parent's to
cover (see pipeline.py, "Lost items").
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from typing import Any, Optional

import numpy as np

from .. import _core, _errors
from .._pool import main_script
from .._pool.pickling import describe_exception, pack, pack_error, unpack
from .._pool.protocol import read_hello
from .._pool.threads import limit_threads
from .._pool.worker import _LEAVING, ParentGone, ScriptImport, _die_with_parent
from .._queue import Queue
from . import board as _board
from .outputs import outputs
from .wire import (
    ATTEMPT,
    DROP,
    ERROR,
    EXITED,
    HOLDING,
    ITEM,
    SEQ,
    SLOT_FIELDS,
    STATE,
    TAKES,
    WAITING,
    StageSetup,
    read_setup,
    valid_path,
)


class _Unloadable:
    """The stage's function could not be unpickled here: every item fails with why."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _slot_view(message: Any) -> Optional[np.ndarray]:
    if not isinstance(message, np.ndarray) or message.dtype != np.int64 or message.shape != (SLOT_FIELDS,):
        return None
    return message


class StageLoop:
    """This worker's side of the pipeline: its queues, its slot, its board row, its function."""

    def __init__(
        self, function: Any, setup: StageSetup, slot: np.ndarray, inbox: Queue, output: Queue, results: Queue
    ) -> None:
        self.function = function
        self.setup = setup
        self.slot = slot
        self.inbox = inbox
        self.output = output
        self.results = results

    def serve(self, row: _board.WorkerRow) -> None:
        slot = self.slot
        stage = self.setup.stage
        while True:
            slot[STATE] = WAITING
            try:
                message = self.inbox.get()
            except (_errors.Unlinked, _errors.Closed, _errors.EndOfStream):
                return  # the pipeline went away, or its input ended
            # Anything but a well-formed item is dropped: shared memory is untrusted.
            if type(message) is not tuple or not message:
                continue
            if message[0] != ITEM or len(message) != 6:
                continue
            _, seq, attempt, path, stream, buffers = message
            del message
            if type(seq) is not int or type(attempt) is not int or valid_path(path) is None:
                continue
            slot[SEQ] = seq
            slot[ATTEMPT] = attempt
            slot[STATE] = HOLDING
            slot[TAKES] += 1
            row.computing()
            failure: Optional[BaseException] = None
            items: list[Any] = []
            fanned = False
            try:
                if isinstance(self.function, _Unloadable):
                    raise self.function.error
                value = unpack(stream, buffers)
                del stream, buffers
                result = self.function(value)
                del value
                fanned = type(result) is list
                items = outputs(result)
                del result
            except ParentGone:
                raise
            except BaseException as error:  # noqa: BLE001 - as the pool: SystemExit too
                failure = error
            row.sending(failure is not None)
            try:
                if failure is not None:
                    self.results.put((ERROR, seq, attempt, path, stage, *pack_error(failure)))
                    del failure
                elif not items:
                    self.results.put((DROP, seq, attempt, path, stage))
                else:
                    self.send(seq, attempt, path, items, fanned)
            except (_errors.Unlinked, _errors.Closed):
                return  # the pipeline went away while this worker waited for room
            del items
            row.waiting()

    def send(self, seq: int, attempt: int, path: Any, items: list[Any], fanned: bool) -> None:
        """Puts each output on the next queue (waiting for room there)."""
        count = len(items)
        for index in range(count):
            branch = (*path, (index, count)) if fanned else path
            try:
                packed = pack(items[index])
            except Exception as why:  # noqa: BLE001 - this output cannot travel: it fails
                unsendable = _errors.EncodingError(
                    f"an output of stage {self.setup.name!r} cannot be pickled to travel on "
                    f"({describe_exception(why)}); return arrays, plain data or picklable objects"
                )
                unsendable.__cause__ = why
                self.results.put((ERROR, seq, attempt, branch, self.setup.stage, *pack_error(unsendable)))
                continue
            items[index] = None  # sent, the output is the receiver's
            self.output.put((ITEM, seq, attempt, branch, *packed))
            del packed


def _control_messages(control_name: str) -> Optional[tuple[Any, Any, Any]]:
    """The slot, HELLO and setup messages; the control queue is removed once they are read."""
    try:
        control = Queue(control_name, create=False)
    except _errors.NotFound:
        return None  # the pipeline ended before this worker started
    try:
        return control.get(), control.get(), control.get()
    except (_errors.Unlinked, _errors.Closed):
        return None
    finally:
        try:
            _core.remove(control_name)
        except _errors.HakobuError:
            pass  # removed by the parent already
        control.close()


def _work(control_name: str, input_name: str, output_name: str, pipeline: str, threads: int) -> int:
    received = _control_messages(control_name)
    if received is None:
        return 1
    slot_message, hello, setup_message = received
    del received
    slot = _slot_view(slot_message)
    told = read_hello(hello)
    setup = read_setup(setup_message)
    del slot_message, hello, setup_message
    if slot is None or told is None or setup is None:
        return 1
    sys.path[:] = told.sys_path  # functions pickled by reference import as in the parent
    sys.argv[:] = told.argv
    where = told.main_script
    main_script.adopt_in_worker(where, None if where is None else ScriptImport(*where).load)
    function: Any
    try:
        function = unpack(told.init_stream, told.init_buffers)
    except ParentGone:
        raise
    except BaseException as error:  # noqa: BLE001 - each item fails with it, the parent hears why
        failure = ImportError(
            f"the function of stage {setup.name!r} cannot be loaded in its worker ({describe_exception(error)})"
        )
        failure.__cause__ = error
        function = _Unloadable(failure)
    del told
    limit_threads(threads)
    domain = _core.default_domain()
    queues: list[Queue] = []
    try:
        for name in (input_name, output_name, setup.results):
            queues.append(Queue(name, create=False))
    except _errors.NotFound:
        for queue in queues:
            queue.close()
        return 1  # the pipeline ended meanwhile
    inbox, output, results = queues
    finished = False
    try:
        row = _board.WorkerRow(pipeline, setup.row, setup.stage, domain)
        loop = StageLoop(function, setup, slot, inbox, output, results)
        try:
            loop.serve(row)
        finally:
            row.exited()
        slot[STATE] = EXITED
        finished = True
    finally:
        # The end of this worker's part of its output's stream: failed if it did not finish.
        for queue in queues:
            try:
                queue.close(failed=not finished)
            except _errors.HakobuError:
                pass
    return 0


def _remove_leftovers(prefix: str, pipeline: str) -> None:
    """The parent died: its board and every queue of the pipeline go (the control queues of
    workers that had not read them included), whichever worker gets here first."""
    domain = _core.default_domain()
    name = _board.board_name(pipeline)
    for remove in (_core.remove_store, _core.remove_sync):
        try:
            remove(name, domain)
        except _errors.HakobuError:
            pass  # removed by another worker
    for _path, kind, queue in _core.domain_files(domain):
        if kind == "queue" and queue.startswith(prefix + "-"):
            try:
                _core.remove(queue, domain)
            except _errors.HakobuError:
                pass


def main(argv: Optional[list[str]] = None) -> int:
    # Ctrl-C in a terminal reaches the whole foreground group: the parent handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    arguments = argv if argv is not None else sys.argv[1:]
    control, input_name, output_name, pipeline, parent_pid, threads = arguments[:6]
    prefix = input_name.rpartition("-")[0]  # the pipeline's queues are <prefix>-<n>
    if os.getppid() != int(parent_pid):  # gone already: _die_with_parent would leave at once
        _remove_leftovers(prefix, pipeline)
        return 1
    # The parent's queues this worker removes should the parent die: its input and output
    # (together the workers cover them all); the rest after ParentGone, below.
    _die_with_parent(int(parent_pid), (input_name, output_name))
    code = 1
    try:
        try:
            code = _work(control, input_name, output_name, pipeline, int(threads))
        finally:
            _LEAVING.set()
    except ParentGone:
        pass
    if os.getppid() != int(parent_pid):
        _remove_leftovers(prefix, pipeline)
    # As the pool's worker: what cycles still hold goes while the library is loaded.
    gc.collect()
    return code


if __name__ == "__main__":
    sys.exit(main())
