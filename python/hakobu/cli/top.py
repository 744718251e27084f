"""`hakobu top`: a live view of one domain: its queues, topics, stores, running pipelines and
served stages, with message rates, depth, bytes in flight, memory held and processes attached.

A frame compares two samples taken `--interval` apart: a rate is a counter's growth between
them (puts, gets, publications, a stage's finished items) over the time between them, and a
stage's shares of time computing / waiting for input / waiting for room are how its workers
spent that interval. A sample is what `hakobu ls` reads (``reports.domain_report``: the
domain's figures and every object's counters) plus the boards of running pipelines
(``_pipeline.board.running``); nothing here parses files or shared memory itself.

``--json`` prints one frame as data and exits, ``--once`` one frame as text (also what a
piped stdout gets); otherwise the frame is redrawn on the terminal's alternate screen until
Ctrl-C, which restores the screen and exits with 0.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._pipeline import board as boards
from .._processes import process_exists
from .errors import CommandError, check_name
from .files import domain_files, find_domain_names
from .output import (
    Output,
    escape,
    format_bytes,
    format_pids,
    queue_bytes_in_flight,
    queue_stream,
    queue_waiting,
)
from .processes import scan_processes
from .reports import domain_report

if TYPE_CHECKING:
    from rich.console import RenderableType

# The worker-row columns a stage's time is split into, with the state a worker is in while
# the column grows (the board charges a column when its state ends; a frame adds the time
# spent so far in the current state, so that a worker stuck in one state shows it).
TIME_COLUMNS = {
    "compute_seconds": boards.COMPUTING,
    "input_wait_seconds": boards.WAITING_INPUT,
    "output_wait_seconds": boards.WAITING_OUTPUT,
}
SHARE_NAMES = {
    "compute_seconds": "computing",
    "input_wait_seconds": "waiting_input",
    "output_wait_seconds": "waiting_room",
}


@dataclass
class Sample:
    """What the domain looked like at one moment."""

    monotonic: float  # for rates
    wall: float  # time.time(): the board's `updated` stamps are wall-clock
    report: dict[str, Any]  # reports.domain_report
    pipelines: list[dict[str, Any]] = field(default_factory=list)  # board.running, checked
    pipelines_error: Optional[str] = None  # why the boards could not be read


def take_sample(domain: str) -> Sample:
    """One look at `domain` (attaches to it only if its files are all there, as `hakobu ls`)."""
    from .. import _core
    from .._errors import HakobuError

    report = domain_report(domain, scan_processes())
    sample = Sample(time.monotonic(), time.time(), report)
    if report["exists"] and not report["error"]:
        try:
            with _core.DomainAttachment(domain):
                sample.pipelines = [checked_board(board) for board in boards.running(domain)]
        except HakobuError:
            pass  # the domain went away meanwhile: the next sample says so
        # A board's description is whatever object some process stored: the view goes on without.
        except Exception as error:  # noqa: BLE001
            sample.pipelines_error = (
                f"the pipelines' boards could not be read ({type(error).__name__}: {error})"
            )
    return sample


# Above the largest pid Linux hands out (kernel.pid_max is at most 2**22).
PID_LIMIT = 1 << 22


def _number(value: Any) -> float:
    """A figure of a board's worker row: finite and not negative, else 0 (rows are written by other
    processes, with no lock: a damaged or forged one must not break the view)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number >= 0 else 0.0


