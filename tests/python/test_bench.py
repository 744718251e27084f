"""The hakobu-bench distribution (bench/python). `hakobu bench`: every method makes real round
trips with a separately started peer, its data validated bit for bit; wrong data, missing
dependencies and bad options are reported; the command, found by `hakobu` through its entry point,
writes its table, JSON file and plot. The micro-benchmarks run. `import hakobu` imports none of it.
No test asserts how fast anything is."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import serial, shared_memory_segments

pytest.importorskip("hakobu_bench", reason="hakobu-bench is not installed (pip install ./bench/python)")

from hakobu_bench import runner
from hakobu_bench.channel import Serializer
from hakobu_bench.methods import all_methods
from hakobu_bench.workload import parse_shape, same_bits

METHODS = list(all_methods())
SMALL = [parse_shape("64B"), parse_shape("1x3x224x224")]
WATCHDOG = 120  # s, for whole commands: only against a hang


def leftovers() -> list[str]:
    """What a bench run may create outside hakobu's domain: work directories (in the temporary
    directory of the test's own, see `clean`), tmpfs files, segments."""
    return (
        glob.glob(os.path.join(tempfile.gettempdir(), "hakobu-bench-*-*"))
        + glob.glob(f"/dev/shm/hakobu-bench.{os.getpid()}.*")
        + sorted(shared_memory_segments())
    )


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The test's bench run works in a temporary directory of its own (this process's and its peers'
    TMPDIR), so that its work directories are told apart from those of a run beside it; and, under
    pytest-xdist, while no other bench run of the tests (these, test_bench_pipeline.py's) makes shared
    memory segments: a segment has a random name, and one that a bench run beside this one has just
    handed over (closed by its maker, not yet attached by its reader) would look left behind."""
    own = tempfile.mkdtemp(prefix=f"hakobu-test-{os.getpid()}-")
    monkeypatch.setenv("TMPDIR", own)
    monkeypatch.setattr(tempfile, "tempdir", own)
    try:
        with serial("bench", tmp_path_factory):
            before = set(leftovers())
            yield
            assert set(leftovers()) - before == set(), "the bench left files behind"
    finally:
        monkeypatch.undo()
        shutil.rmtree(own, ignore_errors=True)


@pytest.mark.parametrize("method", METHODS)
def test_method_round_trips_validated_data(method: str, clean: None) -> None:
    reason = all_methods()[method].missing()
    if reason is not None:
        pytest.skip(reason)
    run = runner.run([method], SMALL, repeat=3, warmup=1, quick=True)
    assert not run.skipped
    assert [r.shape for r in run.results] == ["64B", "1x3x224x224"]
    for result in run.results:
        assert result.error is None, result.error
        assert result.validated == 4  # 1 warm-up + 3 timed arrays, each compared bit for bit
        assert len(result.total) == 3
        for send, rebuild, back, total in zip(result.send, result.rebuild, result.back, result.total):
            # One clock in both processes: every phase is causally after the previous one.
            assert send > 0 and rebuild >= 0 and back > 0
            assert send + rebuild + back == total


@pytest.mark.parametrize("method", ["hakobu", "unix-socket", "mp-queue"])
def test_wrong_data_from_the_peer_is_reported(
    method: str, clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAKOBU_BENCH_CORRUPT", "1")  # the peer flips a byte of what it sends back
    run = runner.run([method], SMALL, repeat=2, warmup=0, quick=True)
    first, second = run.results
    assert first.error is not None and "wrong data came back on trip 1" in first.error
    assert first.validated == 0 and not first.total
    assert second.error is not None and "earlier shape failed" in second.error


def test_a_missing_dependency_skips_the_method_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    method = all_methods()["pipe"]
    monkeypatch.setattr(method, "requires", ("hakobu_bench_no_such_module",))
    monkeypatch.setattr(method, "install", "pip install hakobu-bench-no-such-module")
    run = runner.run(["pipe", "hakobu"], SMALL[:1], repeat=1, warmup=0, quick=True)
    assert [s.method for s in run.skipped] == ["pipe"]
    assert "pip install hakobu-bench-no-such-module" in run.skipped[0].reason
    assert [r.method for r in run.results] == ["hakobu"] and run.results[0].ok


def test_zeromq_without_pyzmq_is_skipped_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zmq", None)  # `import zmq` now fails as if it were not installed
    run = runner.run(["zeromq"], SMALL[:1], repeat=1, warmup=0, quick=True)
    assert not run.results
    assert run.skipped[0].method == "zeromq" and "pip install pyzmq" in run.skipped[0].reason


def test_serialize_pickle_base64_sends_encoded_text_and_validates(clean: None) -> None:
    run = runner.run(
        ["hakobu", "pipe", "hakobu-zero-copy"],
        SMALL,
        repeat=2,
        warmup=1,
        quick=True,
        serialize="pickle+base64",
    )
    assert run.settings.serialize == "pickle+base64"
    for method in ("hakobu", "pipe"):
        for shape in ("64B", "1x3x224x224"):
            result = run.result(method, shape)
            assert result is not None and result.ok and result.validated == 3, result
    # Sending by reference means nothing when every message is freshly encoded bytes.
    for shape in ("64B", "1x3x224x224"):
        zero_copy = run.result("hakobu-zero-copy", shape)
        assert zero_copy is not None and not zero_copy.ok and not zero_copy.failed
        assert zero_copy.skipped is not None and "--serialize" in zero_copy.skipped


def test_serializer_round_trip_and_unknown_kind() -> None:
    a = np.arange(12, dtype=np.int16).reshape(3, 4)[:, ::2]  # not contiguous
    encoded = Serializer("pickle+base64").encode(a)
    assert encoded.dtype == np.uint8 and set(bytes(encoded)) <= set(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    )
    assert same_bits(Serializer("pickle+base64").decode(encoded), a) is None
    assert Serializer(None).encode(a) is a
    with pytest.raises(ValueError, match="unknown serialization 'xml'"):
        runner.run(["pipe"], SMALL, serialize="xml")


def test_a_size_limit_skips_big_shapes_unless_no_limits(monkeypatch: pytest.MonkeyPatch, clean: None) -> None:
    method = all_methods()["unix-socket"]
    monkeypatch.setattr(method, "max_bytes", 1024)
    monkeypatch.setattr(method, "max_bytes_why", "a test limit")
    run = runner.run(["unix-socket"], SMALL, repeat=1, warmup=0, quick=True)
    small, big = run.result("unix-socket", "64B"), run.result("unix-socket", "1x3x224x224")
    assert small is not None and big is not None
    assert small.ok and not big.ok and not big.failed
    assert big.skipped is not None and "a test limit" in big.skipped and "--no-limits" in big.skipped
    run = runner.run(["unix-socket"], SMALL, repeat=1, warmup=0, quick=True, no_limits=True)
    assert all(r.ok for r in run.results)


def test_validation_compares_every_bit() -> None:
    a = np.arange(1000, dtype=np.float64)
    b = a.copy()
    assert same_bits(b, a) is None
    b.view(np.uint8)[4321] ^= 1
    assert "byte 4321" in (same_bits(b, a) or "")
    assert "float32" in (same_bits(a.astype(np.float32), a) or "")
    negative_zero = np.array([-0.0])
    assert same_bits(negative_zero, np.array([0.0])) is not None  # equal values, other bits


def test_shapes_by_name_or_dimensions() -> None:
    assert parse_shape("mnist-70000x784").nbytes == 70000 * 784 * 4
    custom = parse_shape("3x5:int16")
    assert (custom.dims, custom.dtype, custom.nbytes) == ((3, 5), "int16", 30)
    with pytest.raises(ValueError, match="unknown shape"):
        parse_shape("big")


def bench(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs `python -m hakobu bench ARGS`; a wide terminal, so that table cells are not folded."""
    command = [sys.executable, "-m", "hakobu", "bench", *args]
    environment = {**os.environ, "COLUMNS": "200", **env}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=WATCHDOG, check=False, env=environment
    )


