"""Stage 3: summarizes every result of the queue "features" until the stream ends, then
prints the summary (and writes it as JSON with --record FILE).

    python postprocess.py [--record summary.json]

Clip k left decode filled with k and infer added 1: each result must be filled with k + 1.
The summary lists the k of each result in the order they came (decode's order with one
infer program; with several, any order), and how many results had wrong values.
Exits with 3 when a stage before it failed or died (hakobu.SendersLost): the summary then
covers what arrived.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import common
import numpy as np

import hakobu


class Summary:
    def __init__(self) -> None:
        self.clips: list[int] = []
        self.wrong = 0
        self.shape: tuple[int, ...] = ()

    def add(self, result: np.ndarray) -> None:
        k = int(result.flat[0]) - 1
        self.clips.append(k)
        self.shape = result.shape
        if result.dtype != np.float64 or not np.all(result == k + 1):
            self.wrong += 1

    def as_dict(self, ended: str) -> dict[str, Any]:
        return {"clips": self.clips, "wrong": self.wrong, "shape": list(self.shape), "ended": ended}


def main() -> int:
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, help="write the summary to this JSON file")
    args = parser.parse_args()
    summary = Summary()
    status, ended = 0, "finished"
    try:
        hakobu.serve(
            summary.add, input=args.features, output=None, domain=args.domain, capacity=args.capacity
        )
    except hakobu.SendersLost as lost:
        print(f"postprocess: the stream was lost upstream: {lost}", file=sys.stderr, flush=True)
        status, ended = 3, "lost"
    if args.record is not None:
        args.record.write_text(json.dumps(summary.as_dict(ended)))
    shape = "x".join(map(str, summary.shape)) or "-"
    print(f"postprocess: {len(summary.clips)} results of {shape} float64, {summary.wrong} wrong", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
