"""The hakobu:// comm for Dask: the Comm contract (read, write, close, abort, addresses,
handshake, timeouts), with the listener and the connector in separate processes where a
process's death matters, and Dask itself on it (LocalCluster, the ``dask worker`` command).

Dask's own comm tests (distributed/comm/tests/test_comms.py) are not shipped in its wheel
nor in its source distribution on PyPI, so the same contract is checked here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import numpy as np
import pytest

pytest.importorskip("distributed", reason="Dask is not installed (pip install 'hakobu[dask]')")

from conftest import DOMAIN, files_of_domain, start
from distributed.comm import CommClosedError, connect, listen
from distributed.comm.core import Comm, FatalCommClosedError
from distributed.comm.registry import get_backend
from distributed.protocol import to_serialize

import hakobu
from hakobu import _arrays, _core
from hakobu._dask import comm as hakobu_comm

T = TypeVar("T")
WATCHDOG = 60.0  # seconds: no test waits longer for anything


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a test's coroutine under a watchdog (a hang fails the test instead of the run)."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, WATCHDOG)

    return asyncio.run(bounded())


def connection_queues() -> list[str]:
    """The names of the comm's queues in the test domain (accept and connection queues)."""
    return sorted(name for _path, _kind, name in _core.domain_files(DOMAIN) if name.startswith("dask."))


def shared_owner(array: np.ndarray) -> Any:
    """The hakobu shared memory an array is a view of, through Dask's memoryviews and arrays."""
    base: Any = array
    while True:
        if isinstance(base, np.ndarray) and base.base is not None:
            if _arrays.owner_of(base) is not None:
                return _arrays.owner_of(base)
            base = base.base
        elif isinstance(base, memoryview):
            base = base.obj
        else:
            return _arrays.owner_of(base) if isinstance(base, np.ndarray) else None


async def echo(comm: Comm) -> None:
    """A listener's handler: sends every message back until the peer closes."""
    try:
        while True:
            await comm.write(await comm.read())
    except CommClosedError:
        pass
    finally:
        await comm.close()


def start_listener(mode: str) -> tuple[subprocess.Popen, str]:
    """A listener program (tests/python/programs/dask_comm_listener.py) and its address."""
    process = start("dask_comm_listener", mode, stdin=subprocess.PIPE)
    assert process.stdout is not None
    address = process.stdout.readline().strip()
    if not address.startswith("hakobu://"):
        process.kill()
        _out, err = process.communicate()
        pytest.fail(f"the listener did not start: {address!r} {err}")
    return process, address


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()


def run_with(listener: subprocess.Popen, scenario: Coroutine[Any, Any, T]) -> T:
    """``scenario`` run against ``listener``, which is stopped afterwards whatever happened."""
    try:
        return run(scenario)
    finally:
        stop(listener)


def accept_queue(address: str) -> str:
    """The accept queue of the listener at ``address`` (hakobu://HOST:PORT)."""
    return f"dask.listen.{address.rsplit(':', 1)[1]}"


@contextlib.contextmanager
def workers_killed_at_close() -> Iterator[list[str]]:
    """Collects what Dask's nannies say when they kill a worker process that did not close in
    time (0.8 x 5 s by default: a loaded machine can take that long)."""
    said: list[str] = []

    class Listen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "killing" in record.getMessage():
                said.append(record.getMessage())

    handler = Listen()
    nanny = logging.getLogger("distributed.nanny")
    nanny.addHandler(handler)
    try:
        yield said
    finally:
        nanny.removeHandler(handler)


def nothing_left_by_the_cluster(killed: list[str]) -> None:
    """Nothing of the comm is left once a cluster closed. A worker that Dask had to kill (SIGKILL)
    could not remove its accept queue: as documented, the next listener in the domain removes it,
    which is what is done here (within the watchdog: a dead process's watch is dropped lazily)."""
    if killed:
        deadline = time.monotonic() + WATCHDOG
        while connection_queues() and time.monotonic() < deadline:
            hakobu_comm.reap_stale_queues(DOMAIN)
            time.sleep(0.05)
    assert connection_queues() == [], killed


