"""The files of domains, found by name in /dev/shm and on hugetlbfs mounts.

Which file is what is the core's knowledge (hakobu/domain_files.hpp: the naming
scheme, the hugetlbfs mounts, the removal order); this module only groups what
the core lists. Nothing is opened or attached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import _core

SHM_DIRECTORY = Path(_core.shm_directory())


def hugetlbfs_mounts() -> list[Path]:
    """Every hugetlbfs mount point, of any page size (a domain's huge-page heap file lives on one of them)."""
    return [Path(path) for path, _page_size in _core.hugetlbfs_mounts()]


@dataclass
class DomainFiles:
    """The files of one domain, found by name (nothing is opened or attached)."""

    domain: str
    registry: Optional[Path] = None
    heap: Optional[Path] = None
    huge_heaps: list[Path] = field(default_factory=list)
    queues: dict[str, Path] = field(default_factory=dict)
    stores: dict[str, Path] = field(default_factory=dict)
    syncs: dict[str, Path] = field(default_factory=dict)  # locks, events...: the file's header says which
    topics: dict[str, Path] = field(default_factory=dict)
    others: list[Path] = field(default_factory=list)  # objects being built, kinds this version does not know

    @property
    def exists(self) -> bool:
        return bool(self.all())

    @property
    def damaged(self) -> bool:
        """A domain whose registry or heap is missing cannot be attached to."""
        return self.exists and (self.registry is None or self.heap is None)

    def all(self) -> list[Path]:
        """Every file, named objects first and the registry last (the order `rm --everything` removes them in)."""
        files = [
            *self.queues.values(),
            *self.stores.values(),
            *self.syncs.values(),
            *self.topics.values(),
            *self.others,
            *self.huge_heaps,
        ]
        return files + [p for p in (self.heap, self.registry) if p is not None]

    def owner_uid(self) -> Optional[int]:
        for path in self.all():
            try:
                return path.stat().st_uid
            except OSError:
                continue
        return None

    def memory_bytes(self) -> int:
        """Memory the files hold now (heap files are sparse: only what was touched counts)."""
        total = 0
        for path in self.all():
            try:
                total += path.stat().st_blocks * 512
            except OSError:
                continue
        return total


def find_domain_names() -> list[str]:
    """Names of the domains that have files in /dev/shm or on a hugetlbfs mount."""
    return _core.domain_names()


def domain_files(domain: str) -> DomainFiles:
    """The files of `domain`, found by name."""
    files = DomainFiles(domain)
    for path_text, kind, name in _core.domain_files(domain):
        path = Path(path_text)
        if kind == "registry":
            files.registry = path
        elif kind == "heap":
            files.heap = path
        elif kind == "huge_heap":
            files.huge_heaps.append(path)
        elif kind == "queue":
            files.queues[name] = path
        elif kind == "store":
            files.stores[name] = path
        elif kind == "sync":
            files.syncs[name] = path
        elif kind == "topic":
            files.topics[name] = path
        else:  # objects being built, kinds this version does not know
            files.others.append(path)
    return files


# The namespaces of a domain's named objects: a queue, a store, a sync object and a topic may share a name.
OBJECT_KINDS = ("queue", "store", "sync", "topic")
# The kinds of sync object, as `hakobu info` names them (src/sync/sync_info.cpp); each means "sync" for --kind.
SYNC_KINDS = (
    "lock",
    "event",
    "rlock",
    "semaphore",
    "bounded_semaphore",
    "barrier",
    "condition",
    "array",
    "value",
)


def objects_named(files: DomainFiles, name: str) -> dict[str, Path]:
    """The files of the named objects called `name`, by namespace ("queue", "store", "sync", "topic")."""
    found = {
        "queue": files.queues.get(name),
        "store": files.stores.get(name),
        "sync": files.syncs.get(name),
        "topic": files.topics.get(name),
    }
    return {kind: path for kind, path in found.items() if path is not None}