def checked_board(raw: dict[str, Any]) -> dict[str, Any]:
    """A board (``board.running``) as this view uses it: every figure checked, each stage's rows
    within the worker rows there are. A description that makes no sense gives a board with
    `error` set and no stages."""
    workers = [
        {column: _number(row.get(column)) for column in boards.FIELDS} for row in raw.get("workers", [])
    ]
    for row in workers:
        row["pid"] = int(row["pid"]) if row["pid"] < PID_LIMIT else 0
    board: dict[str, Any] = {
        "name": str(raw.get("name", "?")),
        "pid": None,
        "alive": bool(raw.get("alive")),
        "started": None,
        "results": None,
        "stages": [],
        "workers": workers,
        "error": None,
    }
    try:
        board["pid"] = int(raw["pid"])
        board["started"] = float(raw["started"])
        board["results"] = None if raw.get("results") is None else str(raw["results"])
        for stage in raw["stages"]:
            first, count = int(stage["first_row"]), int(stage["workers"])
            if first < 0 or count < 0 or first + count > len(workers):
                raise ValueError(f"stage rows {first}..{first + count} of {len(workers)}")
            output = stage.get("output")
            board["stages"].append(
                {
                    "name": str(stage["name"]),
                    "input": str(stage["input"]),
                    "output": None if output is None else str(output),
                    "first_row": first,
                    "workers": count,
                }
            )
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        board["stages"] = []
        board["error"] = f"its board makes no sense ({type(error).__name__}: {error})"
    return board


def _rate(before: Optional[int], after: Optional[int], seconds: float) -> Optional[float]:
    """Growth per second of a counter; a counter that went back (the object was made anew) counts from 0."""
    if after is None or seconds <= 0:
        return None
    if before is None or after < before:
        before = 0
    return (after - before) / seconds


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def _is_board(name: str) -> bool:
    """A pipeline's board (a store and an array): shown as the pipeline, not as objects of its own."""
    return name.endswith(boards.SUFFIX)


def queue_rows(before: Sample, after: Sample, seconds: float) -> list[dict[str, Any]]:
    earlier = _by_name(before.report["queues"])
    rows = []
    for queue in after.report["queues"]:
        old = earlier.get(queue["name"], {})
        rows.append(
            {
                "name": queue["name"],
                "size": queue["size"],
                "capacity": queue["capacity"],
                # Payload bytes waiting and the byte capacity (0: none); the stream: handles
                # counted as senders, whether it ended (empty, every sender gone) and whether
                # one of them failed or died. None where the queue could not be read.
                "bytes": queue["bytes"],
                "max_bytes": queue["max_bytes"],
                "senders": queue["senders"],
                "ended": queue["ended"],
                "senders_lost": queue["senders_lost"],
                # Threads (and event loops) waiting now: to get, and for room to put.
                "receivers_waiting": queue["receivers_waiting"],
                "senders_waiting": queue["senders_waiting"],
                "put_count": queue["put_count"],
                "get_count": queue["get_count"],
                "put_rate": _rate(old.get("put_count"), queue["put_count"], seconds),
                "get_rate": _rate(old.get("get_count"), queue["get_count"], seconds),
                "memory_bytes": queue["memory_bytes"],
                "pids": queue["pids"],
                "error": queue["error"],
            }
        )
    return rows


def topic_rows(before: Sample, after: Sample, seconds: float) -> list[dict[str, Any]]:
    earlier = _by_name(before.report["topics"])
    rows = []
    for topic in after.report["topics"]:
        old = earlier.get(topic["name"], {})
        subscribers = topic["subscribers"]
        rows.append(
            {
                "name": topic["name"],
                "published": topic["published"],
                "publish_rate": _rate(old.get("published"), topic["published"], seconds),
                "subscribers": len(subscribers),
                "subscribers_dead": sum(1 for s in subscribers if not s["alive"]),
                "max_lag": max((s["lag"] for s in subscribers), default=0),
                "dropped": sum(s["dropped"] for s in subscribers),
                "retained": topic["retained"],
                "retained_bytes": topic["retained_bytes"],
                "pids": topic["pids"],
                "error": topic["error"],
            }
        )
    return rows


def store_rows(after: Sample) -> list[dict[str, Any]]:
    return [
        {
            "name": store["name"],
            "entries": None if store["error"] else len(store["keys"]),
            "capacity": store["capacity"],
            "bytes": store["value_bytes"],
            "pids": store["pids"],
            "error": store["error"],
        }
        for store in after.report["stores"]
        if not _is_board(store["name"])
    ]


