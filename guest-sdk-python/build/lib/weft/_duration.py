"""Parsing of durations: numbers and strings such as "10 seconds"."""

from __future__ import annotations

import datetime
import re

_UNITS_MS = {
    "millisecond": 1,
    "ms": 1,
    "second": 1000,
    "sec": 1000,
    "s": 1000,
    "minute": 60_000,
    "min": 60_000,
    "m": 60_000,
    "hour": 3_600_000,
    "h": 3_600_000,
    "day": 86_400_000,
    "d": 86_400_000,
    "week": 7 * 86_400_000,
    "month": 30 * 86_400_000,
    "year": 365 * 86_400_000,
}

_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*")

Duration = int | float | str | datetime.timedelta


def to_ms(value: Duration, *, number_unit_ms: int, what: str) -> int:
    """Converts a duration to milliseconds.

    Numbers count `number_unit_ms` milliseconds each (1000 for seconds, 1
    for milliseconds). Strings are one or more `<number> <unit>` parts:
    "10 seconds", "2 hours", "1 day", "1 minute 30 seconds".
    """
    if isinstance(value, bool):
        raise TypeError(f"{what}: a duration cannot be a bool")
    if isinstance(value, datetime.timedelta):
        ms = value.total_seconds() * 1000
    elif isinstance(value, (int, float)):
        ms = value * number_unit_ms
    elif isinstance(value, str):
        text = value.strip().lower()
        pos = 0
        total = 0.0
        while pos < len(text):
            m = _PART.match(text, pos)
            if m is None or m.end() == pos:
                raise ValueError(f"{what}: cannot parse duration {value!r}")
            unit = m.group(2)
            if unit not in _UNITS_MS and unit.endswith("s"):
                unit = unit[:-1]
            if unit not in _UNITS_MS:
                raise ValueError(f"{what}: unknown unit {m.group(2)!r} in duration {value!r}")
            total += float(m.group(1)) * _UNITS_MS[unit]
            pos = m.end()
        if pos == 0:
            raise ValueError(f"{what}: empty duration")
        ms = total
    else:
        raise TypeError(f"{what}: expected seconds, a duration string or a timedelta, got {type(value).__name__}")
    if ms < 0:
        raise ValueError(f"{what}: a duration cannot be negative")
    return int(round(ms))
