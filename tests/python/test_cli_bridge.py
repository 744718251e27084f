"""`hakobu bridge`: the command in real processes (both ends, Ctrl-C, keys, usage errors)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("zmq")

from conftest import finish, start

import hakobu

WATCHDOG = 60.0


def hakobu_command(*args: str) -> subprocess.Popen:
    """`hakobu ARGS...` as a separate process (its own interpreter, SIGINT as Ctrl-C gives it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "hakobu", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def endpoint_of(process: subprocess.Popen) -> str:
    """The endpoint a bridge command says it uses (its first line on stderr)."""
    assert process.stderr is not None
    line = process.stderr.readline()
    assert line.startswith("hakobu bridge: queue"), line
    return line.split(" at ")[1].split(" ")[0] if " at " in line else line.split(" to ")[1].split(" ")[0]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        process.kill()
        process.communicate()


@pytest.fixture
def names(name: str) -> Iterator[tuple[str, str]]:
    pair = (f"{name}-a", f"{name}-b")
    yield pair
    for queue in pair:
        try:
            hakobu.remove(queue)
        except hakobu.NotFound:
            pass
        try:  # where a receiving end that did not see the end of the stream keeps its progress
            hakobu._core.remove_store(f"{queue}.bridge")
        except hakobu.NotFound:
            pass


def test_both_ends_carry_a_stream_and_end_with_it(
    names: tuple[str, str], processes: list[subprocess.Popen]
) -> None:
    receiving = hakobu_command("--json", "bridge", names[1], "--at", "tcp://127.0.0.1:*", "--allow-objects")
    processes.append(receiving)
    endpoint = endpoint_of(receiving).replace("0.0.0.0", "127.0.0.1")
    sending = hakobu_command("bridge", names[0], "--to", endpoint, "--window", "8")
    processes.append(sending)
    producer = start("bridge_send", names[0], 500)
    processes.append(producer)
    with hakobu.Queue(names[1]) as sink:
        assert list(sink) == list(range(500))
    assert finish(producer)[0] == 0
    code, _, err = finish(sending, WATCHDOG)
    assert code == 0, err
    assert "ended: 500 messages" in err
    code, out, err = finish(receiving, WATCHDOG)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["messages"] == 500 and stats["role"] == "receive" and stats["rejected"] == 0
    assert stats["lane_messages"] == 500  # on the data lane, the default without keys


@pytest.mark.parametrize("lane", ["--no-lane", "--lane-port"])
def test_the_data_lane_flags(names: tuple[str, str], processes: list[subprocess.Popen], lane: str) -> None:
    """--no-lane keeps everything in ZeroMQ; --lane-port PORT listens there, and says so."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flags = ["--no-lane"] if lane == "--no-lane" else ["--lane-port", str(port)]
    receiving = hakobu_command("--json", "bridge", names[1], "--at", "tcp://127.0.0.1:*", *flags)
    processes.append(receiving)
    assert receiving.stderr is not None
    first = receiving.stderr.readline()
    assert (f"(data lane on port {port})" in first) == (lane == "--lane-port"), first
    endpoint = first.split(" at ")[1].split(" ")[0]
    sending = hakobu_command("bridge", names[0], "--to", endpoint)
    processes.append(sending)
    with hakobu.Queue(names[0]) as queue:
        queue.put(b"through")
        queue.close()
    with hakobu.Queue(names[1]) as sink:
        assert list(sink) == [b"through"]
    assert finish(sending, WATCHDOG)[0] == 0
    code, out, err = finish(receiving, WATCHDOG)
    assert code == 0, err
    assert json.loads(out)["lane_messages"] == (0 if lane == "--no-lane" else 1)


def test_ctrl_c_exits_130_and_loses_nothing(
    names: tuple[str, str], processes: list[subprocess.Popen]
) -> None:
    with hakobu.Queue(names[0]) as queue, hakobu.Queue(names[1], capacity=1) as sink:
        for i in range(6):
            queue.put(i)
        receiving = hakobu_command("bridge", names[1], "--at", "tcp://127.0.0.1:*", "--allow-objects")
        processes.append(receiving)
        endpoint = endpoint_of(receiving)
        sending = hakobu_command("--json", "bridge", names[0], "--to", endpoint, "--window", "2")
        processes.append(sending)
        # The sink holds 0; 1 and 2 are in flight, not acknowledged (nobody reads the sink).
        deadline = time.monotonic() + WATCHDOG
        while not (sink.qsize() == 1 and queue.qsize() == 3):
            assert time.monotonic() < deadline, "watchdog: the window did not fill"
            time.sleep(0.01)
        sending.send_signal(signal.SIGINT)
        code, out, err = finish(sending, WATCHDOG)
        assert code == 130, err
        assert json.loads(out)["given_back"] == 2
        assert "2 put back into the local queue" in err
        assert sorted(queue.get(timeout=WATCHDOG) for _ in range(5)) == [1, 2, 3, 4, 5]
        receiving.send_signal(signal.SIGINT)
        assert finish(receiving, WATCHDOG)[0] == 130


def test_without_keys_or_allow_objects_objects_are_refused_and_bytes_flow(
    names: tuple[str, str], processes: list[subprocess.Popen]
) -> None:
    with hakobu.Queue(names[0]) as queue:
        queue.put(b"bytes")
        queue.put({"an": "object"})
        queue.put(b"more bytes")
        queue.close()
    receiving = hakobu_command("--json", "bridge", names[1], "--at", "tcp://127.0.0.1:*")
    processes.append(receiving)
    sending = hakobu_command("bridge", names[0], "--to", endpoint_of(receiving))
    processes.append(sending)
    with hakobu.Queue(names[1]) as sink:
        assert list(sink) == [b"bytes", b"more bytes"]
    assert finish(sending, WATCHDOG)[0] == 0
    code, out, err = finish(receiving, WATCHDOG)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["messages"] == 2 and stats["rejected"] == 1
    assert "object message" in err and "--allowed-keys" in err and "--allow-objects" in err


def test_keys_writes_a_pair_and_refuses_to_overwrite_it(tmp_path: Path) -> None:
    code, out, err = finish(
        hakobu_command("--json", "bridge", "keys", str(tmp_path / "k"), "--name", "alpha")
    )
    assert code == 0, err
    written = json.loads(out)
    assert Path(written["public"]).name == "alpha.key" and Path(written["secret"]).name == "alpha.key_secret"
    assert Path(written["secret"]).stat().st_mode & 0o077 == 0  # the secret key is the owner's only
    code, _, err = finish(hakobu_command("bridge", "keys", str(tmp_path / "k"), "--name", "alpha"))
    assert code == 1 and "exists already" in err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["q"], "give --to"),
        (["keys"], "usage: hakobu bridge keys DIR"),
        (["bad/name", "--to", "tcp://127.0.0.1:9"], "invalid queue name"),
        (["q", "--to", "tcp://127.0.0.1:9", "--window", "0"], "--window must be > 0"),
        (["q", "--at", "tcp://127.0.0.1:*", "--lane-port", "70000"], "--lane-port must be a port"),
        (["q", "--to", "tcp://a:1", "--at", "tcp://*:1"], "not allowed with argument"),
    ],
)
def test_usage_errors_exit_2_and_say_what_to_give(arguments: list[str], message: str) -> None:
    code, _, err = finish(hakobu_command("bridge", *arguments))
    assert code == 2 and message in err, err


def test_a_binding_end_with_a_key_and_no_allowed_keys_is_refused(name: str, tmp_path: Path) -> None:
    code, out, _ = finish(hakobu_command("--json", "bridge", "keys", str(tmp_path), "--name", "k"))
    secret = json.loads(out)["secret"]
    code, _, err = finish(hakobu_command("bridge", name, "--at", "tcp://127.0.0.1:*", "--secret-key", secret))
    assert code == 1 and "allowed_keys" in err
