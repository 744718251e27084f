"""The subcommands that look at and clean up domains and their named objects: ls, info, rm, gc."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .. import _core
from .._errors import HakobuError, NotFound
from .errors import CommandError, check_name
from .files import SYNC_KINDS, DomainFiles, domain_files, find_domain_names, objects_named
from .output import (
    Output,
    escape,
    format_bytes,
    format_pids,
    object_state,
    queue_bytes_in_flight,
    queue_stream,
    queue_waiting,
    render_domain,
)
from .processes import ProcessScan, scan_processes
from .reports import domain_report, object_report, queue_report, summarize_domain


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


def _missing(name: str, domain: str, kind: str | None) -> str:
    """What says that no object `name` is there (a queue first: the name people mostly mean)."""
    if kind is not None and kind != "queue":
        return f"no {'sync object' if kind == 'sync' else kind} '{name}' in domain '{domain}'"
    tail = "" if kind == "queue" else " (nor a store, sync object or topic of that name)"
    return f"no queue '{name}' in domain '{domain}'{tail}"


def find_object(files: DomainFiles, name: str, kind: str | None) -> tuple[str, Path]:
    """The namespace and file of object `name`: the one of `kind` if given, else the only one
    of that name (a queue, a store, a sync object and a topic may share a name: then --kind says which)."""
    found = objects_named(files, name)
    if kind is not None:
        found = {k: p for k, p in found.items() if k == kind}
    if not found:
        raise CommandError(f"{_missing(name, files.domain, kind)}; see `hakobu ls --domain {files.domain}`")
    if len(found) > 1:
        raise CommandError(
            f"'{name}' names a {' and a '.join(found)} in domain '{files.domain}': "
            f"say which with --kind {'|'.join(found)}",
            exit_code=2,
        )
    return next(iter(found.items()))


def command_info(args: argparse.Namespace, out: Output) -> int:
    check_name("domain", args.domain)
    check_name("object", args.name)
    kind = kind_option(args)
    files = domain_files(args.domain)
    if not files.exists:
        raise CommandError(
            f"{_missing(args.name, args.domain, kind)} (the domain has no files); see `hakobu ls --all`"
        )
    kind, path = find_object(files, args.name, kind)
    if files.damaged:
        raise CommandError(
            f"domain '{args.domain}' is damaged; remove it with `hakobu rm --domain {args.domain} --everything`"
        )
    scan = scan_processes()
    try:
        with _core.DomainAttachment(args.domain):
            if kind == "queue":
                report = queue_report(args.name, args.domain, path, scan)
            else:
                report = object_report(kind, args.name, args.domain, path, scan)
    except HakobuError as error:
        raise CommandError(str(error)) from None
    if report["error"]:
        if not path.exists():  # removed while we looked
            raise CommandError(
                f"{_missing(args.name, args.domain, kind)}; see `hakobu ls --domain {args.domain}`"
            )
        raise CommandError(report["error"])
    if out.as_json:
        out.json(report)
        return 0
    if kind == "queue":
        render_queue(out, report)
    else:
        render_object(out, report)
    return 0


def kind_option(args: argparse.Namespace) -> str | None:
    """--kind as a namespace: "lock", "event", "semaphore"... are sync objects."""
    kind: str | None = getattr(args, "kind", None)
    return "sync" if kind in SYNC_KINDS else kind


def render_queue(out: Output, report: dict[str, Any]) -> None:
    from rich.table import Table

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
    for label, value in (  # our own text, with markup
        ("bytes in flight", queue_bytes_in_flight(report)),
        ("stream", queue_stream(report)),
        ("waiting (get / put)", queue_waiting(report)),
    ):
        grid.add_row(label, value)
    out.console.print(grid)


def render_object(out: Output, report: dict[str, Any]) -> None:
    """`hakobu info` of a store (with a table of its keys), a sync object, or a topic (with its settings
    and a table of its subscribers)."""
    from rich import box
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    creator = f"{report['creator_pid']} ({'running' if report['creator_alive'] else 'exited'})"
    for label, value in (
        (report["kind"], report["name"]),
        ("domain", report["domain"]),
        ("state", object_state(report)),
        ("creator pid", creator),
        ("file", report["path"]),
        ("file size", format_bytes(report["file_bytes"])),
        ("opened by (pids)", format_pids(report["pids"])),
        *topic_settings(report),
    ):
        grid.add_row(label, escape(value))
    out.console.print(grid)
    if report["kind"] == "topic":
        render_subscribers(out, report["subscribers"])
        return
    if report["kind"] != "store" or not report["keys"]:
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("key", no_wrap=True)
    for column in ("version", "size", "kind", "readers"):
        table.add_column(column, justify="right")
    for key in report["keys"]:
        if key["damaged"]:
            table.add_row(escape(key["key"]), "[red]damaged[/red]", "", "", "")
            continue
        table.add_row(
            escape(key["key"]),
            str(key["version"]),
            format_bytes(key["size"]),
            key["kind"],
            str(key["readers"]),
        )
    out.console.print(table)


def topic_settings(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows of `hakobu info` that only a topic has (none for other kinds)."""
    if report["kind"] != "topic":
        return []
    return [
        ("capacity / history", f"{report['capacity']} / {report['history']} messages"),
        ("subscribers", f"{len(report['subscribers'])} of at most {report['max_subscribers']}"),
        ("inline capacity", format_bytes(report["inline_capacity"])),
    ]


