"""Whether a process lives, asked once for the whole package (boards, the Dask comm, the command)."""

from __future__ import annotations

import os


def process_exists(pid: int) -> bool:
    """Whether some process has this id now, in this PID namespace (ids are reused: a hint, not
    proof). Another user's process exists too (the signal is refused, not unknown)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
