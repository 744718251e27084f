"""hakobu.Lock and hakobu.Event: named synchronization between independent programs.

The C++ core (hakobu/sync.hpp, rules in src/sync/sync_layout.hpp) keeps each object in
its own file of the domain, a futex word in shared memory: no daemon, and no system call
when uncontended. These classes give them the API of ``threading.Lock`` and
``threading.Event`` (and ``multiprocessing.Lock``/``Event``), opened by name.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

from . import _checks, _core, _errors

# What _core.Lock.acquire returns (bindings/python/sync.cpp).
_NOT_ACQUIRED = 0
_CLEAN = 1
_OWNER_DIED = 2


def _acquire_wait(blocking: object, timeout: object) -> Optional[float]:
    """The core's wait for ``acquire(blocking, timeout)``, checked as threading.Lock checks it.

    ``timeout=-1`` (the default) and None (as multiprocessing.Lock takes it) mean no limit;
    any other negative value, NaN or a non-number raises InvalidArgument (a ValueError, what threading raises for them).
    A timeout with ``blocking=False`` is refused, as threading refuses it.
    """
    if not isinstance(blocking, int):  # bool or int, as threading takes it (``acquire(0)``)
        raise _errors.InvalidArgument(f"blocking must be True or False, got {blocking!r}")
    block = bool(blocking)
    if timeout == -1 and type(timeout) in (int, float):
        return None if block else 0.0
    if not block:
        if timeout is None:
            return 0.0
        raise _errors.InvalidArgument("can't specify a timeout for a non-blocking call")
    return _checks.timeout(timeout)


class Lock:
    """A mutual-exclusion lock named in a domain, held by a process: ``threading.Lock``'s API
    between any processes of the user, found by ``name``.

    ``create``: None (default) creates the lock or attaches to it, True requires creating
    it, False requires it to exist. ``domain``: None is the default domain.

    Any thread of the holding process may release it (as with threading.Lock); a thread
    that acquires it again without releasing waits for itself. Waits release the GIL and
    Ctrl-C interrupts them (KeyboardInterrupt, the lock not taken).

    **A holder that dies** (killed, crashed) does not leave the lock held for ever: the
    next acquirer takes it over, is warned with ``hakobu.OwnerDied`` (a warning, at its
    own line), and sees ``owner_died`` True until this handle's next clean acquire. What
    the lock guarded may be half-changed then.

    **fork()**: a handle inherited by a forked child raises hakobu.ForkedHandle (a
    RuntimeError) on acquire and release; the child opens the lock again by name.

    The lock outlives the processes that use it, until ``unlink()`` (or
    ``Lock.remove(name)``, ``hakobu rm NAME``).
    """

    def __init__(self, name: str, *, create: Optional[bool] = None, domain: Optional[str] = None) -> None:
        _checks.name(name, "lock")
        if create is not None:
            _checks.flag(create, "create")
        self._core = _core.Lock(name, create, _checks.domain(domain))
        self.owner_died = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Takes the lock, waiting for it (at most ``timeout`` seconds) unless ``blocking`` is false.

        True once held; False if it was not free (non-blocking) or the timeout ran out.
        Taken over from a dead holder: warns hakobu.OwnerDied and sets ``owner_died``.
        """
        if blocking is True and timeout == -1:
            got = self._core.acquire(None)
        else:
            got = self._core.acquire(_acquire_wait(blocking, timeout))
        if got == _CLEAN:  # the common case, without another call
            self.owner_died = False
            return True
        return self._outcome(got, stacklevel=3)

    def _outcome(self, got: int, stacklevel: int) -> bool:
        """What the core's acquire returned, for the caller; ``stacklevel`` makes OwnerDied point
        at the user's line."""
        if got == _NOT_ACQUIRED:
            return False
        if got == _OWNER_DIED:
            self.owner_died = True
            warnings.warn(
                f"lock '{self.name}' in domain '{self.domain}' was taken over from a process that died "
                f"holding it: what it guarded may be half-changed (lock.owner_died is True)",
                _errors.OwnerDied,
                stacklevel=stacklevel,
            )
        else:
            self.owner_died = False
        return True

    def release(self) -> None:
        """Releases the lock held by this process and wakes one waiter.

        Raises hakobu.NotHeld (a RuntimeError) if it is free or another process holds it.
        """
        self._core.release()

    def locked(self) -> bool:
        """Whether any process holds the lock now (a snapshot)."""
        return bool(self._core.info()["held"])

    def info(self) -> dict[str, Any]:
        """A snapshot for people: held, waiters, held_by_this_process, holder_pid, owner_deaths."""
        return dict(self._core.info())

    def __enter__(self) -> bool:
        got = self._core.acquire(None)
        if got == _CLEAN:
            self.owner_died = False
            return True
        return self._outcome(got, stacklevel=3)  # OwnerDied points at the with-statement

    def __exit__(self, *exc_info: object) -> None:
        self._core.release()

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def domain(self) -> str:
        return self._core.domain

    def unlink(self) -> None:
        """Removes the lock's name: handles open now keep working on it; a new open makes a new one."""
        _core.remove_sync(self.name, self.domain)

    @classmethod
    def remove(cls, name: str, domain: Optional[str] = None) -> None:
        """Removes the sync object ``name`` (a lock, an event...) whoever created it.

        Raises NotFound if there is none, InvalidName for a name no object can have.
        """
        _core.remove_sync(_checks.name(name, "lock"), _checks.domain(domain))

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<hakobu.Lock {self.name!r} domain={self.domain!r} {state}>"

    def __reduce__(self) -> Any:
        # Another process gets its own handle on the same lock (never this one's holding).
        return (_reopen, (Lock, self.name, self.domain))


