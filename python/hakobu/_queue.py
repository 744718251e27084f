"""hakobu.Queue: a named queue between processes, for arrays and objects."""

from __future__ import annotations

import asyncio
import atexit
import collections
import difflib
import sys
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable, Optional, Protocol

from . import _checks, _codec, _core, _errors

# A blocking get() on a queue its own handle created, which nothing was ever put on, warns
# (NoSenderWarning) after waiting this long: a typo in a name makes such a queue. Seconds;
# the tests lower it.
NO_SENDER_WARNING_SECONDS = 5.0

# An event loop waiting on an empty queue whose senders could die unnoticed tries again
# this often (a waiting thread's get checks as often: kSenderCheckNs in the core).
SENDER_CHECK_SECONDS = 0.1

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
    when creating.

    ``latency`` is how this handle's blocking calls wait: ``"adaptive"``
    (default) spins while its recent waits say a message (or room) is near,
    within a budget of a quarter of a core while nothing arrives, then sleeps;
    ``"spin"`` spins until the deadline and never sleeps (for a dedicated
    core); ``"sleep"`` never spins. ``spin`` (seconds) asks for a fixed spin
    before sleeping instead: 0 is ``"sleep"``, ``float("inf")`` is ``"spin"``.
    The ``latency`` property changes the mode later. ``get_async`` and
    ``put_async`` spin as the mode says (at most ASYNC_SPIN_LIMIT, holding
    the loop) before they wait on a descriptor the event loop watches.

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

    ``max_bytes`` (when creating) bounds the payload bytes the queue holds
    besides the ``capacity`` in messages: None (default) is half of the
    shared-memory file system (/dev/shm), 0 no limit. A put waits while the
    queue is at its limit, as on a full queue (``put_nowait`` raises Full); a
    message is always let in when the queue holds none, so one message may be
    larger than the limit.

    End of stream: a handle becomes one of the queue's senders with its first
    put (or at once with ``sends=True``). When the queue is empty and every
    sender has closed (``close()``) or its process died, ``get`` raises
    EndOfStream instead of waiting forever, and ``for item in queue`` stops;
    if one of them failed (``close(failed=True)``) or died, it raises
    SendersLost (an EndOfStream), which iteration lets through. The end lasts
    until a new sender comes; a queue nobody ever sent on never ends. Dead
    senders are noticed within about 0.1 s by a waiting receiver. A program
    that ends with an uncaught exception closes the queues it sent on as
    failed (noted by ``sys.excepthook`` as set when hakobu was imported).

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
        spin: Optional[float] = None,
        allow_pickle: bool = True,
        latency: Optional[str] = None,
        max_bytes: Optional[int] = None,
        sends: bool = False,
    ) -> None:
        _checks.name(name, "queue")
        if create is not None:
            _checks.flag(create, "create")
        self._allow_pickle = _checks.flag(allow_pickle, "allow_pickle")
        self._latency, self._spin = _latency_setting(latency, spin)
        # capacity and inline_capacity: the bindings check the type, the core the range.
        self._core = _core.Queue(
            name,
            create,
            capacity,
            inline_capacity,
            _checks.domain(domain),
            self._spin,
            max_bytes=max_bytes,
            sends=_checks.flag(sends, "sends"),
        )
        self._core.set_latency(self._latency, self._spin)
        stats = self._core.stats()
        self._inline_capacity: int = stats["inline_capacity"]
        _open_queues.add(self)
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
        """Sends ``obj`` without blocking the event loop while waiting for room.

        Waits on a descriptor the loop watches, which a get in any process
        signals (see get_async). Raises Full when ``timeout`` (seconds) ran
        out; cancelling it sends nothing.
        """
        limit = _checks.timeout(timeout)
        core = self._core
        await _wait_async(
            core,
            True,
            lambda: self.put(obj, block=False),
            _errors.Full,
            limit,
            lambda: core.qsize() < core.capacity,
        )

    # --- receiving -------------------------------------------------------------
    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Receives a message; waits (at most ``timeout`` seconds) unless ``block`` is false.

        Raises Empty when none came, EndOfStream (or SendersLost) when the
        queue is empty and its senders are gone, Closed or Unlinked when the
        queue went away, InvalidArgument for a NaN or negative timeout,
        UnpicklingRefused for an object this queue does not accept
        (``allow_pickle=False``).
        """
        wait = (None if block else 0.0) if timeout is None else _wait_time(block, timeout)
        if self._watch_for_sender:
            return self._get_watching(wait)
        # One call: the extension decodes bytes, numeric arrays and small pickles; the codec the rest.
        obj = self._core.get_object(wait, self._allow_pickle)
        return self._received(obj)

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
                return self._received(obj)
        obj = self._core.get_object(wait, self._allow_pickle)
        self._watch_for_sender = False  # something was sent: the name is right
        return self._received(obj)

    def __iter__(self) -> Iterator[Any]:
        """Receives until the end of the stream: stops at EndOfStream, lets SendersLost through."""
        while True:
            try:
                item = self.get()
            except _errors.SendersLost:
                raise
            except _errors.EndOfStream:
                return
            yield item

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for``: get_async until the end of the stream (as ``for``)."""
        return self._items_async()

    async def _items_async(self) -> AsyncIterator[Any]:
        while True:
            try:
                item = await self.get_async()
            except _errors.SendersLost:
                raise
            except _errors.EndOfStream:
                return
            yield item

    def _received(self, obj: Any) -> Any:
        """What get_object returned: the object itself, or a Message for the Python codec."""
        return self._decode(obj) if type(obj) is _Message else obj

    def get_nowait(self) -> Any:
        """Receives a message if one is waiting, else raises Empty."""
        return self.get(block=False)

    async def get_async(self, timeout: Optional[float] = None) -> Any:
        """Receives a message without blocking the event loop while waiting.

        No polling: the task waits on a descriptor the event loop watches,
        which a put in any process signals, so an idle waiter costs no CPU.
        Before that it spins as the handle's ``latency`` says (at most
        ASYNC_SPIN_LIMIT). Raises Empty when ``timeout`` (seconds) ran out;
        cancelling it at any point takes nothing from the queue.
        """
        limit = _checks.timeout(timeout)
        on_long_wait = (lambda: self._warn_if_never_sent(stacklevel=4)) if self._watch_for_sender else None
        core = self._core
        return await _wait_async(
            core,
            False,
            lambda: self.get(block=False),
            _errors.Empty,
            limit,
            lambda: core.qsize() > 0,
            on_long_wait,
            # Senders of other processes may die unnoticed: look again now and then.
            recheck=lambda: SENDER_CHECK_SECONDS if core.stats()["senders"] else None,
        )

    def _decode(self, message: _core.Message) -> Any:
        return _codec.decode(message, self._allow_pickle)

    def _warn_if_never_sent(self, stacklevel: int) -> None:
        """Warns once (NoSenderWarning) if nothing was ever put on this queue."""
        if not self._watch_for_sender:
            return
        self._watch_for_sender = False  # once per handle, whatever comes next
        if self._core.stats()["put_count"] != 0:
            return
        warnings.warn(
            _never_sent_message(self.name, self.domain), _errors.NoSenderWarning, stacklevel=stacklevel
        )

    # --- state -----------------------------------------------------------------
    def qsize(self) -> int:
        """Messages waiting now."""
        return self._core.qsize()

    def empty(self) -> bool:
        return self.qsize() == 0

    def stats(self) -> dict[str, Any]:
        """A snapshot: ``size``, ``capacity``, ``bytes`` (payload bytes waiting),
        ``max_bytes`` (0: no limit), ``senders`` (handles counted as senders),
        ``ended`` (empty, and the senders are gone), ``senders_lost`` (one of them
        failed or died), ``receivers_waiting`` and ``senders_waiting`` (threads asleep and event
        loops waiting to get / for room, in every process), ``put_count``, ``get_count``,
        ``inline_capacity``, ``creator_pid``."""
        return dict(self._core.stats())

    @property
    def max_bytes(self) -> int:
        """Payload bytes the queue holds at most (0: no limit)."""
        return int(self._core.stats()["max_bytes"])

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

    @property
    def latency(self) -> str:
        """How blocking calls wait: "adaptive", "spin", "sleep", or "fixed" (a ``spin`` given in seconds)."""
        return self._latency

    @latency.setter
    def latency(self, mode: str) -> None:
        self._latency, self._spin = _latency_setting(mode, None)
        self._core.set_latency(self._latency, self._spin)

    def close(self, failed: bool = False) -> None:
        """Lets go of the queue in this process; the queue and its messages stay.

        If this handle sent on the queue, its part of the stream ends: when it
        was the last sender, receivers get EndOfStream once the queue is empty,
        or SendersLost with ``failed=True`` (this sender stopped early).
        """
        self._core.close(_checks.flag(failed, "failed"))

    def unlink(self) -> None:
        """Removes the queue's name (creator only); every waiter wakes with Unlinked."""
        self._core.unlink()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self.close(failed=exc_type is not None)  # a block left by an exception stopped early

    def __repr__(self) -> str:
        return f"hakobu.Queue({self.name!r}, capacity={self.capacity}, size={self.qsize()})"

    def __reduce__(self) -> Any:
        # Another process attaches to the same queue: same name and domain (the resolved
        # one: the receiver's default domain may differ), same per-handle settings.
        options = {
            "domain": self.domain,
            "inline_capacity": self._inline_capacity,
            "latency": None if self._latency == "fixed" else self._latency,
            "spin": self._spin if self._latency == "fixed" else None,
            "allow_pickle": self._allow_pickle,
        }  # not ``sends``: the other process's handle is a sender once it puts
        return (_reopen, (self.name, self.capacity, options))


