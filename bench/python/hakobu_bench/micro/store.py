"""One huge read-only array, many separately started readers: hakobu.Store beside the field's ways.

The situation
-------------
A publisher makes a big float64 array (8 GiB by default) once; five reader
programs, started separately, each take a view of it and sum it. What counts:

* **memory**: the total PSS of the six processes (``Pss`` of
  ``/proc/PID/smaps_rollup``, which splits each shared page among the
  processes that map it) divided by the array's size, read while every reader
  holds its view and has read all of it. 1.0 is one copy in memory for all six;
  each private copy adds 1. Pages of hugetlbfs are in no process's Pss: the
  machine's huge pages taken during the turn (``/proc/meminfo``) are added
  once (hakobu's heap places big blocks there when huge pages are reserved). "w/o interp." subtracts what the interpreters used before the
  array (Python, NumPy, the library: the readers' PSS when ready, and as much
  again for the publisher).
* **time to view**: from the moment the publisher starts publishing (the array
  is already filled) to the moment a reader that was already running holds a
  view of the published array, read from the system-wide monotonic clock in
  both programs. The median and the slowest of the five readers.
* the time each reader takes to sum the array (every page read once by each),
  all readers summing at once, after every reader holds its view (so one
  reader's page faults do not delay another's view).
* hakobu only, crash: the publisher is SIGKILLed while the readers hold their
  views; they sum again (the same result, read from the same memory), then the
  key is deleted and the readers exit: the domain's live bytes must be back to
  what they were before the publish (``hakobu info``'s figure).

Methods (each in its own turn, one after another, fresh processes each)
----------------------------------------------------------------------
* hakobu: readers open ``hakobu.Store(name)`` and block in ``store.wait("X")``;
  the publisher builds the array in ``hakobu.empty`` (filled before the clock
  starts) and publishes it with ``store["X"] = array`` (no copy: its block is
  published). Readers receive read-only views of the same block.
* np.memmap: the publisher creates a file in /dev/shm, fills it through
  ``np.memmap(mode="w+")`` and announces its path; readers map it read-only.
  The publisher announces it to each waiting reader through a FIFO of its own
  (a write and a wake-up per reader, counted in the time to view).
* shared_memory: ``multiprocessing.shared_memory.SharedMemory`` created by the
  publisher, attached by name by the readers (announced as above). Before
  Python 3.13 an attaching process registers the segment with its resource
  tracker, which unlinks it when that process exits; the readers unregister it,
  as users must.
* Ray (when importable): this program is the driver; five actors (readers) are
  started and ready first; the driver makes the array, then ``ray.put`` (one
  copy into the object store) and hands the reference to each actor, which
  takes it with ``ray.get`` (a zero-copy read-only view of the object store).
  The driver's own array is deleted after the put. The object store's process
  (raylet) is reported beside the six.

Run: python -m hakobu_bench.micro.store [--size-gib 8] [--readers 5] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional

import numpy as np

from ..machine import with_versions as machine

MODULE = "hakobu_bench.micro.store"  # readers and publishers run this module again (python -m)
KEY = "X"
FILL = 1.0  # every element: the sum of n elements is exactly n (n < 2**53)
STEP_TIMEOUT = 600.0  # seconds any one step may take before the run is declared stuck


# --- the programs: a reader or a publisher, speaking JSON lines on stdin/stdout ---------------


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def hear() -> dict[str, Any]:
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)  # the harness is gone
    message: dict[str, Any] = json.loads(line)
    return message


def timed_sum(view: np.ndarray) -> tuple[float, float]:
    start = time.perf_counter()
    total = float(view.sum(dtype=np.float64))
    return total, time.perf_counter() - start


def attach_view(
    method: str, announced: dict[str, Any], args: argparse.Namespace
) -> tuple[np.ndarray, Callable[[], None]]:
    """A reader's view of an announced array, and what lets go of it once the view is dropped."""
    shape = (args.elements,)
    if method == "memmap":
        mapped = np.memmap(announced["path"], dtype=np.float64, mode="r", shape=shape)
        return mapped, lambda: None  # unmapped with its last view
    if method == "shared_memory":
        from multiprocessing import resource_tracker, shared_memory

        try:
            segment = shared_memory.SharedMemory(name=announced["shm"], track=False)  # type: ignore[call-arg]
        except TypeError:  # before Python 3.13: attaching registers it, and the tracker would unlink it
            segment = shared_memory.SharedMemory(name=announced["shm"])
            resource_tracker.unregister(segment._name, "shared_memory")  # type: ignore[attr-defined]
        view = np.ndarray(shape, dtype=np.float64, buffer=segment.buf)
        view.flags.writeable = False
        return view, segment.close
    raise ValueError(f"unknown method {method!r}")