def test_command_writes_table_json_and_plot(tmp_path: Path, clean: None) -> None:
    methods = "hakobu,hakobu-zero-copy,pipe,unix-socket"
    result = bench(
        "--quick",
        "--methods",
        methods,
        "--shapes",
        "64B,2x1024x16x16",
        "--repeat",
        "2",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    for text in (
        "round trip between two processes",
        "hakobu (zero-copy)",
        "stdin/stdout pipe",
        "speed-up",
        "2x1024x16x16",
    ):
        assert text in result.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    assert {"cpu", "cores", "kernel", "dev_shm_bytes"} <= set(data["machine"])
    assert data["versions"]["hakobu"] and data["versions"]["numpy"]
    assert len(data["results"]) == 4 * 2
    for entry in data["results"]:
        assert entry["error"] is None and entry["repeat"] == 2 and entry["validated"] == 3
        assert {"send", "rebuild", "return", "total"} <= set(entry)
        assert len(entry["total"]["all_us"]) == 2
    assert [row["shape"] for row in data["speedup"]] == ["64B", "2x1024x16x16"]
    assert all(
        row["speedup"] > 0 and row["best_other_method"] in ("pipe", "unix-socket") for row in data["speedup"]
    )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no plot" in result.stdout
    else:
        assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_json_output_and_list(tmp_path: Path) -> None:
    result = bench(
        "--quick",
        "--methods",
        "fifo",
        "--shapes",
        "64B",
        "--repeat",
        "1",
        "--out",
        str(tmp_path),
        "--no-plot",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["method"] for r in data["results"]] == ["fifo"]
    assert not (tmp_path / "bench.png").exists()
    listed = bench("--list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [m["name"] for m in json.loads(listed.stdout)] == METHODS


def test_command_rejects_unknown_methods_and_shapes(tmp_path: Path) -> None:
    result = bench("--methods", "carrier-pigeon", "--out", str(tmp_path))
    assert result.returncode == 2 and "unknown method(s) carrier-pigeon" in result.stderr
    result = bench("--shapes", "huge", "--out", str(tmp_path))
    assert result.returncode == 2 and "unknown shape 'huge'" in result.stderr
    assert not (tmp_path / "bench.json").exists()


def test_command_serialize_option_is_recorded(tmp_path: Path, clean: None) -> None:
    result = bench(
        "--methods",
        "hakobu,hakobu-zero-copy,fifo",
        "--shapes",
        "64B",
        "--repeat",
        "1",
        "--warmup",
        "1",
        "--serialize",
        "pickle+base64",
        "--out",
        str(tmp_path),
        "--no-plot",
    )
    assert result.returncode == 0, result.stderr  # a method skipped for a shape is not a failure
    assert "every array sent as pickle+base64" in result.stdout and "skipped [1]" in result.stdout
    assert "[1] not run with --serialize pickle+base64" in result.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["options"]["serialize"] == "pickle+base64"
    by_method = {r["method"]: r for r in data["results"]}
    assert by_method["hakobu"]["validated"] == 2 and by_method["fifo"]["validated"] == 2
    assert by_method["hakobu-zero-copy"]["skipped"] and by_method["hakobu-zero-copy"]["error"] is None


def test_a_failed_method_makes_the_command_fail(tmp_path: Path, clean: None) -> None:
    result = bench(
        "--methods",
        "tcp",
        "--shapes",
        "64B",
        "--repeat",
        "1",
        "--out",
        str(tmp_path),
        "--no-plot",
        HAKOBU_BENCH_CORRUPT="1",
    )
    assert result.returncode == 1
    assert "wrong data came back" in result.stdout
    assert json.loads((tmp_path / "bench.json").read_text())["results"][0]["error"].startswith("wrong data")


# `hakobu bench` started as the console script is: without the working directory on the path
# (`python -m` would put it there), and with PYTHONPATH, if given, set for its peers only.
LAUNCHER = (
    "import os, sys; del sys.path[0]; peer_path = sys.argv.pop(1)\n"
    "if peer_path: os.environ['PYTHONPATH'] = peer_path\n"
    "from hakobu.cli import main; sys.exit(main())"
)
BROKEN_MODULE = "raise RuntimeError('imported from the wrong place')\n"


def bench_from(cwd: Path, *args: str, peer_path: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", LAUNCHER, peer_path, "bench", *args]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=WATCHDOG, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def one_trip(methods: list[str], out: Path) -> list[str]:
    """The options of one warm-up and one timed trip of 64 bytes per method."""
    shape = ["--shapes", "64B", "--repeat", "1", "--warmup", "1"]
    return ["--methods", ",".join(methods), *shape, "--out", str(out), "--no-plot"]


def ready_methods() -> list[str]:
    # Ray starts its workers itself (its own retries take half a minute): not a peer of ours.
    return [m for m in METHODS if m != "ray" and all_methods()[m].missing() is None]


def test_peers_never_import_from_the_working_directory(tmp_path: Path, clean: None) -> None:
    # pathlib imports ntpath, which tries `import nt`: a user's nt.py in the directory where
    # `hakobu bench` runs would break every peer started with `python -m` there.
    (tmp_path / "nt.py").write_text(BROKEN_MODULE)
    out = tmp_path / "out"
    methods = ready_methods()
    result = bench_from(tmp_path, *one_trip(methods, out))
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((out / "bench.json").read_text())["results"]
    assert sorted(r["method"] for r in results) == sorted(methods)
    failed = [(r["method"], r["error"]) for r in results if r["error"] or r["validated"] != 2]
    assert failed == []


def test_a_peer_that_cannot_start_fails_its_method_and_nothing_hangs(tmp_path: Path, clean: None) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "nt.py").write_text(BROKEN_MODULE)  # on the peers' path: they die while importing
    out = tmp_path / "out"
    methods = ready_methods()
    result = bench_from(
        tmp_path, *one_trip(methods, out), peer_path=str(broken)
    )  # the watchdog: no method may hang
    assert result.returncode == 1, result.stdout + result.stderr
    errors = {r["method"]: r["error"] for r in json.loads((out / "bench.json").read_text())["results"]}
    assert sorted(errors) == sorted(methods)
    # multiprocessing's spawned peer takes its path from the parent, not from PYTHONPATH.
    started_by_command = [m for m in methods if m != "mp-queue"]
    for method in started_by_command:
        assert errors[method] is not None and "imported from the wrong place" in errors[method], (
            method,
            errors,
        )


def test_hakobu_finds_bench_through_its_entry_point() -> None:
    from importlib.metadata import entry_points

    found = [e for e in entry_points(group="hakobu.commands") if e.name == "bench"]
    assert [e.value for e in found] == ["hakobu_bench.command"]
    command = found[0].load()
    assert isinstance(command.help, str) and "\n" not in command.help
    assert callable(command.add_arguments) and callable(command.run)
    listed = subprocess.run(
        [sys.executable, "-m", "hakobu", "--help"], capture_output=True, text=True, timeout=WATCHDOG
    )
    assert listed.returncode == 0 and "bench" in listed.stdout and command.help in listed.stdout, listed


def test_the_command_line_loads_only_the_light_part_of_the_bench() -> None:
    """Building `hakobu`'s parser (what `hakobu --help` does) loads `hakobu_bench.command` and nothing heavy."""
    program = "import sys; from hakobu.cli import build_parser; build_parser(); print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=WATCHDOG)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "hakobu_bench.command" in loaded
    heavy = {"hakobu_bench.runner", "hakobu_bench.methods", "matplotlib", "ray", "mpi4py", "iceoryx2", "zmq"}
    assert loaded & heavy == set()


def test_the_small_message_benchmark_runs() -> None:
    """hakobu_bench.micro.small, cut short: it prints hakobu beside its baselines (no figure is checked)."""
    done = subprocess.run(
        [sys.executable, "-m", "hakobu_bench.micro.small", "--rounds", "1", "--trips", "10"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for line in [
        "put+get 64-byte float64 array",
        "put+get 64 bytes",
        "pickle dumps+loads",
        "round trip 64-byte array",
        "round trip 64 bytes",
        "machine:",
    ]:
        assert line in done.stdout, done.stdout


@pytest.mark.alone  # the benchmark counts the machine's huge pages in use (conftest.py)
def test_the_store_benchmark_runs_and_cleans_up(tmp_path: Path) -> None:
    """hakobu_bench.micro.store on a small array: every method's readers sum the same array, one copy in memory."""
    out = tmp_path / "store.json"
    command = [sys.executable, "-m", "hakobu_bench.micro.store", "--size-gib", "0.03", "--readers", "2"]
    command += ["--methods", "hakobu,memmap,shared_memory", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"hakobu", "memmap", "shared_memory"}
    for method, result in results.items():
        # One copy for all: what the interpreters used before the array aside, about the array's size.
        assert 0.8 < (result["pss_bytes"] - result["pss_interpreters_bytes"]) / (0.03 * 2**30) < 1.5, (
            method,
            result,
        )
    assert results["hakobu"]["killed_publisher_readers_ok"] and results["hakobu"]["memory_back"]


def _imports_within_the_package() -> dict[str, set[tuple[str, str]]]:
    """Each module of hakobu_bench -> the (module, name) pairs it imports from hakobu_bench, lazy or not."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("hakobu_bench")
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    graph: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = ["hakobu_bench", *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        package = parts[:-1]
        found: set[tuple[str, str]] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
                if base.split(".")[0] == "hakobu_bench":
                    found.update((base, alias.name) for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update((a.name, "") for a in node.names if a.name.split(".")[0] == "hakobu_bench")
        graph[module] = found
    return graph


def test_the_bench_package_has_no_import_circle_and_no_private_imports() -> None:
    graph = _imports_within_the_package()
    assert {"hakobu_bench.channel", "hakobu_bench.runner", "hakobu_bench.methods.mpi"} <= set(graph)
    for module, imported in graph.items():
        for source, name in imported:
            private = [p for p in [*source.split("."), name] if p.startswith("_")]
            assert not private, f"{module} imports the private {private} of {source}"

    # A `from package import module` names a module too: edges go to modules of the package.
    def targets(module: str) -> set[str]:
        return {f"{s}.{n}" if f"{s}.{n}" in graph else s for s, n in graph[module]} - {module}

    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(targets(module)):
            assert state.get(target) != "open", "import circle: " + " -> ".join([*path, module, target])
            if target in graph and target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def _fanout_leftovers(pid: int) -> list[str]:
    """What a fan-out run of process ``pid`` may leave: work directories, iceoryx2's and Ray's files, its domain."""
    return (
        glob.glob(os.path.join(tempfile.gettempdir(), f"hakobu-bench-fanout-{pid}-*"))
        + glob.glob(f"/tmp/hb-iox2-{pid}-*")
        + glob.glob(f"/tmp/hb-ray-{pid}-*")
        + glob.glob(f"/dev/shm/hakobu-bench.{pid}.*")
        + glob.glob(f"/dev/shm/hakobu:bench{pid}:*")
    )


def test_the_fanout_benchmark_runs_every_method_and_cleans_up(tmp_path: Path) -> None:
    """hakobu_bench.micro.fanout --quick with 1 and 2 subscribers: every method has a row per count and
    size, with figures from subscribers that each checked every message, or the reason it was skipped."""
    from hakobu_bench.micro import fanout

    out = tmp_path / "fanout.json"
    command = [sys.executable, "-m", "hakobu_bench.micro.fanout", "--quick", "--subscribers", "1,2"]
    command += ["--repeat", "3", "--json", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=WATCHDOG * 2)
    finally:
        process.kill()
    assert process.returncode == 0, stdout + stderr
    assert "machine:" in stdout and "goal: " in stdout
    data = json.loads(out.read_text())
    assert data["machine"]["cores"] and data["versions"]["numpy"]
    rows = data["results"]
    for name, method in fanout.METHODS.items():
        mine = [r for r in rows if r["method"] == name]
        assert method.label in stdout, (name, stdout)
        if len(mine) == 1 and "bytes" not in mine[0]:  # the library is missing: one row says so
            assert mine[0]["skipped"] and mine[0]["skipped"] in stdout
            continue
        assert {(r["subscribers"], r["bytes"]) for r in mine} == {
            (n, s) for n in (1, 2) for s in (64, 1 << 20)
        }
        for r in mine:
            assert "error" not in r, r
            if "skipped" not in r:
                assert r["repeats"] == 3 and r["stream_messages"] == fanout.QUICK_REPEATS[1], r
                assert 0 < r["latency_us_median"] <= r["latency_us_p90"] and r["throughput_gb_s"] > 0, r
    assert _fanout_leftovers(process.pid) == []


def test_a_fanout_subscriber_checks_each_message() -> None:
    """The subscribers' bookkeeping: a torn message, a wrong type, a stream counted to its end."""
    from hakobu_bench.micro import fanout

    tally = fanout.Tally()
    message = fanout.stamp(np.ones(8, np.uint64), 7, fanout.PING)
    assert tally.on_message(message, 5) == {"tag": 7, "view_ns": 5, "bytes": 64, "writeable": True}
    message[-1] = 8
    assert "torn" in tally.on_message(message, 5)["error"]  # type: ignore[index]
    assert "error" in tally.on_message(np.ones(8), 5)  # type: ignore[operator]
    assert tally.on_message(fanout.control(fanout.HELLO), 1) == {"hello": True}
    assert tally.on_message(fanout.control(fanout.HELLO), 1) is None  # said once
    stream = fanout.stamp(np.ones(8, np.uint64), 9, fanout.STREAM, 3)
    assert [tally.on_message(stream, t) for t in (1, 2)] == [None, None]
    assert tally.on_message(stream, 3) == {"stream": 9, "view_ns": 3, "count": 3}
    with pytest.raises(ValueError, match="multiple of 8"):
        fanout.parse_size("20")
    with pytest.raises(ValueError, match="unknown fan-out method"):
        fanout.plan("1,2", None, "hakobu,carrier-pigeon", quick=True)


def test_command_fanout_section_writes_its_table_and_json(tmp_path: Path) -> None:
    """`hakobu bench --fanout 2` runs the same measurement through the command: its table, fanout.json."""
    command = [sys.executable, "-m", "hakobu", "bench", "--fanout", "2", "--quick", "--repeat", "2"]
    command += ["--methods", "hakobu,zeromq", "--shapes", "64B", "--out", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=WATCHDOG)
    finally:
        process.kill()
    assert process.returncode == 0, stdout + stderr
    assert "hakobu bench --fanout" in stdout and "machine:" in stdout and "goal:" in stdout
    data = json.loads((tmp_path / "fanout.json").read_text())
    assert data["options"]["subscribers"] == [2] and data["options"]["sizes"] == [64]
    assert {r["method"] for r in data["results"]} == {"hakobu", "zeromq"}
    for r in data["results"]:
        assert r["subscribers"] == 2 and r["bytes"] == 64 and ("skipped" in r or r["repeats"] == 2), r
    assert _fanout_leftovers(process.pid) == []
    for wrong in (
        ["--fanout", "0"],
        ["--fanout", "2", "--methods", "mpi"],
        ["--fanout", "--serialize", "pickle+base64"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "hakobu", "bench", *wrong, "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=WATCHDOG,
        )
        assert done.returncode == 2 and "hakobu bench:" in done.stderr, (wrong, done.stderr)