def render_subscribers(out: Output, subscribers: list[dict[str, Any]]) -> None:
    """A topic's subscriptions, one row each."""
    from rich import box
    from rich.table import Table

    if not subscribers:
        out.line("  no subscribers", markup=False)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("pid", justify="right")
    for column in ("on_full", "state"):
        table.add_column(column)
    for column in ("lag", "dropped", "received"):
        table.add_column(column, justify="right")
    for sub in subscribers:
        pid = str(sub["pid"] or "?") + ("" if sub["alive"] else " (dead)")
        table.add_row(
            pid, sub["on_full"], sub["state"], str(sub["lag"]), str(sub["dropped"]), str(sub["received"])
        )
    out.console.print(table)


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


def remove_object(kind: str, name: str, domain: str) -> None:
    """Removes the named object of namespace `kind`, whoever created it."""
    if kind == "queue":
        _core.remove(name, domain)
    elif kind == "store":
        _core.remove_store(name, domain)
    elif kind == "topic":
        _core.remove_topic(name, domain)
    else:
        _core.remove_sync(name, domain)


def command_rm(args: argparse.Namespace, out: Output) -> int:
    check_name("domain", args.domain)
    if args.everything:
        if args.names:
            raise CommandError("give object names or --everything, not both", exit_code=2)
        return remove_everything(args, out)
    if args.force:
        raise CommandError(
            "--force only goes with --everything (named objects are removed whoever holds them)", exit_code=2
        )
    if not args.names:
        raise CommandError("name the objects to remove (see `hakobu ls`), or use --everything", exit_code=2)
    for name in args.names:
        check_name("object", name)
    kind = kind_option(args)
    files = domain_files(args.domain)
    if not files.exists:
        raise CommandError(f"no domain '{args.domain}': nothing to remove; see `hakobu ls --all`")
    if files.damaged:
        raise CommandError(
            f"domain '{args.domain}' is damaged; remove it with `hakobu rm --domain {args.domain} --everything`"
        )
    result: dict[str, Any] = {"domain": args.domain, "removed": [], "missing": [], "failed": {}, "kinds": {}}
    with _core.DomainAttachment(args.domain):
        for name in args.names:
            try:
                found_kind, _path = find_object(files, name, kind)
            except CommandError as error:
                if error.exit_code == 2:  # more than one object of that name
                    result["failed"][name] = str(error)
                else:
                    result["missing"].append(name)
                continue
            try:
                remove_object(found_kind, name, args.domain)
                result["removed"].append(name)
                result["kinds"][name] = found_kind
            except NotFound:
                result["missing"].append(name)
            except HakobuError as error:
                result["failed"][name] = str(error)
    if out.as_json:
        out.json(result)
    for name in [] if out.as_json else result["removed"]:
        what = {"queue": "queue", "store": "store", "sync": "sync object", "topic": "topic"}[
            result["kinds"][name]
        ]
        out.line(f"removed {what} '{name}' from domain '{args.domain}'", markup=False)
    for name in result["missing"]:
        print(
            f"hakobu: {_missing(name, args.domain, kind)}; see `hakobu ls --domain {args.domain}`",
            file=sys.stderr,
        )
    for name, why in result["failed"].items():
        print(f"hakobu: could not remove '{name}': {why}", file=sys.stderr)
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
