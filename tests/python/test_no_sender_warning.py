"""A consumer waiting on a queue that a typo created (its own handle made it, nothing was ever
put on it) is told so once, with the names of similar queues; starting producer and consumer
in either order keeps working."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Iterator

import pytest
from conftest import DOMAIN

import hakobu

THRESHOLD = 0.2  # seconds: lowered for the tests (default 5 s)
WATCHDOG = 60.0  # seconds: against a hang, never a measure of speed


@pytest.fixture(autouse=True)
def short_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hakobu._queue, "NO_SENDER_WARNING_SECONDS", THRESHOLD)


@pytest.fixture
def real_and_typo(name: str) -> Iterator[tuple[hakobu.Queue, str]]:
    """A producer's queue "<name>-frames" (something was sent on it) and the typo "<name>-frams"."""
    real = hakobu.Queue(f"{name}-frames")
    real.put("a frame")
    yield real, f"{name}-frams"
    real.unlink()
    try:
        hakobu.remove(f"{name}-frams")
    except hakobu.NotFound:
        pass


def test_a_get_on_a_mistyped_queue_warns_once_naming_similar_queues(
    real_and_typo: tuple[hakobu.Queue, str],
) -> None:
    real, typo_name = real_and_typo
    typo = hakobu.Queue(typo_name)
    assert typo.is_creator
    with pytest.warns(hakobu.NoSenderWarning) as record, pytest.raises(hakobu.Empty):
        typo.get(timeout=THRESHOLD * 3)
    assert len(record) == 1
    message = str(record[0].message)
    assert repr(typo_name) in message and repr(DOMAIN) in message and repr(real.name) in message, message
    assert record[0].filename == __file__, "the warning points at the caller's get()"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        with pytest.raises(hakobu.Empty):
            typo.get(timeout=THRESHOLD * 3)


def test_get_async_warns_too(real_and_typo: tuple[hakobu.Queue, str]) -> None:
    real, typo_name = real_and_typo
    typo = hakobu.Queue(typo_name)
    with pytest.warns(hakobu.NoSenderWarning, match=real.name), pytest.raises(hakobu.Empty):
        asyncio.run(asyncio.wait_for(typo.get_async(timeout=THRESHOLD * 3), WATCHDOG))


def test_a_late_producer_is_still_received(name: str) -> None:
    """Consumer first: it may be warned, but its get() waits on and returns the message."""
    consumer = hakobu.Queue(name)
    producer = threading.Timer(THRESHOLD * 2, lambda: hakobu.Queue(name).put("late"))
    producer.start()
    try:
        with pytest.warns(hakobu.NoSenderWarning, match="no queue of the domain has a similar name"):
            assert consumer.get(timeout=WATCHDOG) == "late"
    finally:
        producer.join()


def test_no_warning_when_something_was_sent_or_the_handle_attached(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        creator = hakobu.Queue(name)
        attached = hakobu.Queue(name)
        assert not attached.is_creator
        with pytest.raises(hakobu.Empty):
            attached.get(timeout=THRESHOLD * 3)  # it did not create the queue: somebody else did
        with pytest.raises(hakobu.Empty):
            creator.get(timeout=THRESHOLD / 2)  # has not waited long enough
        creator.put(1)
        assert creator.get(timeout=THRESHOLD * 3) == 1
        with pytest.raises(hakobu.Empty):
            creator.get(timeout=THRESHOLD * 3)  # something was sent: the name is right
