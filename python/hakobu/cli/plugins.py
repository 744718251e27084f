"""Subcommands from other distributions, through the entry-point group ``hakobu.commands``.

A distribution adds a subcommand by declaring an entry point (pyproject.toml)::

    [project.entry-points."hakobu.commands"]
    bench = "hakobu_bench.command"

The entry point's name is the subcommand's; it loads to an object with

    help: str                                           one line for `hakobu --help`
    add_arguments(parser: argparse.ArgumentParser)      the subcommand's options
    run(args, console: rich.console.Console, as_json)   runs it; returns the exit code

`--domain` and `--json` are already on the parser (as for every subcommand).
Every run of `hakobu` loads every plugin to build its parser, so loading and
`add_arguments` stay light (argparse only); heavy imports belong in `run`.
A plugin that fails to load, lacks part of the contract, clashes with a
built-in or another plugin, or whose options cannot be added is left out
with a warning naming it on stderr: `hakobu` itself keeps working.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from rich.console import Console

GROUP = "hakobu.commands"

# `hakobu bench` without the distribution that provides it.
BENCH = "bench"
BENCH_HELP = "compare IPC methods with hakobu on this machine"
BENCH_MISSING = (
    "`hakobu bench` comes with the hakobu-bench package, which is not installed; "
    "install it with `pip install ./bench/python` from a hakobu checkout"
)


class Command(Protocol):
    """What an entry point of ``hakobu.commands`` loads to."""

    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, console: Console, as_json: bool) -> int: ...


@dataclass(frozen=True)
class Plugin:
    """A subcommand found through an entry point."""

    name: str
    origin: str  # for warnings: "'bench = hakobu_bench.command' of hakobu-bench"
    command: Command


def select_entry_points(found: Any, group: str = GROUP) -> list[EntryPoint]:
    """The entry points of `group` in what `importlib.metadata.entry_points()` returned:
    an object with `select` (Python 3.10 and later), or a dict of groups (Python 3.9)."""
    if hasattr(found, "select"):
        return list(found.select(group=group))
    return list(found.get(group, ()))


def _origin(entry_point: EntryPoint) -> str:
    distribution = getattr(entry_point, "dist", None)  # Python 3.10 and later
    name = getattr(distribution, "name", None)
    where = f" of {name}" if name else ""
    return f"'{entry_point.name} = {entry_point.value}'{where}"


def contract_problem(command: object) -> Optional[str]:
    """What `command` lacks of the contract, or None."""
    if not isinstance(getattr(command, "help", None), str):
        return "it has no `help` text"
    for method in ("add_arguments", "run"):
        if not callable(getattr(command, method, None)):
            return f"it has no `{method}` method"
    return None


def discover(
    reserved: Collection[str],
    warn: Callable[[str], None],
    entry_points: Optional[Iterable[EntryPoint]] = None,
) -> list[Plugin]:
    """The plugin subcommands, by name. `reserved`: the built-in subcommands, which win.
    When two entry points name the same subcommand, the first found (on sys.path) wins."""
    if entry_points is None:
        # Imported here: importlib.metadata and what it imports take tens of milliseconds, which the
        # built-in subcommands do not pay (see parser.needs_plugins).
        import importlib.metadata

        entry_points = select_entry_points(importlib.metadata.entry_points())
    plugins: dict[str, Plugin] = {}
    for entry_point in entry_points:
        name, origin = entry_point.name, _origin(entry_point)
        if not name or name.startswith("-"):
            warn(f"ignored the plugin command {origin}: '{name}' cannot be a command name")
            continue
        if name in reserved:
            warn(f"ignored the plugin command {origin}: `hakobu {name}` is built in")
            continue
        if name in plugins:
            warn(f"ignored the plugin command {origin}: `hakobu {name}` comes from {plugins[name].origin}")
            continue
        try:
            command = entry_point.load()
        except (Exception, SystemExit) as error:  # noqa: BLE001 - a broken plugin must not break `hakobu`
            warn(f"could not load the plugin command {origin}: {type(error).__name__}: {error}")
            continue
        problem = contract_problem(command)
        if problem is not None:
            warn(f"ignored the plugin command {origin}: {problem}")
            continue
        plugins[name] = Plugin(name, origin, command)
    return sorted(plugins.values(), key=lambda plugin: plugin.name)
