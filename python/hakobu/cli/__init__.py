"""The `hakobu` command: what shared memory hakobu uses, who holds it, and cleaning up.

    hakobu ls [--all]              the queues of a domain: messages, memory, who has them open
    hakobu info NAME               everything about one queue
    hakobu rm NAME [NAME...]       remove queues, whoever created them
    hakobu rm --everything         remove every file of a domain, also a damaged one
    hakobu gc                      reclaim what dead processes held
    hakobu doctor                  check the system settings that matter for shared memory
    hakobu bench [--quick]         IPC methods side by side with hakobu, measured here

Every subcommand takes ``--domain D`` (default: $HAKOBU_DOMAIN, else u<uid>)
and ``--json`` (machine-readable output on stdout). Errors go to stderr with
what to do, and the exit code is 1.

How it looks: files are found by name in /dev/shm (and on hugetlbfs mounts),
and the processes that have them open by reading /proc/*/maps; nothing is
opened for that. Figures kept inside shared memory (queue counters, heap use,
the process table) need attaching to the domain. The command checks that the
domain's files exist first, because attaching creates a domain that has none,
and holds one attachment for the whole command. Note that attaching also
reclaims what dead processes held (the library does that on every attach).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import __version__, _core
from ._errors import Corrupt, HakobuError, NotFound

SHM_DIRECTORY = Path("/dev/shm")
# The library names a domain's files "hakobu:D:registry", "hakobu:D:heap", "hakobu:D:q:QUEUE" and,
# while a queue is being built, "hakobu:D:new:..."; names cannot contain ':', so splitting is exact.
FILE_PREFIX = "hakobu:"  # as Domain::file_prefix in the library
GIB = 1 << 30


class CommandError(Exception):
    """A failure to report on stderr; the command exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- files of domains ----------------------------------------------------------------


def _unescape_mount_path(path: str) -> str:
    """/proc/mounts writes spaces, tabs, newlines and backslashes as octal escapes."""
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(escaped, plain)
    return path


def hugetlbfs_mounts() -> list[Path]:
    """Every hugetlbfs mount point (a domain's huge-page heap file lives on one of them)."""
    try:
        with open("/proc/mounts") as mounts:
            fields = [line.split() for line in mounts]
    except OSError:
        return []
    return [Path(_unescape_mount_path(f[1])) for f in fields if len(f) > 2 and f[2] == "hugetlbfs"]


def _hakobu_file_names(directory: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(directory) if n.startswith(FILE_PREFIX))
    except OSError:  # missing or unreadable: it holds nothing of ours
        return []


def _split_file_name(file_name: str) -> tuple[str, str, str]:
    """("D", kind, rest) of "hakobu:D:kind:rest"; kind is "registry", "heap", "q", "new"..."""
    _, domain, kind_and_rest = [*file_name.split(":", 2), "", ""][:3]
    kind, _, rest = kind_and_rest.partition(":")
    return domain, kind, rest


@dataclass
class DomainFiles:
    """The files of one domain, found by name (nothing is opened or attached)."""

    domain: str
    registry: Optional[Path] = None
    heap: Optional[Path] = None
    huge_heaps: list[Path] = field(default_factory=list)
    queues: dict[str, Path] = field(default_factory=dict)
    others: list[Path] = field(default_factory=list)  # queues being built, kinds this version does not know

    @property
    def exists(self) -> bool:
        return bool(self.all())

    @property
    def damaged(self) -> bool:
        """A domain whose registry or heap is missing cannot be attached to."""
        return self.exists and (self.registry is None or self.heap is None)

    def all(self) -> list[Path]:
        """Every file, queues first and the registry last (the order `rm --everything` removes them in)."""
        files = [*self.queues.values(), *self.others, *self.huge_heaps]
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
    names = {
        _split_file_name(file_name)[0]
        for directory in [SHM_DIRECTORY, *hugetlbfs_mounts()]
        for file_name in _hakobu_file_names(directory)
    }
    return sorted(name for name in names if name and not _core.validate_name(name))