# --- addresses -----------------------------------------------------------------------------
def test_dask_finds_the_backend_by_its_scheme() -> None:
    backend = get_backend("hakobu")
    assert isinstance(backend, hakobu_comm.HakobuBackend)
    assert backend.get_address_host("10.1.2.3:8786") == "10.1.2.3"
    assert backend.get_address_host_port("10.1.2.3:8786") == ("10.1.2.3", 8786)
    assert backend.resolve_address("localhost:8786") == "127.0.0.1:8786"
    assert backend.get_local_address_for("127.0.0.1:8786") == "127.0.0.1"
    with pytest.raises(ValueError, match="hakobu://HOST:PORT"):
        backend.get_address_host("no-port-here")
    with pytest.raises(ValueError, match="0-65535"):
        backend.get_address_host("127.0.0.1:70000")


def test_connecting_to_another_host_fails_at_once_and_says_why() -> None:
    async def attempt() -> float:
        started = time.monotonic()
        with pytest.raises(FatalCommClosedError, match=r"not an address of this machine.*tcp://"):
            await connect("hakobu://192.0.2.77:8786", timeout=30)
        return time.monotonic() - started

    assert run(attempt()) < 30  # not retried until the timeout: a wrong host stays wrong


def test_nobody_listening_is_a_connect_timeout() -> None:
    async def attempt() -> None:
        with pytest.raises(OSError, match="Timed out trying to connect"):
            await connect("hakobu://127.0.0.1:1", timeout=0.5)

    run(attempt())
    assert connection_queues() == []


# --- the contract in one process ------------------------------------------------------------
def test_messages_round_trip_with_addresses_and_handshake() -> None:
    async def scenario() -> None:
        async with listen("hakobu://127.0.0.1:0", echo) as listener:
            address = listener.contact_address
            assert address.startswith("hakobu://127.0.0.1:") and listener.listen_address == address
            comm = await connect(address, timeout=10)
            assert comm.peer_address == address
            assert comm.local_address.startswith("hakobu://127.0.0.1:")
            assert comm.same_host
            # The handshake ran: same host, so no compression; both sides' pickle protocol.
            assert comm.handshake_options["compression"] is None
            assert comm.remote_info["address"] == address
            messages: list[Any] = [
                {"op": "ping", "n": 1},
                (1, 2.5, "three", None, b"four"),  # msgpack: lists come back as tuples, as over TCP
                {"data": to_serialize(np.arange(1000))},  # small frames, inside the header
                {"data": to_serialize(np.arange(1 << 20, dtype=np.float32))},  # a large frame
                {"data": to_serialize(b"x" * (1 << 20))},
            ]
            for message in messages:
                written = await comm.write(message)
                assert written > 0
                back = await comm.read()
                if "data" in (message if isinstance(message, dict) else {}):
                    np.testing.assert_array_equal(
                        np.asarray(back["data"]) if not isinstance(back["data"], bytes) else back["data"],
                        message["data"].data,
                    )
                else:
                    assert back == message
            await comm.close()
            assert comm.closed()
            with pytest.raises(CommClosedError):
                await comm.write({"after": "close"})
            with pytest.raises(CommClosedError):
                await comm.read()

    run(scenario())
    assert connection_queues() == []


def test_a_large_frame_arrives_as_a_view_of_shared_memory() -> None:
    async def scenario() -> None:
        async with listen("hakobu://127.0.0.1:0", echo) as listener:
            comm = await connect(listener.contact_address, timeout=10)
            sent = np.random.default_rng(1).random(1 << 20)  # 8 MiB
            await comm.write({"x": to_serialize(sent)})
            back = (await comm.read())["x"]
            np.testing.assert_array_equal(back, sent)
            assert shared_owner(back) is not None, "the frame was copied out of shared memory"
            small = {"x": to_serialize(np.arange(10))}
            await comm.write(small)
            assert shared_owner((await comm.read())["x"]) is None  # small frames ride in the header
            await comm.close()

    run(scenario())