def run_reader(args: argparse.Namespace) -> None:
    method = args.reader
    if method == "hakobu":
        import hakobu

        store = hakobu.Store(args.name, domain=args.domain)
        say({"ready": os.getpid()})
        view = store.wait(KEY, timeout=STEP_TIMEOUT)
        viewed = time.monotonic_ns()
        let_go = store.close
    else:
        say({"ready": os.getpid()})
        with open(args.fifo) as fifo:  # blocks until the publisher announces
            announced = json.loads(fifo.readline())
        view, let_go = attach_view(method, announced, args)
        viewed = time.monotonic_ns()
    say({"view_ns": viewed, "writeable": bool(view.flags.writeable)})
    while (command := hear().get("do")) != "exit":
        if command == "sum":
            total, seconds = timed_sum(view)
            say({"sum": total, "seconds": seconds})
    del view
    let_go()
    say({"done": True})


def announce(workdir: str, message: dict[str, Any]) -> None:
    """Tells every waiting reader, each through its own FIFO, what to attach."""
    line = json.dumps(message) + "\n"
    for fifo in sorted(Path(workdir).glob("announce-*")):
        with open(fifo, "w") as out:  # the reader has it open already: no wait
            out.write(line)


def run_publisher(args: argparse.Namespace) -> None:
    method = args.publisher
    shape = (args.elements,)
    keep: list[Any] = []
    if method == "hakobu":
        import hakobu

        store = hakobu.Store(args.name, domain=args.domain)
        array = hakobu.empty(shape, dtype=np.float64, domain=args.domain)
        array.fill(FILL)
        say({"filled": True})
        hear()
        started = time.monotonic_ns()
        store[KEY] = array
        say({"published_ns": started, "returned_ns": time.monotonic_ns()})
        keep = [store, array]
    elif method == "memmap":
        path = args.path
        mapped = np.memmap(path, dtype=np.float64, mode="w+", shape=shape)
        mapped.fill(FILL)
        say({"filled": True})
        hear()
        started = time.monotonic_ns()
        announce(args.workdir, {"path": path})
        say({"published_ns": started})
        keep = [mapped]
    elif method == "shared_memory":
        from multiprocessing import shared_memory

        segment = shared_memory.SharedMemory(name=args.name, create=True, size=args.elements * 8)
        view = np.ndarray(shape, dtype=np.float64, buffer=segment.buf)
        view.fill(FILL)
        say({"filled": True})
        hear()
        started = time.monotonic_ns()
        announce(args.workdir, {"shm": segment.name})
        say({"published_ns": started})
        keep = [segment, view]
    else:
        raise ValueError(f"unknown method {method!r}")
    hear()  # "exit" (or SIGKILL)
    if method == "shared_memory":
        del view
        keep = []
        segment.close()
        segment.unlink()
    del keep
    say({"done": True})


# --- the harness -------------------------------------------------------------------------------


