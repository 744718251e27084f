"""hakobu's exceptions: one class per kind of error, all under HakobuError.

The C++ core raises these by name (see bindings/python/module.cpp). Where the
standard library has a matching class, ours derives from it too, so existing
``except queue.Empty`` or ``except FileNotFoundError`` code keeps working.
"""

from __future__ import annotations

import queue as _queue


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


class SystemFailure(HakobuError, OSError):
    """Another operating-system error; the message has the details."""


__all__ = [name for name, value in globals().items() if isinstance(value, type) and issubclass(value, Exception)]
