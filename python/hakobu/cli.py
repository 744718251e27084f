"""The `hakobu` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("hakobu: the command is being built", file=sys.stderr)
    return 2