def test_closing_one_side_ends_the_peers_read() -> None:
    async def scenario() -> None:
        ended: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        async def wait_for_end(comm: Comm) -> None:
            try:
                while True:
                    await comm.read()
            except CommClosedError as exc:
                ended.set_result(exc)
            assert comm.closed()

        async with listen("hakobu://127.0.0.1:0", wait_for_end) as listener:
            comm = await connect(listener.contact_address, timeout=10)
            await comm.write({"last": "message"})
            await comm.close()
            error = await ended
            assert "closed the connection" in str(error)

    run(scenario())
    assert connection_queues() == []


def test_the_listener_closing_ends_the_connectors_read_implicitly() -> None:
    async def close_at_once(comm: Comm) -> None:
        await comm.close()

    async def scenario() -> None:
        async with listen("hakobu://127.0.0.1:0", close_at_once) as listener:
            comm = await connect(listener.contact_address, timeout=10)
            with pytest.raises(CommClosedError):
                await comm.read()
            assert comm.closed()

    run(scenario())
    assert connection_queues() == []


def test_abort_wakes_a_pending_read_and_the_peer() -> None:
    async def scenario() -> None:
        peer_ended = asyncio.Event()

        async def hold(comm: Comm) -> None:
            try:
                await comm.read()
            except CommClosedError:
                peer_ended.set()

        async with listen("hakobu://127.0.0.1:0", hold) as listener:
            comm = await connect(listener.contact_address, timeout=10)
            reading = asyncio.ensure_future(comm.read())
            await asyncio.sleep(0.05)
            comm.abort()
            with pytest.raises(CommClosedError):
                await reading
            await peer_ended.wait()

    run(scenario())
    assert connection_queues() == []


def test_many_listeners_and_connections_at_once() -> None:
    async def scenario() -> None:
        listeners = [await listen("hakobu://127.0.0.1:0", echo) for _ in range(5)]
        try:
            addresses = {listener.contact_address for listener in listeners}
            assert len(addresses) == 5
            comms = [await connect(address, timeout=10) for address in addresses for _ in range(3)]
            for index, comm in enumerate(comms):
                await comm.write({"n": index})
            for index, comm in enumerate(comms):
                assert await comm.read() == {"n": index}
            await asyncio.gather(*(comm.close() for comm in comms))
        finally:
            for listener in listeners:
                listener.stop()

    run(scenario())
    assert connection_queues() == []


def test_a_fixed_port_is_taken_once_and_stop_removes_the_accept_queue() -> None:
    async def scenario() -> None:
        async with listen("hakobu://127.0.0.1:41234", echo) as listener:
            assert listener.contact_address == "hakobu://127.0.0.1:41234"
            assert "dask.listen.41234" in connection_queues()
            with pytest.raises(OSError, match="in use"):
                await listen("hakobu://127.0.0.1:41234", echo)
        assert connection_queues() == []
        with pytest.raises(OSError, match="Timed out"):
            await connect("hakobu://127.0.0.1:41234", timeout=0.5)

    run(scenario())


def test_deserialize_false_hands_over_serialized_data() -> None:
    async def scenario() -> None:
        received: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def keep(comm: Comm) -> None:
            received.set_result(await comm.read())
            await comm.close()

        async with listen("hakobu://127.0.0.1:0", keep, deserialize=False) as listener:
            comm = await connect(listener.contact_address, timeout=10)
            await comm.write({"x": to_serialize(np.arange(1 << 17))})
            message = await received
            assert type(message["x"]).__name__ == "Serialized"
            await comm.close()

    run(scenario())


