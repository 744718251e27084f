"""hakobu.Lock, Event, RLock, Semaphore, BoundedSemaphore, Barrier, Condition, Value and
Array: named synchronization between independent programs.

The C++ core (hakobu/sync.hpp, rules in src/sync/sync_layout.hpp) keeps each object in
its own file of the domain, a futex word in shared memory: no daemon, and no system call
when uncontended. These classes give them the API of ``threading``'s classes (and
``multiprocessing``'s, ``multiprocessing.Value``/``Array`` for the last two), opened by name.
Every object pickles as its name: another process (a hakobu.Pool task...) attaches to it.
"""

from __future__ import annotations

import operator
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt

from . import _checks, _core, _errors

_T = TypeVar("_T")

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


def _warn_owner_died(what: str, name: str, domain: str, stacklevel: int) -> None:
    warnings.warn(
        f"{what} '{name}' in domain '{domain}' was taken over from a process that died "
        f"holding it: what it guarded may be half-changed (owner_died is True)",
        _errors.OwnerDied,
        stacklevel=stacklevel + 1,
    )


class _Named:
    """What every named sync object has: its name and domain, unlink, remove, by name."""

    _core: Any

    @property
    def name(self) -> str:
        return str(self._core.name)

    @property
    def domain(self) -> str:
        return str(self._core.domain)

    def unlink(self) -> None:
        """Removes the object's name: handles open now keep working on it (an array's views
        too); a new open of the name makes a new one."""
        _core.remove_sync(self.name, self.domain)

    @classmethod
    def remove(cls, name: str, domain: Optional[str] = None) -> None:
        """Removes the sync object ``name`` (a lock, an event, any kind) whoever created it.

        Raises NotFound if there is none, InvalidName for a name no object can have.
        """
        _core.remove_sync(_checks.name(name, "sync object"), _checks.domain(domain))