class Event:
    """An event named in a domain: ``threading.Event``'s API between any processes of the
    user, found by ``name``.

    ``create`` and ``domain`` as for hakobu.Lock. A new event is clear. ``set()`` wakes
    every waiter in every process. It has no owner: any process, a forked child too, may
    set or clear it. Waits release the GIL and Ctrl-C interrupts them.
    """

    def __init__(self, name: str, *, create: Optional[bool] = None, domain: Optional[str] = None) -> None:
        _checks.name(name, "event")
        if create is not None:
            _checks.flag(create, "create")
        self._core = _core.Event(name, create, _checks.domain(domain))

    def set(self) -> None:
        """Sets the flag and wakes every waiter."""
        self._core.set()

    def clear(self) -> None:
        """Clears the flag."""
        self._core.clear()

    def is_set(self) -> bool:
        return self._core.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until the flag is set (at most ``timeout`` seconds; None: no limit).

        True if it is set, False if the timeout ran out. NaN or a negative timeout raises
        InvalidArgument.
        """
        return self._core.wait(_checks.timeout(timeout))

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def domain(self) -> str:
        return self._core.domain

    def unlink(self) -> None:
        """Removes the event's name (see Lock.unlink)."""
        _core.remove_sync(self.name, self.domain)

    @classmethod
    def remove(cls, name: str, domain: Optional[str] = None) -> None:
        """Removes the sync object ``name`` whoever created it (see Lock.remove)."""
        _core.remove_sync(_checks.name(name, "event"), _checks.domain(domain))

    def __repr__(self) -> str:
        state = "set" if self.is_set() else "clear"
        return f"<hakobu.Event {self.name!r} domain={self.domain!r} {state}>"

    def __reduce__(self) -> Any:
        return (_reopen, (Event, self.name, self.domain))


def _reopen(cls: type[Lock] | type[Event], name: str, domain: str) -> Lock | Event:
    """Unpickles a Lock or Event: attaches to the object of that name (NotFound if removed since)."""
    return cls(name, create=False, domain=domain)
