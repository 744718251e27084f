"""Subscriber.get_async / async for: event-driven waiting on a topic (the queue's
descriptor-based waiting, _queue._wait_async), with publishers in separately started
programs (tests/python/programs/topic_peer.py).

No test asserts a duration; every wait has a watchdog (asyncio.wait_for).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from conftest import PROGRAMS, finish, start

import hakobu

sys.path.insert(0, str(PROGRAMS))
from topic_format import bytes_message, check

WATCHDOG = 60.0
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, WATCHDOG))


def test_get_async_receives_what_a_publisher_program_publishes(topic_name: str) -> None:
    count = 500
    topic = hakobu.Topic(topic_name, capacity=16)
    with topic.subscribe(on_full="block") as first, topic.subscribe(on_full="block") as second:

        async def receive(sub: hakobu.Subscriber) -> list[int]:
            return [check(await sub.get_async(timeout=WATCHDOG)) for _ in range(count)]

        async def main() -> tuple[list[int], list[int]]:
            publisher = start("topic_peer", "publish", topic_name, count, 0, 0, 2)
            got = await asyncio.gather(receive(first), receive(second))
            code, out, err = await asyncio.to_thread(finish, publisher)
            assert (code, out) == (0, f"ok {count}\n"), err
            return got[0], got[1]

        assert run(main()) == (list(range(count)), list(range(count)))
    topic.unlink()


def test_async_for_ends_when_the_topic_is_unlinked(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    sub = topic.subscribe()

    async def main() -> list[int]:
        async def iterate() -> list[int]:
            return [check(message) async for message in sub]

        task = asyncio.ensure_future(iterate())
        await asyncio.sleep(0)  # the iteration waits on the loop's descriptor
        publisher = start("topic_peer", "publish", topic_name, 20, 100, 0, 1)
        code, _, err = await asyncio.to_thread(finish, publisher)
        assert code == 0, err
        topic.unlink()  # wakes the waiter, which drains what was published, then stops
        return await task

    assert run(main()) == list(range(20))
    sub.close()


def test_get_async_times_out_with_empty(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    with topic.subscribe() as sub:
        with pytest.raises(hakobu.Empty):
            run(sub.get_async(timeout=0.05))
        with pytest.raises(hakobu.Empty):
            run(sub.get_async(timeout=0))
        with pytest.raises(hakobu.InvalidArgument):
            run(sub.get_async(timeout=float("nan")))
    topic.unlink()


def test_cancelling_get_async_takes_nothing(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    with topic.subscribe() as sub:

        async def main() -> Any:
            waiting = asyncio.ensure_future(sub.get_async())
            await asyncio.sleep(0.01)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            topic.publish(bytes_message(7, 64))
            return await sub.get_async(timeout=WATCHDOG)

        assert check(run(main())) == 7, "the cancelled wait took nothing"
        assert sub.received == 1
    topic.unlink()


def test_closing_a_subscriber_ends_its_async_iteration(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    sub = topic.subscribe()

    async def main() -> list[Any]:
        async def iterate() -> list[Any]:
            return [message async for message in sub]

        task = asyncio.ensure_future(iterate())
        topic.publish(b"one")
        while sub.received == 0:
            await asyncio.sleep(0.001)
        sub.close()
        return await task

    assert run(main()) == [b"one"]
    topic.unlink()


def test_get_async_refuses_the_writable_side(topic_name: str) -> None:
    topic = hakobu.Topic(topic_name)
    with topic.subscribe() as sub, pytest.raises(hakobu.InvalidArgument, match="no writable side"):
        sub._core.spin_until_ready(True, 0.0)
    topic.unlink()
