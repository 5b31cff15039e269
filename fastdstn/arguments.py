"""Checks of the public API's arguments: each failure is one line that names the argument, says what was
expected and shows what was received (TypeError for a wrong kind of value, ValueError for a value out of
range), so that bad input never reaches a kernel or silently changes the arithmetic."""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional


def boolean(name: str, value: Any) -> bool:
    """True or False only: a string like "false" is refused rather than taken as truthy."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, received {value!r}")
    return value


def number(name: str, value: Any, low: Optional[float] = None, high: Optional[float] = None, *,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (not a bool) within [low, high]; an open end excludes its bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, received {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, received {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{name}: expected a value {_interval(low, high, low_open, high_open)}, received {value!r}")
    return float(value)


def integer(name: str, value: Any, low: Optional[int] = None) -> int:
    """An int (not a bool, not a float with an integral value) of at least `low`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, received {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, received {value!r}")
    return int(value)


def function(name: str, value: Any, optional: bool = False) -> Any:
    """A callable (or None when optional)."""
    if value is None and optional:
        return value
    if not callable(value):
        raise TypeError(f"{name}: expected a callable{' or None' if optional else ''}, received {value!r}")
    return value


def instance(name: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{name}: expected a {kind.__module__}.{kind.__qualname__}, received {type(value).__name__}")
    return value


def _interval(low, high, low_open, high_open) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
