"""hakobu.Topic: publish once, every subscriber (in any process) receives it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Optional, Union

from . import _checks, _codec, _core, _errors
from ._queue import _latency_setting, _wait_async, _wait_time

# What Subscriber._core.get_object hands back for the Python codec to decode.
_Message = _core.Message

ON_FULL_POLICIES = ("drop_oldest", "block")


class Topic:
    """A named publish/subscribe channel between processes.

    Every subscriber receives every message published after it subscribed
    (plus the history it asked for), in publication order, as a **read-only**
    view of the one block all subscribers share: publishing costs one message
    and one wake-up whatever the number of subscribers. Messages are what
    ``Queue.put`` takes: NumPy arrays (one copy into shared memory, none for an
    array made with ``hakobu.empty``), ``bytes``, or any picklable object.

    ``history`` (messages, when creating): the last messages kept for
    subscribers that join later (at most ``capacity - 1``). ``capacity``
    (messages, rounded up to a power of two) is how far a subscriber may fall
    behind before its ``on_full`` policy applies; ``max_subscribers`` bounds
    the subscriptions at once; ``inline_capacity`` (bytes, at most 224) the
    messages carried inside a ring slot. Attaching keeps the topic's settings.

    ``create``, ``domain``, ``latency``, ``spin`` and ``allow_pickle`` are as
    for hakobu.Queue; a subscriber waits in the mode its handle had when it
    subscribed, and decodes objects as the handle's ``allow_pickle`` says.
    """

    def __init__(
        self,
        name: str,
        history: int = 0,
        *,
        capacity: int = 256,
        max_subscribers: int = 64,
        inline_capacity: int = 224,
        create: Optional[bool] = None,
        domain: Optional[str] = None,
        latency: Optional[str] = None,
        spin: Optional[float] = None,
        allow_pickle: bool = True,
    ) -> None:
        _checks.name(name, "topic")
        if create is not None:
            _checks.flag(create, "create")
        self._allow_pickle = _checks.flag(allow_pickle, "allow_pickle")
        self._latency, self._spin = _latency_setting(latency, spin)
        # Sizes: the bindings check the type, the core the range.
        self._core = _core.Topic(
            name,
            create,
            capacity,
            history,
            max_subscribers,
            inline_capacity,
            _checks.domain(domain),
            self._spin,
        )
        self._core.set_latency(self._latency, self._spin)

    # --- publishing ------------------------------------------------------------
    def publish(self, obj: Any, timeout: Optional[float] = None) -> None:
        """Publishes ``obj`` to every subscriber.

        Waits for room only while a subscriber with ``on_full="block"`` is a
        whole ring behind: at most ``timeout`` seconds (None: no limit, 0: not
        at all), then raises Full. Raises Closed or Unlinked when the topic went
        away, InvalidArgument for a NaN or negative timeout.
        """
        wait = None if timeout is None else _wait_time(True, timeout)
        _codec.put_object(self._core, obj, wait)

    # --- subscribing -----------------------------------------------------------
    def subscribe(self, history: Union[bool, int] = False, on_full: str = "drop_oldest") -> Subscriber:
        """A new subscription: it receives every message published from now on.

        ``history``: True receives first every message the topic kept, an int
        that many of them (all it kept if it kept fewer), False or 0 none.
        ``on_full``: what happens when this subscriber falls ``capacity``
        messages behind: ``"drop_oldest"`` (default: publishers skip it ahead;
        ``dropped`` and ``missed`` count what it lost) or ``"block"`` (publishers
        wait for it; it loses nothing). Raises TooManySubscribers when the topic
        has ``max_subscribers`` subscriptions, Closed or Unlinked when it went away.
        """
        if history is True:
            kept = self.history
        elif history is False:
            kept = 0
        else:
            kept = _checks.count(history, "history")
        if not isinstance(on_full, str) or on_full not in ON_FULL_POLICIES:
            raise _errors.InvalidArgument(f"on_full must be 'drop_oldest' or 'block', got {on_full!r}")
        return Subscriber(self._core.subscribe(kept, on_full), self.name, self._allow_pickle)

    # --- state -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._core.name

    @property
    def domain(self) -> str:
        """The domain the topic lives in."""
        return self._core.domain

    @property
    def capacity(self) -> int:
        """Messages the ring holds: how far a subscriber may fall behind."""
        return int(self._core.stats()["capacity"])

    @property
    def history(self) -> int:
        """Last messages kept for subscribers that join later."""
        return int(self._core.stats()["history"])

    @property
    def max_subscribers(self) -> int:
        return int(self._core.stats()["max_subscribers"])

    @property
    def subscribers(self) -> int:
        """Subscriptions now, in every process."""
        return int(self._core.stats()["subscribers"])

    @property
    def published(self) -> int:
        """Messages published over the topic's life, by every process."""
        return int(self._core.stats()["published"])

    @property
    def allow_pickle(self) -> bool:
        return self._allow_pickle

    @property
    def is_creator(self) -> bool:
        """True for the handle that created the topic (the one that may unlink it)."""
        return self._core.is_creator

    @property
    def latency(self) -> str:
        """How blocking calls wait (as Queue.latency): this handle's publishes, and the gets of
        subscribers made from it afterwards."""
        return self._latency

    @latency.setter
    def latency(self, mode: str) -> None:
        self._latency, self._spin = _latency_setting(mode, None)
        self._core.set_latency(self._latency, self._spin)

    def close(self) -> None:
        """Lets go of the topic in this process; its subscribers stay usable until closed."""
        self._core.close()

    def unlink(self) -> None:
        """Removes the topic's name (creator only); waiting subscribers receive what was
        published, then their get raises Unlinked (their iteration ends)."""
        self._core.unlink()

    @staticmethod
    def remove(name: str, domain: Optional[str] = None) -> None:
        """Removes the topic ``name`` whoever created it (NotFound if there is none)."""
        _core.remove_topic(_checks.name(name, "topic"), _checks.domain(domain))

    def __enter__(self) -> Topic:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if not self._core.is_open:
            return f"hakobu.Topic({self.name!r}, closed)"
        stats = self._core.stats()
        return (
            f"hakobu.Topic({self.name!r}, capacity={stats['capacity']}, history={stats['history']}, "
            f"subscribers={stats['subscribers']}, published={stats['published']})"
        )

    def __reduce__(self) -> Any:
        # Another process attaches to the same topic: same name and domain (the resolved
        # one), same per-handle settings.
        options = {
            "domain": self.domain,
            "latency": None if self._latency == "fixed" else self._latency,
            "spin": self._spin if self._latency == "fixed" else None,
            "allow_pickle": self._allow_pickle,
        }
        return (_reopen, (self.name, options))


