"""The other end of a benchmarked method, run as its own interpreter.

    python -m hakobu_bench.peer METHOD CONFIG_JSON

Receives an array, rebuilds it, stamps the times (``channel.StampingEcho``)
and sends it back, until the sender says stop.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .channel import serve_peer
from .methods import all_methods


def serve(method: str, config: dict[str, Any]) -> None:
    """Runs the peer of the method called ``method`` until the stop message."""
    serve_peer(all_methods()[method].peer_end, config)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m hakobu_bench.peer METHOD CONFIG_JSON", file=sys.stderr)
        return 2
    serve(argv[0], json.loads(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
