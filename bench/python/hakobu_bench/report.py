"""What a run shows: the rich table, the JSON file (every figure, the machine, the versions), the plot."""

from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .machine import describe
from .runner import Run
from .workload import Result, as_dict

LIBRARIES = (
    "hakobu",
    "numpy",
    "rich",
    "matplotlib",
    "pyzmq",
    "mpi4py",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "websockets",
    "ray",
    "iceoryx2",
)


def versions() -> dict[str, Optional[str]]:
    """Installed versions of the libraries a run may use (None: not installed)."""
    found: dict[str, Optional[str]] = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def format_time(us: float) -> str:
    if math.isnan(us):
        return "-"
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 1e6:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"


def format_size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{nbytes} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{nbytes} B"


def is_hakobu(method: str) -> bool:
    return method.startswith("hakobu")


def speedups(run: Run) -> list[dict[str, Any]]:
    """Per shape: the fastest hakobu method against the fastest other one (median round trip)."""
    rows = []
    for shape in run.shapes:
        done = [r for r in run.results if r.shape == shape.name and r.ok]
        ours = min((r for r in done if is_hakobu(r.method)), key=lambda r: r.median("total"), default=None)
        theirs = min(
            (r for r in done if not is_hakobu(r.method)), key=lambda r: r.median("total"), default=None
        )
        rows.append(
            {
                "shape": shape.name,
                "hakobu_method": ours.method if ours else None,
                "hakobu_median_us": ours.median("total") / 1e3 if ours else None,
                "best_other_method": theirs.method if theirs else None,
                "best_other_median_us": theirs.median("total") / 1e3 if theirs else None,
                "speedup": theirs.median("total") / ours.median("total") if ours and theirs else None,
            }
        )
    return rows


