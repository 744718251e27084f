"""hakobu.Queue: a named queue between processes, for arrays and objects."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from . import _codec, _core, _errors


def _wait_time(block: bool, timeout: Optional[float]) -> Optional[float]:
    """The core's timeout: None waits forever, 0 does not wait."""
    if not block:
        return 0.0
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return timeout


class Queue:
    """A named, bounded FIFO between processes; each message goes to one receiver.

    Any process of the same user opens the queue by ``name``. NumPy arrays
    travel with one copy into shared memory and arrive as writable views of it;
    ``bytes`` travel raw; any other picklable object is pickled.

    ``create``: None (default) creates the queue or attaches to it, True
    requires creating it, False requires it to exist. ``capacity`` (messages)
    and ``inline_capacity`` (bytes carried inside a slot, at most 224) apply
    when creating. ``spin`` is how long a blocking call spins before sleeping.
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
    ) -> None:
        if capacity <= 0:
            raise _errors.InvalidArgument(f"capacity must be positive, got {capacity}")
        self._core = _core.Queue(name, create, capacity, inline_capacity, domain or "", spin)

    # --- sending ---------------------------------------------------------------
    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Sends ``obj``; waits for room (at most ``timeout`` seconds) unless ``block`` is false.

        Raises Full when no room came, Closed or Unlinked when the queue went away.
        """
        _codec.put_object(self._core, obj, _wait_time(block, timeout))

    def put_nowait(self, obj: Any) -> None:
        """Sends ``obj`` if there is room now, else raises Full."""
        self.put(obj, block=False)

    async def put_async(self, obj: Any, timeout: Optional[float] = None) -> None:
        """Sends ``obj`` without blocking the event loop while waiting for room."""
        await _poll(lambda: self.put(obj, block=False), _errors.Full, timeout)

    # --- receiving -------------------------------------------------------------
    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Receives a message; waits (at most ``timeout`` seconds) unless ``block`` is false.

        Raises Empty when none came, Closed or Unlinked when the queue went away.
        """
        return _codec.decode(self._core.get(_wait_time(block, timeout)))

    def get_nowait(self) -> Any:
        """Receives a message if one is waiting, else raises Empty."""
        return self.get(block=False)

    async def get_async(self, timeout: Optional[float] = None) -> Any:
        """Receives a message without blocking the event loop while waiting."""
        return await _poll(lambda: self.get(block=False), _errors.Empty, timeout)

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
    def capacity(self) -> int:
        return self._core.capacity

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
        # Another process opens the same queue by name.
        return (Queue, (self.name, self.capacity), None)


async def _poll(attempt: Any, retry_on: type[BaseException], timeout: Optional[float]) -> Any:
    """Runs a non-blocking ``attempt`` until it succeeds, sleeping between tries.

    Cancelling the awaiting task never loses a message: no receive is in flight
    while the task sleeps.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    pause = 50e-6
    while True:
        try:
            return attempt()
        except retry_on:
            if deadline is not None and loop.time() >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5e-3)
