"""Argument checks shared by the apps: one clear LstmRtError naming the argument, instead
of whatever numpy or Python would raise later (or a hang, or a huge allocation)."""
from __future__ import annotations

import math
import numbers

from .errors import LstmRtError


def count(name: str, value, minimum: int = 0) -> int:
    """`value` as a Python int >= minimum; bools, floats, strings and None are refused
    (True is no count, and 2.5 or "3" are mistakes, not counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise LstmRtError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def real(name: str, value, minimum: float = 0.0) -> float:
    """`value` as a finite float >= minimum; bools, strings, None and NaN are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < minimum:
        raise LstmRtError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)