def to_json(run: Run, options: dict[str, Any]) -> dict[str, Any]:
    labels = {m.name: m.label for m in run.methods}
    return {
        "tool": "hakobu bench",
        "options": options,
        "clock": "CLOCK_MONOTONIC (time.monotonic_ns) in both processes",
        "phases": {
            "send": "sender starts sending -> the bytes are in the peer (t1 - t0)",
            "rebuild": "the peer turns what arrived into an ndarray (t2 - t1)",
            "return": "the peer starts sending back -> the sender has the array rebuilt (t3 - t2)",
            "total": "the round trip (t3 - t0)",
        },
        "machine": describe(),
        "versions": versions(),
        "seconds": run.seconds,
        "shapes": [as_dict(s) for s in run.shapes],
        "methods": [
            {"name": m.name, "label": m.label, "description": m.description, "requires": list(m.requires)}
            for m in run.methods
        ],
        "results": [{**r.summary(), "label": labels.get(r.method, r.method)} for r in run.results],
        "skipped": [{"method": s.method, "label": s.label, "reason": s.reason} for s in run.skipped],
        "speedup": speedups(run),
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def render(run: Run, console: Any) -> None:
    """The results table (grouped by shape), the speed-up summary and the skipped methods."""
    from rich import box
    from rich.table import Table

    labels = {m.name: m.label for m in run.methods}
    notes: dict[str, int] = {}  # why a method was skipped or failed, printed under the table

    def note(text: str) -> str:
        return f"[{notes.setdefault(text, len(notes) + 1)}]"

    title = "hakobu bench: round trip between two processes (median)"
    if run.settings.serialize:
        title += f", every array sent as {run.settings.serialize}"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column, justify in (
        ("shape", "left"),
        ("method", "left"),
        ("send", "right"),
        ("rebuild", "right"),
        ("return", "right"),
        ("total", "right"),
        ("vs fastest", "right"),
        ("valid", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for shape in run.shapes:
        rows = [r for r in run.results if r.shape == shape.name]
        fastest = min((r.median("total") for r in rows if r.ok), default=math.nan)
        for index, result in enumerate(sorted(rows, key=_sort_key)):
            name = f"{shape.name} ({format_size(shape.nbytes)})" if index == 0 else ""
            label = labels.get(result.method, result.method)
            if is_hakobu(result.method):
                label = f"[bold cyan]{label}[/]"
            if result.skipped is not None:
                table.add_row(
                    name, label, f"[yellow]skipped[/] {escape(note(result.skipped))}", "", "", "", "", ""
                )
                continue
            if not result.ok:
                table.add_row(
                    name,
                    label,
                    f"[red]failed[/] {escape(note(result.error or 'no trips'))}",
                    "",
                    "",
                    "",
                    "",
                    "",
                )
                continue
            total = result.median("total")
            table.add_row(
                name,
                label,
                format_time(result.median("send") / 1e3),
                format_time(result.median("rebuild") / 1e3),
                format_time(result.median("back") / 1e3),
                format_time(total / 1e3),
                "[green]fastest[/]" if total == fastest else f"{total / fastest:.1f}×",
                f"{result.validated}✓",
            )
        table.add_section()
    console.print(table)
    for text, number in notes.items():
        console.print(f"  {escape(f'[{number}]')} {escape(text)}", highlight=False)

    summary = Table(title="hakobu vs the fastest other method", box=box.SIMPLE_HEAD)
    for column in ("shape", "hakobu", "fastest other", "speed-up"):
        summary.add_column(column, justify="left" if column != "speed-up" else "right")
    for row in speedups(run):
        if row["speedup"] is None:
            summary.add_row(row["shape"], "-", "-", "-")
            continue
        summary.add_row(
            row["shape"],
            f"{labels[row['hakobu_method']]} {format_time(row['hakobu_median_us'])}",
            f"{labels[row['best_other_method']]} {format_time(row['best_other_median_us'])}",
            f"[bold]{row['speedup']:.1f}×[/]",
        )
    console.print(summary)
    for skipped in run.skipped:
        console.print(f"[yellow]skipped[/] {escape(skipped.label)}: {escape(skipped.reason)}")


def _sort_key(result: Result) -> tuple[int, float]:
    """Finished methods fastest first, then skipped shapes, then failures."""
    return (0 if result.ok else 1 if result.skipped else 2, result.median("total") if result.ok else 0.0)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def plot(run: Run, path: Path) -> Optional[str]:
    """Writes the PNG (time per method per shape, log scale); returns why not, if it could not."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; install it with: pip install matplotlib (a dependency of hakobu-bench)"
    methods = [m for m in run.methods if any(r.method == m.name and r.ok for r in run.results)]
    if not methods:
        return "no method finished"
    shapes = run.shapes
    width = 0.8 / len(methods)
    figure, axes = plt.subplots(figsize=(max(8.0, 1.6 * len(shapes) + 0.35 * len(methods)), 5.5))
    # 40 distinct colours: the rows of two 20-colour maps (integer inputs pick their entries).
    palette = [*plt.get_cmap("tab20")(np.arange(20)), *plt.get_cmap("tab20b")(np.arange(20))]
    for index, method in enumerate(methods):
        xs, ys = [], []
        for position, shape in enumerate(shapes):
            result = run.result(method.name, shape.name)
            if result is not None and result.ok:
                xs.append(position - 0.4 + width * (index + 0.5))
                ys.append(result.median("total") / 1e9)
        style: dict[str, Any] = {"edgecolor": "black", "linewidth": 1.2} if is_hakobu(method.name) else {}
        axes.bar(xs, ys, width, label=method.label, color=palette[index % len(palette)], **style)
    axes.set_axisbelow(True)  # grid lines behind the bars
    axes.set_yscale("log")
    axes.set_ylabel("round trip, median (s, log scale)")
    axes.set_xticks(range(len(shapes)))
    axes.set_xticklabels([f"{s.name}\n{format_size(s.nbytes)}" for s in shapes], fontsize=8)
    axes.set_title("hakobu bench: round trip of an array between two processes")
    axes.grid(axis="y", which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None
