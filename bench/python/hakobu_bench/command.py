"""`hakobu bench`: the subcommand this distribution adds to the ``hakobu`` command.

The ``hakobu`` command finds it through the entry point ``bench`` of the group
``hakobu.commands`` and uses three names of this module: ``help`` (its line in
``hakobu --help``), ``add_arguments`` (its options) and ``run`` (runs it,
returns the exit code).

This module stays light (argparse only) so that ``hakobu --help`` does not
import NumPy, matplotlib or any peer library; the work is in ``run``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

if TYPE_CHECKING:  # annotations only: importing this module stays cheap
    from rich.console import Console

    from .runner import Run
    from .workload import Shape

DEFAULT_OUT = "hakobu-bench"

help = "compare IPC methods with hakobu on this machine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `hakobu bench`."""
    parser.add_argument(
        "--quick", action="store_true", help="small shapes and few repeats (for CI; seconds per method)"
    )
    parser.add_argument("--methods", help="comma-separated methods to run (default: all; see --list)")
    parser.add_argument(
        "--shapes",
        help="comma-separated shapes: 64B, 1x3x224x224, 2x1024x16x16, 2x3x16x224x224, mnist-70000x784, "
        "128x1024x1024, or AxBxC[:dtype] (default: all; with --quick the first three)",
    )
    parser.add_argument(
        "--repeat", type=int, help="timed round trips per method and shape (default: per shape)"
    )
    parser.add_argument(
        "--warmup", type=int, help="untimed round trips first (default: 1, 5 for tiny messages)"
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help="directory for bench.json and bench.png (default: %(default)s)"
    )
    parser.add_argument(
        "--serialize",
        choices=["pickle+base64"],
        help="encode every array as the older comparisons did (pickle, then base64) before sending it",
    )
    parser.add_argument(
        "--no-limits",
        action="store_true",
        help="also run methods on arrays above their size limit (HTTP+JSON of 1 GiB takes minutes and tens of GB)",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write bench.png")
    parser.add_argument("--list", action="store_true", help="list the methods and whether each can run here")
    parser.add_argument(
        "--fanout",
        nargs="?",
        const="1,2,4",
        metavar="COUNTS",
        help="measure fan-out instead of round trips: one publisher to COUNTS subscriber processes (default "
        "1,2,4), per-subscriber latency and stream throughput of hakobu Topic, ZeroMQ PUB/SUB, iceoryx2, Ray, "
        "multiprocessing; --shapes are then message sizes (64B, 1MiB, 64MiB, 1GiB or bytes; default all, "
        "with --quick 64B,1MiB), --repeat the latency repeats; writes fanout.json",
    )
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="measure a three-stage pipeline instead of round trips: float64 arrays through three processes "
        "(stages 2 and 3 add one in place, and identity stages) over hakobu queues, multiprocessing.Queue, "
        "multiprocessing.connection, HTTP + a SharedMemory name, WebSocket and Ray actors; per-stage transport "
        "time, end-to-end latency and throughput; --shapes as for round trips (default the four of the "
        "pipeline), --repeat the messages per phase; writes pipeline.json",
    )


def run(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    """Runs `hakobu bench`; returns 0, or 1 when a method failed or sent back wrong data."""
    import json

    from . import report, workload
    from .methods import all_methods

    # Peers inherit the domain; hakobu's methods then work in the one asked for.
    domain: Optional[str] = getattr(args, "domain", None)
    if domain:
        os.environ["HAKOBU_DOMAIN"] = domain
    if args.fanout is not None:
        return _run_fanout(args, console, as_json)
    if args.pipeline:
        return _run_pipeline(args, console, as_json)
    methods = all_methods()
    if args.list:
        listing = [
            {"name": m.name, "label": m.label, "missing": m.missing(), "description": m.description}
            for m in methods.values()
        ]
        if as_json:
            sys.stdout.write(json.dumps(listing, indent=2) + "\n")
        else:
            for item in listing:
                state = (
                    "[green]ready[/]"
                    if item["missing"] is None
                    else f"[yellow]skipped[/]: {report.escape(item['missing'])}"
                )
                console.print(f"{item['name']:<18} {item['label']:<32} {state}")
        return 0
    if args.repeat is not None and args.repeat < 1:
        console.print("[red]hakobu bench: --repeat must be at least 1[/]")
        return 2
    names = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else list(methods)
    try:
        if args.shapes:
            shapes = [workload.parse_shape(s.strip()) for s in args.shapes.split(",") if s.strip()]
        else:
            chosen = workload.QUICK_SHAPES if args.quick else [s.name for s in workload.SHAPES]
            shapes = [workload.parse_shape(s) for s in chosen]
        unknown = [n for n in names if n not in methods]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(methods)}")
    except (ValueError, TypeError) as error:
        print(f"hakobu bench: {error}", file=sys.stderr)
        return 2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    outcome = _run_with_progress(names, shapes, args)
    options = {
        "quick": args.quick,
        "methods": names,
        "shapes": [s.name for s in shapes],
        "repeat": args.repeat,
        "warmup": args.warmup,
        "serialize": args.serialize,
        "no_limits": args.no_limits,
    }
    data = report.to_json(outcome, options)
    json_path = out / "bench.json"
    report.write_json(data, json_path)
    plot_problem = "not asked for (--no-plot)" if args.no_plot else report.plot(outcome, out / "bench.png")
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
    else:
        report.render(outcome, console)
        console.print(f"figures: {json_path}")
        if plot_problem is None:
            console.print(f"plot: {out / 'bench.png'}")
        else:
            console.print(f"[yellow]no plot[/]: {plot_problem}")
    failed = [r for r in outcome.results if r.failed]
    return 1 if failed else 0


