"""The escalation ladder as pure decisions: what is due, what comes next, when to wake up."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from services.models import IncidentState
from services.policy import MAX_REPEATS, Policy, Step
from services.severity import Severity


@dataclass(frozen=True)
class LadderState:
    """Everything the decisions know of one incident's ladder run: built from the incident's
    row, its ladder row and the steps fired in the run (`ladder_state` below)."""

    severity: Severity
    state: IncidentState
    started_at: datetime
    # Time the ladder stood still (a lapsed timed acknowledgement, a snooze).
    shift: timedelta = timedelta(0)
    snoozed_until: datetime | None = None
    # Step index -> the highest repeat of it fired in this run.
    fired: Mapping[int, int] = field(default_factory=dict)
    # The incident's one stored response deadline, and whether its miss was recorded.
    deadline: datetime | None = None
    deadline_missed: bool = False
    ack_expires_at: datetime | None = None


@dataclass(frozen=True)
class DueStep:
    index: int
    seq: int
    step: Step
    due_at: datetime


def step_due_at(ladder: LadderState, step: Step, seq: int) -> datetime:
    return ladder.started_at + ladder.shift + step.after + seq * (step.repeat or timedelta(0))


def _first_unfired(ladder: LadderState, index: int, step: Step) -> int | None:
    """The next occurrence of a step: 0, or one after the highest repeat fired. Repeats
    skipped by a catch-up are never fired later: a catch-up stands for them."""
    last = ladder.fired.get(index)
    if last is None:
        return 0
    if step.repeat is None or last + 1 >= MAX_REPEATS:
        return None
    return last + 1


def _pending(ladder: LadderState, policy: Policy) -> Iterator[DueStep]:
    for index, step in enumerate(policy.ladder(ladder.severity)):
        seq = _first_unfired(ladder, index, step)
        if seq is not None:
            yield DueStep(index, seq, step, step_due_at(ladder, step, seq))


def _snoozed(ladder: LadderState, now: datetime) -> bool:
    return ladder.snoozed_until is not None and now < ladder.snoozed_until


def next_step(ladder: LadderState, policy: Policy) -> DueStep | None:
    """The next step to fire and when (a snooze holds it until the snooze ends); None when
    the ladder stands (acknowledged, resolved, or every step fired)."""
    if ladder.state is not IncidentState.TRIGGERED:
        return None
    soonest = min(_pending(ladder, policy), key=lambda d: (d.due_at, d.index), default=None)
    if soonest is not None and ladder.snoozed_until and soonest.due_at < ladder.snoozed_until:
        return replace(soonest, due_at=ladder.snoozed_until)
    return soonest


def due_steps(ladder: LadderState, policy: Policy, now: datetime) -> list[DueStep]:
    """Every step due at `now`, each once: missed repeats collapse into their latest one."""
    if ladder.state is not IncidentState.TRIGGERED or _snoozed(ladder, now):
        return []
    due: list[DueStep] = []
    for first in _pending(ladder, policy):
        if first.due_at > now:
            continue
        seq = first.seq
        if first.step.repeat:
            missed = int((now - first.due_at) / first.step.repeat)
            seq = min(first.seq + missed, MAX_REPEATS - 1)
        due.append(DueStep(first.index, seq, first.step, step_due_at(ladder, first.step, seq)))
    return sorted(due, key=lambda d: (d.due_at, d.index))


def deadline_due(ladder: LadderState, now: datetime) -> bool:
    """The response deadline passed with nobody answering: not acknowledged, not snoozed,
    and not recorded as missed already in this run."""
    return (
        ladder.state is IncidentState.TRIGGERED
        and not ladder.deadline_missed
        and ladder.deadline is not None
        and now >= ladder.deadline
        and not _snoozed(ladder, now)
    )


def ack_lapsed(ladder: LadderState, now: datetime) -> bool:
    """A timed acknowledgement ran out: the incident goes back to triggered."""
    return (
        ladder.state is IncidentState.ACKNOWLEDGED
        and ladder.ack_expires_at is not None
        and now >= ladder.ack_expires_at
    )


def next_wakeup(ladder: LadderState, policy: Policy) -> datetime | None:
    """When this incident next needs the timer: its next step, its response deadline (both
    held by a snooze), or the end of a timed acknowledgement. None: nothing will ever be due
    (resolved, acknowledged for good, every step fired and the deadline settled).

    By construction, at this time `due_steps`, `deadline_due` or `ack_lapsed` is true."""
    if ladder.state is IncidentState.ACKNOWLEDGED:
        return ladder.ack_expires_at
    if ladder.state is not IncidentState.TRIGGERED:
        return None
    times = []
    upcoming = next_step(ladder, policy)
    if upcoming is not None:
        times.append(upcoming.due_at)
    if not ladder.deadline_missed and ladder.deadline is not None:
        deadline = ladder.deadline
        if ladder.snoozed_until is not None and deadline < ladder.snoozed_until:
            deadline = ladder.snoozed_until
        times.append(deadline)
    return min(times, default=None)


def snooze_shift(ladder: LadderState, policy: Policy, until: datetime) -> timedelta:
    """How far a snooze moves the rest of the ladder: the next step lands at `until`."""
    upcoming = next_step(replace(ladder, snoozed_until=None), policy)
    if upcoming is None or upcoming.due_at >= until:
        return timedelta(0)
    return until - upcoming.due_at


def fired_map(pairs: Iterator[tuple[int, int]] | list[tuple[int, int]]) -> dict[int, int]:
    """(step index, repeat) pairs fired -> step index: highest repeat."""
    fired: dict[int, int] = {}
    for index, seq in pairs:
        if seq > fired.get(index, -1):
            fired[index] = seq
    return fired


class Openings:
    """How a ladder run starts, per severity of one policy: the steps that are the alert
    itself (0 s, to the team chat), fired as it starts, and `next_wakeup` of the run just
    started. A started run differs from another of its severity only by when it started
    and how far off its deadline is, and every time in it moves with the start; so that
    answer is kept per (severity, deadline distance) as a distance from the start, since
    each group of an alert storm opens hundreds of runs alike."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._steps: dict[Severity, tuple[tuple[int, Step], ...]] = {}
        self._wakes: dict[tuple[Severity, timedelta | None], timedelta | None] = {}

    def steps(self, severity: Severity) -> tuple[tuple[int, Step], ...]:
        """(index, step) of each step fired as a run starts."""
        steps = self._steps.get(severity)
        if steps is None:
            ladder = self._policy.ladder(severity)
            steps = self._steps[severity] = tuple(
                (i, s) for i, s in enumerate(ladder) if s.initial
            )
        return steps

    def started(self, severity: Severity, at: datetime, deadline: datetime | None) -> LadderState:
        """A run just started at `at`, its initial steps fired."""
        return LadderState(
            severity=severity,
            state=IncidentState.TRIGGERED,
            started_at=at,
            fired={i: 0 for i, _ in self.steps(severity)},
            deadline=deadline,
        )

    def first_wakeup(
        self, severity: Severity, at: datetime, deadline: datetime | None
    ) -> datetime | None:
        """`next_wakeup(self.started(severity, at, deadline), policy)`."""
        key = (severity, None if deadline is None else deadline - at)
        if key in self._wakes:
            after = self._wakes[key]
        else:
            wake = next_wakeup(self.started(severity, at, deadline), self._policy)
            after = self._wakes[key] = None if wake is None else wake - at
        return None if after is None else at + after