class _LockLike:
    """acquire/release/with of anything whose core has Lock's acquire and release: RLock,
    Condition, a Value's or Array's lock. OwnerDied as for hakobu.Lock. Not a named object
    itself: a Value's lock must not unlink the Value."""

    _core: Any
    _what = "lock"
    owner_died: bool

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Takes the lock, waiting for it (at most ``timeout`` seconds) unless ``blocking`` is false.

        True once held; False if it was not free (non-blocking) or the timeout ran out.
        Taken over from a dead holder: warns hakobu.OwnerDied and sets ``owner_died``.
        """
        if blocking is True and timeout == -1:
            got = self._core.acquire(None)
        else:
            got = self._core.acquire(_acquire_wait(blocking, timeout))
        return self._outcome(got, stacklevel=3)

    def _outcome(self, got: int, stacklevel: int) -> bool:
        if got == _NOT_ACQUIRED:
            return False
        self.owner_died = got == _OWNER_DIED
        if self.owner_died:
            _warn_owner_died(self._what, self._core.name, self._core.domain, stacklevel)
        return True

    def release(self) -> None:
        """Releases the lock; hakobu.NotHeld (a RuntimeError) if this process (an RLock: this
        thread) does not hold it."""
        self._core.release()

    def __enter__(self) -> bool:
        return self._outcome(self._core.acquire(None), stacklevel=3)

    def __exit__(self, *exc_info: object) -> None:
        self._core.release()


class Lock(_LockLike, _Named):
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

    _core: _core.Lock

    def __init__(self, name: str, *, create: Optional[bool] = None, domain: Optional[str] = None) -> None:
        _checks.name(name, "lock")
        if create is not None:
            _checks.flag(create, "create")
        self._core = _core.Lock(name, create, _checks.domain(domain))
        self.owner_died = False

    def locked(self) -> bool:
        """Whether any process holds the lock now (a snapshot)."""
        return bool(self._core.info()["held"])

    def info(self) -> dict[str, Any]:
        """A snapshot for people: held, waiters, held_by_this_process, holder_pid, owner_deaths."""
        return dict(self._core.info())

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<hakobu.Lock {self.name!r} domain={self.domain!r} {state}>"

    def __reduce__(self) -> Any:
        # Another process gets its own handle on the same lock (never this one's holding).
        return (_reopen, (Lock, self.name, self.domain))


class Event(_Named):
    """An event named in a domain: ``threading.Event``'s API between any processes of the
    user, found by ``name``.

    ``create`` and ``domain`` as for hakobu.Lock. A new event is clear. ``set()`` wakes
    every waiter in every process. It has no owner: any process, a forked child too, may
    set or clear it. Waits release the GIL and Ctrl-C interrupts them.
    """

    _core: _core.Event

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

    def __repr__(self) -> str:
        state = "set" if self.is_set() else "clear"
        return f"<hakobu.Event {self.name!r} domain={self.domain!r} {state}>"

    def __reduce__(self) -> Any:
        return (_reopen, (Event, self.name, self.domain))


def _reopen(cls: Callable[..., _T], name: str, domain: str, *args: Any) -> _T:
    """Unpickles a sync object: attaches to the object of that name (NotFound if removed since)."""
    return cls(name, *args, create=False, domain=domain)


def _open_args(
    name: str, what: str, create: Optional[bool], domain: Optional[str]
) -> tuple[Optional[bool], str]:
    """Checks what every sync class takes: the name, ``create`` and ``domain``."""
    _checks.name(name, what)
    if create is not None:
        _checks.flag(create, "create")
    return create, _checks.domain(domain)


class RLock(_LockLike, _Named):
    """A recursive lock named in a domain: ``threading.RLock``'s API between any processes of
    the user, found by ``name`` (``create`` and ``domain`` as for hakobu.Lock).

    Owned by one thread of one process, which may acquire it again; it is free once that
    thread released it as many times. Only the owner thread may release it (else
    hakobu.NotHeld, a RuntimeError, as threading's). An owner process that dies hands it to
    the next acquirer with a hakobu.OwnerDied warning and ``owner_died`` True, as Lock.
    """

    _what = "rlock"
    _core: _core.RLock

    def __init__(self, name: str, *, create: Optional[bool] = None, domain: Optional[str] = None) -> None:
        self._core = _core.RLock(name, *_open_args(name, "rlock", create, domain))
        self.owner_died = False

    def info(self) -> dict[str, Any]:
        """A snapshot: held, waiters, held_by_this_process, holder_pid, owner_deaths, depth (this thread's)."""
        return dict(self._core.info())

    def __repr__(self) -> str:
        i = self._core.info()
        return f"<hakobu.RLock {self.name!r} domain={self.domain!r} {'locked' if i['held'] else 'unlocked'}>"

    def __reduce__(self) -> Any:
        return (_reopen, (RLock, self.name, self.domain))


def _count(value: object, what: str) -> int:
    """A count of a semaphore or barrier: an int from 0 to 2^31 - 1."""
    number = _checks.count(value, what)
    if number > 2**31 - 1:
        raise _errors.InvalidArgument(f"{what} must be at most 2^31 - 1, got {number}")
    return number


class Semaphore(_Named):
    """A counting semaphore named in a domain: ``threading.Semaphore``'s API between any
    processes of the user, found by ``name`` (``create`` and ``domain`` as for hakobu.Lock).

    ``value`` is the count of a new semaphore (0 to 2^31 - 1). Attaching to an existing one
    keeps its count whatever ``value`` says: the count is the semaphore's live state, and
    the core ignores it when attaching (a BoundedSemaphore, whose ``value`` is a fixed bound,
    checks it: Incompatible if it differs).

    Counts a process acquired are recorded for it: when it dies (SIGKILL too), a waiter that
    finds no count gets them back. A release without an acquire (signalling) just adds one.
    Waits release the GIL; Ctrl-C interrupts them (KeyboardInterrupt, no count taken).
    """

    _core: _core.Semaphore

    _bounded = False

    def __init__(
        self, name: str, value: int = 1, *, create: Optional[bool] = None, domain: Optional[str] = None
    ) -> None:
        what = "bounded semaphore" if self._bounded else "semaphore"
        count = _count(value, "value")
        self._core = _core.Semaphore(name, count, self._bounded, *_open_args(name, what, create, domain))

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        """Takes one count, waiting for one (at most ``timeout`` seconds; None: no limit) unless
        ``blocking`` is false. True once taken, False if there was none in time."""
        if blocking is True and timeout is None:
            return self._core.acquire(None)
        if timeout is None:
            timeout = -1
        return self._core.acquire(_acquire_wait(blocking, timeout))

    def release(self, n: int = 1) -> None:
        """Adds ``n`` counts and wakes up to ``n`` waiters. A BoundedSemaphore raises
        hakobu.TooManyReleases (a ValueError) rather than pass its initial value."""
        if n == 1 and type(n) is int:
            self._core.release(1)
            return
        number = _count(n, "n")
        if number < 1:
            raise _errors.InvalidArgument("n must be one or more")
        self._core.release(number)

    __enter__ = acquire

    def __exit__(self, *exc_info: object) -> None:
        self._core.release(1)

    def get_value(self) -> int:
        """The counts free now (a snapshot)."""
        return int(self._core.info()["value"])

    def info(self) -> dict[str, Any]:
        """A snapshot: value, bound, waiters, held_by_this_process, holders, returned, maybe_leaked."""
        return dict(self._core.info())

    def __repr__(self) -> str:
        return f"<hakobu.{type(self).__name__} {self.name!r} domain={self.domain!r} value={self.get_value()}>"

    def __reduce__(self) -> Any:
        bound = int(self._core.info()["bound"])
        return (_reopen, (type(self), self.name, self.domain, bound if self._bounded else 1))


class BoundedSemaphore(Semaphore):
    """A semaphore whose count may never pass its initial ``value``: ``threading.BoundedSemaphore``.

    A release that would pass it raises hakobu.TooManyReleases (a ValueError). Attaching with
    another ``value`` than the semaphore's raises Incompatible (the bound is fixed at creation).
    """

    _bounded = True


class Barrier(_Named):
    """A barrier named in a domain: ``threading.Barrier``'s API for ``parties`` waits in any
    threads of any processes of the user, found by ``name`` (``create``, ``domain`` as for Lock).

    ``wait()`` returns this party's arrival index, 0 to parties - 1, distinct in each trip.
    ``action`` is not taken: across processes there is no one place to run it. Run it
    yourself where ``wait()`` returned 0 (one party in each trip gets 0), as threading's
    documentation suggests.

    Attaching with another ``parties`` raises Incompatible. A party that dies while waiting,
    a timeout, ``abort()`` or ``reset()`` break it: waiters raise hakobu.BrokenBarrierError (a
    ``threading.BrokenBarrierError``) and it stays broken until ``reset()``. A wait
    interrupted by Ctrl-C aborts the barrier (the party will never arrive; an arrival cannot
    be taken back across processes), then raises KeyboardInterrupt.
    """

    _core: _core.Barrier

    def __init__(
        self,
        name: str,
        parties: int,
        timeout: Optional[float] = None,
        *,
        create: Optional[bool] = None,
        domain: Optional[str] = None,
    ) -> None:
        number = _checks.count(parties, "parties")
        if not 1 <= number <= 65535:
            raise _errors.InvalidArgument(f"parties must be from 1 to 65535, got {number}")
        self._timeout = _checks.timeout(timeout)
        self._core = _core.Barrier(name, number, *_open_args(name, "barrier", create, domain))

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for every party (at most ``timeout`` seconds; None: the barrier's default).

        Returns the arrival index; raises hakobu.BrokenBarrierError if the barrier is or gets
        broken, including by this wait's timeout (which breaks it for everyone, as threading)."""
        limit = self._timeout if timeout is None else _checks.timeout(timeout)
        return self._core.wait(limit, threading.current_thread() is threading.main_thread())

    def reset(self) -> None:
        """Back to empty and unbroken; parties waiting now get BrokenBarrierError."""
        self._core.reset()

    def abort(self) -> None:
        """Breaks the barrier: waiters now and later get BrokenBarrierError until reset()."""
        self._core.abort()

    @property
    def parties(self) -> int:
        return self._core.parties

    @property
    def n_waiting(self) -> int:
        """Parties waiting in the current trip (a snapshot)."""
        return self._core.n_waiting

    @property
    def broken(self) -> bool:
        return self._core.broken

    def __repr__(self) -> str:
        return (
            f"<hakobu.Barrier {self.name!r} domain={self.domain!r} waiters={self.n_waiting}/{self.parties}"
            f"{' broken' if self.broken else ''}>"
        )

    def __reduce__(self) -> Any:
        return (_reopen, (Barrier, self.name, self.domain, self.parties, self._timeout))


class Condition(_LockLike, _Named):
    """A condition variable named in a domain: ``threading.Condition``'s API between any
    processes of the user, found by ``name`` (``create`` and ``domain`` as for hakobu.Lock).

    ``lock``: a hakobu.Lock to bind it to (every opener must give the same lock's name, else
    Incompatible), or None for the condition's own lock. A hakobu.RLock cannot be bound.
    ``with cond:`` takes the lock (OwnerDied as for Lock).

    ``wait()`` releases the lock, sleeps until notified (at most ``timeout``), and holds the
    lock again on return, always: after the timeout it waits for the lock as long as it
    takes (interruptibly), as threading's does, so the ``with`` block's invariant holds.
    Waiters may wake without a notify: re-check the predicate, or use ``wait_for``. Ctrl-C
    interrupts a wait with the lock held again (KeyboardInterrupt).
    """

    _what = "condition's lock"
    _core: _core.Condition

    def __init__(
        self,
        name: str,
        lock: Optional[Lock] = None,
        *,
        create: Optional[bool] = None,
        domain: Optional[str] = None,
    ) -> None:
        if lock is not None and not isinstance(lock, Lock):
            raise _errors.InvalidArgument(f"lock must be a hakobu.Lock or None, got {type(lock).__name__}")
        created, domain_name = _open_args(name, "condition", create, domain)
        if lock is not None and lock.domain != (domain_name or lock.domain):
            raise _errors.InvalidArgument(
                f"lock '{lock.name}' is in domain '{lock.domain}', not '{domain_name}'"
            )
        if lock is not None and not domain_name:
            domain_name = lock.domain
        self._lock = lock
        self._core = _core.Condition(name, None if lock is None else lock._core, created, domain_name)
        self.owner_died = False

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits for a notify (at most ``timeout`` seconds; None: no limit), the lock held.

        False if the timeout ran out. hakobu.NotHeld if this process does not hold the lock."""
        notified, lock = self._core.wait(_checks.timeout(timeout))
        self._outcome(lock, stacklevel=3)
        return notified

    def wait_for(self, predicate: Callable[[], _T], timeout: Optional[float] = None) -> _T:
        """Waits until ``predicate()`` (called with the lock held) is true, at most ``timeout``;
        returns its last value, as threading's."""
        limit = _checks.timeout(timeout)
        end = None if limit is None else time.monotonic() + limit
        result = predicate()
        while not result:
            left = None
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    break
            _, lock = self._core.wait(left)
            self._outcome(lock, stacklevel=3)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wakes up to ``n`` waiters (in any process); the lock must be held (else NotHeld)."""
        number = _count(n, "n")
        if number == 0:
            return
        self._core.notify(number)

    def notify_all(self) -> None:
        """Wakes every waiter; the lock must be held (else NotHeld)."""
        self._core.notify_all()

    @property
    def lock(self) -> Optional[Lock]:
        """The bound hakobu.Lock, or None for the condition's own."""
        return self._lock

    def __repr__(self) -> str:
        bound = f" lock={self._core.lock_name!r}" if self._core.lock_name else ""
        return f"<hakobu.Condition {self.name!r} domain={self.domain!r}{bound}>"

    def __reduce__(self) -> Any:
        return (_reopen_condition, (self.name, self.domain, self._core.lock_name))


def _reopen_condition(name: str, domain: str, lock_name: str) -> Condition:
    lock = Lock(lock_name, create=False, domain=domain) if lock_name else None
    return Condition(name, lock, create=False, domain=domain)


# --- Value and Array --------------------------------------------------------------------

# NumPy kind -> the core's DTypeCode (include/hakobu/array.hpp).
_CODES = {"i": 0, "u": 1, "f": 2, "c": 5, "b": 6}
_KINDS = {code: kind for kind, code in _CODES.items()}

DTypeLike = Union[str, type, np.dtype[Any]]


def _dtype(typecode_or_dtype: object) -> np.dtype[Any]:
    """A NumPy dtype from a typecode ('i', 'd', 'q'... as multiprocessing's) or anything
    NumPy takes; InvalidArgument for one the core cannot hold (not a native number)."""
    try:
        dtype: np.dtype[Any] = np.dtype(typecode_or_dtype)  # type: ignore[call-overload]
    except TypeError:
        raise _errors.InvalidArgument(f"not a dtype or typecode: {typecode_or_dtype!r}") from None
    if dtype.kind not in _CODES or dtype.fields is not None or dtype.subdtype is not None:
        raise _errors.InvalidArgument(f"{dtype} is not a number type (int, uint, float, complex or bool)")
    if not dtype.isnative:
        raise _errors.InvalidArgument(f"{dtype} is not in this machine's byte order")
    return dtype


class _ArrayLock(_LockLike):
    """The lock of a hakobu.Value or Array (``get_lock()``): acquire/release/``with``, as
    hakobu.Lock's (not recursive: a thread that acquires it twice waits for itself)."""

    _what = "lock of"

    def __init__(self, core: Any) -> None:
        self._core = core
        self.owner_died = False

    def __repr__(self) -> str:
        return f"<hakobu lock of {self._core.name!r}>"


class _Shared(_Named):
    """What Value and Array share: the core handle, the NumPy view, the lock, atomics."""

    _core: Any
    _view: npt.NDArray[Any]
    _lock: _ArrayLock
    _integer: bool
    _min: int
    _mask: int

    def _setup(self, core: Any, dtype: np.dtype[Any]) -> None:
        self._core = core
        self._lock = _ArrayLock(core)
        self._view = np.frombuffer(core, dtype=dtype).reshape(tuple(core.shape))
        self._integer = dtype.kind in "iu"
        if self._integer:
            info = np.iinfo(dtype)
            self._min, self._max, self._mask = int(info.min), int(info.max), (1 << (8 * dtype.itemsize)) - 1

    def get_lock(self) -> _ArrayLock:
        """The object's lock (one per name, shared by every process): ``with v.get_lock(): ...``."""
        return self._lock

    def get_obj(self) -> npt.NDArray[Any]:
        """The NumPy view of the shared data (as multiprocessing's get_obj)."""
        return self._view

    def _integer_arg(self, value: object, what: str) -> int:
        if not self._integer:
            raise _errors.InvalidArgument(f"atomics need an integer dtype, this one is {self._view.dtype}")
        try:
            number = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise _errors.InvalidArgument(f"{what} must be an int, got {value!r}") from None
        return number

    def _in_range(self, value: object, what: str) -> int:
        number = self._integer_arg(value, what)
        if not self._min <= number <= self._max:
            raise _errors.InvalidArgument(f"{what} {number} does not fit {self._view.dtype}")
        return number & self._mask

    def _fetch_add(self, index: int, n: object) -> int:
        # Wraps like NumPy integers: the low bits of n are added.
        return int(self._core.fetch_add(index, self._integer_arg(n, "n") & self._mask))

    def _compare_exchange(self, index: int, expected: object, new: object) -> bool:
        swapped, _ = self._core.compare_exchange(
            index, self._in_range(expected, "expected"), self._in_range(new, "new")
        )
        return bool(swapped)

    @property
    def dtype(self) -> np.dtype[Any]:
        dtype: np.dtype[Any] = self._view.dtype
        return dtype


class Value(_Shared):
    """One number named in a domain, like ``multiprocessing.Value`` but found by ``name`` from
    any process of the user (``create`` and ``domain`` as for hakobu.Lock).

    ``typecode_or_dtype``: a typecode as multiprocessing's ('i', 'd', 'q'...) or a NumPy
    dtype of a number. ``initial`` is the value of a new one; attaching leaves it as it is.
    Attaching with another dtype raises Incompatible.

    ``value`` of an integer dtype is an atomic load and store; ``add(n)`` (returns the value
    before, wrapping as NumPy integers) and ``compare_exchange(expected, new)`` are atomic
    read-modify-writes without the lock. ``v.value += 1`` is a load then a store, not atomic:
    use ``add(1)``, or hold ``get_lock()`` around it. Other dtypes read and write plainly:
    hold ``get_lock()`` to combine operations.
    """

    def __init__(
        self,
        name: str,
        typecode_or_dtype: DTypeLike,
        initial: Any = 0,
        *,
        create: Optional[bool] = None,
        domain: Optional[str] = None,
    ) -> None:
        dtype = _dtype(typecode_or_dtype)
        try:
            first = np.array(initial, dtype=dtype)
        except (TypeError, ValueError, OverflowError) as e:
            raise _errors.InvalidArgument(f"initial {initial!r} is not a {dtype}: {e}") from None
        if first.shape != ():
            raise _errors.InvalidArgument(f"initial must be one number, got shape {first.shape}")
        created, domain_name = _open_args(name, "value", create, domain)
        core = _core.SharedArray(
            name, _CODES[dtype.kind], dtype.itemsize * 8, 1, [], first.tobytes(), created, domain_name
        )
        self._setup(core, dtype)

    @property
    def value(self) -> Any:
        if self._integer:
            return self._core.load(0)
        return self._view[()].item()

    @value.setter
    def value(self, new: Any) -> None:
        if self._integer:
            self._core.store(0, self._in_range(new, "value"))
        else:
            self._view[()] = new

    def add(self, n: int = 1) -> int:
        """Adds ``n`` atomically (integers only); returns the value before."""
        return self._fetch_add(0, n)

    fetch_add = add

    def compare_exchange(self, expected: int, new: int) -> bool:
        """Stores ``new`` if the value is ``expected``, atomically (integers only); True if it did."""
        return self._compare_exchange(0, expected, new)

    def __repr__(self) -> str:
        return f"<hakobu.Value {self.name!r} domain={self.domain!r} {self.dtype} {self.value!r}>"

    def __reduce__(self) -> Any:
        return (_reopen, (Value, self.name, self.domain, self.dtype.str))


class Array(_Shared):
    """Numbers named in a domain, like ``multiprocessing.Array`` but found by ``name`` from any
    process of the user, and with a shape (``create`` and ``domain`` as for hakobu.Lock).

    ``shape_or_size``: an int or a tuple; a new array is zeros. Attaching with another dtype
    or shape raises Incompatible. ``array`` (and ``np.asarray(a)``) is a writable NumPy view
    of the shared data: writes are seen by every process at once, without the lock; hold
    ``get_lock()`` to combine operations. ``a[i]``, ``a[i] = x``, ``len(a)`` index the view.
    For integer dtypes ``add(index, n)`` and ``compare_exchange(index, expected, new)`` are
    atomic on one element (``index`` into the flattened array).
    """

    def __init__(
        self,
        name: str,
        typecode_or_dtype: DTypeLike,
        shape_or_size: Union[int, tuple[int, ...]],
        *,
        create: Optional[bool] = None,
        domain: Optional[str] = None,
    ) -> None:
        dtype = _dtype(typecode_or_dtype)
        if isinstance(shape_or_size, tuple):
            shape = [_checks.count(n, "shape") for n in shape_or_size]
        else:
            shape = [_checks.count(shape_or_size, "size")]
        if len(shape) > 64:
            raise _errors.InvalidArgument(f"at most 64 dimensions, got {len(shape)}")
        _checks.byte_size(tuple(shape), dtype.itemsize)
        created, domain_name = _open_args(name, "array", create, domain)
        core = _core.SharedArray(
            name, _CODES[dtype.kind], dtype.itemsize * 8, 1, shape, None, created, domain_name
        )
        self._setup(core, dtype)

    @property
    def array(self) -> npt.NDArray[Any]:
        """The writable NumPy view of the shared data."""
        return self._view

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._view.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        if dtype is None or np.dtype(dtype) == self._view.dtype:
            return self._view
        return self._view.astype(dtype)

    def __len__(self) -> int:
        return len(self._view)

    def __getitem__(self, index: Any) -> Any:
        return self._view[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        self._view[index] = value

    def __iter__(self) -> Iterator[Any]:
        return iter(self._view)

    def _flat_index(self, index: object) -> int:
        number = _checks.count(index, "index")
        if number >= self._view.size:
            raise IndexError(f"index {number} is out of range for {self._view.size} elements")
        return number

    def add(self, index: int, n: int = 1) -> int:
        """Adds ``n`` to element ``index`` (of the flattened array) atomically; the value before."""
        return self._fetch_add(self._flat_index(index), n)

    fetch_add = add

    def compare_exchange(self, index: int, expected: int, new: int) -> bool:
        """Stores ``new`` in element ``index`` if it is ``expected``, atomically; True if it did."""
        return self._compare_exchange(self._flat_index(index), expected, new)

    def __repr__(self) -> str:
        return f"<hakobu.Array {self.name!r} domain={self.domain!r} {self.dtype} shape={self.shape}>"

    def __reduce__(self) -> Any:
        return (_reopen, (Array, self.name, self.domain, self.dtype.str, self.shape))