def pss_bytes(pid: int) -> int:
    """Proportional set size of a process (shared pages split among their mappers)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss line for process {pid}")


@dataclass
class Program:
    """A reader or publisher started as a separate interpreter, spoken to in JSON lines.

    A thread per program reads its lines into a queue, so that waiting for one
    has a deadline (a watchdog against a stuck program: the harness never waits
    forever).
    """

    process: subprocess.Popen[str]
    stdin: IO[str] = field(init=False)
    lines: queue.Queue[str] = field(init=False, default_factory=queue.Queue)

    def __post_init__(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin = self.process.stdin
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(line)
        self.lines.put("")  # the program ended

    @classmethod
    def start(cls, role: str, method: str, args: argparse.Namespace, name: str, extra: list[str]) -> Program:
        command = [sys.executable, "-m", MODULE, f"--{role}", method, "--name", name]
        command += ["--elements", str(args.elements), "--domain", args.domain, *extra]
        return cls(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))

    def send(self, message: dict[str, Any]) -> None:
        self.stdin.write(json.dumps(message) + "\n")
        self.stdin.flush()

    def receive(self) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=STEP_TIMEOUT)
        except queue.Empty:
            raise TimeoutError(f"program {self.process.pid} said nothing for {STEP_TIMEOUT:.0f} s") from None
        if not line:
            raise RuntimeError(f"program {self.process.pid} ended (exit status {self.process.wait()})")
        message: dict[str, Any] = json.loads(line)
        return message

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send({"do": "exit"})
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        try:
            self.stdin.close()
        except OSError:
            pass


def check_sum(total: float, elements: int, who: str) -> None:
    if total != elements * FILL:
        raise RuntimeError(f"{who} summed {total}, expected {elements * FILL}")


def summarize_views(published_ns: int, views: list[int]) -> dict[str, float]:
    delays = sorted(max(0, v - published_ns) / 1e6 for v in views)
    return {"view_ms_median": delays[len(delays) // 2], "view_ms_max": delays[-1]}


def run_programs(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """One turn of a method whose publisher and readers are programs of this module."""
    name = f"hbs{os.getpid()}x{uuid.uuid4().hex[:8]}"
    workdir = Path(
        tempfile.mkdtemp(prefix="hakobu-bench-store-", dir="/dev/shm" if method == "memmap" else None)
    )
    path = str(workdir / "array.f64")
    extra = ["--path", path, "--workdir", str(workdir)]
    for i in range(args.readers):
        os.mkfifo(workdir / f"announce-{i}")
    readers: list[Program] = []
    publisher: Optional[Program] = None
    result: dict[str, Any] = {"method": method}
    live_before = live_bytes(args.domain) if method == "hakobu" else 0
    huge_before = huge_pages_in_use()
    try:
        readers = [
            Program.start("reader", method, args, name, [*extra, "--fifo", str(workdir / f"announce-{i}")])
            for i in range(args.readers)
        ]
        pids = [r.receive()["ready"] for r in readers]
        # What each interpreter uses before the array (Python, NumPy, the library): reported apart.
        before = sum(pss_bytes(pid) for pid in pids) * (len(pids) + 1) // len(pids)
        publisher = Program.start("publisher", method, args, name, extra)
        publisher.receive()  # filled
        publisher.send({"do": "publish"})
        announced = publisher.receive()
        views = []
        for reader in readers:
            seen = reader.receive()
            if seen["writeable"]:
                raise RuntimeError(f"{method}: a reader's view is writeable")
            views.append(seen["view_ns"])
        # Sums start once every reader holds its view: one reader's page faults do not delay another's view.
        for reader in readers:
            reader.send({"do": "sum"})
        sums = [reader.receive() for reader in readers]
        for i, s in enumerate(sums):
            check_sum(s["sum"], args.elements, f"{method} reader {i}")
        pss = [pss_bytes(publisher.process.pid)] + [pss_bytes(pid) for pid in pids]
        # Pages of hugetlbfs are in no process's Pss: the machine's huge pages taken meanwhile count once.
        result["hugetlbfs_bytes"] = huge_pages_in_use() - huge_before
        pss.append(result["hugetlbfs_bytes"])
        result.update(summarize_views(announced["published_ns"], views))
        result["publish_ms"] = (
            announced.get("returned_ns", announced["published_ns"]) - announced["published_ns"]
        ) / 1e6
        result["sum_s_median"] = sorted(s["seconds"] for s in sums)[len(sums) // 2]
        result["pss_bytes"] = sum(pss)
        result["pss_ratio"] = sum(pss) / (args.elements * 8)
        result["pss_interpreters_bytes"] = before
        if method == "hakobu":
            result.update(kill_publisher_check(publisher, readers, args, name, live_before))
    finally:
        for program in readers:
            program.stop()
        if publisher is not None:
            publisher.stop()
        if method == "hakobu":
            remove_store(name, args.domain)
        for leftover in workdir.glob("*"):
            leftover.unlink()
        workdir.rmdir()
    return result


def huge_pages_in_use() -> int:
    """Bytes of the machine's hugetlbfs pages in use (faulted in), from /proc/meminfo."""
    fields: dict[str, int] = {}
    with open("/proc/meminfo") as info:
        for line in info:
            name, _, rest = line.partition(":")
            if name in ("HugePages_Total", "HugePages_Free", "Hugepagesize"):
                fields[name] = int(rest.split()[0])
    return (fields["HugePages_Total"] - fields["HugePages_Free"]) * fields["Hugepagesize"] * 1024


