"""Escalation policies: the TOML format, the playbook's built-in ladder, and on-call rotation."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

from services.durations import parse_duration
from services.severity import Severity

Target = Literal["team", "pd", "oncall"]
TARGETS: tuple[Target, ...] = ("team", "pd", "oncall")
MIN_REPEAT = timedelta(seconds=5)
_ZERO = re.compile(r"^0+[smhdw]?$", re.IGNORECASE)
MAX_REPEATS = 100


class PolicyError(Exception):
    """A policy file is wrong; the message is one line naming the file, the step, the problem."""


@dataclass(frozen=True)
class Step:
    name: str
    after: timedelta
    target: Target
    message: str
    repeat: timedelta | None = None

    @property
    def initial(self) -> bool:
        """A step at 0 s to the team chat is the alert itself (already posted on trigger)."""
        return self.after == timedelta(0) and self.target == "team"


@dataclass(frozen=True)
class Person:
    user_id: int
    name: str


@dataclass(frozen=True)
class Rotation:
    people: tuple[Person, ...]
    period: timedelta
    start: datetime


@dataclass(frozen=True)
class Override:
    person: Person
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class Policy:
    ladders: dict[Severity, tuple[Step, ...]]
    deadline_after: dict[Severity, timedelta]
    rotation: Rotation | None = None
    source: str = "built-in playbook policy"
    extra: dict[str, Any] = field(default_factory=dict)

    def ladder(self, severity: Severity) -> tuple[Step, ...]:
        return self.ladders[severity]


PLAYBOOK_LADDER: tuple[Step, ...] = (
    Step("team", timedelta(0), "team", "Automatic alert to the team chat"),
    # The message is replaced when the step fires: how the incident's automatic retries
    # stand at that moment ("2/3 done, next at 09:50 UTC"), or that it is still open.
    Step("retries_done", timedelta(minutes=30), "team", "30 min: status of the automatic retries"),
    Step("pd", timedelta(hours=1), "pd", "1 h: paging the PD"),
    Step("manual", timedelta(hours=4), "team", "4 h: manual intervention required"),
)

# P2 (respond within 4 h) and P3 (24 h) follow the same ladder stretched to their response
# time: the PD is not paged before the response time has passed.
P2_LADDER: tuple[Step, ...] = (
    Step("team", timedelta(0), "team", "Automatic alert to the team chat"),
    Step("retries_done", timedelta(minutes=30), "team", "30 min: status of the automatic retries"),
    Step("pd", timedelta(hours=4), "pd", "4 h: the P2 response time has passed; paging the PD"),
    Step("manual", timedelta(hours=8), "team", "8 h: manual intervention required"),
)
P3_LADDER: tuple[Step, ...] = (
    Step("team", timedelta(0), "team", "Automatic alert to the team chat"),
    Step("pd", timedelta(hours=24), "pd", "24 h: the P3 response time has passed; paging the PD"),
)

# The built-in ladder of each severity (docs/escalation.md shows them as a table).
PLAYBOOK_LADDERS: dict[Severity, tuple[Step, ...]] = {
    Severity.P0: PLAYBOOK_LADDER,
    Severity.P1: PLAYBOOK_LADDER,
    Severity.P2: P2_LADDER,
    Severity.P3: P3_LADDER,
}

# "Deadline missed" fires when nobody acknowledged by then. P0's deadline is "immediately";
# missing it is counted after 5 minutes, so the step means something.
DEFAULT_DEADLINE_AFTER: dict[Severity, timedelta] = {
    Severity.P0: timedelta(minutes=5),
    Severity.P1: Severity.P1.response_time,
    Severity.P2: Severity.P2.response_time,
    Severity.P3: Severity.P3.response_time,
}


def default_policy() -> Policy:
    return Policy(
        ladders=dict(PLAYBOOK_LADDERS),
        deadline_after=dict(DEFAULT_DEADLINE_AFTER),
    )


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return default_policy()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return parse_policy(text, str(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    _only_keys(data, {"ladder", "deadlines", "oncall"}, source)
    ladders = _parse_ladders(data.get("ladder", {}), source)
    deadlines = _parse_deadlines(data.get("deadlines", {}), source)
    rotation = _parse_rotation(data.get("oncall"), source) if "oncall" in data else None
    return Policy(ladders=ladders, deadline_after=deadlines, rotation=rotation, source=source)


def _only_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PolicyError(
            f"{where}: unknown key {unknown[0]!r}; expected one of {', '.join(sorted(allowed))}"
        )


def _duration(value: object, where: str, what: str) -> timedelta:
    if not isinstance(value, str):
        raise PolicyError(f'{where}: {what} must be a duration string like "30m"')
    if _ZERO.match(value.strip()):
        return timedelta(0)
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PolicyError(f"{where}: {what}: {exc}") from None


def _parse_ladders(table: object, source: str) -> dict[Severity, tuple[Step, ...]]:
    if not isinstance(table, dict):
        raise PolicyError(f"{source}: [ladder] must be a table of step lists")
    _only_keys(table, {"default", *Severity.__members__}, f"{source}: [ladder]")
    parsed = {key: _parse_steps(value, f"{source}: ladder {key}") for key, value in table.items()}
    default = parsed.get("default")
    return {
        sev: parsed.get(sev.value, default if default is not None else PLAYBOOK_LADDERS[sev])
        for sev in Severity
    }


def _parse_steps(value: object, where: str) -> tuple[Step, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{where}: needs at least one [[step]] table")
    steps: list[Step] = []
    for index, raw in enumerate(value, start=1):
        label = f"{where} step {index}"
        if not isinstance(raw, dict):
            raise PolicyError(f"{label}: must be a table with name, after, target, message")
        if isinstance(raw.get("name"), str):
            label = f"{label} ({raw['name']!r})"
        _only_keys(raw, {"name", "after", "target", "message", "repeat"}, label)
        for required in ("name", "after", "target"):
            if required not in raw:
                raise PolicyError(f"{label}: {required} is missing")
        name = raw["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > 40:
            raise PolicyError(f"{label}: name must be a short non-empty string")
        target = raw["target"]
        if target not in TARGETS:
            raise PolicyError(f"{label}: unknown target {target!r}; use team, pd or oncall")
        message = raw.get("message", name)
        if not isinstance(message, str):
            raise PolicyError(f"{label}: message must be a string")
        after = _duration(raw["after"], label, "after")
        repeat = _duration(raw["repeat"], label, "repeat") if "repeat" in raw else None
        if repeat is not None and repeat < MIN_REPEAT:
            raise PolicyError(f"{label}: repeat must be at least 5s")
        if steps and after < steps[-1].after:
            raise PolicyError(f"{label}: steps must be in order of 'after' ({after} < previous)")
        if any(s.name == name for s in steps):
            raise PolicyError(f"{label}: the name {name!r} is used twice")
        steps.append(Step(name, after, cast(Target, target), message, repeat))
    return tuple(steps)


def _parse_deadlines(table: object, source: str) -> dict[Severity, timedelta]:
    if not isinstance(table, dict):
        raise PolicyError(f'{source}: [deadlines] must be a table like P0 = "5m"')
    _only_keys(table, set(Severity.__members__), f"{source}: [deadlines]")
    deadlines = dict(DEFAULT_DEADLINE_AFTER)
    for key, value in table.items():
        deadlines[Severity(key)] = _duration(value, f"{source}: [deadlines] {key}", "the deadline")
    return deadlines


def _parse_rotation(table: object, source: str) -> Rotation:
    where = f"{source}: [oncall]"
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: must be a table with people, period and start")
    _only_keys(table, {"people", "period", "start"}, where)
    people_raw = table.get("people")
    if not isinstance(people_raw, list) or not people_raw:
        raise PolicyError(
            f'{where}: people must be a non-empty list of {{ id = 123, name = "Kim" }}'
        )
    people = []
    for index, raw in enumerate(people_raw, start=1):
        if isinstance(raw, int) and not isinstance(raw, bool):
            people.append(Person(raw, str(raw)))
            continue
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), int):
            raise PolicyError(f"{where}: person {index} needs a numeric Telegram user id")
        people.append(Person(int(raw["id"]), str(raw.get("name", raw["id"]))))
    period = _duration(table.get("period", "7d"), where, "period")
    start = table.get("start")
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start)
        except ValueError:
            raise PolicyError(f"{where}: start {start!r} is not an ISO date-time") from None
    if isinstance(start, date) and not isinstance(start, datetime):
        start = datetime(start.year, start.month, start.day, tzinfo=UTC)
    if not isinstance(start, datetime):
        raise PolicyError(f"{where}: start is required, e.g. start = 2026-11-02T09:00:00+09:00")
    if start.tzinfo is None:
        raise PolicyError(f"{where}: start needs a time zone, e.g. +09:00 or Z")
    try:
        start_utc = start.astimezone(UTC)
    except OverflowError:
        raise PolicyError(f"{where}: start {start.isoformat()} is out of range") from None
    return Rotation(tuple(people), period, start_utc)


def oncall_at(
    rotation: Rotation | None, now: datetime, overrides: Sequence[Override] = ()
) -> Person | None:
    """Who is on call at `now`: the newest override covering it, else the rotation's turn."""
    covering = [o for o in overrides if o.starts_at <= now < o.ends_at]
    if covering:
        return max(covering, key=lambda o: o.starts_at).person
    if rotation is None:
        return None
    turns = int((now - rotation.start) // rotation.period)
    return rotation.people[turns % len(rotation.people)]


def next_handover(rotation: Rotation | None, now: datetime) -> datetime | None:
    if rotation is None:
        return None
    turns = int((now - rotation.start) // rotation.period)
    return rotation.start + (turns + 1) * rotation.period
