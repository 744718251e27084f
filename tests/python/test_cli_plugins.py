"""Subcommands of other distributions: the entry-point group `hakobu.commands`.

The plugins are real distributions on sys.path (a module and its .dist-info in a
temporary directory, on PYTHONPATH of a separately started `hakobu`)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from conftest import DOMAIN

from hakobu.cli import parser, plugins

PLUGIN = '''
"""Test plugins of `hakobu`."""
import json


class Hello:
    help = "say hello (a test plugin)"

    def add_arguments(self, parser):
        parser.add_argument("--who", default="world")

    def run(self, args, console, as_json):
        import hakobu_test_plugin_heavy  # what a plugin imports only to run

        if as_json:
            print(json.dumps({"hello": args.who, "domain": args.domain, "heavy": hakobu_test_plugin_heavy.LOADED}))
        else:
            console.print(f"hello {args.who}")
        return 3


class Bench(Hello):
    help = "a bench from a test plugin"


class NoRun:
    help = "no run"

    def add_arguments(self, parser):
        pass


class Clash(Hello):
    help = "adds --json again"

    def add_arguments(self, parser):
        parser.add_argument("--json")


COMMAND = Hello()
BENCH = Bench()
NO_RUN = NoRun()
CLASH = Clash()
'''

ENTRY_POINTS = {
    "hakobu_test_plugin": ["hello = hakobu_test_plugin:COMMAND"],
    # Ahead of hakobu-bench on the path when that is installed: the first `bench` found wins.
    "hakobu_test_bench": ["bench = hakobu_test_plugin:BENCH"],
    "hakobu_test_broken": [
        "missing = hakobu_test_no_such_module:COMMAND",
        "exits = hakobu_test_plugin_exits:COMMAND",
        "no-run = hakobu_test_plugin:NO_RUN",
        "clash = hakobu_test_plugin:CLASH",
        "ls = hakobu_test_plugin:COMMAND",
        "hello = hakobu_test_plugin:NO_RUN",
    ],
}


def make_distribution(site: Path, name: str, entry_points: list[str]) -> None:
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hakobu.commands]\n" + "\n".join(entry_points) + "\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A directory with the test plugins' modules; distributions are added per test."""
    (tmp_path / "hakobu_test_plugin.py").write_text(PLUGIN)
    (tmp_path / "hakobu_test_plugin_heavy.py").write_text("LOADED = True\n")
    (tmp_path / "hakobu_test_plugin_exits.py").write_text("raise SystemExit('exits at import')\n")
    return tmp_path