def _reopen(name: str, options: dict[str, Any]) -> Topic:
    """Unpickles a Topic: attaches to the topic it was (NotFound if it was removed since)."""
    return Topic(name, create=False, **options)


class Subscriber:
    """One subscription to a hakobu.Topic (made by ``Topic.subscribe``).

    ``get`` (or iterating, or ``get_async`` / ``async for``) returns the next
    message: arrays are read-only views of the block every subscriber shares,
    bytes arrive as ``bytes``, objects are unpickled (their large arrays
    read-only). Iteration ends when the topic was unlinked and everything
    published before was received, or when the subscriber is closed.
    Closing it (or leaving its ``with`` block) ends the subscription: nothing
    is held for it any more.
    """

    def __init__(self, core: _core.Subscriber, topic_name: str, allow_pickle: bool) -> None:
        self._core = core
        self._topic_name = topic_name
        self._allow_pickle = allow_pickle

    def get(self, timeout: Optional[float] = None) -> Any:
        """The next message, waiting at most ``timeout`` seconds (None: no limit).

        Raises Empty when none came, Unlinked once the topic was unlinked and
        everything before was received, Closed after close(), InvalidArgument
        for a NaN or negative timeout, UnpicklingRefused for an object the
        topic's handle does not accept (``allow_pickle=False``).
        """
        wait = None if timeout is None else _wait_time(True, timeout)
        obj = self._core.get_object(wait, self._allow_pickle)
        return _codec.decode(obj, self._allow_pickle) if type(obj) is _Message else obj

    def get_nowait(self) -> Any:
        """The next message if it was published already, else raises Empty."""
        obj = self._core.get_object(0.0, self._allow_pickle)
        return _codec.decode(obj, self._allow_pickle) if type(obj) is _Message else obj

    async def get_async(self, timeout: Optional[float] = None) -> Any:
        """The next message, without blocking the event loop while waiting.

        Waits on a descriptor the loop watches, which every publish signals (as
        Queue.get_async). Raises Empty when ``timeout`` (seconds) ran out;
        cancelling it takes nothing.
        """
        limit = _checks.timeout(timeout)
        core = self._core
        return await _wait_async(core, False, self.get_nowait, _errors.Empty, limit, lambda: core.lag > 0)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self.get()
        except (_errors.Unlinked, _errors.Closed):
            raise StopIteration from None

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.get_async()
        except (_errors.Unlinked, _errors.Closed):
            raise StopAsyncIteration from None

    # --- counters --------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Messages publishers skipped this subscriber past (``on_full="drop_oldest"``)."""
        return self._core.dropped

    @property
    def missed(self) -> int:
        """Messages skipped just before the last one received."""
        return self._core.missed

    @property
    def sequence(self) -> int:
        """The topic's position of the last message received (it counts every message published)."""
        return self._core.sequence

    @property
    def lag(self) -> int:
        """Messages published and not yet received (a snapshot)."""
        return self._core.lag

    @property
    def received(self) -> int:
        """Messages received."""
        return self._core.received

    @property
    def on_full(self) -> str:
        return self._core.on_full

    @property
    def closed(self) -> bool:
        return not self._core.is_open

    def close(self) -> None:
        """Ends the subscription; messages not yet received are no longer held for it."""
        self._core.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if not self._core.is_open:
            return f"hakobu.Subscriber({self._topic_name!r}, closed)"
        return (
            f"hakobu.Subscriber({self._topic_name!r}, on_full={self.on_full!r}, received={self.received}, "
            f"lag={self.lag}, dropped={self.dropped})"
        )