def _worker_seconds(worker: dict[str, Any], column: str, wall: float) -> float:
    """A worker's time in one column, including the part of its current state not charged yet."""
    seconds = float(worker[column])
    if worker["state"] == TIME_COLUMNS[column]:
        seconds += max(0.0, wall - float(worker["updated"]))
    return seconds


def _worker_state(worker: dict[str, Any]) -> str:
    pid = worker["pid"]
    if pid == 0:
        return "not started"
    state = boards.STATE_NAMES.get(worker["state"], "unknown")
    if worker["state"] != boards.EXITED and not process_exists(pid):
        return "dead"
    return state


def _pipeline_key(pipeline: dict[str, Any]) -> tuple[Any, ...]:
    return (pipeline["name"], pipeline["pid"], pipeline["started"])


def _occupancy(queue: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """How full a stage's input queue is (None: no such queue in the domain now)."""
    if queue is None or queue["error"]:
        return None
    return {key: queue[key] for key in ("size", "capacity", "bytes", "max_bytes")}


def pipeline_rows(before: Sample, after: Sample, seconds: float) -> list[dict[str, Any]]:
    earlier = {_pipeline_key(p): p for p in before.pipelines}
    queues = _by_name(after.report["queues"])
    rows = []
    for pipeline in after.pipelines:
        old_workers = earlier.get(_pipeline_key(pipeline), {}).get("workers", [])
        workers = pipeline["workers"]
        stages = []
        for stage in pipeline["stages"]:
            first, count = stage["first_row"], stage["workers"]
            totals = {"items": 0.0, "errors": 0.0, "done": 0.0}
            spent = dict.fromkeys(TIME_COLUMNS, 0.0)
            states = []
            for row in range(first, first + count):  # within `workers` (checked_board)
                worker = workers[row]
                old = old_workers[row] if row < len(old_workers) else None
                if old is not None and old["pid"] != worker["pid"]:
                    old = None  # a replacement worker started its row anew
                totals["items"] += worker["items"]
                totals["errors"] += worker["errors"]
                totals["done"] += worker["items"] - (old["items"] if old else 0.0)
                for column in TIME_COLUMNS:
                    now = _worker_seconds(worker, column, after.wall)
                    then = _worker_seconds(old, column, before.wall) if old else 0.0
                    spent[column] += max(0.0, now - then)
                states.append(
                    {
                        "pid": worker["pid"],
                        "state": _worker_state(worker),
                        "items": int(worker["items"]),
                        "errors": int(worker["errors"]),
                    }
                )
            total_time = sum(spent.values())
            stages.append(
                {
                    "name": stage["name"],
                    "input": stage["input"],
                    "output": stage["output"],
                    "input_queue": _occupancy(queues.get(stage["input"])),
                    "workers": count,
                    "items": int(totals["items"]),
                    "errors": int(totals["errors"]),
                    "rate": max(0.0, totals["done"]) / seconds if seconds > 0 else None,
                    # Shares of the workers' time over the interval (None: no time to share).
                    "shares": {
                        SHARE_NAMES[column]: (spent[column] / total_time if total_time > 0 else None)
                        for column in TIME_COLUMNS
                    },
                    "worker_states": states,
                }
            )
        rows.append(
            {
                "name": pipeline["name"],
                "pid": pipeline["pid"],
                "alive": pipeline["alive"],
                "started": pipeline["started"],
                "results": pipeline["results"],
                "stages": stages,
                "error": pipeline["error"],
            }
        )
    return rows


def frame(before: Sample, after: Sample) -> dict[str, Any]:
    """What one frame shows, as data (`--json` prints it)."""
    seconds = after.monotonic - before.monotonic
    report = after.report
    summary = report["summary"] or {}
    return {
        "domain": report["domain"],
        "exists": report["exists"],
        "error": report["error"],
        "time": after.wall,
        "interval": seconds,
        "memory": {
            "files_bytes": report["memory_bytes"],
            "heap_used": summary.get("heap_used"),
            "live_bytes": summary.get("live_bytes"),
            "live_blocks": summary.get("live_blocks"),
            "cached_bytes": summary.get("cached_bytes"),
        },
        "processes": {
            "alive": summary.get("processes_alive"),
            "dead": summary.get("processes_dead"),
            "pids": [p["pid"] for p in summary.get("processes", [])],
            "mapping": report["pids"],
        },
        "queues": queue_rows(before, after, seconds),
        "topics": topic_rows(before, after, seconds),
        "stores": store_rows(after),
        "pipelines": pipeline_rows(before, after, seconds),
        "pipelines_error": after.pipelines_error,
    }


# --- text -------------------------------------------------------------------------------------


def _per_second(rate: Optional[float]) -> str:
    if rate is None:
        return "-"
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}"