@pytest.mark.parametrize(
    ("header", "complaint"),
    [
        (b"nonsense", "shorter than its fixed part"),
        (b"XXXX\x01\x00\x00\x00\x00\x00", "magic"),
        (b"HKDC\x02\x00\x00\x00\x00\x00", "version 2"),
        (b"HKDC\x01\x00\x02\x00\x00\x00", "cannot hold its table"),
        (b"HKDC\x01\x00\x01\x00\x00\x00" + b"\x00" + (5).to_bytes(8, "little"), "where its table says"),
        (b"HKDC\x01\x00\x01\x00\x00\x00" + b"\x07" + (5).to_bytes(8, "little"), "unknown kind"),
    ],
)
def test_a_malformed_header_is_refused_with_what_is_wrong(header: bytes, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        hakobu_comm.parse_header(header)


def test_garbage_on_a_connection_aborts_it_with_a_clear_error() -> None:
    async def scenario() -> None:
        outcome: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        async def read_one(comm: Comm) -> None:
            try:
                await comm.read()
            except CommClosedError as exc:
                outcome.set_result(exc)

        async with listen("hakobu://127.0.0.1:0", read_one) as listener:
            comm = await connect(listener.contact_address, timeout=10)
            # Another program of the domain writes on the connection's queue directly.
            assert isinstance(comm, hakobu_comm.HakobuComm)
            with hakobu.Queue(comm._send_name, create=False) as intruder:
                intruder.put(b"HKDC\x09\x00\x00\x00\x00\x00")
            error = await outcome
            assert "malformed message from the peer" in str(error) and "version 9" in str(error)
            comm.abort()

    run(scenario())
    assert connection_queues() == []


# --- separate processes ---------------------------------------------------------------------
def test_a_connector_in_another_process_exchanges_messages() -> None:
    listener, address = start_listener("echo")
    try:
        connector = start("dask_comm_connector", address, 50)
        out, err = connector.communicate(timeout=WATCHDOG)
        assert connector.returncode == 0, err
        assert out.splitlines()[-1] == "done"
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "stopped"  # it saw the connection end
        assert listener.wait(timeout=WATCHDOG) == 0
    finally:
        stop(listener)
    assert connection_queues() == []


def test_a_64_mib_array_from_another_process_arrives_whole_in_shared_memory() -> None:
    listener, address = start_listener("big")

    async def scenario() -> None:
        comm = await connect(address, timeout=10)
        array = (await comm.read())["array"]
        assert array.shape == (64 << 20,) and array.dtype == np.uint8
        expected = (np.arange(64 << 20) % 256).astype(np.uint8)
        np.testing.assert_array_equal(array, expected)
        assert shared_owner(array) is not None
        await comm.close()

    try:
        run(scenario())
        assert listener.wait(timeout=WATCHDOG) == 0
    finally:
        stop(listener)
    assert connection_queues() == []


def test_the_listener_killed_mid_read_ends_the_read_and_leaves_nothing() -> None:
    listener, address = start_listener("silent")

    async def scenario() -> None:
        comm = await connect(address, timeout=10)
        await comm.write({"hello": 1})
        reading = asyncio.ensure_future(comm.read())
        await asyncio.sleep(0.2)
        assert not reading.done()
        listener.send_signal(signal.SIGKILL)
        with pytest.raises(CommClosedError, match="died or aborted"):
            await reading
        assert comm.closed()

    run_with(listener, scenario())
    # The survivor removed both queues of the connection; the dead listener's accept queue
    # stays (its process cannot remove it) until a connect finds its creator dead.
    assert connection_queues() == [accept_queue(address)]

    async def connect_to_the_dead() -> None:
        with pytest.raises(OSError, match="Timed out"):
            await connect(address, timeout=0.5)

    run(connect_to_the_dead())
    assert connection_queues() == []


def test_the_connector_killed_mid_read_ends_the_listeners_read() -> None:
    async def scenario() -> None:
        ended: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        async def read_until_end(comm: Comm) -> None:
            try:
                while True:
                    await comm.read()
            except CommClosedError as exc:
                ended.set_result(exc)

        async with listen("hakobu://127.0.0.1:0", read_until_end) as listener:
            connector = start("dask_comm_connector", listener.contact_address, 0, "hold")
            try:
                assert connector.stdout is not None
                line = await asyncio.get_running_loop().run_in_executor(None, connector.stdout.readline)
                assert line.startswith("connected"), line
                connector.send_signal(signal.SIGKILL)
                error = await ended
                assert "died or aborted" in str(error)
            finally:
                stop(connector)

    run(scenario())
    assert connection_queues() == []


# --- Dask on hakobu:// ----------------------------------------------------------------------
def test_a_local_cluster_computes_with_arrays_over_hakobu() -> None:
    from distributed import Client, LocalCluster

    with (
        workers_killed_at_close() as killed,
        LocalCluster(
            protocol="hakobu", n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert cluster.scheduler_address.startswith("hakobu://")
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 2 and all(w.startswith("hakobu://") for w in workers)
        # Made on one worker, used on the other: the arrays cross between processes.
        a = client.submit(np.full, 1 << 20, 1.0, workers=[workers[0]], pure=False)
        b = client.submit(np.full, 1 << 20, 2.0, workers=[workers[1]], pure=False)
        # A lambda travels by value: a function of this module would make the worker import
        # it, and with it conftest, which points HAKOBU_DOMAIN at a domain of its own.
        total = client.submit(lambda x, y: x + y, a, b, workers=[workers[1]]).result(timeout=WATCHDOG)
        np.testing.assert_array_equal(total, np.full(1 << 20, 3.0))
        assert client.submit(lambda: os.getpid(), workers=[workers[0]]).result() != os.getpid()
    nothing_left_by_the_cluster(killed)


def test_a_worker_killed_as_the_local_cluster_closes_leaves_only_what_the_next_listener_removes() -> None:
    """Dask kills a worker process that does not close in time (here one stopped by SIGSTOP; on a
    loaded machine, a slow one): its accept queue stays until a listener starts, not for good."""
    from distributed import Client, LocalCluster

    with (
        workers_killed_at_close() as killed,
        LocalCluster(
            protocol="hakobu", n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        (worker,) = client.scheduler_info()["workers"]
        client.submit(os.kill, client.submit(os.getpid, workers=[worker]).result(), signal.SIGSTOP)
        time.sleep(0.5)
    assert killed, "Dask closed the stopped worker without killing it"
    port = worker.rsplit(":", 1)[1]
    left = connection_queues()
    # What a killed process leaves: its accept queue, and the queues it received on.
    assert accept_queue(worker) in left, left
    assert all(name == accept_queue(worker) or name.startswith(f"dask.{port}.") for name in left), left
    nothing_left_by_the_cluster(killed)


def test_dask_worker_command_joins_a_scheduler_over_hakobu() -> None:
    from distributed import Client, Scheduler

    async def scheduler_and_worker() -> None:
        async with Scheduler(protocol="hakobu", host="127.0.0.1", dashboard_address=None) as scheduler:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    scheduler.address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--no-nanny",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                async with Client(scheduler.address, asynchronous=True, timeout=30) as client:
                    await client.wait_for_workers(1, timeout=WATCHDOG)
                    (address,) = client.scheduler_info()["workers"]
                    assert address.startswith("hakobu://")
                    result = await client.submit(np.arange, 10).result()  # type: ignore[union-attr]
                    np.testing.assert_array_equal(result, np.arange(10))
                # The command stops as on Ctrl-C / a service manager's stop: SIGTERM, a clean close.
                worker.send_signal(signal.SIGTERM)
                for _ in range(int(WATCHDOG * 10)):  # the loop must run meanwhile: the scheduler answers
                    if worker.poll() is not None:
                        break
                    await asyncio.sleep(0.1)
            finally:
                if worker.poll() is None:
                    worker.kill()
                _out, err = worker.communicate()
            assert "Start worker at:   hakobu://" in err, err
            assert worker.returncode == 0, err

    run(scheduler_and_worker())
    assert connection_queues() == []


def test_nothing_of_the_comm_is_left_in_shared_memory() -> None:
    assert connection_queues() == [], files_of_domain()


# --- regressions: a dead or misbehaving peer never hangs or stops the comm -----------------------
def test_a_write_waiting_for_room_fails_when_the_peer_dies() -> None:
    listener, address = start_listener("idle")

    async def scenario() -> None:
        comm = await connect(address, timeout=10)
        for index in range(hakobu_comm.CONNECTION_CAPACITY):  # the idle peer reads none of them
            await comm.write({"n": index})
        blocked = asyncio.ensure_future(comm.write({"n": "one too many"}))
        await asyncio.sleep(0.3)
        assert not blocked.done()  # waits for room, as it should while the peer lives
        listener.send_signal(signal.SIGKILL)
        listener.wait(timeout=WATCHDOG)  # reaped: a zombie still counts as a process
        with pytest.raises(CommClosedError, match="peer process died"):
            await blocked
        assert comm.closed()

    run_with(listener, scenario())
    # The connection's queues went with the abort; the dead listener's accept queue is left
    # for the next listener to reap (tested below): removed here so that tests stay apart.
    assert connection_queues() == [accept_queue(address)]
    hakobu.remove(accept_queue(address))


def test_a_read_cancelled_in_the_middle_of_a_message_closes_the_comm() -> None:
    async def scenario() -> None:
        async with listen("hakobu://127.0.0.1:0", echo) as listener:
            comm = await connect(listener.contact_address, timeout=10)
            assert isinstance(comm, hakobu_comm.HakobuComm)
            # A header announcing a large frame that never comes: the read waits mid-message.
            header, _large = hakobu_comm.build_header([b"x" * hakobu_comm.LARGE_FRAME])
            with hakobu.Queue(comm._receive_name, create=False) as writer:
                writer.put(header)
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(comm.read(), 0.3)
            assert comm.closed()  # the next read must not take the frame for a header

    run(scenario())
    assert connection_queues() == []


@pytest.mark.parametrize("request_", [b"[" * 4000, b"\xff\xfe", b'{"version": 1}', b"{}"])
def test_a_bad_connection_request_is_dropped_and_the_listener_goes_on(request_: bytes) -> None:
    async def scenario() -> None:
        async with listen("hakobu://127.0.0.1:0", echo) as listener:
            port = listener.contact_address.rsplit(":", 1)[1]
            with hakobu.Queue(f"dask.listen.{port}", create=False) as accept:
                accept.put(request_)
            comm = await connect(listener.contact_address, timeout=10)
            await comm.write({"still": "accepting"})
            assert await comm.read() == {"still": "accepting"}
            await comm.close()

    run(scenario())
    assert connection_queues() == []


def test_a_new_listener_removes_the_queues_of_a_killed_one() -> None:
    listener, address = start_listener("idle")
    port = address.rsplit(":", 1)[1]

    async def scenario() -> None:
        comm = await connect(address, timeout=10)
        await comm.write({"unread": True})
        await comm.close()  # the listener lives but never reads: the queue to it stays, for it
        listener.send_signal(signal.SIGKILL)
        listener.wait(timeout=WATCHDOG)  # reaped: a zombie still counts as a process
        left = connection_queues()
        assert f"dask.listen.{port}" in left and len(left) == 2, left  # and the queue to it
        async with listen("hakobu://127.0.0.1:0", echo) as fresh:
            fresh_port = fresh.contact_address.rsplit(":", 1)[1]
            # The dead process's watch of its queue may still be registered for a moment
            # (it is dropped lazily): look again, within the watchdog, as later listeners do.
            while f"dask.listen.{port}" in connection_queues():
                hakobu_comm.reap_stale_queues(DOMAIN)
                await asyncio.sleep(0.05)
            assert connection_queues() == [f"dask.listen.{fresh_port}"]

    try:
        run(scenario())
    finally:
        stop(listener)
    assert connection_queues() == []