# A program that ends with an uncaught exception failed: the queues it sent on end as
# failed (receivers get SendersLost, not a clean EndOfStream that would pass for the whole
# stream). The hook only notes it; the queues are closed at exit, after the program's
# other threads finished (they may still send until then).
_open_queues: weakref.WeakSet[Queue] = weakref.WeakSet()
_failing = False


def _note_failure(hook: Callable[..., Any]) -> Callable[..., Any]:
    def noting(*args: Any) -> Any:
        global _failing
        _failing = True
        return hook(*args)

    return noting


def _fail_open_queues() -> None:
    if _failing:
        for queue in list(_open_queues):
            queue._core.close(True)  # only a sending handle's stream is marked


sys.excepthook = _note_failure(sys.excepthook)
atexit.register(_fail_open_queues)


def _reopen(name: str, capacity: int, options: dict[str, Any]) -> Queue:
    """Unpickles a Queue: attaches to the queue it was (NotFound if it was removed since)."""
    return Queue(name, capacity, create=False, **options)


def _never_sent_message(name: str, domain: str) -> str:
    others = [queue for _path, kind, queue in _core.domain_files(domain) if kind == "queue" and queue != name]
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


# --- waiting modes ---------------------------------------------------------------------

LATENCY_MODES = ("adaptive", "spin", "sleep")
_DEFAULT_FIXED_SPIN = 20e-6  # latency="fixed" without a spin: the spin of earlier versions


