"""A pool whose parent is SIGKILLed mid-map leaves nothing in /dev/shm: the workers remove the
pool's queues, release everything they hold and exit normally, so the last of them to detach
removes the domain's files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import DOMAIN, files_of_domain, finish, start
from test_pool import eventually, processes_named

WATCHDOG = 60.0  # seconds: against a hang, never a measure of speed


def test_a_killed_parent_leaves_no_file_of_its_domain(tmp_path: Path) -> None:
    domain = f"{DOMAIN}k"  # the program's own domain: this process does not keep it alive
    program = start("pool_killed", tmp_path, env={**os.environ, "HAKOBU_DOMAIN": domain})
    try:
        line = program.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("pool-"), program.stderr.read()  # type: ignore[union-attr]
        name = line.strip()
        eventually(
            lambda: len(list(tmp_path.iterdir())) == 2,
            "both workers run a task on the shared input",
            WATCHDOG,
        )
        assert files_of_domain(domain), "the domain exists while the pool runs"
        program.send_signal(signal.SIGKILL)
        code, _, _ = finish(program, WATCHDOG)
        assert code == -signal.SIGKILL
        eventually(lambda: not processes_named(name), "the orphaned workers exit", WATCHDOG)
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()
        left = files_of_domain(domain)
        for path in left:  # whatever the outcome, the next run starts clean
            os.unlink(path)
    assert not left, f"the domain's files stayed after its last process left: {left}"
