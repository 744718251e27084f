"""What a pool's worker process imports: the wire protocol, never the engine (nor, with it, the
engine's at-exit and at-fork hooks); a pool made by a task imports the engine there."""

from __future__ import annotations

import subprocess
import sys

import hakobu

ENGINE = "hakobu._pool.engine"
PROTOCOL = "hakobu._pool.protocol"
WATCHDOG = 60  # seconds: against deadlock, never a measure of speed


def pool_modules(program: str) -> list[str]:
    """The hakobu._pool modules a fresh interpreter has imported once it ran ``program``."""
    listing = "print(*sorted(m for m in sys.modules if m.startswith('hakobu._pool')))"
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{program}\n{listing}"],
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
        check=True,
    )
    return done.stdout.split()


def test_importing_the_worker_module_imports_the_protocol_and_no_engine() -> None:
    modules = pool_modules("import hakobu._pool.worker")
    assert PROTOCOL in modules
    assert ENGINE not in modules


def test_importing_hakobu_imports_no_engine_until_a_pool_is_made() -> None:
    assert ENGINE not in pool_modules("import hakobu")
    assert ENGINE in pool_modules("import hakobu\nwith hakobu.Pool(1) as pool:\n    pool.map(abs, [-1])")


def loaded(name: str) -> bool:
    """Whether this process has imported module ``name`` (run in a worker)."""
    return name in sys.modules


def test_a_worker_process_runs_tasks_without_the_engine() -> None:
    with hakobu.Pool(1) as pool:
        assert pool.apply(loaded, (PROTOCOL,))
        assert not pool.apply(loaded, (ENGINE,))
        assert pool.map(abs, [-1, -2]) == [1, 2]  # still without the engine after running tasks
        assert not pool.apply(loaded, (ENGINE,))
    assert loaded(ENGINE)  # the parent made a pool


def map_in_a_pool_of_its_own(values: list[int]) -> tuple[bool, list[int], bool]:
    """(engine imported before, results, engine imported after) of a pool made in a task."""
    before = ENGINE in sys.modules
    with hakobu.Pool(1) as inner:
        results = inner.map(abs, values)
    return before, results, ENGINE in sys.modules


def test_a_task_may_make_a_pool_of_its_own() -> None:
    with hakobu.Pool(1) as pool:
        before, results, after = pool.apply(map_in_a_pool_of_its_own, ([-3, 4, -5],))
    assert (before, results, after) == (False, [3, 4, 5], True)
