"""The command line: the parser of every subcommand (built-in and plugins), and `main`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Callable, Optional

from .. import __version__, _core
from .._errors import HakobuError
from . import bridge, plugins
from .commands import command_gc, command_info, command_ls, command_rm
from .doctor import command_doctor
from .errors import CommandError
from .files import SYNC_KINDS
from .output import Output
from .top import command_top, interval_seconds

Run = Callable[[argparse.Namespace, Output], int]

DOMAIN_HELP = "the domain (default: $HAKOBU_DOMAIN, else u<uid>)"
JSON_HELP = "print machine-readable JSON instead of tables"


BUILT_IN = ("ls", "info", "rm", "gc", "doctor", "top", "bridge")


def needs_plugins(argv: Sequence[str]) -> bool:
    """Whether the command line may need the plugins: unless it names a built-in subcommand (and
    asks for no help before it), finding and loading them would only cost time and warnings.
    Read as the main parser would: its options are -h/--help, --version, --json and --domain VALUE,
    abbreviations included. A misreading can only make plugins load needlessly, never go missing:
    a word is taken for the subcommand only where argparse would take it so."""
    words = iter(argv)
    for word in words:
        option = word.partition("=")[0]
        if word == "-h" or (len(option) > 2 and "--help".startswith(option)):
            return True
        if len(option) > 2 and "--domain".startswith(option):
            if "=" not in word:
                next(words, None)  # its value
            continue
        if word == "--":
            return next(words, None) not in BUILT_IN
        if not word.startswith("-"):
            return word not in BUILT_IN
    return True  # no subcommand: the usage lists them all


def warn(message: str) -> None:
    print(f"hakobu: warning: {message}", file=sys.stderr)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """--domain and --json on a subcommand, without defaults (SUPPRESS): the main parser holds those,
    so that `hakobu --json ls` and `hakobu ls --json` both work."""
    parser.add_argument("--domain", default=argparse.SUPPRESS, help=DOMAIN_HELP)
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)


def run_plugin(plugin: plugins.Plugin) -> Run:
    def run(args: argparse.Namespace, out: Output) -> int:
        return int(plugin.command.run(args, out.console, out.as_json))

    return run


def command_bench_missing(args: argparse.Namespace, out: Output) -> int:
    raise CommandError(plugins.BENCH_MISSING)


def add_plugin(commands: argparse._SubParsersAction[argparse.ArgumentParser], plugin: plugins.Plugin) -> None:
    """Adds a plugin's subcommand, unless its options cannot be added (a warning then says why).
    The options go on a parser of their own first, so that a failure leaves no half-made subcommand."""
    own = argparse.ArgumentParser(prog=f"hakobu {plugin.name}", add_help=True)
    add_common_options(own)
    try:
        plugin.command.add_arguments(own)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - a broken plugin must not break `hakobu`
        warn(f"ignored the plugin command {plugin.origin}: its options: {type(error).__name__}: {error}")
        return
    help_text = plugin.command.help
    sub = commands.add_parser(
        plugin.name, parents=[own], add_help=False, help=help_text, description=help_text
    )
    sub.set_defaults(run=run_plugin(plugin))


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    """The parser of every subcommand; `with_plugins=False` leaves out those of plugins and `bench`."""
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
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def subcommand(name: str, run: Run, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        add_common_options(p)
        p.set_defaults(run=run)
        return p

    ls = subcommand(
        "ls",
        command_ls,
        "list the queues, stores, sync objects (locks, events, semaphores, barriers, conditions, values and "
        "arrays) and topics (their subscribers, lag and drops) of a domain, their state and who has them open",
    )
    ls.add_argument("--all", "-a", action="store_true", help="every domain found in /dev/shm")
    kinds = ("queue", "store", "sync", "topic", *SYNC_KINDS)
    kind_help = (
        "which object of that name (a queue, a store, a sync object and a topic may share one); "
        "lock, event, semaphore... mean sync"
    )
    info = subcommand(
        "info",
        command_info,
        "show everything about one queue, store (its keys, sizes, versions, readers), sync object (a lock's "
        "holder, a semaphore's counts per process, a barrier's parties, an array's dtype and shape...) or topic "
        "(its subscribers with their lag, drops and receipts, the messages it holds)",
    )
    info.add_argument("name", help="the queue, store, lock, event or topic")
    info.add_argument("--kind", choices=kinds, help=kind_help)
    rm = subcommand(
        "rm",
        command_rm,
        "remove queues, stores, sync objects and topics whoever created them, or a whole domain",
    )
    rm.add_argument(
        "names", nargs="*", metavar="NAME", help="queues, stores, locks, events or topics to remove"
    )
    rm.add_argument("--kind", choices=kinds, help=kind_help)
    rm.add_argument(
        "--everything",
        action="store_true",
        help="remove every file of the domain (registry, heap, named objects), also a damaged one",
    )
    rm.add_argument(
        "--force", action="store_true", help="with --everything: even while processes are attached"
    )
    subcommand("gc", command_gc, "reclaim what dead processes held")
    subcommand("doctor", command_doctor, "check the system settings that matter for shared memory")
    top = subcommand(
        "top",
        command_top,
        "a live view of a domain: queues (depth, bytes in flight, put/get rates, senders), topics, stores, "
        "running pipelines and served stages (per stage: workers, items, rate, errors, time computing or "
        "waiting), memory held and processes attached; Ctrl-C quits",
    )
    top.add_argument(
        "--interval",
        type=interval_seconds,
        default=1.0,
        metavar="SECONDS",
        help="time between refreshes, and between the two samples rates come from (default: 1)",
    )
    top.add_argument(
        "--once",
        action="store_true",
        help="print one frame as text and exit (what a piped stdout gets); --json prints one as JSON",
    )
    bridge.add_parser(commands, add_common_options)

    if not with_plugins:
        return parser
    # Then the plugins: `bench` first (where the built-in bench used to be), the others by name.
    found = plugins.discover(reserved=set(commands.choices), warn=warn)
    bench = next((p for p in found if p.name == plugins.BENCH), None)
    if bench is not None:
        add_plugin(commands, bench)
    if plugins.BENCH not in commands.choices:
        # Still there without the distribution that provides it, to say where it comes from.
        missing = subcommand(
            plugins.BENCH, command_bench_missing, f"{plugins.BENCH_HELP} (needs the hakobu-bench package)"
        )
        missing.set_defaults(accepts_any_arguments=True)
    for plugin in found:
        if plugin.name != plugins.BENCH:
            add_plugin(commands, plugin)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the command; returns the exit code (0 fine, 1 failed or needs action, 2 usage)."""
    arguments = sys.argv[1:] if argv is None else argv
    parser = build_parser(with_plugins=needs_plugins(arguments))
    args, unknown = parser.parse_known_args(arguments)
    # What parse_args would refuse; only `hakobu bench` without its package takes anything,
    # so that `hakobu bench --quick` says where the bench comes from.
    if unknown and not getattr(args, "accepts_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
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
