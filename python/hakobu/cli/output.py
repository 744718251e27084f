"""Output: tables with rich for people, JSON for programs."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Optional


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


def queue_bytes_in_flight(queue: dict[str, Any]) -> str:
    """Payload bytes a queue holds, over its byte capacity (`hakobu top`, `hakobu info`)."""
    if queue["bytes"] is None:
        return "-"
    limit = queue["max_bytes"]
    return f"{format_bytes(queue['bytes'])} / {format_bytes(limit) if limit else 'no limit'}"


def queue_stream(queue: dict[str, Any]) -> str:
    """The end-of-stream state of a queue: its senders, and whether the stream ended (rich markup)."""
    if queue["senders"] is None:
        return "-"
    if queue["ended"]:
        return "[red]ended, senders lost[/red]" if queue["senders_lost"] else "ended"
    text = f"{queue['senders']} sender(s)"
    return text + (", [red]one lost[/red]" if queue["senders_lost"] else "")


def queue_waiting(queue: dict[str, Any]) -> str:
    """Who waits on a queue now: receivers / senders (threads asleep and event loops)."""
    if queue["receivers_waiting"] is None:
        return "-"
    return f"{queue['receivers_waiting']} / {queue['senders_waiting']}"


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
    objects = [*report.get("stores", []), *report.get("sync_objects", []), *report.get("topics", [])]
    if not report["queues"]:
        out.line("  no queues")
        if objects:
            render_objects(out, objects)
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
    if objects:
        render_objects(out, objects)


def topic_state(report: dict[str, Any]) -> str:
    """One line on a topic, for people: its subscribers (how far the furthest behind lags, how many
    messages publishers skipped them past, how many died), and what its ring holds. `hakobu info`
    has a row per subscriber."""
    subscribers = report["subscribers"]
    text = f"{len(subscribers)} subscriber(s)"
    if subscribers:
        details = [
            f"lag up to {max(s['lag'] for s in subscribers)}",
            f"{sum(s['dropped'] for s in subscribers)} dropped",
        ]
        dead = sum(1 for s in subscribers if not s["alive"])
        if dead:
            details.append(f"{dead} dead")
        text += f" ({', '.join(details)})"
    text += f"; {report['published']} published, {report['retained']} held"
    text += f" ({format_bytes(report['retained_bytes'])})"
    if report["tombstones"]:
        text += f", {report['tombstones']} left by dead publishers"
    if report["damaged_slots"]:
        text += f", {report['damaged_slots']} damaged"
    return text + (" (removed, still open)" if report["unlinked"] else "")


def object_state(report: dict[str, Any]) -> str:
    """One line on the state of a store, sync object or topic, for people."""
    kind = report["kind"]
    if kind == "topic":
        return topic_state(report)
    if kind == "store":
        keys = report["keys"]
        readers = sum(key["readers"] or 0 for key in keys)
        return (
            f"{len(keys)} key(s) of {report['capacity']}, {format_bytes(report['value_bytes'])} of values, "
            f"{readers} reader reference(s)" + (" (removed, still open)" if report["unlinked"] else "")
        )
    waiters = ", waiters" if report["waiters"] else ""
    if kind in ("lock", "rlock"):
        depth = f" (depth {report['depth']})" if kind == "rlock" and report["held"] else ""
        return f"{lock_state(report)}{depth}{waiters}; owner deaths {report['owner_deaths']}"
    if kind == "event":
        return ("set" if report["set"] else "clear") + waiters
    if kind in ("semaphore", "bounded_semaphore"):
        bound = f" of {report['bound']}" if report["bound"] is not None else ""
        holders = ", ".join(
            f"pid {h['pid'] or '?'}: {h['counts']}"
            + ("" if h["alive"] else " (dead: returns to the next waiter)")
            for h in report["holders"]
        )
        returned = f"; returned from dead holders {report['returned']}" if report["returned"] else ""
        leaked = f", maybe lost {report['maybe_leaked']}" if report["maybe_leaked"] else ""
        return f"value {report['value']}{bound}{waiters}; held: {holders or 'none'}{returned}{leaked}"
    if kind == "barrier":
        broken = ", broken" if report["broken"] else ""
        return f"{report['n_waiting']} of {report['parties']} parties waiting{broken}"
    if kind == "condition":
        lock = f"lock '{report['lock_name']}'" if report["lock_name"] else f"own lock {lock_state(report)}"
        return lock + (", waiters" if report["waiters"] else "")
    if kind in ("array", "value"):
        shape = "" if not report["shape"] else " shape " + "x".join(str(n) for n in report["shape"])
        return f"{report['dtype']}{shape}; lock {lock_state(report)}{waiters}"
    return f"word {report.get('word', '?')}"  # a kind this version does not know


def lock_state(report: dict[str, Any]) -> str:
    """A lock word's holder: a lock's, an rlock's, a condition's own lock, an array's lock."""
    if not report["held"]:
        return "free"
    alive = "" if report["holder_alive"] else " (dead: the next acquirer takes it over)"
    return f"held by pid {report['holder_pid'] or '?'}{alive}"


def render_objects(out: Output, objects: list[dict[str, Any]]) -> None:
    """The stores, sync objects and topics of a domain, one row each."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("object", no_wrap=True, min_width=max(len(o["name"]) for o in objects))
    table.add_column("kind")
    table.add_column("state", overflow="fold")
    table.add_column("opened by (pids)", overflow="fold")
    for report in objects:
        state = f"[red]{escape(report['error'])}[/red]" if report["error"] else escape(object_state(report))
        table.add_row(report["name"], report["kind"], state, format_pids(report["pids"]))
    out.console.print(table)
