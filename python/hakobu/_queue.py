"""hakobu.Queue: a named queue between processes, for arrays and objects."""

from __future__ import annotations

import asyncio
import difflib
import time
import warnings
from typing import Any, Callable, Optional

from . import _checks, _codec, _core, _errors

# A blocking get() on a queue its own handle created, which nothing was ever put on, warns
# (NoSenderWarning) after waiting this long: a typo in a name makes such a queue. Seconds;
# the tests lower it.
NO_SENDER_WARNING_SECONDS = 5.0

# What Queue._core.get_object hands back for the Python codec to decode (looked up once: get is hot).
_Message = _core.Message


def _wait_time(block: bool, timeout: object) -> Optional[float]:
    """The core's timeout: None waits without a limit, 0 does not wait.

    ``timeout`` is checked even when not blocking: a NaN is a mistake either way.
    """
    if (type(timeout) is float or type(timeout) is int) and 0 <= timeout <= _checks.FOREVER_SECONDS:
        return float(timeout) if block else 0.0  # the common case, without the general path's ABC test
    limit = _checks.timeout(timeout)
    return limit if block else 0.0


class Queue:
    """A named, bounded FIFO between processes; each message goes to one receiver.

    Any process of the same user opens the queue by ``name``. NumPy arrays
    travel with one copy into shared memory and arrive as writable views of it;
    ``bytes`` travel raw; any other picklable object is pickled.

    ``create``: None (default) creates the queue or attaches to it, True
    requires creating it, False requires it to exist. ``capacity`` (messages)
    and ``inline_capacity`` (bytes carried inside a slot, at most 224) apply
    when creating. ``spin`` is how long (seconds) a blocking call spins before
    sleeping; ``float("inf")`` spins without sleeping.

    ``allow_pickle`` (as in ``numpy.load``): unpickling runs code that the
    stream names, so any program that can write the domain could run code in
    this one through an object message. With ``allow_pickle=False`` received
    objects must be made of plain built-in types (None, bool, int, float,
    complex, str, bytes, bytearray, list, tuple, dict, set, frozenset; large
    out-of-band buffers in them arrive as ``bytes``); anything else raises
    hakobu.UnpicklingRefused, having run nothing. The refused message is
    consumed and dropped, and the queue stays usable. Arrays and bytes arrive
    as always. Sending is not affected.

    Timeouts are seconds: None or ``float("inf")`` waits without a limit (so
    does anything beyond about 31 years); NaN and negative values raise
    InvalidArgument (a ValueError), as do floats and bools given for
    capacities, which must be ints.

    A blocking get() that has waited NO_SENDER_WARNING_SECONDS (5 s) on a
    queue this handle created, when nothing was ever put on it, warns once
    with hakobu.NoSenderWarning naming the domain's queues with similar names:
    a typo in a consumer's queue name creates a new empty queue.
    """

    def __init__(
        self,
        name: str,
        capacity: int = 1024,
        *,
        create: Optional[bool] = None,
        domain: Optional[str] = None,
        inline_capacity: int = 224,
        spin: float = 20e-6,
        allow_pickle: bool = True,
    ) -> None:
        _checks.name(name, "queue")
        if create is not None:
            _checks.flag(create, "create")
        self._allow_pickle = _checks.flag(allow_pickle, "allow_pickle")
        self._spin = _checks.duration(spin, "spin")
        # capacity and inline_capacity: the bindings check the type, the core the range.
        self._core = _core.Queue(name, create, capacity, inline_capacity, _checks.domain(domain), self._spin)
        stats = self._core.stats()
        self._inline_capacity: int = stats["inline_capacity"]
        # Watch for a consumer waiting on a queue nobody feeds (see get); False once settled.
        self._watch_for_sender = self._core.is_creator and stats["put_count"] == 0

    # --- sending ---------------------------------------------------------------
    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Sends ``obj``; waits for room (at most ``timeout`` seconds) unless ``block`` is false.

        Raises Full when no room came, Closed or Unlinked when the queue went
        away, InvalidArgument for a NaN or negative timeout.
        """
        # One call into the extension for bytes, numeric arrays and scalars; the codec for the rest.
        wait = (None if block else 0.0) if timeout is None else _wait_time(block, timeout)
        if not self._core.put_object(obj, wait):
            _codec.put_object(self._core, obj, wait)

    def put_nowait(self, obj: Any) -> None:
        """Sends ``obj`` if there is room now, else raises Full."""
        self.put(obj, block=False)

    async def put_async(self, obj: Any, timeout: Optional[float] = None) -> None:
        """Sends ``obj`` without blocking the event loop while waiting for room."""
        await _poll(lambda: self.put(obj, block=False), _errors.Full, _checks.timeout(timeout))

    # --- receiving -------------------------------------------------------------
    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Receives a message; waits (at most ``timeout`` seconds) unless ``block`` is false.

        Raises Empty when none came, Closed or Unlinked when the queue went
        away, InvalidArgument for a NaN or negative timeout, UnpicklingRefused
        for an object this queue does not accept (``allow_pickle=False``).
        """
        wait = (None if block else 0.0) if timeout is None else _wait_time(block, timeout)
        if self._watch_for_sender:
            return self._get_watching(wait)
        # One call: the extension decodes bytes, numeric arrays and small pickles; the codec the rest.
        obj = self._core.get_object(wait, self._allow_pickle)
        return self._decode(obj) if type(obj) is _Message else obj

    def _get_watching(self, wait: Optional[float]) -> Any:
        """get() on a queue this handle created that nothing was put on yet (see NoSenderWarning)."""
        if wait is None or wait > NO_SENDER_WARNING_SECONDS:
            # Wait in two parts: after the first, say so if nobody ever sent anything here.
            started = time.monotonic()
            try:
                obj = self._core.get_object(NO_SENDER_WARNING_SECONDS, self._allow_pickle)
            except _errors.Empty:
                self._warn_if_never_sent(stacklevel=4)
                if wait is not None:
                    wait = max(0.0, wait - (time.monotonic() - started))
            else:
                self._watch_for_sender = False
                return self._decode(obj) if type(obj) is _Message else obj
        obj = self._core.get_object(wait, self._allow_pickle)
        self._watch_for_sender = False  # something was sent: the name is right
        return self._decode(obj) if type(obj) is _Message else obj

    def get_nowait(self) -> Any:
        """Receives a message if one is waiting, else raises Empty."""
        return self.get(block=False)

    async def get_async(self, timeout: Optional[float] = None) -> Any:
        """Receives a message without blocking the event loop while waiting."""
        limit = _checks.timeout(timeout)
        on_long_wait = (lambda: self._warn_if_never_sent(stacklevel=4)) if self._watch_for_sender else None
        return await _poll(lambda: self.get(block=False), _errors.Empty, limit, on_long_wait)

    def _decode(self, message: _core.Message) -> Any:
        return _codec.decode(message, self._allow_pickle)

    def _warn_if_never_sent(self, stacklevel: int) -> None:
        """Warns once (NoSenderWarning) if nothing was ever put on this queue."""
        if not self._watch_for_sender:
            return
        self._watch_for_sender = False  # once per handle, whatever comes next
        if self._core.stats()["put_count"] != 0:
            return
        warnings.warn(_never_sent_message(self.name, self.domain), _errors.NoSenderWarning, stacklevel=stacklevel)

    # --- state -----------------------------------------------------------------
    def qsize(self) -> int:
        """Messages waiting now."""
        return self._core.qsize()

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return self.qsize() >= self.capacity

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def domain(self) -> str:
        """The domain the queue lives in."""
        return self._core.domain

    @property
    def capacity(self) -> int:
        return self._core.capacity

    @property
    def allow_pickle(self) -> bool:
        """Whether received objects may be any pickle (see the class's docstring)."""
        return self._allow_pickle

    @property
    def is_creator(self) -> bool:
        """True for the handle that created the queue (the one that may unlink it)."""
        return self._core.is_creator

    def close(self) -> None:
        """Lets go of the queue in this process; the queue and its messages stay."""
        self._core.close()

    def unlink(self) -> None:
        """Removes the queue's name (creator only); every waiter wakes with Unlinked."""
        self._core.unlink()

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"hakobu.Queue({self.name!r}, capacity={self.capacity}, size={self.qsize()})"

    def __reduce__(self) -> Any:
        # Another process attaches to the same queue: same name and domain (the resolved
        # one: the receiver's default domain may differ), same per-handle settings.
        options = {
            "domain": self.domain,
            "inline_capacity": self._inline_capacity,
            "spin": self._spin,
            "allow_pickle": self._allow_pickle,
        }
        return (_reopen, (self.name, self.capacity, options))


