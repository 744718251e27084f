"""`hakobu doctor`: the system settings that matter for shared memory, and domains left behind."""

from __future__ import annotations

import argparse
import os
import resource
from dataclasses import dataclass, field
from typing import Any, Optional

from .files import SHM_DIRECTORY, domain_files, find_domain_names, hugetlbfs_mounts
from .output import Output, escape, format_bytes
from .processes import ProcessScan, scan_processes

GIB = 1 << 30


@dataclass
class Check:
    """One finding of `hakobu doctor`: ok, a note (could be better), or a problem (needs action)."""

    name: str
    status: str
    summary: str
    action: Optional[str] = None
    data: dict[str, Any] = field(default_factory=dict)


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return None


def read_meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (page counts stay counts)."""
    values: dict[str, int] = {}
    for line in (_read_text("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def check_shm() -> Check:
    try:
        fs = os.statvfs(SHM_DIRECTORY)
    except OSError as error:
        return Check(
            "/dev/shm",
            "problem",
            f"/dev/shm is not usable: {error.strerror}",
            "mount a tmpfs there: `sudo mount -t tmpfs -o size=8G tmpfs /dev/shm`",
        )
    total, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
    fraction = free / total if total else 0.0
    data = {
        "path": str(SHM_DIRECTORY),
        "total_bytes": total,
        "free_bytes": free,
        "used_bytes": total - free,
        "free_fraction": round(fraction, 4),
    }
    summary = f"{format_bytes(free)} free of {format_bytes(total)} ({fraction:.0%})"
    if free < GIB or fraction < 0.25:
        return Check(
            "/dev/shm",
            "problem",
            summary + ": low; large messages will fail with OutOfSharedMemory",
            "remove queues nobody needs (`hakobu ls --all`, `hakobu rm`), or make /dev/shm larger: "
            "`sudo mount -o remount,size=16G /dev/shm` (Docker: `--shm-size=16g`)",
            data,
        )
    return Check("/dev/shm", "ok", summary, data=data)


def check_huge_pages(meminfo: dict[str, int]) -> Check:
    total, free = meminfo.get("HugePages_Total", 0), meminfo.get("HugePages_Free", 0)
    page_size = meminfo.get("Hugepagesize", 0)
    mounts = hugetlbfs_mounts()
    writable = [m for m in mounts if os.access(m, os.W_OK)]
    data = {
        "total_pages": total,
        "free_pages": free,
        "page_size_bytes": page_size,
        "hugetlbfs_mounts": [str(m) for m in mounts],
    }
    reserve = "reserve some: `echo 512 | sudo tee /proc/sys/vm/nr_hugepages` (1 GiB of 2 MiB pages)"
    mount = "mount hugetlbfs: `sudo mkdir -p /dev/hugepages && sudo mount -t hugetlbfs none /dev/hugepages`"
    benefit = "large arrays then take fewer page faults and TLB misses (new domains use them)"
    if total == 0 and not mounts:
        return Check(
            "huge pages",
            "note",
            "none reserved, no hugetlbfs mount: large blocks use 4 KiB pages",
            f"optional: {reserve}; {mount}; {benefit}",
            data,
        )
    if total == 0:
        return Check(
            "huge pages",
            "note",
            f"hugetlbfs at {', '.join(map(str, mounts))} but no huge pages reserved",
            f"optional: {reserve}",
            data,
        )
    if not mounts:
        return Check(
            "huge pages", "note", f"{total} huge pages reserved but no hugetlbfs mount", f"{mount}", data
        )
    if not writable:
        return Check(
            "huge pages",
            "note",
            "hugetlbfs mounts are not writable by this user",
            "mount one this user can write to: `sudo mount -t hugetlbfs -o uid=$(id -u) none /dev/hugepages`",
            data,
        )
    if free == 0:
        return Check(
            "huge pages",
            "note",
            f"all {total} reserved huge pages are in use: large blocks fall back to /dev/shm",
            f"reserve more: `echo {2 * total} | sudo tee /proc/sys/vm/nr_hugepages`",
            data,
        )
    return Check(
        "huge pages",
        "ok",
        f"{free} of {total} free ({format_bytes(page_size)} each), hugetlbfs at {', '.join(map(str, writable))}",
        data=data,
    )


def check_transparent_huge_pages() -> Check:
    setting = _read_text("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
    if setting is None:
        return Check("transparent huge pages", "note", "not available in this kernel")
    chosen = next((word[1:-1] for word in setting.split() if word.startswith("[")), setting)
    data = {"shmem_enabled": chosen}
    if chosen in ("never", "deny"):
        return Check(
            "transparent huge pages",
            "note",
            f"shmem_enabled is '{chosen}': the heap's MADV_HUGEPAGE request has no effect",
            "optional: `echo advise | sudo tee /sys/kernel/mm/transparent_hugepage/shmem_enabled`",
            data,
        )
    return Check("transparent huge pages", "ok", f"shmem_enabled is '{chosen}'", data=data)


def check_open_files() -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    data = {"soft": soft, "hard": hard}
    if soft == resource.RLIM_INFINITY or soft >= 4096:
        return Check("open files", "ok", f"limit {soft} (hard {hard})", data=data)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    how = f"`ulimit -n {target}` in the shell that starts the programs"
    if target <= soft:
        how = (
            "raise the hard limit (`nofile` in /etc/security/limits.conf, or LimitNOFILE= in a systemd unit)"
        )
    status = "problem" if soft < 256 else "note"
    return Check(
        "open files",
        status,
        f"limit {soft} (hard {hard}): each open queue takes a descriptor per process",
        how,
        data,
    )


def check_max_map_count(scan: ProcessScan) -> Check:
    text = _read_text("/proc/sys/vm/max_map_count")
    if text is None or not text.isdigit():
        return Check("vm.max_map_count", "note", "cannot be read")
    limit = int(text)
    busiest = max(scan.map_counts.items(), key=lambda item: item[1], default=(0, 0))
    data = {"value": limit, "busiest_pid": busiest[0], "busiest_mappings": busiest[1]}
    action = f"`sudo sysctl -w vm.max_map_count={max(262144, 2 * limit)}`"
    if limit < 65530:
        return Check(
            "vm.max_map_count",
            "problem",
            f"{limit}, below the kernel default 65530: mapping queues will fail early",
            action,
            data,
        )
    if busiest[1] > 0.9 * limit:
        return Check(
            "vm.max_map_count",
            "problem",
            f"{limit}, and process {busiest[0]} already has {busiest[1]} mappings: opening more queues there will fail",
            action,
            data,
        )
    return Check(
        "vm.max_map_count", "ok", f"{limit} (the busiest process has {busiest[1]} mappings)", data=data
    )


def check_overcommit(meminfo: dict[str, int]) -> Check:
    text = _read_text("/proc/sys/vm/overcommit_memory")
    if text is None:
        return Check("vm.overcommit_memory", "note", "cannot be read")
    mode = int(text) if text.isdigit() else -1
    headroom = meminfo.get("CommitLimit", 0) - meminfo.get("Committed_AS", 0)
    data = {"value": mode, "commit_headroom_bytes": headroom}
    if mode != 2:
        return Check(
            "vm.overcommit_memory", "ok", f"{mode} ({'heuristic' if mode == 0 else 'always'})", data=data
        )
    summary = f"2 (strict): shared memory counts against CommitLimit, {format_bytes(max(headroom, 0))} left"
    if headroom < GIB:
        return Check(
            "vm.overcommit_memory",
            "problem",
            summary + "; puts will fail before /dev/shm is full",
            "`sudo sysctl -w vm.overcommit_memory=0`, or raise vm.overcommit_ratio",
            data,
        )
    return Check(
        "vm.overcommit_memory",
        "note",
        summary,
        "if puts fail while /dev/shm has room: `sudo sysctl -w vm.overcommit_memory=0`",
        data,
    )


def check_domains(scan: ProcessScan) -> list[Check]:
    """Domains of this user that no live process has open: left behind by crashes, or idle queues."""
    checks: list[Check] = []
    names = find_domain_names()
    for name in names:
        files = domain_files(name)
        if files.owner_uid() != os.getuid():
            continue
        pids = scan.pids_mapping(files.all())
        if pids:
            continue
        memory = files.memory_bytes()
        data = {
            "domain": name,
            "queues": sorted(files.queues),
            "topics": sorted(files.topics),
            "memory_bytes": memory,
        }
        # Named objects keep a domain (the last process out removes it only without them).
        named = len(files.queues) + len(files.stores) + len(files.syncs) + len(files.topics)
        where = f"domain '{name}' ({format_bytes(memory)} in /dev/shm)"
        if files.damaged:
            checks.append(
                Check(
                    f"domain {name}",
                    "problem",
                    f"{where} is damaged and nobody has it open",
                    f"`hakobu rm --domain {name} --everything`",
                    data,
                )
            )
        elif not named:
            checks.append(
                Check(
                    f"domain {name}",
                    "problem",
                    f"{where} is stale: no named object and no live process",
                    f"`hakobu gc --domain {name}` (reclaims what its dead processes held and removes it)",
                    data,
                )
            )
        else:
            checks.append(
                Check(
                    f"domain {name}",
                    "note",
                    f"{where} is idle: {named} named object(s) (queues, stores, sync objects, topics), "
                    "no live process has it open",
                    f"fine if a program will read them later; else `hakobu rm --domain {name} "
                    f"--everything`; `hakobu gc --domain {name}` reclaims what crashed processes held",
                    data,
                )
            )
    if not checks:
        checks.append(
            Check(
                "domains",
                "ok",
                f"{len(names)} domain(s) in /dev/shm, none left behind",
                data={"domains": names},
            )
        )
    return checks


def command_doctor(args: argparse.Namespace, out: Output) -> int:
    from rich import box
    from rich.table import Table

    meminfo = read_meminfo()
    scan = scan_processes()
    checks = [
        check_shm(),
        check_huge_pages(meminfo),
        check_transparent_huge_pages(),
        check_open_files(),
        check_max_map_count(scan),
        check_overcommit(meminfo),
        *check_domains(scan),
    ]
    healthy = all(check.status != "problem" for check in checks)
    if out.as_json:
        out.json({"ok": healthy, "checks": [check.__dict__ for check in checks]})
        return 0 if healthy else 1
    marks = {
        "ok": "[green]ok[/green]",
        "note": "[yellow]note[/yellow]",
        "problem": "[bold red]PROBLEM[/bold red]",
    }
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_lines=False)
    table.add_column("")
    table.add_column("check", style="bold")
    table.add_column("finding, and what to do", overflow="fold")
    for check in checks:
        text = escape(check.summary)
        if check.action:
            text += f"\n[dim]→[/dim] {escape(check.action)}"
        table.add_row(marks[check.status], escape(check.name), text)
    out.console.print(table)
    out.line(
        "nothing needs action" if healthy else "[bold red]some findings need action (see above)[/bold red]"
    )
    return 0 if healthy else 1
