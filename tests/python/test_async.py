"""get_async / put_async: event-driven waiting (no polling), with producers and
consumers in separately started programs (tests/python/programs/waiting_peer.py).

No test asserts a duration; every wait has a watchdog (asyncio.wait_for or a
program's own timeout), and CPU use is compared with wall time as a behavioural bound.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from conftest import finish, start

import hakobu

WATCHDOG = 60.0
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, WATCHDOG))


def thread_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def test_consumer_receives_everything_a_producer_program_sends(name: str) -> None:
    count = 2000
    with hakobu.Queue(name, create=True, capacity=16) as q:

        async def consume() -> list[int]:
            producer = start("waiting_peer", "produce", name, count)
            got = [await q.get_async(timeout=WATCHDOG) for _ in range(count)]
            code, _, err = await asyncio.to_thread(finish, producer)
            assert code == 0, err
            return got

        assert run(consume()) == list(range(count))
        q.unlink()


def test_put_async_on_a_full_queue_is_woken_by_a_get_in_another_program(name: str) -> None:
    with hakobu.Queue(name, create=True, capacity=2) as q:
        q.put(0)
        q.put(1)

        async def produce() -> None:
            waiting = asyncio.ensure_future(q.put_async(2, timeout=WATCHDOG))
            await asyncio.sleep(
                0.05
            )  # most likely parked on the descriptor by now (either way it must finish)
            assert not waiting.done()
            consumer = start("waiting_peer", "consume", name, 3)
            await waiting
            code, out, err = await asyncio.to_thread(finish, consumer)
            assert code == 0, err
            assert out.split() == ["0", "1", "2"]

        run(produce())
        q.unlink()


def test_timeouts(name: str) -> None:
    with hakobu.Queue(name, create=True, capacity=1) as q:

        async def main() -> None:
            with pytest.raises(hakobu.Empty):
                await q.get_async(timeout=0.05)
            with pytest.raises(hakobu.Empty):
                await q.get_async(timeout=0)
            q.put(b"x")
            with pytest.raises(hakobu.Full):
                await q.put_async(b"y", timeout=0.05)
            assert await q.get_async(timeout=0) == b"x"

        run(main())
        q.unlink()


def test_cancellation_at_random_points_loses_and_duplicates_nothing(name: str) -> None:
    count = 3000
    rng = random.Random(10)
    with hakobu.Queue(name, create=True, capacity=8) as q:

        async def main() -> list[int]:
            received: list[int] = []

            async def consumer() -> None:
                while True:
                    received.append(await q.get_async(timeout=WATCHDOG))

            producer = start("waiting_peer", "produce", name, count)
            tasks = [asyncio.ensure_future(consumer()) for _ in range(8)]
            while producer.poll() is None:
                await asyncio.sleep(rng.random() * 2e-3)
                victim = rng.randrange(len(tasks))
                tasks[victim].cancel()  # wherever it is: parked, woken, about to take
                tasks[victim] = asyncio.ensure_future(consumer())
            code, _, err = await asyncio.to_thread(finish, producer)
            assert code == 0, err
            while len(received) < count:
                await asyncio.sleep(0.01)  # the consumers take the rest; a lost message trips the watchdog
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            while True:  # anything left in the queue was never taken by a cancelled task
                try:
                    received.append(q.get_nowait())
                except (hakobu.Empty, hakobu.EndOfStream):  # the producer is gone: its stream ended
                    return received

        received = run(main())
        assert sorted(received) == list(range(count)), "every message exactly once"
        q.unlink()


def test_closing_the_handle_wakes_its_async_waiters(name: str) -> None:
    q = hakobu.Queue(name, create=True)

    async def main() -> None:
        waiters = [asyncio.ensure_future(q.get_async()) for _ in range(50)]
        await asyncio.sleep(0.05)
        q.close()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, hakobu.Closed) for r in results), results

    run(main())
    hakobu.remove(name)


def test_unlinking_in_another_program_wakes_async_waiters(name: str) -> None:
    owner = start("waiting_peer", "own", name, stdin=__import__("subprocess").PIPE)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        with hakobu.Queue(name, create=False) as q:

            async def main() -> None:
                getters = [asyncio.ensure_future(q.get_async()) for _ in range(20)]
                await asyncio.sleep(0.05)
                assert owner.stdin is not None
                owner.stdin.write("unlink\n")
                owner.stdin.flush()
                results = await asyncio.gather(*getters, return_exceptions=True)
                assert all(isinstance(r, hakobu.Unlinked) for r in results), results

            run(main())
    finally:
        code, _, err = finish(owner)
        assert code == 0, err


def test_a_thousand_idle_waiters_use_no_cpu_then_each_gets_one_message(name: str) -> None:
    waiters = 1000
    with hakobu.Queue(name, create=True, capacity=64) as q:

        async def main() -> list[Any]:
            tasks = [asyncio.ensure_future(q.get_async(timeout=WATCHDOG)) for _ in range(waiters)]
            await asyncio.sleep(0.1)  # all parked (their first tries and spins done)
            cpu, wall = thread_cpu_seconds(), time.monotonic()
            await asyncio.sleep(1.0)  # the loop idles with 1000 waiters on it
            used, elapsed = thread_cpu_seconds() - cpu, time.monotonic() - wall
            assert used < 0.5 * elapsed, f"{used:.3f} s of CPU in {elapsed:.3f} s"
            assert not any(t.done() for t in tasks)
            producer = start("waiting_peer", "produce", name, waiters)
            got = await asyncio.gather(*tasks)
            code, _, err = await asyncio.to_thread(finish, producer)
            assert code == 0, err
            return got

        assert sorted(run(main())) == list(range(waiters))
        q.unlink()


def test_waiters_on_two_loops_in_two_threads(name: str) -> None:
    import threading

    count = 500
    with hakobu.Queue(name, create=True, capacity=8) as q:
        received: list[int] = []
        lock = threading.Lock()

        def loop_thread() -> None:
            async def consume() -> None:
                while True:
                    try:
                        item = await q.get_async(timeout=2.0)
                    except (hakobu.Empty, hakobu.EndOfStream):  # the producer exits when done
                        return
                    with lock:
                        received.append(item)

            run(consume())

        threads = [threading.Thread(target=loop_thread) for _ in range(2)]
        for thread in threads:
            thread.start()
        producer = start("waiting_peer", "produce", name, count)
        code, _, err = finish(producer)
        assert code == 0, err
        for thread in threads:
            thread.join(WATCHDOG)
        assert sorted(received) == list(range(count))
        q.unlink()
