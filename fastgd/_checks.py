"""Checks of scalar settings (hyperparameters, counts, seeds) shared by every module, so each
rule is written, and worded in its error, once. Each returns the value as a Python float or
int, and raises ``ValueError`` naming the setting otherwise. Numbers may be Python or NumPy
scalars; bools are neither numbers nor ints here (:mod:`fastgd._arrays`)."""

from __future__ import annotations

import math

from fastgd._arrays import is_int, is_number


def number(name, value) -> float:
    if not is_number(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def finite(name, value) -> float:
    value = number(name, value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def positive(name, value) -> float:
    value = number(name, value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def nonnegative(name, value) -> float:
    value = number(name, value)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def in_range(name, value, lo, hi, *, lo_open=False, hi_open=False) -> float:
    """A number in ``[lo, hi]``, or with an end open (``lo_open``: ``(lo, hi]``)."""
    value = number(name, value)
    if not ((lo < value if lo_open else lo <= value)
            and (value < hi if hi_open else value <= hi)):
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, "
                         f"{hi}{')' if hi_open else ']'}, got {value}")
    return value


def count(name, value, minimum=1) -> int:
    if not (is_int(value) and value >= minimum):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)
