"""The machine a benchmark ran on, as every benchmark of this package prints or records it."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Optional


def describe() -> dict[str, Any]:
    """The machine the figures come from (``hakobu bench`` records it in bench.json)."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = None
    try:
        with open("/proc/meminfo") as info:
            memory = next(int(line.split()[1]) * 1024 for line in info if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        pass
    try:
        shm = os.statvfs("/dev/shm")
        shm_size: Optional[int] = shm.f_blocks * shm.f_frsize
        shm_free: Optional[int] = shm.f_bavail * shm.f_frsize
    except OSError:
        shm_size = shm_free = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": memory,
        "kernel": platform.release(),
        "system": platform.system(),
        "machine": platform.machine(),
        "dev_shm_bytes": shm_size,
        "dev_shm_free_bytes": shm_free,
        "python": sys.version.split()[0],
    }


def with_versions() -> dict[str, Any]:
    """``describe()`` plus the versions of NumPy and hakobu, which the micro-benchmarks' figures depend on."""
    import numpy as np

    import hakobu

    return {**describe(), "numpy": np.__version__, "hakobu": hakobu.__version__}
