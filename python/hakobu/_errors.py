"""hakobu's exceptions: one class per kind of error, all under HakobuError.

The C++ core raises these classes: at the end of this module they are handed
to it once (``_core.bind_errors``; the rules are in bindings/python/errors.hpp),
and a class it needs that is missing here fails ``import hakobu``. Where the
standard library has a matching class, ours derives from it too, so existing
``except queue.Empty`` or ``except FileNotFoundError`` code keeps working.
"""

from __future__ import annotations

import concurrent.futures.process as _futures_process
import multiprocessing.pool as _mp_pool
import pickle as _pickle
import queue as _queue
import sys as _sys
import threading as _threading
from typing import TYPE_CHECKING

from . import _core

if TYPE_CHECKING:  # the typing stubs lack these two multiprocessing classes
    _RemoteTracebackBase = Exception
    _MaybeEncodingErrorBase = Exception
else:
    _RemoteTracebackBase = _mp_pool.RemoteTraceback
    _MaybeEncodingErrorBase = _mp_pool.MaybeEncodingError


class HakobuError(Exception):
    """Base class of every hakobu error."""


class Empty(HakobuError, _queue.Empty):
    """get() found no message (non-blocking, or the timeout ran out)."""


class Full(HakobuError, _queue.Full):
    """put() found no room (non-blocking, or the timeout ran out)."""


class Closed(HakobuError):
    """The handle was closed (possibly while waiting)."""


class Unlinked(HakobuError):
    """The queue's name was removed by its creator."""


class NotFound(HakobuError, FileNotFoundError):
    """No queue has that name (attach-only, or removal of a missing name)."""


class AlreadyExists(HakobuError, FileExistsError):
    """create=True and the name is taken."""


class InvalidName(HakobuError, ValueError):
    """A name is empty, too long, or has characters outside [A-Za-z0-9._-]."""


class InvalidArgument(HakobuError, ValueError):
    """An option or argument is out of range; the message says which."""


class AccessDenied(HakobuError, PermissionError):
    """The object belongs to another user."""


class NotCreator(HakobuError, PermissionError):
    """Only the handle that created a queue may unlink it (see hakobu.remove)."""


class Incompatible(HakobuError):
    """The object was made by an incompatible version of hakobu."""


class Corrupt(HakobuError):
    """Shared memory failed validation; the message or object was dropped."""


class OutOfSharedMemory(HakobuError, MemoryError):
    """/dev/shm (or the huge-page pool) is full; the message says how full."""


class TooLarge(HakobuError, ValueError):
    """A message is larger than the domain's heap."""


class TooManyProcesses(HakobuError):
    """The domain's process table is full."""


class NotHeld(HakobuError, RuntimeError):
    """release() of a lock this process does not hold: it is free, or another process holds it.

    A RuntimeError, as ``threading.Lock.release`` raises for an unlocked lock.
    """


class ForkedHandle(HakobuError, RuntimeError):
    """A lock handle inherited across fork() was used in the child: the parent holds its place.

    Open the lock again by name in the child (``hakobu.Lock(name)``); the parent's handle
    stays usable in the parent. Events work from a forked child, having no owner.
    """


class SystemFailure(HakobuError, OSError):
    """Another operating-system error; the message has the details."""


class KeyNotFound(HakobuError, KeyError):
    """A store has no value for the key: never published, deleted, or not published before
    ``wait``'s timeout ran out. A KeyError, as a mapping's missing key is."""

    def __str__(self) -> str:  # the message as it is (KeyError's own quotes it)
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class Busy(HakobuError):
    """Another process kept a store's key busy for the whole bounded wait (its entry claimed
    for a second while alive, or the key republished during every one of many lookups);
    trying again later may succeed. Nothing was changed."""


class TooManyReleases(HakobuError, ValueError):
    """release() of a hakobu.BoundedSemaphore would raise its count past its initial value.

    A ValueError, as ``threading.BoundedSemaphore.release`` raises; nothing was released.
    """


class BrokenBarrierError(HakobuError, _threading.BrokenBarrierError):
    """A hakobu.Barrier is broken: abort(), reset() while waiting, a waiter's timeout, a party
    that died (or was interrupted by Ctrl-C) while waiting. It stays broken until reset().

    Derives from ``threading.BrokenBarrierError``, so code written for threading catches it.
    """


class TooManySubscribers(HakobuError):
    """A hakobu.Topic has ``max_subscribers`` subscriptions already (set when it was
    created); subscribing succeeds again once one of them is closed (or its process died)."""


class EndOfStream(HakobuError):
    """The queue is empty and every handle that sent on it has closed: nothing more will
    come. ``for item in queue`` stops here. It lasts until a new sender puts (or opens
    the queue with ``sends=True``): a queue nobody ever sent on never ends."""


class SendersLost(EndOfStream):
    """The queue is empty and every handle that sent on it is gone, but one of them failed
    (``close(failed=True)``) or its process died: what was sent is all received, yet the
    stream may be incomplete. An EndOfStream, so ``except EndOfStream`` sees it too;
    ``for item in queue`` raises it."""