def domain_figure(domain: str, figure: str) -> int:
    """One of a domain's figures, as `hakobu info` shows them."""
    from hakobu import _core

    with _core.DomainAttachment(domain):
        return int(_core.domain_stats(domain)[figure])


def live_bytes(domain: str) -> int:
    return domain_figure(domain, "live_bytes")


def remove_store(name: str, domain: str) -> None:
    import hakobu

    try:
        hakobu.Store(name, domain=domain).unlink()
    except Exception:  # noqa: BLE001 - best effort: the store may be gone already
        pass


def kill_publisher_check(
    publisher: Program, readers: list[Program], args: argparse.Namespace, name: str, live_before: int
) -> dict[str, Any]:
    """SIGKILL the publisher while readers hold views; they read on; the memory comes back after."""
    import hakobu

    publisher.process.send_signal(signal.SIGKILL)
    publisher.process.wait()
    for reader in readers:
        reader.send({"do": "sum"})
    for i, reader in enumerate(readers):
        check_sum(reader.receive()["sum"], args.elements, f"reader {i} after the publisher was killed")
    with hakobu.Store(name, domain=args.domain) as store:
        del store[KEY]
        held = live_bytes(args.domain) - live_before  # the readers still hold the value
        for reader in readers:
            reader.send({"do": "exit"})
            reader.receive()
        after = live_bytes(args.domain) - live_before
    return {
        "killed_publisher_readers_ok": True,
        "live_bytes_while_held": held,
        "live_bytes_after": after,
        "memory_back": after < args.elements * 8 // 100,
    }


