"""Stage 1: decodes clips and puts them on the queue "frames", then closes it (the end of
the stream flows through infer to postprocess).

    python decode.py [--count 20 | --folder DIR] [--shape 2,3,16,224,224]

With --count N it makes N float64 arrays of --shape, clip k filled with k, built in shared
memory (hakobu.empty) so that putting them copies nothing. With --folder it sends every
.npy file of DIR in name order, as float64 (one copy into shared memory each).
If it fails or is stopped (Ctrl-C) part way, the next stages learn that the stream was lost
(hakobu.SendersLost) once they have handled what was sent.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import common
import numpy as np

import hakobu


def made(count: int, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    for k in range(count):
        clip = hakobu.empty(shape, np.float64)  # in shared memory: sent without a copy
        clip.fill(k)
        yield clip


def loaded(folder: Path) -> Iterator[np.ndarray]:
    for path in sorted(folder.glob("*.npy")):
        yield np.load(path).astype(np.float64, copy=False)


def main() -> int:
    parser = common.parser(__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--count", type=int, default=20, help="clips to make")
    source.add_argument("--folder", type=Path, help="send the .npy files of this folder instead")
    parser.add_argument("--shape", default=",".join(map(str, common.SHAPE)), help="the shape of a made clip")
    args = parser.parse_args()
    shape = tuple(int(extent) for extent in args.shape.split(","))
    clips = loaded(args.folder) if args.folder is not None else made(args.count, shape)

    frames = hakobu.Queue(args.frames, args.capacity, domain=args.domain, sends=True)
    sent = 0
    try:
        for clip in clips:
            frames.put(clip)  # waits while infer is `capacity` clips behind: backpressure
            sent += 1
    except BaseException:
        frames.close(failed=True)
        raise
    frames.close()  # the end of the stream: infer returns once it has handled every clip
    print(f"decode: sent {sent} clips", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