def _latency_setting(latency: object, spin: object) -> tuple[str, float]:
    """The core's (mode, fixed spin in seconds) for the ``latency=`` and ``spin=`` arguments."""
    if spin is not None:
        seconds = _checks.duration(spin, "spin")
        if latency not in (None, "fixed"):
            raise _errors.InvalidArgument(
                f"give latency={latency!r} or spin= (a fixed spin in seconds), not both"
            )
        if seconds == 0:
            return "sleep", 0.0
        if seconds >= _checks.FOREVER_SECONDS:
            return "spin", 0.0
        return "fixed", seconds
    if latency is None:
        return "adaptive", 0.0
    if latency == "fixed":
        return "fixed", _DEFAULT_FIXED_SPIN
    if not isinstance(latency, str) or latency not in LATENCY_MODES:
        raise _errors.InvalidArgument(
            f"latency must be one of {', '.join(map(repr, LATENCY_MODES))} (or give spin= seconds for a fixed "
            f"spin), got {latency!r}"
        )
    return latency, 0.0


# --- asyncio without polling -------------------------------------------------------------
#
# Each event loop has one WakeSocket (a datagram socket in the abstract namespace)
# that it watches with add_reader. A task that finds a queue empty (full, for
# put_async) registers the socket in the queue's watcher table with a cookie
# naming (queue handle, side), then tries again, then awaits a future. A topic's
# subscriber (hakobu.Topic) waits the same way on its readable side: the code
# below takes any core with watch/unwatch/spin_until_ready (_Watchable). Every put
# (get) in any process that finds the table non-empty sends the cookie there;
# closing or unlinking the queue does too. The reader wakes one future per
# datagram; a task that takes a message and still sees messages (room) wakes the
# next one, so a datagram dropped on a full socket queue delays nobody, and a
# task that was woken but cancelled passes its wake-up on. Closed and Unlinked
# wake every waiter of the handle. While no task waits on a side, the loop
# unregisters it, so putters pay nothing.