class UnpicklingRefused(HakobuError, _pickle.UnpicklingError):
    """A queue opened with ``allow_pickle=False`` received an object that is not made of plain
    built-in types (None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict,
    set, frozenset); the message names what it asked for.

    Nothing of it was run: the message was consumed and dropped, and the queue goes on.
    If the sender is trusted, open the queue with ``allow_pickle=True`` (the default);
    otherwise have it send arrays, bytes or plain data.
    """


# --- warnings ----------------------------------------------------------------------------


class NoSenderWarning(UserWarning):
    """A blocking get() waited a while on a queue that its own handle created and that nothing
    was ever put on: often a typo in the name, which made a new empty queue.

    The message names the queue, its domain and the domain's queues with similar names.
    Check the name in the producer and the consumer; if the producer simply starts late,
    silence it with ``warnings.filterwarnings("ignore", category=hakobu.NoSenderWarning)``.
    """


class OwnerDied(UserWarning):
    """An acquire took a hakobu.Lock over from a process that died holding it (like EOWNERDEAD).

    The lock is held by the caller now, as after any acquire; what it guarded may have been
    left half-changed by the dead holder, so check it before relying on it. The lock's
    ``owner_died`` attribute is True from that acquire until the handle's next clean one.
    Warned with ``warnings.warn`` at the caller's line; turn it into an exception with
    ``warnings.simplefilter("error", hakobu.OwnerDied)``.
    """


# --- hakobu.Pool and hakobu.Executor ------------------------------------------------------


class WorkerLost(HakobuError, _futures_process.BrokenProcessPool):
    """A pool worker died (a signal, the out-of-memory killer, a crash) while running the task.

    Only that task fails: the pool replaces the worker and goes on (pass
    ``retries=N`` to run such tasks again). It derives from
    ``concurrent.futures.process.BrokenProcessPool`` so that code written for
    ProcessPoolExecutor, which catches that, handles it too. ``worker``, ``pid``,
    ``signal`` (a signal number, or None) and ``exit_code`` (or None) say who
    died and how; ``task`` is the engine's task number.
    """

    def __init__(
        self,
        message: str,
        *,
        worker: int = 0,
        pid: int = 0,
        signal: int | None = None,
        exit_code: int | None = None,
        task: int = 0,
    ) -> None:
        super().__init__(message)
        self.worker = worker
        self.pid = pid
        self.signal = signal
        self.exit_code = exit_code
        self.task = task


class BrokenPool(HakobuError, _futures_process.BrokenProcessPool):
    """The pool cannot run tasks: its initializer failed, or its workers cannot start.

    Every pending task fails with this error and new ones are refused; the
    cause (``__cause__``) is the initializer's exception where there is one.
    Fix the cause and make a new pool.
    """


class PoolTerminated(HakobuError):
    """The pool was terminated (terminate(), leaving a with-block) before the task finished."""


class RemoteTraceback(HakobuError, _RemoteTracebackBase):
    """The formatted traceback of an exception raised in a worker.

    Set as the ``__cause__`` of the exception re-raised in the parent, as
    multiprocessing does, so a printed traceback shows where the task failed.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class RemoteError(HakobuError):
    """A task raised an exception that cannot travel back as itself (it cannot be pickled,
    or not rebuilt in the parent); the message gives its type and text, the cause its traceback."""


class EncodingError(HakobuError, _MaybeEncodingErrorBase):
    """A task's result cannot be pickled to travel back to the parent; the message says why.

    Derives from ``multiprocessing.pool.MaybeEncodingError``, what
    multiprocessing raises in that case.
    """

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.exc = message
        self.value = ""

    def __str__(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r})"


# --- hakobu.Bridge ------------------------------------------------------------------------


class BridgeError(HakobuError):
    """A hakobu.Bridge cannot run or stopped: its endpoint cannot be bound or connected, a
    key file is missing or unreadable, pyzmq is not installed, or the peer answered with
    something this bridge cannot go on with. The message says which and what to do;
    ``Bridge.join()`` re-raises it."""


class PeerTimeout(BridgeError, TimeoutError):
    """A hakobu.Bridge given ``timeout=`` went that long without hearing from its peer (never
    reached, or gone since). Messages not acknowledged by the peer are back in the local
    queue (see Bridge.close); start the bridge again once the other end is up."""


class BridgeInputWarning(UserWarning):
    """A hakobu.Bridge dropped what the network brought because it was malformed: bad frames,
    another protocol version, an unknown kind, sizes that do not match, a message larger
    than ``max_message_bytes``. The message names the peer and what was wrong; the bridge
    goes on, counts it in ``stats()["rejected"]``, and warns at most once a few seconds."""


__all__ = [
    name for name, value in globals().items() if isinstance(value, type) and issubclass(value, Exception)
]

# Last, once every class exists: the core looks up and keeps the class of each
# C++ error kind (it imports nothing of hakobu itself, so there is no cycle).
_core.bind_errors(_sys.modules[__name__])
