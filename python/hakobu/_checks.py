"""Checks of the arguments users pass, shared by every public entry point.

A wrong argument is a hakobu error that names it (InvalidArgument and
InvalidName are ValueErrors; TooLarge too), raised before anything reaches
the C++ core: never a hang on NaN, an overflow, or the bindings' "incompatible
function arguments" TypeError.
"""

from __future__ import annotations

import math
import numbers
import operator
import sys
from typing import Optional

from ._errors import InvalidArgument, InvalidName, TooLarge

# Waits longer than this (about 31 years) mean "no limit": every clock, lock and
# the core's nanoseconds hold it, where 1e300 s would overflow them.
FOREVER_SECONDS = 1e9


def _seconds(value: object, what: str, advice: str) -> float:
    """``value`` as a non-negative float number of seconds (+inf for huge ints)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(f"{what} must be a number of seconds{advice}, got {value!r}")
    if value < 0:
        raise InvalidArgument(f"{what} must not be negative, got {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        return math.inf
    if math.isnan(seconds):
        raise InvalidArgument(f"{what} is NaN: give a number of seconds{advice}")
    return seconds


def timeout(value: object, what: str = "timeout") -> Optional[float]:
    """``value`` as a timeout in seconds; None means no limit.

    None, +inf and anything beyond FOREVER_SECONDS mean no limit; NaN, negative
    numbers and non-numbers raise InvalidArgument.
    """
    if value is None:
        return None
    seconds = _seconds(value, what, " or None")
    return None if seconds > FOREVER_SECONDS else seconds


def duration(value: object, what: str) -> float:
    """A duration in seconds that has no "no limit" form (a spin): NaN, negative numbers
    and non-numbers raise InvalidArgument; +inf and huge values are capped at FOREVER_SECONDS."""
    return min(_seconds(value, what, ""), FOREVER_SECONDS)


def count(value: object, what: str) -> int:
    """A non-negative int (Python or NumPy; not a bool, not a float), else InvalidArgument."""
    if isinstance(value, bool):  # an int to Python, never meant as a size (NumPy's bool_ has no __index__)
        raise InvalidArgument(f"{what} must be an int, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgument(f"{what} must be an int, got {value!r}") from None
    if number < 0:
        raise InvalidArgument(f"{what} must not be negative, got {number}")
    return number


def byte_size(shape: tuple[int, ...], itemsize: int) -> int:
    """The bytes an array of ``shape`` and ``itemsize`` takes; TooLarge when no buffer can hold it.

    Each dimension and the product of the non-zero ones must fit an index
    (``sys.maxsize``), as NumPy requires, even when another dimension is 0.
    """
    product = max(itemsize, 1)
    for n in shape:
        if n:
            product *= n
        if n > sys.maxsize or product > sys.maxsize:
            raise TooLarge(
                f"an array of shape {shape} and {itemsize}-byte elements is larger than any memory "
                f"({sys.maxsize} bytes at most)"
            )
    return 0 if 0 in shape else product if itemsize else 0


def name(value: object, what: str) -> str:
    """A queue or domain name as a str (the core checks the characters); else InvalidName."""
    if not isinstance(value, str):
        raise InvalidName(f"a {what} name is a str, got {value!r}")
    return value


def domain(value: object) -> str:
    """The domain argument for the core: None means the default domain ("")."""
    return "" if value is None else name(value, "domain")


def flag(value: object, what: str) -> bool:
    """A bool option (1 or "no" are refused: a security switch must not be guessed)."""
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} must be True or False, got {value!r}")
    return value
