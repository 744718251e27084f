"""What a stage's return value means: shared by hakobu.Pipeline and hakobu.serve."""

from __future__ import annotations

from typing import Any, Final


class _Skip:
    """The type of hakobu.SKIP (one instance; it survives pickling as itself)."""

    __slots__ = ()
    _instance: Any = None

    def __new__(cls) -> _Skip:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return "hakobu.SKIP"

    def __reduce__(self) -> str:
        return "SKIP"


SKIP: Final = _Skip()
"""Returned by a stage's function: the input produces nothing downstream."""


def outputs(result: Any) -> list[Any]:
    """The items a stage's return value sends on: none for SKIP, each element of a
    list (a fan-out), else the value itself."""
    if result is SKIP:
        return []
    if type(result) is list:
        return result
    return [result]