def domain_files(domain: str) -> DomainFiles:
    """The files of `domain`, found by name."""
    files = DomainFiles(domain)
    prefix = _core.file_prefix(domain)
    for file_name in _hakobu_file_names(SHM_DIRECTORY):
        if not file_name.startswith(prefix):
            continue
        _, kind, rest = _split_file_name(file_name)
        path = SHM_DIRECTORY / file_name
        if (kind, rest) == ("registry", ""):
            files.registry = path
        elif (kind, rest) == ("heap", ""):
            files.heap = path
        elif kind == "q" and rest:
            files.queues[rest] = path
        else:
            files.others.append(path)
    for mount in hugetlbfs_mounts():
        if (mount / f"{prefix}heap").exists():
            files.huge_heaps.append(mount / f"{prefix}heap")
    return files


# --- processes -------------------------------------------------------------------------


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
    roots = tuple([str(SHM_DIRECTORY / FILE_PREFIX)] + [f"{m}/{FILE_PREFIX}" for m in hugetlbfs_mounts()])
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


def process_exists(pid: int) -> bool:
    """Whether some process has this pid now (pids are reused, so a hint, not proof)."""
    return pid > 0 and Path(f"/proc/{pid}").exists()


# --- reports ---------------------------------------------------------------------------


def check_name(kind: str, name: str) -> None:
    why = _core.validate_name(name)
    if why:
        raise CommandError(f"invalid {kind} name '{name}': {why}", exit_code=2)


def _queue_files_report(name: str, domain: str, path: Path, scan: ProcessScan) -> dict[str, Any]:
    """What is known of a queue without attaching to it: its file and who maps it."""
    return {
        "name": name,
        "domain": domain,
        "path": str(path),
        "size": None,
        "capacity": None,
        "put_count": None,
        "get_count": None,
        "creator_pid": None,
        "creator_alive": None,
        "file_bytes": None,
        "memory_bytes": None,
        "pids": scan.pids_mapping([path]),
        "error": None,
    }


def queue_report(name: str, domain: str, path: Path, scan: ProcessScan) -> dict[str, Any]:
    """Everything about one queue; `error` says why the counters are missing, if they are."""
    report = _queue_files_report(name, domain, path, scan)
    try:
        status = path.stat()
        report["file_bytes"] = status.st_size
        report["memory_bytes"] = status.st_blocks * 512
        info = _core.queue_info(name, domain)
    except FileNotFoundError:
        report["error"] = f"queue '{name}' was removed meanwhile"
        return report
    except HakobuError as error:  # damaged, incompatible, another user's...
        report["error"] = str(error)
        return report
    for key in ("size", "capacity", "put_count", "get_count", "creator_pid"):
        report[key] = info[key]
    report["creator_alive"] = process_exists(info["creator_pid"])
    return report


def summarize_domain(stats: dict[str, Any]) -> dict[str, Any]:
    """The domain-wide figures, without this command's own attachment."""
    own_pid = os.getpid()
    processes = [dict(p) for p in stats["processes"] if p["pid"] != own_pid]
    keys = (
        "heap_capacity",
        "heap_used",
        "live_bytes",
        "live_blocks",
        "cached_bytes",
        "huge_pages",
        "huge_page_used",
    )
    summary = {key: stats[key] for key in keys}
    summary["processes"] = processes
    summary["processes_alive"] = sum(1 for p in processes if p["alive"])
    summary["processes_dead"] = sum(1 for p in processes if not p["alive"])
    return summary