def _reopen(name: str, capacity: int, options: dict[str, Any]) -> Queue:
    """Unpickles a Queue: attaches to the queue it was (NotFound if it was removed since)."""
    return Queue(name, capacity, create=False, **options)


def _never_sent_message(name: str, domain: str) -> str:
    from .cli import domain_files  # how `hakobu ls` finds a domain's queues; imported late (it imports us)

    others = [queue for queue in domain_files(domain).queues if queue != name]
    similar = difflib.get_close_matches(name, others, n=5)
    if similar:
        hint = "queues with similar names in the domain: " + ", ".join(repr(queue) for queue in similar)
    else:
        hint = "no queue of the domain has a similar name"
    return (
        f"get() has waited {NO_SENDER_WARNING_SECONDS:g} s on queue {name!r} of domain {domain!r}, which this "
        f"handle created and nothing was ever put on: is the name right? A mistyped name creates a new, empty "
        f"queue ({hint}). Check the producer's and consumer's names and domains (hakobu ls)."
    )


async def _poll(
    attempt: Callable[[], Any],
    retry_on: type[BaseException],
    timeout: Optional[float],
    on_long_wait: Optional[Callable[[], None]] = None,
) -> Any:
    """Runs a non-blocking ``attempt`` until it succeeds, sleeping between tries.

    ``timeout`` is checked already (None: no limit). ``on_long_wait`` runs once
    after NO_SENDER_WARNING_SECONDS of retries. Cancelling the awaiting task
    never loses a message: no receive is in flight while the task sleeps.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = None if timeout is None else started + timeout
    pause = 50e-6
    while True:
        try:
            return attempt()
        except retry_on:
            if deadline is not None and loop.time() >= deadline:
                raise
        if on_long_wait is not None and loop.time() - started >= NO_SENDER_WARNING_SECONDS:
            on_long_wait()
            on_long_wait = None
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5e-3)
