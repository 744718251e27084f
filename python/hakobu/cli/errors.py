"""How the command fails: a message on stderr that says what to do, and an exit code."""

from __future__ import annotations

from .. import _core


class CommandError(Exception):
    """A failure to report on stderr; the command exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_name(kind: str, name: str) -> None:
    why = _core.validate_name(name)
    if why:
        raise CommandError(f"invalid {kind} name '{name}': {why}", exit_code=2)