def _share(share: Optional[float]) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def _objects_table(
    title: str,
    objects: list[dict[str, Any]],
    columns: list[str],
    cells: Callable[[dict[str, Any]], list[str]],
) -> list[Any]:
    """A section of queues, topics or stores (a blank line, then the table; nothing when there is
    none): a row per object, its name, ``cells(object)`` and who opened it, or the error that kept it
    from being read."""
    if not objects:
        return []
    table = _table(title, [o["name"] for o in objects], *columns, "opened by (pids)")
    for entry in objects:
        if entry["error"]:
            blanks = [""] * (len(columns) - 2)
            table.add_row(entry["name"], _error_cell(entry["error"]), *blanks, format_pids(entry["pids"]))
        else:
            table.add_row(entry["name"], *cells(entry), format_pids(entry["pids"]))
    return ["", table]


def _table(title: str, names: list[str], *columns: str) -> Any:
    """A table whose first column holds `names`: never cut nor wrapped (people copy them into
    `hakobu info`); on a narrow screen the other cells wrap (nothing is cut off)."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    for index, column in enumerate(columns):
        if index == 0:
            table.add_column(column, no_wrap=True, min_width=max(map(len, [column, *names])))
        else:
            table.add_column(
                column, justify="left" if index == len(columns) - 1 else "right", overflow="fold"
            )
    return table


def _error_cell(error: str) -> str:
    return f"[red]{escape(error)}[/red]"


def render(view: dict[str, Any]) -> RenderableType:
    """One frame for people."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    stamp = time.strftime("%H:%M:%S", time.localtime(view["time"]))
    domain = escape(view["domain"])
    parts.append(
        f"[bold]hakobu top[/bold]  domain [bold]{domain}[/bold]  {stamp}  (rates over {view['interval']:.1f} s)"
    )
    if not view["exists"]:
        parts.append(f"no domain '{domain}': it has no files in /dev/shm (see `hakobu ls --all`)")
        return Group(*parts)
    if view["error"]:
        parts.append(_error_cell(view["error"]))
        return Group(*parts)
    memory, processes = view["memory"], view["processes"]
    dead = f", {processes['dead']} dead" if processes["dead"] else ""
    parts.append(
        f"memory: files {format_bytes(memory['files_bytes'])}, heap used {format_bytes(memory['heap_used'])} "
        f"(live {format_bytes(memory['live_bytes'])} in {memory['live_blocks']} blocks, "
        f"cached {format_bytes(memory['cached_bytes'])}); processes attached: {processes['alive']} alive{dead}"
    )
    parts += _objects_table(
        "queues",
        view["queues"],
        ["queue", "depth", "bytes in flight", "put/s", "get/s", "stream", "waiting (get/put)"],
        lambda queue: [
            f"{queue['size']} / {queue['capacity']}",
            queue_bytes_in_flight(queue),
            _per_second(queue["put_rate"]),
            _per_second(queue["get_rate"]),
            queue_stream(queue),
            queue_waiting(queue),
        ],
    )
    parts += _objects_table(
        "topics",
        view["topics"],
        ["topic", "published/s", "subscribers", "largest lag", "dropped", "held"],
        lambda topic: [
            _per_second(topic["publish_rate"]),
            f"{topic['subscribers']}"
            + (f" ({topic['subscribers_dead']} dead)" if topic["subscribers_dead"] else ""),
            str(topic["max_lag"]),
            str(topic["dropped"]),
            f"{topic['retained']} ({format_bytes(topic['retained_bytes'])})",
        ],
    )
    parts += _objects_table(
        "stores",
        view["stores"],
        ["store", "entries", "bytes held"],
        lambda store: [f"{store['entries']} / {store['capacity']}", format_bytes(store["bytes"])],
    )
    if view["pipelines_error"]:
        parts += ["", _error_cell(view["pipelines_error"])]
    for pipeline in view["pipelines"]:
        if pipeline["error"]:
            title = f"[bold]pipeline {escape(pipeline['name'])}[/bold]"
            parts += ["", f"{title}: {_error_cell(pipeline['error'])}"]
            continue
        state = (
            "running"
            if pipeline["alive"]
            else "[red]its process died[/red] (remove the board with "
            + escape(f"`hakobu rm {pipeline['name']}{boards.SUFFIX} --kind store` and `--kind sync`)")
        )
        table = _table(
            f"pipeline {escape(pipeline['name'])} (pid {pipeline['pid']}, {state})",
            [stage["name"] for stage in pipeline["stages"]],
            "stage",
            "input queue",
            "workers",
            "items",
            "items/s",
            "errors",
            "computing",
            "waiting input",
            "waiting room",
            "worker states (pid: state)",
        )
        for stage in pipeline["stages"]:
            shares = stage["shares"]
            waiting = stage["input_queue"]
            table.add_row(
                escape(stage["name"]),
                "-" if waiting is None else f"{waiting['size']} / {waiting['capacity']}",
                str(stage["workers"]),
                str(stage["items"]),
                _per_second(stage["rate"]),
                str(stage["errors"]),
                _share(shares["computing"]),
                _share(shares["waiting_input"]),
                _share(shares["waiting_room"]),
                escape("; ".join(f"{w['pid']}: {w['state']}" for w in stage["worker_states"]) or "-"),
            )
        parts += ["", table]
    if not (view["queues"] or view["topics"] or view["stores"] or view["pipelines"]):
        parts.append(Text("no queues, topics, stores or pipelines"))
    return Group(*parts)