def domain_report(domain: str, scan: ProcessScan) -> dict[str, Any]:
    """What `hakobu ls` shows of one domain. Attaches only to a domain whose files are all there."""
    files = domain_files(domain)
    report: dict[str, Any] = {
        "domain": domain,
        "exists": files.exists,
        "damaged": files.damaged,
        "files": [str(p) for p in files.all()],
        "memory_bytes": files.memory_bytes(),
        "pids": scan.pids_mapping(files.all()),
        "owner_uid": files.owner_uid(),
        "summary": None,
        "queues": [],
        "error": None,
    }
    if not files.exists:
        return report
    if files.damaged:
        missing = "registry" if files.registry is None else "heap"
        report["error"] = (
            f"domain '{domain}' is damaged (its {missing} file is missing); "
            f"remove it with `hakobu rm --domain {domain} --everything`"
        )
        report["queues"] = [
            {**_queue_files_report(name, domain, path, scan), "error": "the domain is damaged"}
            for name, path in sorted(files.queues.items())
        ]
        return report
    try:
        with _core.DomainAttachment(domain):
            report["summary"] = summarize_domain(_core.domain_stats(domain))
            report["queues"] = [queue_report(n, domain, p, scan) for n, p in sorted(files.queues.items())]
    except Corrupt as error:
        report["error"] = str(error)
        if "--everything" not in report["error"]:  # older libraries suggest `hakobu rm --domain D` alone
            report["error"] += f"; remove the whole domain with `hakobu rm --domain {domain} --everything`"
    except HakobuError as error:
        report["error"] = str(error)
    return report


# --- output ---------------------------------------------------------------------------


def format_bytes(count: Optional[int]) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def format_pids(pids: Sequence[int]) -> str:
    return ", ".join(map(str, pids)) if pids else "-"


class Output:
    """Tables with rich for people, JSON for programs."""

    def __init__(self, as_json: bool) -> None:
        from rich.console import Console  # imported here: `--json` and `--version` do not need it

        self.as_json = as_json
        # Piped output is read by people too (`| less`, logs): rich's 80-column default would fold the
        # table, so it is as wide as its content needs (up to 200 columns) unless COLUMNS says otherwise.
        piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
        self.console = Console(highlight=False, soft_wrap=False, width=200 if piped else None)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")

    def line(self, text: str, markup: bool = True) -> None:
        self.console.print(text, markup=markup)


def escape(text: object) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(str(text))