def run_hakobu(site: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m hakobu ARGS` (or `python -c CODE ARGS`) with `site` on its path; a watchdog against a hang."""
    env = {
        **os.environ,
        "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "hakobu", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_a_plugin_becomes_a_subcommand(site: Path) -> None:
    make_distribution(site, "hakobu_test_plugin", ENTRY_POINTS["hakobu_test_plugin"])
    listed = run_hakobu(site, "--help")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert "hello" in listed.stdout and "say hello (a test plugin)" in listed.stdout
    result = run_hakobu(site, "hello", "--who", "me", "--json")
    assert result.returncode == 3, result.stderr
    assert json.loads(result.stdout) == {"hello": "me", "domain": DOMAIN, "heavy": True}
    result = run_hakobu(site, "--domain", "elsewhere", "hello")
    assert result.returncode == 3 and result.stdout == "hello world\n", result.stderr
    assert run_hakobu(site, "hello", "--bogus").returncode == 2, "its parser is argparse's"


def test_a_bench_plugin_is_hakobu_bench(site: Path) -> None:
    make_distribution(site, "hakobu_test_bench", ENTRY_POINTS["hakobu_test_bench"])
    result = run_hakobu(site, "bench", "--who", "bench", "--json")
    assert result.returncode == 3, result.stderr
    assert json.loads(result.stdout)["hello"] == "bench"
    assert "a bench from a test plugin" in run_hakobu(site, "--help").stdout


def test_broken_plugins_are_left_out_with_a_warning_naming_them(site: Path) -> None:
    make_distribution(site, "hakobu_test_plugin", ENTRY_POINTS["hakobu_test_plugin"])
    make_distribution(site, "hakobu_test_broken", ENTRY_POINTS["hakobu_test_broken"])
    listed = run_hakobu(site, "--help")
    assert listed.returncode == 0, listed.stderr
    for entry_point in ENTRY_POINTS["hakobu_test_broken"]:
        assert f"'{entry_point}'" in listed.stderr, (entry_point, listed.stderr)
    assert "ModuleNotFoundError" in listed.stderr and "exits at import" in listed.stderr
    assert "no `run` method" in listed.stderr and "--json" in listed.stderr
    assert "`hakobu ls` is built in" in listed.stderr
    assert "  hello " in listed.stdout
    for name in ("missing", "exits", "no-run", "clash"):
        assert f"  {name} " not in listed.stdout, name
    # The built-in commands work as ever; the warnings go to stderr, not into the JSON.
    result = run_hakobu(site, "ls", "--json")
    assert result.returncode == 0 and result.stderr == "", "built-in commands do not load plugins"
    assert json.loads(result.stdout)["domain"] == DOMAIN
    assert run_hakobu(site, "hello", "--json").returncode == 3, "the first `hello` found wins"


# Without any provider of `bench` (no entry point names it).
WITHOUT_BENCH = textwrap.dedent(
    """
    import sys
    from hakobu.cli import main, plugins
    plugins.select_entry_points = lambda found, group=plugins.GROUP: []
    sys.exit(main(sys.argv[1:]))
    """
)


def test_without_the_bench_package_hakobu_bench_says_where_it_comes_from(site: Path) -> None:
    result = run_hakobu(site, "bench", "--quick", "--methods", "pipe", code=WITHOUT_BENCH)
    assert result.returncode == 1 and result.stdout == ""
    assert "hakobu-bench" in result.stderr and "pip install ./bench/python" in result.stderr, result.stderr
    listed = run_hakobu(site, "--help", code=WITHOUT_BENCH)
    assert listed.returncode == 0 and "needs the hakobu-bench package" in listed.stdout
    assert run_hakobu(site, "ls", "--bogus", code=WITHOUT_BENCH).returncode == 2, (
        "others still refuse unknowns"
    )


def test_help_loads_no_plugin_beyond_its_options(site: Path) -> None:
    make_distribution(site, "hakobu_test_plugin", ENTRY_POINTS["hakobu_test_plugin"])
    code = textwrap.dedent(
        """
        import sys
        from hakobu.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        heavy = ["hakobu_test_plugin_heavy", "hakobu_bench.runner", "hakobu_bench.methods", "matplotlib", "rich"]
        print([name for name in heavy if name in sys.modules], file=sys.stderr)
        """
    )
    result = run_hakobu(site, code=code)
    assert result.returncode == 0 and result.stderr == "[]\n", result.stderr


def entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=plugins.GROUP)


def test_entry_points_are_selected_from_either_form() -> None:
    hello, other = entry_point("hello", "m:C"), EntryPoint(name="x", value="m:X", group="other")

    class Selectable:  # Python 3.10 and later
        def select(self, group: str) -> list[EntryPoint]:
            return [e for e in (hello, other) if e.group == group]

    assert plugins.select_entry_points(Selectable()) == [hello]
    assert plugins.select_entry_points({plugins.GROUP: [hello], "other": [other]}) == [hello]  # Python 3.9
    assert plugins.select_entry_points({"other": [other]}) == []


def test_the_contract_is_checked() -> None:
    class Good:
        help = "h"

        def add_arguments(self, parser: Any) -> None: ...

        def run(self, args: Any, console: Any, as_json: bool) -> int:
            return 0

    assert plugins.contract_problem(Good()) is None
    assert plugins.contract_problem(object()) == "it has no `help` text"
    bad = Good()
    bad.run = None  # type: ignore[method-assign,assignment]
    assert plugins.contract_problem(bad) == "it has no `run` method"


def test_built_in_commands_are_told_apart_without_loading_plugins() -> None:
    built_in = parser.build_parser(with_plugins=False)
    subcommands = next(a for a in built_in._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subcommands.choices) == set(parser.BUILT_IN)
    for argv in (
        ["ls"],
        ["--json", "ls", "--all"],
        ["--domain", "bench", "rm", "x"],
        ["--dom", "bench", "gc"],
        ["--domain=bench", "doctor"],
        ["info", "--help"],
        ["--", "ls"],
    ):
        assert not parser.needs_plugins(argv), argv
    for argv in (
        [],
        ["--help"],
        ["--he", "ls"],
        ["-h", "ls"],
        ["bench"],
        ["--json", "hello"],
        ["--domain", "ls"],
    ):
        assert parser.needs_plugins(argv), argv