def _run_with_progress(names: list[str], shapes: list[Shape], args: argparse.Namespace) -> Run:
    """runner.run with a progress bar on stderr (hidden when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from . import runner, workload

    settings = workload.Settings(args.repeat, args.warmup, args.quick, args.serialize, args.no_limits)
    total = len(names) * settings.trips(shapes)
    with Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=total)

        def advance(what: str, trips: int) -> None:
            progress.update(task, description=what, advance=trips)

        return runner.run(
            names,
            shapes,
            repeat=args.repeat,
            quick=args.quick,
            warmup=args.warmup,
            serialize=args.serialize,
            no_limits=args.no_limits,
            progress=advance,
        )


class _Listed(Protocol):
    """A method of a micro benchmark run by `hakobu bench` (--fanout, --pipeline): what --list shows."""

    name: str
    label: str

    def missing(self) -> Optional[str]: ...


def _print_listing(methods: Iterable[_Listed], console: Console, as_json: bool) -> int:
    """`--list` of a micro benchmark: each method, ready or why it is skipped."""
    import json

    listing = [{"name": m.name, "label": m.label, "missing": m.missing()} for m in methods]
    if as_json:
        sys.stdout.write(json.dumps(listing, indent=2) + "\n")
    else:
        for item in listing:
            state = "[green]ready[/]" if item["missing"] is None else f"[yellow]skipped[/]: {item['missing']}"
            console.print(f"{item['name']:<18} {item['label']:<40} {state}")
    return 0


def _check_options_of(mode: str, args: argparse.Namespace) -> None:
    """Raises ValueError for options of the round trips (or of another mode) given with ``mode``."""
    unused = [
        option
        for option, given in (
            ("--warmup", args.warmup is not None),
            ("--serialize", args.serialize is not None),
            ("--no-limits", args.no_limits),
            ("--fanout", mode != "--fanout" and args.fanout is not None),
        )
        if given
    ]
    if unused:
        raise ValueError(f"{', '.join(unused)}: not for {mode}")
    if args.repeat is not None and args.repeat < 1:
        raise ValueError("--repeat must be at least 1")


def _run_fanout(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    """`hakobu bench --fanout`: the fan-out measurement of ``micro.fanout``, shown and recorded
    as the round trips are (a rich table, a JSON file with the machine and versions)."""
    import json

    from . import report
    from .micro import fanout

    if args.list:
        return _print_listing(fanout.METHODS.values(), console, as_json)
    try:
        _check_options_of("--fanout", args)
        counts, sizes, names = fanout.plan(args.fanout, args.shapes, args.methods, args.quick)
    except ValueError as error:
        print(f"hakobu bench: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from rich.console import Console as StderrConsole

    with StderrConsole(stderr=True).status("fan-out") as status:  # progress on stderr, as the round trips'
        rows = fanout.run(
            names,
            counts,
            sizes,
            quick=args.quick,
            repeats=args.repeat,
            progress=lambda what: status.update(what),
            limits=args.shapes is None,
        )
    options = {
        "quick": args.quick,
        "methods": names,
        "subscribers": counts,
        "sizes": sizes,
        "repeat": args.repeat,
    }
    data = fanout.to_json(rows, options)
    json_path = out / "fanout.json"
    report.write_json(data, json_path)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
    else:
        fanout.render(rows, console)
        console.print(f"figures: {json_path}")
    return 1 if any("error" in r for r in rows) else 0


def _run_pipeline(args: argparse.Namespace, console: Console, as_json: bool) -> int:
    """`hakobu bench --pipeline`: the three-stage measurement of ``micro.pipeline``, shown as a rich
    table and recorded in pipeline.json with the machine and versions."""
    import json

    from . import report
    from .micro import pipeline

    if args.list:
        return _print_listing(pipeline.TRANSPORTS.values(), console, as_json)
    try:
        _check_options_of("--pipeline", args)
        shapes, names = pipeline.plan(args.shapes, args.methods, args.quick)
    except ValueError as error:
        print(f"hakobu bench: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("HAKOBU_DOMAIN"):  # the stages and hakobu.empty share one domain of this run
        os.environ["HAKOBU_DOMAIN"] = f"bench{os.getpid()}"
    from rich.console import Console as StderrConsole

    with StderrConsole(stderr=True).status("pipeline") as status:
        rows, copies = pipeline.run(
            names, shapes, quick=args.quick, messages=args.repeat, progress=lambda what: status.update(what)
        )
    options = {
        "quick": args.quick,
        "methods": names,
        "shapes": [pipeline.shape_name(s) for s in shapes],
        "messages": args.repeat,
    }
    data = pipeline.to_json(rows, copies, options)
    json_path = out / "pipeline.json"
    report.write_json(data, json_path)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
    else:
        pipeline.render(rows, copies, console)
        console.print(f"figures: {json_path}")
    return 1 if any("error" in r for r in rows) else 0
