"""Stage 2: runs the model on every clip of the queue "frames" and puts the result on
"features", until decode's stream ends.

    python infer.py        (start several: they share the clips, each clip goes to one)

The model here adds 1 in place: the received array is a writable view of shared memory,
and returning it forwards that very memory to the next stage without a copy.
examples/pipeline/infer.cpp is the same stage in C++.
"""

from __future__ import annotations

import sys

import common
import numpy as np

import hakobu


def infer(clip: np.ndarray) -> np.ndarray:
    clip += 1  # the model's work
    return clip


def main() -> int:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    try:
        handled = hakobu.serve(
            infer, input=args.frames, output=args.features, domain=args.domain, capacity=args.capacity
        )
    except hakobu.SendersLost as lost:  # decode failed or died: postprocess learns it too
        print(f"infer: the stream was lost upstream: {lost}", file=sys.stderr, flush=True)
        return 3
    print(f"infer: {handled} clips", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