# --- the command ------------------------------------------------------------------------------


def interval_seconds(text: str) -> float:
    """--interval: a positive number of seconds (argparse type)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: '{text}'") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"give a number of seconds above 0 and at most 3600, not {text}")
    return seconds


def _missing_domain(domain: str) -> CommandError:
    """No such domain: say which exist."""
    names = find_domain_names()
    if names:
        return CommandError(
            f"no domain '{domain}' (it has no files in /dev/shm); domains that exist: {', '.join(names)} "
            f"(choose one with --domain NAME)"
        )
    return CommandError(
        f"no domain '{domain}' (it has no files in /dev/shm), and no other hakobu domain exists"
    )


def command_top(args: argparse.Namespace, out: Output) -> int:
    check_name("domain", args.domain)
    if not domain_files(args.domain).exists:
        raise _missing_domain(args.domain)
    live = not (out.as_json or args.once) and sys.stdout.isatty()
    if live:
        return _run_live(args.domain, args.interval, out)
    first = take_sample(args.domain)
    time.sleep(args.interval)
    view = frame(first, take_sample(args.domain))
    if not view["exists"]:  # removed while we looked
        raise _missing_domain(args.domain)
    if out.as_json:
        out.json(view)
    else:
        out.console.print(render(view))
    if view["error"]:  # damaged, another user's, incompatible: the message says what to do
        raise CommandError(view["error"])
    return 0


def _run_live(domain: str, interval: float, out: Output) -> int:
    """Redraws the frame every `interval` seconds on the alternate screen until Ctrl-C."""
    from rich.live import Live

    try:
        with Live(console=out.console, screen=True, auto_refresh=False) as screen:
            screen.update(f"hakobu top: looking at domain '{escape(domain)}'...", refresh=True)
            before = take_sample(domain)
            while True:
                time.sleep(interval)
                after = take_sample(domain)
                screen.update(render(frame(before, after)), refresh=True)
                before = after
    except KeyboardInterrupt:
        return 0  # how one leaves: the screen was restored on the way out
