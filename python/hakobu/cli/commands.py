"""The subcommands that look at and clean up domains: ls, info, rm, gc."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .. import _core
from .._errors import HakobuError, NotFound
from .errors import CommandError, check_name
from .files import DomainFiles, domain_files, find_domain_names
from .output import Output, escape, format_bytes, format_pids, render_domain
from .processes import ProcessScan, scan_processes
from .reports import domain_report, queue_report, summarize_domain


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
