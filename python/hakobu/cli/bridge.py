"""`hakobu bridge`: a queue or topic carried to or from another host (hakobu.Bridge).

    hakobu bridge NAME --to tcp://host:port     send the local queue NAME there
    hakobu bridge NAME --at tcp://*:port        receive into the local queue NAME
    hakobu bridge keys DIR [--name NAME]        write a CurveZMQ key pair

It runs until the stream ends (exit 0) or Ctrl-C (exit 130: what the other end had
not acknowledged is back in the local queue), printing a status line to stderr; with
--json it prints the bridge's stats on stdout at the end.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import Any, Optional

from .errors import CommandError, check_name
from .output import Output, format_bytes
from .top import interval_seconds


def add_parser(commands: Any, add_common_options: Any, run: Any = None) -> argparse.ArgumentParser:
    """Adds the `bridge` subcommand to the main parser's ``commands``."""
    help_text = (
        "carry a queue (or topic) to or from another host over ZeroMQ: `hakobu bridge NAME --to tcp://HOST:PORT` "
        "on the sending host, `hakobu bridge NAME --at tcp://*:PORT` on the receiving one; "
        "`hakobu bridge keys DIR` writes a CurveZMQ key pair"
    )
    p: argparse.ArgumentParser = commands.add_parser("bridge", help=help_text, description=help_text)
    add_common_options(p)
    p.set_defaults(run=command_bridge)
    p.add_argument(
        "name", help="the queue (or topic) to carry; `keys` followed by DIR writes a key pair instead"
    )
    p.add_argument("directory", nargs="?", help=argparse.SUPPRESS)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--to", metavar="ENDPOINT", help="send the local queue to this end (tcp://host:port)")
    where.add_argument(
        "--at", metavar="ENDPOINT", help="receive into the local queue at this address (tcp://*:port)"
    )
    p.add_argument("--topic", action="store_true", help="carry the topic NAME instead of the queue NAME")
    binding = p.add_mutually_exclusive_group()
    binding.add_argument(
        "--bind", dest="bind", action="store_true", default=None, help="bind the endpoint (default with --at)"
    )
    binding.add_argument(
        "--connect", dest="bind", action="store_false", help="connect to the endpoint (default with --to)"
    )
    p.add_argument(
        "--secret-key", metavar="FILE", help="this end's CurveZMQ secret key file (NAME.key_secret)"
    )
    p.add_argument(
        "--peer-key", metavar="FILE", help="the binding end's public key file (NAME.key), when connecting"
    )
    p.add_argument(
        "--allowed-keys",
        metavar="DIR",
        help="a directory of the public keys allowed to connect, when binding",
    )
    p.add_argument(
        "--allow-objects",
        action="store_true",
        help="receive object messages (pickles) from peers not authenticated by keys: trusted networks only",
    )
    p.add_argument("--window", type=int, default=64, help="messages in flight at most (default: 64)")
    p.add_argument(
        "--no-lane",
        dest="lane",
        action="store_false",
        help="carry everything through ZeroMQ: no data lane (a plain TCP port beside it, used without keys)",
    )
    p.add_argument(
        "--lane-port",
        type=int,
        default=0,
        metavar="PORT",
        help="with --at: the data lane's port (default: any free one, announced to the sending end)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up after this long without hearing from the other end (default: keep trying)",
    )
    p.add_argument(
        "--interval",
        type=interval_seconds,
        default=1.0,
        metavar="SECONDS",
        help="time between status lines on stderr (default: 1)",
    )
    p.add_argument(
        "--key-name",
        "--name",
        dest="key_name",
        default=None,
        help="with `keys`: the key files' name (default: host)",
    )
    return p


def command_bridge(args: argparse.Namespace, out: Output) -> int:
    if args.name == "keys" and args.to is None and args.at is None:
        return _write_keys(args, out)
    if args.directory is not None:
        raise CommandError(
            f"unexpected argument {args.directory!r} (only `hakobu bridge keys DIR` takes two)", 2
        )
    check_name("topic" if args.topic else "queue", args.name)
    if args.to is None and args.at is None:
        raise CommandError(
            "give --to tcp://HOST:PORT (this host sends) or --at tcp://*:PORT (this host receives)", 2
        )
    if args.window <= 0:
        raise CommandError(f"--window must be > 0, not {args.window}", 2)
    if not 0 <= args.lane_port <= 65535:
        raise CommandError(
            f"--lane-port must be a port from 0 (any free one) to 65535, not {args.lane_port}", 2
        )
    import hakobu

    bridge = hakobu.Bridge(
        args.name,
        send_to=args.to,
        receive_at=args.at,
        topic=args.topic,
        bind=args.bind,
        domain=args.domain,
        secret_key=args.secret_key,
        peer_key=args.peer_key,
        allowed_keys=args.allowed_keys,
        window=args.window,
        timeout=args.timeout,
        allow_objects=args.allow_objects,
        lane=args.lane,
        lane_port=args.lane_port,
    )
    role = "to" if args.to is not None else "at"
    lane = f" (data lane on port {bridge.lane_port})" if bridge.lane_port is not None else ""
    status = _Status(f"{'topic' if args.topic else 'queue'} {args.name} {role} {bridge.endpoint}{lane}")
    print(f"hakobu bridge: {status.what} (Ctrl-C stops)", file=sys.stderr, flush=True)
    if args.secret_key is None and bridge.endpoint.split("://")[-1].split(":")[0] not in (
        "127.0.0.1",
        "localhost",
        "[::1]",
    ):
        print(
            "hakobu bridge: warning: no CurveZMQ keys: anyone who reaches this endpoint can read or put messages "
            "(object messages, which a consumer unpickles, only with --allow-objects); use "
            "--secret-key/--peer-key/--allowed-keys outside a "
            "trusted network",
            file=sys.stderr,
            flush=True,
        )
    try:
        while not bridge.join(args.interval):
            status.show(bridge.stats())
    except KeyboardInterrupt:
        bridge.close()
        try:
            bridge.join(0)  # what went wrong while stopping, if anything
        except Exception as error:  # noqa: BLE001 - reported; the exit code is Ctrl-C's
            print(f"hakobu bridge: while stopping: {type(error).__name__}: {error}", file=sys.stderr)
        status.show(bridge.stats(), final=True)
        _report(out, bridge.stats())
        raise
    except BaseException:
        bridge.close()
        raise
    status.show(bridge.stats(), final=True)
    _report(out, bridge.stats())
    return 0


class _Status:
    """The status line on stderr: messages, rate since the last line, bytes, connected."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.tty = sys.stderr.isatty()
        self.last_count = 0
        self.last_time = time.monotonic()

    def show(self, stats: dict[str, Any], final: bool = False) -> None:
        now = time.monotonic()
        rate = (stats["messages"] - self.last_count) / max(now - self.last_time, 1e-9)
        self.last_count, self.last_time = stats["messages"], now
        state = (
            ("connected, data lane" if stats["lane"] else "connected")
            if stats["connected"]
            else "not connected"
        )
        line = (
            f"{stats['messages']} messages, {rate:.1f}/s, {format_bytes(stats['bytes'])}, {state}, "
            f"{stats['in_flight']} in flight, {stats['resent']} resent, {stats['rejected']} rejected"
        )
        if final:
            given = f", {stats['given_back']} put back into the local queue" if stats["given_back"] else ""
            line = f"ended: {stats['messages']} messages, {format_bytes(stats['bytes'])}{given}"
        end = "\n" if final or not self.tty else ""
        prefix = "\r" if self.tty else ""
        print(f"{prefix}hakobu bridge: {line}", end=end, file=sys.stderr, flush=True)


def _report(out: Output, stats: dict[str, Any]) -> None:
    if out.as_json:
        out.json(stats)


def _write_keys(args: argparse.Namespace, out: Output) -> int:
    if args.directory is None:
        raise CommandError("usage: hakobu bridge keys DIR [--name NAME]", 2)
    from .._bridge import keys

    name: Optional[str] = args.key_name or socket.gethostname() or "bridge"
    assert name is not None
    public, secret = keys.write_pair(args.directory, name)
    if out.as_json:
        out.json({"public": public, "secret": secret})
    else:
        out.line(f"public key: {public}  (give it to the other end)", markup=False)
        out.line(f"secret key: {secret}  (keep it on this host, readable only by you)", markup=False)
    return 0
