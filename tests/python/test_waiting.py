"""Latency modes of blocking calls: arguments, idle CPU, and no message lost in any mode.

Separate programs (tests/python/programs/waiting_peer.py) stand for the other side.
No test asserts a duration: CPU time is compared with wall time (a behavioural
bound), and every wait has a watchdog.
"""

from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import pytest
from conftest import finish, start

import hakobu

WATCHDOG = 60.0


def test_default_is_adaptive_and_modes_are_settable(name: str) -> None:
    with hakobu.Queue(name, create=True) as q:
        assert q.latency == "adaptive"
        for mode in ("spin", "sleep", "adaptive"):
            q.latency = mode
            assert q.latency == mode


@pytest.mark.parametrize(
    "spin, expected",
    [(0, "sleep"), (0.0, "sleep"), (math.inf, "spin"), (1e-4, "fixed"), (20e-6, "fixed")],
)
def test_spin_seconds_map_onto_modes(name: str, spin: float, expected: str) -> None:
    with hakobu.Queue(name, create=True, spin=spin) as q:
        assert q.latency == expected
        q.put(b"x")
        assert q.get(timeout=WATCHDOG) == b"x"


@pytest.mark.parametrize("latency", ["fast", "", "ADAPTIVE", 1, 1.5])
def test_bad_modes_are_invalid_arguments(name: str, latency: object) -> None:
    with pytest.raises(hakobu.InvalidArgument):
        hakobu.Queue(name, create=True, latency=latency)  # type: ignore[arg-type]
    with hakobu.Queue(name, create=True) as q:
        with pytest.raises(hakobu.InvalidArgument):
            q.latency = latency  # type: ignore[assignment]
        assert q.latency == "adaptive"
        q.unlink()


def test_a_mode_and_a_spin_together_are_refused(name: str) -> None:
    with pytest.raises(hakobu.InvalidArgument, match="not both"):
        hakobu.Queue(name, create=True, latency="sleep", spin=1e-3)
    for bad in (-1.0, math.nan):
        with pytest.raises(hakobu.InvalidArgument):
            hakobu.Queue(name, create=True, spin=bad)


def test_a_pickled_handle_keeps_its_mode(name: str) -> None:
    with hakobu.Queue(name, create=True, latency="sleep") as q, pickle.loads(pickle.dumps(q)) as again:
        assert again.latency == "sleep"
    with hakobu.Queue(name, spin=3e-5) as q, pickle.loads(pickle.dumps(q)) as again:
        assert again.latency == "fixed"


@pytest.mark.parametrize("mode", ["adaptive", "sleep"])
def test_an_idle_receiver_uses_little_cpu(name: str, mode: str) -> None:
    # A program blocked in get() with no sender for 1.5 s: after its spin budget it
    # sleeps, so its CPU time is far below the wall time (not a speed check).
    with hakobu.Queue(name, create=True):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no idle BLAS threads
        code, out, err = finish(start("waiting_peer", "idle", name, mode, 1.5, env=env))
        assert code == 0, err
        used = json.loads(out.strip().splitlines()[-1])
        assert used["wall"] >= 1.0
        assert used["cpu"] < 0.5 * used["wall"], used


@pytest.mark.parametrize("mode", ["adaptive", "spin", "sleep", "fixed"])
@pytest.mark.parametrize("payload", ["bytes", "array"])
def test_ping_pong_between_programs_loses_nothing_in_any_mode(name: str, mode: str, payload: str) -> None:
    trips = 300
    with (
        hakobu.Queue(name + "-to", create=True, capacity=4, latency=mode) as to,
        hakobu.Queue(name + "-from", create=True, capacity=4, latency=mode) as back,
    ):
        peer = start("waiting_peer", "echo", to.name, back.name, mode, trips)
        try:
            for i in range(trips):
                sent = np.full(8, i, dtype=np.float64) if payload == "array" else i.to_bytes(8, "little") * 8
                to.put(sent, timeout=WATCHDOG)
                got = back.get(timeout=WATCHDOG)
                if payload == "array":
                    np.testing.assert_array_equal(got, sent)
                else:
                    assert got == sent
            code, _, err = finish(peer)
            assert code == 0, err
        finally:
            if peer.poll() is None:
                peer.kill()
                peer.wait()
            to.unlink()
            back.unlink()
