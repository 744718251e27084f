"""The processes that have a domain's files mapped, from /proc/*/maps (nothing is attached)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import _core
from .files import SHM_DIRECTORY, hugetlbfs_mounts

FileId = tuple[int, int, int]  # (device major, device minor, inode)


def file_id(path: Path) -> Optional[FileId]:
    try:
        status = path.stat()
    except OSError:
        return None
    return (os.major(status.st_dev), os.minor(status.st_dev), status.st_ino)


@dataclass
class ProcessScan:
    """Who maps which hakobu file, from /proc/*/maps (processes we cannot read are skipped).

    Files are matched by device and inode, not by path: a queue's creator maps it under the
    temporary name it was built under (since removed, hence "(deleted)" in its maps)."""

    mapped_by: dict[FileId, set[int]] = field(default_factory=dict)
    map_counts: dict[int, int] = field(default_factory=dict)  # mappings per process

    def pids_mapping(self, paths: Iterable[Path]) -> list[int]:
        pids: set[int] = set()
        for path in paths:
            identity = file_id(path)
            if identity is not None:
                pids |= self.mapped_by.get(identity, set())
        return sorted(pids)


def scan_processes() -> ProcessScan:
    """Reads /proc/*/maps once. This process is left out: it maps what it inspects."""
    scan = ProcessScan()
    prefix = _core.FILE_NAME_PREFIX
    roots = tuple([str(SHM_DIRECTORY / prefix)] + [f"{m}/{prefix}" for m in hugetlbfs_mounts()])
    own_pid = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return scan
    for entry in entries:
        if not entry.isdigit() or int(entry) == own_pid:
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/maps") as maps:
                lines = maps.readlines()
        except OSError:  # gone meanwhile, or another user's process
            continue
        scan.map_counts[pid] = len(lines)
        for line in lines:
            # address perms offset major:minor inode path
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or not parts[5].startswith(roots):
                continue
            major, _, minor = parts[3].partition(":")
            try:
                identity = (int(major, 16), int(minor, 16), int(parts[4]))
            except ValueError:
                continue
            scan.mapped_by.setdefault(identity, set()).add(pid)
    return scan