def render_domain(out: Output, report: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    domain = report["domain"]
    if not report["exists"]:
        out.line(f"no domain '{domain}': it has no files in /dev/shm (see `hakobu ls --all`)", markup=False)
        return
    if report["error"]:
        out.line(f"[bold]domain {escape(domain)}[/bold]: [red]{escape(report['error'])}[/red]")
        out.line(f"  files: {escape(', '.join(report['files']))}; opened by: {format_pids(report['pids'])}")
        return
    summary = report["summary"]
    out.line(
        f"[bold]domain {escape(domain)}[/bold]: heap {format_bytes(summary['heap_used'])} used "
        f"(live {format_bytes(summary['live_bytes'])} in {summary['live_blocks']} blocks, "
        f"cached {format_bytes(summary['cached_bytes'])})\n"
        f"  processes attached: {summary['processes_alive']} alive, {summary['processes_dead']} dead; "
        f"huge pages: {'yes' if summary['huge_pages'] else 'no'}"
    )
    if not report["queues"]:
        out.line("  no queues")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    # Names are never wrapped (people copy them into `hakobu info` / `hakobu rm`).
    longest_name = max(len(queue["name"]) for queue in report["queues"])
    table.add_column("queue", no_wrap=True, min_width=longest_name)
    for column in ("messages", "memory", "creator"):
        table.add_column(column, justify="right")
    table.add_column("opened by (pids)", overflow="fold")
    for queue in report["queues"]:
        if queue["error"]:
            table.add_row(
                queue["name"], f"[red]{escape(queue['error'])}[/red]", "", "", format_pids(queue["pids"])
            )
            continue
        creator = str(queue["creator_pid"]) + ("" if queue["creator_alive"] else " (exited)")
        table.add_row(
            queue["name"],
            f"{queue['size']} / {queue['capacity']}",
            format_bytes(queue["memory_bytes"]),
            creator,
            format_pids(queue["pids"]),
        )
    out.console.print(table)


# --- subcommands ------------------------------------------------------------------------


def command_ls(args: argparse.Namespace, out: Output) -> int:
    scan = scan_processes()
    if args.all:
        reports = [domain_report(name, scan) for name in find_domain_names()]
        if out.as_json:
            out.json({"domains": reports})
        elif not reports:
            out.line("no hakobu domains in /dev/shm", markup=False)
        for report in [] if out.as_json else reports:
            render_domain(out, report)
        return 0
    check_name("domain", args.domain)
    report = domain_report(args.domain, scan)
    if out.as_json:
        out.json(report)
    else:
        render_domain(out, report)
    if report["error"]:  # damaged, another user's, incompatible: the message says what to do
        raise CommandError(report["error"])
    return 0


def command_info(args: argparse.Namespace, out: Output) -> int:
    from rich.table import Table

    check_name("domain", args.domain)
    check_name("queue", args.name)
    files = domain_files(args.domain)
    missing = f"no queue '{args.name}' in domain '{args.domain}'"
    if not files.exists:
        raise CommandError(f"{missing} (the domain has no files); see `hakobu ls --all`")
    if args.name not in files.queues:
        raise CommandError(f"{missing}; see `hakobu ls --domain {args.domain}`")
    if files.damaged:
        raise CommandError(
            f"domain '{args.domain}' is damaged; remove it with `hakobu rm --domain {args.domain} --everything`"
        )
    scan = scan_processes()
    try:
        with _core.DomainAttachment(args.domain):
            report = queue_report(args.name, args.domain, files.queues[args.name], scan)
    except HakobuError as error:
        raise CommandError(str(error)) from None
    if report["error"]:
        if not files.queues[args.name].exists():  # removed while we looked
            raise CommandError(f"{missing}; see `hakobu ls --domain {args.domain}`")
        raise CommandError(report["error"])
    if out.as_json:
        out.json(report)
        return 0
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    creator = f"{report['creator_pid']} ({'running' if report['creator_alive'] else 'exited'})"
    for label, value in (
        ("queue", report["name"]),
        ("domain", report["domain"]),
        ("messages waiting", f"{report['size']} of {report['capacity']}"),
        ("put / get counts", f"{report['put_count']} / {report['get_count']}"),
        ("creator pid", creator),
        ("file", report["path"]),
        ("file size", format_bytes(report["file_bytes"])),
        ("memory", format_bytes(report["memory_bytes"])),
        ("opened by (pids)", format_pids(report["pids"])),
    ):
        grid.add_row(label, escape(value))
    out.console.print(grid)
    return 0


def live_pids_of(files: DomainFiles, scan: ProcessScan) -> list[int]:
    """Processes attached to a domain: those that map its files, and those its process table
    says are alive (they may live in another PID namespace, out of sight of /proc)."""
    pids = set(scan.pids_mapping(files.all()))
    if not files.damaged:
        try:
            stats = _core.domain_stats(files.domain)
        except HakobuError:  # damaged or incompatible: the maps are all we can go by
            pass
        else:
            pids |= {p["pid"] for p in stats["processes"] if p["alive"] and p["pid"] != os.getpid()}
    return sorted(pids)


def remove_everything(args: argparse.Namespace, out: Output) -> int:
    domain = args.domain
    files = domain_files(domain)
    result: dict[str, Any] = {
        "domain": domain,
        "existed": files.exists,
        "removed": [],
        "failed": {},
        "live_pids": [],
    }
    if not files.exists:
        if out.as_json:
            out.json(result)
        else:
            out.line(f"no domain '{domain}': nothing to remove", markup=False)
        return 0
    live = live_pids_of(files, scan_processes())
    result["live_pids"] = live
    if live and not args.force:
        raise CommandError(
            f"domain '{domain}' has {len(live)} live process(es) attached (pids {format_pids(live)}); "
            f"stop them and run this again, or add --force to remove its files from under them"
        )
    # Counted as removed: every file seen that is gone now, whoever removed it (attaching above
    # may have made this command the domain's last process, which removes an empty domain).
    seen = {str(path) for path in files.all()}
    # Two passes: files may appear meanwhile (a queue being created, a process attaching).
    for _ in range(2):
        for path in domain_files(domain).all():
            seen.add(str(path))
            try:
                path.unlink()
            except FileNotFoundError:  # removed meanwhile
                pass
            except OSError as error:
                result["failed"][str(path)] = error.strerror or str(error)
    result["removed"] = sorted(path for path in seen if not os.path.lexists(path))
    if out.as_json:
        out.json(result)
    else:
        out.line(f"removed domain '{domain}': {len(result['removed'])} file(s)", markup=False)
        for path, why in result["failed"].items():
            print(f"hakobu: could not remove {path}: {why}", file=sys.stderr)
    return 1 if result["failed"] else 0


def command_rm(args: argparse.Namespace, out: Output) -> int:
    check_name("domain", args.domain)
    if args.everything:
        if args.names:
            raise CommandError("give queue names or --everything, not both", exit_code=2)
        return remove_everything(args, out)
    if args.force:
        raise CommandError(
            "--force only goes with --everything (queues are removed whoever holds them)", exit_code=2
        )
    if not args.names:
        raise CommandError("name the queues to remove (see `hakobu ls`), or use --everything", exit_code=2)
    for name in args.names:
        check_name("queue", name)
    files = domain_files(args.domain)
    if not files.exists:
        raise CommandError(f"no domain '{args.domain}': nothing to remove; see `hakobu ls --all`")
    if files.damaged:
        raise CommandError(
            f"domain '{args.domain}' is damaged; remove it with `hakobu rm --domain {args.domain} --everything`"
        )
    result: dict[str, Any] = {"domain": args.domain, "removed": [], "missing": [], "failed": {}}
    with _core.DomainAttachment(args.domain):
        for name in args.names:
            try:
                _core.remove(name, args.domain)
                result["removed"].append(name)
            except NotFound:
                result["missing"].append(name)
            except HakobuError as error:
                result["failed"][name] = str(error)
    if out.as_json:
        out.json(result)
    for name in [] if out.as_json else result["removed"]:
        out.line(f"removed queue '{name}' from domain '{args.domain}'", markup=False)
    for name in result["missing"]:
        print(
            f"hakobu: no queue '{name}' in domain '{args.domain}'; see `hakobu ls --domain {args.domain}`",
            file=sys.stderr,
        )
    for name, why in result["failed"].items():
        print(f"hakobu: could not remove queue '{name}': {why}", file=sys.stderr)
    return 1 if result["missing"] or result["failed"] else 0


def command_gc(args: argparse.Namespace, out: Output) -> int:
    check_name("domain", args.domain)
    domain = args.domain
    files = domain_files(domain)
    if not files.exists:
        if out.as_json:
            out.json({"domain": domain, "exists": False, "reclaimed": 0})
        else:
            out.line(f"no domain '{domain}': nothing to collect", markup=False)
        return 0
    if files.damaged:
        raise CommandError(
            f"domain '{domain}' is damaged; remove it with `hakobu rm --domain {domain} --everything`"
        )
    try:
        with _core.DomainAttachment(domain):
            before = summarize_domain(_core.domain_stats(domain))
            reclaimed = _core.collect_garbage(domain)
            after = summarize_domain(_core.domain_stats(domain))
    except HakobuError as error:
        raise CommandError(str(error)) from None
    # The last process to leave a domain without queues removes it; this command may be that one.
    removed = not domain_files(domain).exists
    result = {
        "domain": domain,
        "exists": True,
        "reclaimed": reclaimed,
        "live_bytes_before": before["live_bytes"],
        "live_bytes_after": after["live_bytes"],
        "live_blocks_before": before["live_blocks"],
        "live_blocks_after": after["live_blocks"],
        "cached_bytes": after["cached_bytes"],
        "processes": after["processes"],
        "domain_removed": removed,
    }
    if out.as_json:
        out.json(result)
        return 0
    out.line(
        f"domain '{domain}': reclaimed {reclaimed} dead process(es); live memory "
        f"{format_bytes(before['live_bytes'])} -> {format_bytes(after['live_bytes'])} "
        f"({before['live_blocks']} -> {after['live_blocks']} blocks), cached {format_bytes(after['cached_bytes'])}; "
        f"{after['processes_alive']} live process(es) attached",
        markup=False,
    )
    if removed:
        out.line(
            f"domain '{domain}' had no queue and no process left, so its files were removed", markup=False
        )
    return 0


# --- doctor ------------------------------------------------------------------------------


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
        data = {"domain": name, "queues": sorted(files.queues), "memory_bytes": memory}
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
        elif not files.queues:
            checks.append(
                Check(
                    f"domain {name}",
                    "problem",
                    f"{where} is stale: no queue and no live process",
                    f"`hakobu gc --domain {name}` (reclaims what its dead processes held and removes it)",
                    data,
                )
            )
        else:
            checks.append(
                Check(
                    f"domain {name}",
                    "note",
                    f"{where} is idle: {len(files.queues)} queue(s), no live process has it open",
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


# --- the parser -------------------------------------------------------------------------


def command_bench(args: argparse.Namespace, out: Output) -> int:
    """`hakobu bench`: see hakobu.bench."""
    from .bench import run_command

    return run_command(args, out.console, out.as_json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hakobu",
        description="See the shared memory hakobu uses and who holds it; reclaim what dead processes left.",
        epilog="Every subcommand takes --domain and --json. Domains live in /dev/shm as hakobu:DOMAIN:* files.",
    )
    parser.add_argument("--version", action="version", version=f"hakobu {__version__}")

    # The common options live on the main parser with their defaults and on each subcommand
    # without (SUPPRESS), so that `hakobu --json ls` and `hakobu ls --json` both work.
    parser.add_argument(
        "--domain",
        default=_core.default_domain(),
        help="the domain (default: $HAKOBU_DOMAIN, else u<uid>: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def subcommand(
        name: str, run: Callable[[argparse.Namespace, Output], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--domain", default=argparse.SUPPRESS, help="the domain (default: $HAKOBU_DOMAIN, else u<uid>)"
        )
        p.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print machine-readable JSON instead of tables",
        )
        p.set_defaults(run=run)
        return p

    ls = subcommand("ls", command_ls, "list the queues of a domain, their memory and who has them open")
    ls.add_argument("--all", "-a", action="store_true", help="every domain found in /dev/shm")
    info = subcommand("info", command_info, "show everything about one queue")
    info.add_argument("name", help="the queue")
    rm = subcommand("rm", command_rm, "remove queues whoever created them, or a whole domain")
    rm.add_argument("names", nargs="*", metavar="NAME", help="queues to remove")
    rm.add_argument(
        "--everything",
        action="store_true",
        help="remove every file of the domain (registry, heap, queues), also a damaged one",
    )
    rm.add_argument(
        "--force", action="store_true", help="with --everything: even while processes are attached"
    )
    subcommand("gc", command_gc, "reclaim what dead processes held")
    subcommand("doctor", command_doctor, "check the system settings that matter for shared memory")
    from . import bench  # argparse only: the benchmark's own imports wait for `run_command`

    bench.add_arguments(subcommand("bench", command_bench, "compare IPC methods with hakobu on this machine"))
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the command; returns the exit code (0 fine, 1 failed or needs action, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args, Output(args.json)))
    except CommandError as error:
        print(f"hakobu: {error}", file=sys.stderr)
        return error.exit_code
    except HakobuError as error:
        print(f"hakobu: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `hakobu ls | head`
        sys.stderr.close()
        return 0
