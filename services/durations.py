"""Durations as people write them: `5s`, `30m`, `1h`, `1d`, `1h30m`."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)\s*([smhdw])", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = timedelta(days=366)


def parse_duration(text: str) -> timedelta:
    """`30m` -> 30 minutes; ValueError with a readable message for anything else."""
    raw = text.strip().lower().replace(" ", "")
    if not raw:
        raise ValueError("empty duration; write it like 30s, 30m, 1h, 1d or 1h30m")
    position, seconds = 0, 0
    for match in _PART.finditer(raw):
        if match.start() != position:
            break
        # Bounded before int() and timedelta(), which refuse huge numbers with other errors.
        digits = match.group(1).lstrip("0") or "0"
        if len(digits) > 12:
            raise ValueError(f"{text!r} is longer than a year")
        seconds += int(digits) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(raw) or position == 0:
        raise ValueError(f"{text!r} is not a duration; write it like 30s, 30m, 1h, 1d or 1h30m")
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is longer than a year")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The inverse, compact: 5400 s -> `1h30m`; under a minute -> seconds."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)
