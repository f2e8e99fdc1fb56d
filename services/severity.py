"""The playbook's severities P0-P3, their response deadlines and label mapping."""

from __future__ import annotations

import enum
from datetime import timedelta


class Severity(enum.StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        """0 is the most urgent."""
        return int(self.value[1])

    @property
    def response_time(self) -> timedelta:
        return RESPONSE_TIMES[self]


RESPONSE_TIMES: dict[Severity, timedelta] = {
    Severity.P0: timedelta(0),
    Severity.P1: timedelta(hours=1),
    Severity.P2: timedelta(hours=4),
    Severity.P3: timedelta(hours=24),
}

# Alertmanager-style names, documented in docs/escalation.md.
ALIASES: dict[str, Severity] = {
    "critical": Severity.P0,
    "high": Severity.P1,
    "warning": Severity.P2,
    "info": Severity.P3,
}

DEFAULT_SEVERITY = Severity.P2


def parse_severity(value: str) -> Severity:
    """`P0`..`P3` (any case) or `critical`/`high`/`warning`/`info`; ValueError otherwise."""
    text = value.strip()
    upper = text.upper()
    if upper in Severity.__members__:
        return Severity(upper)
    alias = ALIASES.get(text.lower())
    if alias is None:
        raise ValueError(
            f"unknown severity {value!r}; use P0, P1, P2, P3 or critical, high, warning, info"
        )
    return alias