def run_ray(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    size = args.elements * 8
    ray.init(
        num_cpus=os.cpu_count() or 1,
        object_store_memory=int(size * 1.1) + (256 << 20),
        include_dashboard=False,
        log_to_driver=False,
    )
    try:

        @ray.remote(num_cpus=0)
        class Reader:
            def pid(self) -> int:
                return os.getpid()

            def take(self, boxed: list[Any]) -> dict[str, Any]:
                self.view = ray.get(boxed[0])  # held until the PSS is read
                return {"view_ns": time.monotonic_ns(), "writeable": bool(self.view.flags.writeable)}

            def total(self) -> dict[str, Any]:
                total, seconds = timed_sum(self.view)
                return {"sum": total, "seconds": seconds}

        readers = [Reader.remote() for _ in range(args.readers)]  # type: ignore[attr-defined]
        pids = ray.get([r.pid.remote() for r in readers])
        before = sum(pss_bytes(pid) for pid in pids) * (len(pids) + 1) // len(pids)
        array = np.empty(args.elements, dtype=np.float64)
        array.fill(FILL)
        started = time.monotonic_ns()
        ref = ray.put(array)
        returned = time.monotonic_ns()
        del array
        views = ray.get([r.take.remote([ref]) for r in readers])
        results = ray.get([r.total.remote() for r in readers])
        for i, (v, r) in enumerate(zip(views, results)):
            if v["writeable"]:
                raise RuntimeError("ray: a reader's view is writeable")
            check_sum(r["sum"], args.elements, f"ray reader {i}")
        pss = [pss_bytes(os.getpid())] + [pss_bytes(pid) for pid in pids]
        raylet = raylet_pids()
        out: dict[str, Any] = {"method": "ray"}
        out.update(summarize_views(started, [v["view_ns"] for v in views]))
        out["publish_ms"] = (returned - started) / 1e6
        out["sum_s_median"] = sorted(r["seconds"] for r in results)[len(results) // 2]
        out["pss_bytes"] = sum(pss)
        out["pss_ratio"] = sum(pss) / size
        out["pss_interpreters_bytes"] = before
        out["object_store_pss_bytes"] = sum(pss_bytes(p) for p in raylet)
        return out
    finally:
        ray.shutdown()


def raylet_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("raylet", "plasma_store"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def enough_memory(size: int, copies: float) -> Optional[str]:
    """Why a method cannot run at this size here, or None."""
    with open("/proc/meminfo") as info:
        available = next(int(line.split()[1]) * 1024 for line in info if line.startswith("MemAvailable:"))
    shm = os.statvfs("/dev/shm")
    shm_free = shm.f_bavail * shm.f_frsize
    if available < size * copies + (1 << 30):
        return f"needs {size * copies / 2**30:.1f} GiB of memory, {available / 2**30:.1f} GiB available"
    if shm_free < size + (256 << 20):
        return f"needs {size / 2**30:.1f} GiB in /dev/shm, {shm_free / 2**30:.1f} GiB free"
    return None


METHODS = ["hakobu", "memmap", "shared_memory", "ray"]


def main() -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.split("\n")[0] if __doc__ else ""
    )
    parser.add_argument("--size-gib", type=float, default=8.0, help="the array's size (default 8 GiB)")
    parser.add_argument("--readers", type=int, default=5, help="reader programs (default 5)")
    parser.add_argument("--quick", action="store_true", help="256 MiB: check that every method runs")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS)
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--domain", default=f"bench{os.getpid()}", help=argparse.SUPPRESS)
    parser.add_argument("--reader", help=argparse.SUPPRESS)
    parser.add_argument("--publisher", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--fifo", help=argparse.SUPPRESS)
    parser.add_argument("--elements", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        run_reader(args)
        return 0
    if args.publisher:
        run_publisher(args)
        return 0
    size_gib = 0.25 if args.quick else args.size_gib
    if not (size_gib > 0) or args.readers < 1:
        parser.error("--size-gib must be > 0 and --readers >= 1")
    args.elements = int(size_gib * 2**30) // 8
    size = args.elements * 8
    about = machine()
    print(
        f"machine: {about['cpu']}, {about['cores']} cores, kernel {about['kernel']}, Python {about['python']}"
    )
    print(f"array: {size / 2**30:.2f} GiB float64, {args.readers} reader programs + 1 publisher\n")
    results: list[dict[str, Any]] = []
    copies = {"hakobu": 1.1, "memmap": 1.1, "shared_memory": 1.1, "ray": 2.2}
    for method in args.methods.split(","):
        if method not in METHODS:
            parser.error(f"unknown method {method!r}")
        if method == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                results.append(
                    {"method": "ray", "skipped": "not installed (pip install './bench/python[peers]')"}
                )
                continue
        why = enough_memory(size, copies[method])
        if why:
            results.append({"method": method, "skipped": why})
            continue
        print(f"running {method}…", flush=True)
        results.append(run_ray(args) if method == "ray" else run_programs(method, args))
    print(
        f"\n{'method':<15}{'PSS/size':>10}{'w/o interp.':>12}{'view median':>14}{'view max':>12}{'publish':>12}{'sum/reader':>12}"
    )
    for r in results:
        if "skipped" in r:
            print(f"{r['method']:<15}skipped: {r['skipped']}")
            continue
        print(
            f"{r['method']:<15}{r['pss_ratio']:>10.3f}{(r['pss_bytes'] - r['pss_interpreters_bytes']) / size:>12.3f}"
            f"{r['view_ms_median']:>11.3f} ms{r['view_ms_max']:>9.3f} ms"
            f"{r['publish_ms']:>9.3f} ms{r['sum_s_median']:>10.2f} s"
        )
        if "object_store_pss_bytes" in r:
            print(
                f"{'':<15}(Ray's object store process: PSS {r['object_store_pss_bytes'] / size:.3f} × size)"
            )
        if "memory_back" in r:
            print(
                f"{'':<15}publisher SIGKILLed while readers held views: they read on; after delete + exit, "
                f"live bytes {r['live_bytes_while_held'] / 2**20:.0f} MiB → {r['live_bytes_after'] / 2**20:.1f} MiB"
            )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {"machine": about, "size_bytes": size, "readers": args.readers, "results": results},
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