# How long get_async / put_async may spin (as the handle's latency mode says;
# holding up the event loop, without the GIL) before they wait on the descriptor.
ASYNC_SPIN_LIMIT = 500e-6
# With the queue's watcher table full (16 loops of other processes watch it), look again this often.
_FULL_TABLE_RECHECK = 1e-3
# A signal can be lost without anyone failing: a datagram dropped on a full socket
# buffer, or an entry a putter cleared because it could not reach the socket (a
# process in another network namespace that shares /dev/shm cannot: abstract
# sockets are per network namespace). So while tasks wait, each loop renews its
# entries and lets one task per side look again this often: a lost signal costs
# at most this delay, never a hang; idle, it is one look per side per period.
RENEW_SECONDS = 1.0


class _Watchable(Protocol):
    """What an event loop waits on: a queue's core (either side) or a subscriber's (readable)."""

    def watch(self, socket: _core.WakeSocket, writable: bool, cookie: int) -> bool: ...

    def unwatch(self, socket: _core.WakeSocket, writable: bool, cookie: int) -> None: ...

    def spin_until_ready(self, writable: bool, at_most: float) -> bool: ...


class _Watch:
    """The tasks of one loop waiting on one side of one queue handle (or one subscriber)."""

    __slots__ = ("cookie", "core", "futures", "registered", "writable")

    def __init__(self, core: _Watchable, writable: bool, cookie: int) -> None:
        self.core = core
        self.writable = writable
        self.cookie = cookie
        self.futures: collections.deque[asyncio.Future[bool]] = collections.deque()
        self.registered = False


class _LoopWaker:
    """An event loop's wake-up socket and the tasks waiting on it, by cookie."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._socket = _core.WakeSocket()
        self._watches: dict[tuple[int, bool], _Watch] = {}
        self._by_cookie: dict[int, _Watch] = {}
        self._next_cookie = 0
        self._renewal: Optional[asyncio.TimerHandle] = None
        loop.add_reader(self._socket.fileno(), self._on_readable)
        # The loop holds us through its reader; we hold it only weakly (see _wakers).
        self._loop = weakref.ref(loop)
        weakref.finalize(self, self._socket.close)

    def _on_readable(self) -> None:
        for cookie in self._socket.drain():
            watch = self._by_cookie.get(cookie)
            if watch is not None:
                self.wake_one(watch)

    def enlist(self, core: _Watchable, writable: bool) -> tuple[_Watch, asyncio.Future[bool]]:
        """A future that a signal for this side of ``core`` resolves; registers the side if needed.

        Raises Full (of the table) as False from ``core.watch``: then returns a watch that is not registered.
        """
        key = (id(core), writable)
        watch = self._watches.get(key)
        if watch is None:
            cookie = self._take_cookie()
            watch = _Watch(core, writable, cookie)
            self._watches[key] = watch
            self._by_cookie[cookie] = watch
        loop = self._loop()
        assert loop is not None
        future: asyncio.Future[bool] = loop.create_future()
        watch.futures.append(future)
        if self._renewal is None:
            self._renewal = loop.call_later(RENEW_SECONDS, self._renew)
        if not watch.registered:
            try:
                watch.registered = core.watch(self._socket, writable, watch.cookie)
            except BaseException:
                self.leave(watch, future)
                raise
        return watch, future

    def leave(self, watch: _Watch, future: asyncio.Future[bool]) -> None:
        """``future``'s task stops waiting; the side is unregistered when nobody waits on it."""
        try:
            watch.futures.remove(future)
        except ValueError:
            pass  # woken: wake_one took it out
        if watch.futures or self._by_cookie.get(watch.cookie) is not watch:
            return  # others still wait, or the watch was ended already (by another task's leave)
        if watch.registered:
            watch.core.unwatch(self._socket, watch.writable, watch.cookie)
            watch.registered = False
        del self._watches[(id(watch.core), watch.writable)]
        del self._by_cookie[watch.cookie]

    def _renew(self) -> None:
        """Registers each side again (a putter may have cleared its entry) and lets one of
        its tasks look again (a signal may have been lost); see RENEW_SECONDS."""
        self._renewal = None
        for watch in list(self._watches.values()):
            if watch.registered:
                watch.core.unwatch(self._socket, watch.writable, watch.cookie)
                try:
                    watch.registered = watch.core.watch(self._socket, watch.writable, watch.cookie)
                except _errors.HakobuError:  # closed: the task that looks finds out
                    watch.registered = False
            self.wake_one(watch)
        loop = self._loop()
        if self._watches and loop is not None and not loop.is_closed():
            self._renewal = loop.call_later(RENEW_SECONDS, self._renew)

    @staticmethod
    def wake_one(watch: _Watch) -> None:
        while watch.futures:
            future = watch.futures.popleft()
            if not future.done():
                future.set_result(True)
                return

    @classmethod
    def wake_all(cls, watch: _Watch) -> None:
        while watch.futures:
            cls.wake_one(watch)

    def _take_cookie(self) -> int:
        for _ in range(1 << 16):
            cookie = self._next_cookie
            self._next_cookie = (cookie + 1) & 0xFFFF
            if cookie not in self._by_cookie:
                return cookie
        raise _errors.InvalidArgument("more than 65536 queue handles wait on one event loop")


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = weakref.WeakKeyDictionary()


