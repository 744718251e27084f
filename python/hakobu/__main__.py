"""`python -m hakobu`: the same as the `hakobu` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
