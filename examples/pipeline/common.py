"""What the three stage programs share: the queue options each program passes, so that
whichever program starts first creates the queues as the others would."""

from __future__ import annotations

import argparse

SHAPE = (2, 3, 16, 224, 224)  # float64, 38.5 MB: a clip of 16 frames of 2 cameras


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--frames", default="frames", help="the queue between decode and infer")
    parser.add_argument("--features", default="features", help="the queue between infer and postprocess")
    parser.add_argument(
        "--domain", default=None, help="the hakobu domain (default: $HAKOBU_DOMAIN or u<uid>)"
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=4,
        help="messages in flight between two stages (applies when a program creates a queue)",
    )
    return parser