def _waker(loop: asyncio.AbstractEventLoop) -> _LoopWaker:
    waker = _wakers.get(loop)
    if waker is None:
        waker = _wakers[loop] = _LoopWaker(loop)
    return waker


async def _wait_async(
    core: _Watchable,
    writable: bool,
    attempt: Callable[[], Any],
    retry_on: type[BaseException],
    timeout: Optional[float],
    ready_for_more: Callable[[], bool],
    on_long_wait: Optional[Callable[[], None]] = None,
    recheck: Optional[Callable[[], Optional[float]]] = None,
) -> Any:
    """Runs the non-blocking ``attempt`` until it succeeds, waiting on the loop's wake socket between tries.

    ``core`` is the queue's (or subscriber's) core, watched on side ``writable``.
    ``timeout`` is checked already (None: no limit). ``ready_for_more`` says whether
    another waiter of this side could succeed now (a task that succeeded then passes
    its wake-up on). ``on_long_wait`` runs once after NO_SENDER_WARNING_SECONDS.
    ``recheck`` says how soon to try again without a signal (None: only when
    signalled), for what no process signals: a sender's death. No
    receive or send is in flight while the task waits, so cancelling it leaves the
    queue as it was.
    """
    if timeout == 0:
        return attempt()
    # Look first (and spin, as the handle's latency mode says): a failed attempt
    # costs an exception, more than the look.
    if core.spin_until_ready(writable, ASYNC_SPIN_LIMIT):
        try:
            return attempt()
        except retry_on:
            pass  # another consumer was faster
    loop = asyncio.get_running_loop()
    waker = _waker(loop)
    started = loop.time()
    deadline = None if timeout is None else started + timeout
    warn_at = None if on_long_wait is None else started + NO_SENDER_WARNING_SECONDS
    while True:
        watch, future = waker.enlist(core, writable)
        timer = None
        try:
            try:
                result = attempt()  # after registering: what was published before is seen here
            except (_errors.Closed, _errors.Unlinked, _errors.EndOfStream):
                waker.wake_all(watch)  # the others find out too
                raise
            except retry_on:
                if deadline is not None and loop.time() >= deadline:
                    raise
            else:
                if ready_for_more():
                    waker.wake_one(watch)
                return result
            wake_times = [t for t in (deadline, warn_at) if t is not None]
            if recheck is not None and (interval := recheck()) is not None:
                wake_times.append(loop.time() + interval)
            if not watch.registered:
                # The queue's watcher table is full: fall back to looking again soon.
                wake_times.append(loop.time() + _FULL_TABLE_RECHECK)
            if wake_times:
                timer = loop.call_at(min(wake_times), _resolve, future)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and future.result():
                    waker.wake_one(watch)  # woken, but will not take it: the next waiter may
                raise
        finally:
            if timer is not None:
                timer.cancel()
            waker.leave(watch, future)
        if warn_at is not None and loop.time() >= warn_at and on_long_wait is not None:
            on_long_wait()
            on_long_wait = None
            warn_at = None


def _resolve(future: asyncio.Future[bool]) -> None:
    """A timer's wake-up (False: not a signal from the queue)."""
    if not future.done():
        future.set_result(False)
