"""Escalation: each open incident's steps fired once, and its next wake-up kept in the database.

The database holds each incident's ladder run, every step fired, and the time the incident
next needs the timer (`escalation_ladders.next_wake_at`, from the pure `next_wakeup`). Every
incident write keeps that time current (this service is an `IncidentHook`), every firing
re-derives it from what it read, and the timer (services/timers.py) fires whatever the
database says is due — nothing in memory has to be right for a step to fire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.clock import Clock
from services.db import Database, execute_many
from services.incident_types import ChangeKind, IncidentChange, IncidentView
from services.incidents import IncidentService, IncidentWrite, lapse_acknowledgements
from services.ladder import (
    DueStep,
    LadderState,
    Openings,
    deadline_due,
    due_steps,
    fired_map,
    next_step,
    next_wakeup,
    snooze_shift,
)
from services.metrics import Metrics
from services.models import EscalationFiring, EscalationLadder, Incident, IncidentState
from services.oncall import OncallService
from services.policy import Policy

log = logging.getLogger(__name__)

# Firing later than this after the due time is called late in the timeline.
LATE_AFTER = timedelta(seconds=5)
# Incidents fired per transaction when their wake-ups are due at once: enough to share the
# commit, few enough that the intake's group commits are not held up behind it.
FIRE_GROUP = 16
# Ids per `IN (...)` list, well under SQLite's and asyncpg's bound-parameter limits.
QUERY_CHUNK = 500

# More for a step's timeline entry, by step name, read in the firing's own transaction (the
# retry service fills the 30-minute step with the retry state of the incident's jobs).
StepDetails = Mapping[str, "StepDetailsFn"]


class StepDetailsFn(Protocol):
    def __call__(
        self, session: Session, incident_id: int, details: dict[str, Any]
    ) -> dict[str, Any]: ...


class Alarm(Protocol):
    """The timer's side (services/timers.py `Alarm`): told when a write may have brought
    an incident's wake-up earlier than the timer planned."""

    def hint(self, at: datetime | None = None) -> None: ...


@dataclass(frozen=True)
class NextStepInfo:
    name: str
    target: str
    message: str
    due_at: datetime


@dataclass(frozen=True)
class Overdue:
    """Open incidents whose wake-up is past by more than the allowed slack."""

    count: int
    oldest_incident: int | None = None
    oldest_due_at: datetime | None = None


class EscalationMetrics:
    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.steps_fired = Counter(
            "sunflow_escalation_steps_fired_total",
            "Escalation steps fired, by severity and step.",
            ["severity", "step"],
            registry=registry,
        )
        self.lateness = Histogram(
            "sunflow_escalation_firing_lateness_seconds",
            "How long after its due time a step fired.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 30, 60, 300, 3600),
            registry=registry,
        )
        buckets = (30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)
        self.time_to_ack = Histogram(
            "sunflow_incident_time_to_acknowledge_seconds",
            "From first alert to acknowledgement, by severity.",
            ["severity"],
            buckets=buckets,
            registry=registry,
        )
        self.time_to_resolve = Histogram(
            "sunflow_incident_time_to_resolve_seconds",
            "From first alert to resolution, by severity.",
            ["severity"],
            buckets=buckets,
            registry=registry,
        )
        self.deadlines_missed = Counter(
            "sunflow_response_deadlines_missed_total",
            "Incidents not acknowledged within their response deadline.",
            ["severity"],
            registry=registry,
        )
        self.overdue = Gauge(
            "sunflow_escalation_overdue_steps",
            "Open incidents whose next escalation step (or deadline, or the end of a timed "
            "acknowledgement) is overdue by more than twice the timer's sweep period.",
            registry=registry,
        )


@dataclass(frozen=True)
class _Run:
    """An incident and its current ladder run, as the firing and the decisions see them."""

    incident: IncidentView
    epoch: int
    state: LadderState


# Changes that move a ladder already running (a new one is started by TRIGGERED).
_MOVES = frozenset(
    {
        ChangeKind.REOPENED,
        ChangeKind.ACKNOWLEDGED,
        ChangeKind.UNACKNOWLEDGED,
        ChangeKind.SNOOZED,
        ChangeKind.RESOLVED,
    }
)
# Of those, the ones that change the ladder row itself (the others only its wake-up).
_LADDER_MOVES = _MOVES - {ChangeKind.RESOLVED}

_INCIDENTS: Table = Incident.__table__  # type: ignore[assignment]
_LADDERS: Table = EscalationLadder.__table__  # type: ignore[assignment]
_FIRINGS: Table = EscalationFiring.__table__  # type: ignore[assignment]
_INSERT_LADDERS = insert(_LADDERS)
_INSERT_FIRINGS = insert(_FIRINGS)
_SET_WAKE = (
    update(_LADDERS)
    .where(_LADDERS.c.incident_id == bindparam("b_id"))
    .values(next_wake_at=bindparam("b_wake"))
)
_MARK_MISSED = (
    update(_LADDERS)
    .where(_LADDERS.c.incident_id == bindparam("b_id"))
    .values(deadline_missed_at=bindparam("b_at"))
)


class EscalationService:
    """Starts, moves and fires ladders; answers what comes next. An `IncidentHook`."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        policy: Policy,
        oncall: OncallService,
        metrics: Metrics,
        alarm: Alarm,
        step_details: StepDetails | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self.policy = policy
        self._oncall = oncall
        self._metrics = EscalationMetrics(metrics)
        self._alarm = alarm
        self._step_details = dict(step_details or {})
        self._openings = Openings(policy)

    # -- the hook: every incident write keeps its ladder and wake-up current ----------------

    def apply(self, session: Session, changes: Sequence[IncidentChange]) -> None:
        opened = {
            c.incident.id: (c.incident, c.at, 1) for c in changes if c.kind is ChangeKind.TRIGGERED
        }
        if opened:
            self._start(session, list(opened.values()), new=True)
        moved: set[int] = set()
        for change in changes:
            if change.kind in _MOVES or "severity_raised" in change.details:
                if change.kind in _LADDER_MOVES:
                    self._move(session, change)
                moved.add(change.incident.id)
        if moved:
            session.flush()
            self._rewake(session, sorted(moved))

    def committed(self, changes: Sequence[IncidentChange]) -> None:
        soonest: datetime | None = None
        for change in changes:
            kind, incident = change.kind, change.incident
            severity = incident.severity
            if kind in (ChangeKind.TRIGGERED, ChangeKind.REOPENED):
                for _, step in self._openings.steps(severity):
                    self._metrics.steps_fired.labels(severity.value, step.name).inc()
                    self._metrics.lateness.observe(0.0)
                wake = self._first_wakeup(incident, change.at)
                if wake is not None and (soonest is None or wake < soonest):
                    soonest = wake
            elif kind is ChangeKind.ESCALATED:
                self._metrics.steps_fired.labels(severity.value, str(change.details["step"])).inc()
                if "due_at" in change.details:
                    late = change.at - datetime.fromisoformat(change.details["due_at"])
                    self._metrics.lateness.observe(max(0.0, late.total_seconds()))
            elif kind is ChangeKind.DEADLINE_MISSED:
                self._metrics.deadlines_missed.labels(severity.value).inc()
            if kind is ChangeKind.ACKNOWLEDGED:
                self._metrics.time_to_ack.labels(severity.value).observe(
                    (change.at - incident.first_seen_at).total_seconds()
                )
            elif kind is ChangeKind.RESOLVED:
                self._metrics.time_to_resolve.labels(severity.value).observe(
                    (change.at - incident.first_seen_at).total_seconds()
                )
            if kind in _MOVES or "severity_raised" in change.details:
                soonest = change.at  # re-read from the database: anything may have moved
        if soonest is not None:
            self._alarm.hint(soonest)

    def _first_wakeup(self, incident: IncidentView, at: datetime) -> datetime | None:
        return self._openings.first_wakeup(incident.severity, at, incident.response_deadline)

    def _start(
        self, session: Session, runs: Sequence[tuple[IncidentView, datetime, int]], *, new: bool
    ) -> None:
        """Start a ladder run (incident, at, epoch) for each: a new incident's, or a reopened
        one's whose ladder row the caller has moved to the next epoch. The steps due at once
        that are the alert itself (0 s, to the team chat) are recorded as fired here: the
        alert's card and its `triggered` (or `reopened`) entry are that step, so it has no
        timeline entry or message of its own. Anything else due at once is left to the
        timer, which this commit wakes."""
        firings: list[dict[str, Any]] = []
        ladders: list[dict[str, Any]] = []
        wakes: list[dict[str, Any]] = []
        for incident, at, epoch in runs:
            for index, step in self._openings.steps(incident.severity):
                firings.append(
                    {
                        "incident_id": incident.id,
                        "epoch": epoch,
                        "step_index": index,
                        "seq": 0,
                        "step_name": step.name,
                        "due_at": at,
                        "fired_at": at,
                        "late_seconds": 0,
                    }
                )
            wake = self._first_wakeup(incident, at)
            if new:
                ladders.append(
                    {
                        "incident_id": incident.id,
                        "epoch": epoch,
                        "started_at": at,
                        "shift_seconds": 0,
                        "next_wake_at": wake,
                    }
                )
            else:
                wakes.append({"b_id": incident.id, "b_wake": wake})
        conn = session.connection()
        execute_many(conn, _INSERT_LADDERS, ladders)
        execute_many(conn, _SET_WAKE, wakes)
        execute_many(conn, _INSERT_FIRINGS, firings)

    def _move(self, session: Session, change: IncidentChange) -> None:
        kind, incident = change.kind, change.incident
        ladder = session.get(EscalationLadder, incident.id)
        if ladder is None:  # an incident from before escalation existed
            ladder = EscalationLadder(
                incident_id=incident.id, epoch=1, started_at=incident.first_seen_at
            )
            session.add(ladder)
            session.flush()
        if kind is ChangeKind.REOPENED:
            ladder.epoch += 1
            ladder.started_at = change.at
            ladder.shift_seconds = 0
            ladder.paused_at = None
            ladder.deadline_missed_at = None
            session.flush()
            self._start(session, [(incident, change.at, ladder.epoch)], new=False)
        elif kind is ChangeKind.ACKNOWLEDGED:
            # Only a timed acknowledgement will come back; remember where the ladder stood.
            ladder.paused_at = change.at
        elif kind is ChangeKind.UNACKNOWLEDGED and ladder.paused_at is not None:
            ladder.shift_seconds += int((change.at - ladder.paused_at).total_seconds())
            ladder.paused_at = None
        elif kind is ChangeKind.SNOOZED and incident.snoozed_until is not None:
            session.flush()
            run = self._runs(session, [incident.id]).get(incident.id)
            if run is not None:
                shift = snooze_shift(run.state, self.policy, incident.snoozed_until)
                ladder.shift_seconds += int(shift.total_seconds())

    def _rewake(self, session: Session, incident_ids: Sequence[int]) -> dict[int, datetime | None]:
        """Store each incident's next wake-up as the database now says it is."""
        runs = self._runs(session, incident_ids)
        wakes = {
            i: None if i not in runs else next_wakeup(runs[i].state, self.policy)
            for i in incident_ids
        }
        execute_many(
            session.connection(),
            _SET_WAKE,
            [{"b_id": i, "b_wake": wake} for i, wake in wakes.items() if i in runs],
        )
        return wakes

    def _runs(
        self, session: Session, incident_ids: Sequence[int], *, lock: bool = False
    ) -> dict[int, _Run]:
        """The incidents with their ladder runs, set-based: three reads however many. With
        `lock`, the incidents' rows are locked against other writers (PostgreSQL)."""
        runs: dict[int, _Run] = {}
        ids = sorted(set(incident_ids))
        for start in range(0, len(ids), QUERY_CHUNK):
            chunk = ids[start : start + QUERY_CHUNK]
            query = select(_INCIDENTS).where(_INCIDENTS.c.id.in_(chunk))
            if lock:
                query = query.with_for_update(key_share=True)
            incidents = {
                row["id"]: IncidentView.from_row(dict(row))
                for row in session.execute(query).mappings()
            }
            ladders = {
                row.incident_id: row
                for row in session.execute(
                    select(
                        _LADDERS.c.incident_id,
                        _LADDERS.c.epoch,
                        _LADDERS.c.started_at,
                        _LADDERS.c.shift_seconds,
                        _LADDERS.c.deadline_missed_at,
                    ).where(_LADDERS.c.incident_id.in_(chunk))
                )
            }
            fired: dict[int, list[tuple[int, int]]] = {i: [] for i in ladders}
            for incident_id, epoch, index, seq in session.execute(
                select(
                    EscalationFiring.incident_id,
                    EscalationFiring.epoch,
                    EscalationFiring.step_index,
                    EscalationFiring.seq,
                ).where(EscalationFiring.incident_id.in_(list(ladders)))
            ):
                if epoch == ladders[incident_id].epoch:
                    fired[incident_id].append((index, seq))
            for incident_id, ladder in ladders.items():
                incident = incidents.get(incident_id)
                if incident is None:
                    continue
                runs[incident_id] = _Run(
                    incident,
                    ladder.epoch,
                    LadderState(
                        severity=incident.severity,
                        state=incident.state,
                        started_at=ladder.started_at,
                        shift=timedelta(seconds=ladder.shift_seconds),
                        snoozed_until=incident.snoozed_until,
                        fired=fired_map(fired[incident_id]),
                        deadline=incident.response_deadline,
                        deadline_missed=ladder.deadline_missed_at is not None,
                        ack_expires_at=incident.ack_expires_at,
                    ),
                )
        return runs

    # -- firing: what the timer calls ---------------------------------------------------------

    async def fire_due(self, incidents: IncidentService) -> list[IncidentChange]:
        """Fire everything the database says is due now, a few incidents per transaction
        through the incidents' one write path; each step at most once, ever (its row's
        unique key is the claim)."""
        fired: list[IncidentChange] = []
        seen: set[int] = set()
        while True:
            now = self._clock.now()
            async with self._db.read() as session:
                ids = [
                    i
                    for i in (
                        await session.scalars(
                            select(EscalationLadder.incident_id)
                            .where(EscalationLadder.next_wake_at <= now)
                            .order_by(EscalationLadder.next_wake_at)
                            .limit(QUERY_CHUNK)
                        )
                    ).all()
                    if i not in seen
                ]
            if not ids:
                return fired
            seen.update(ids)
            for start in range(0, len(ids), FIRE_GROUP):
                fired += await self._fire_group(incidents, ids[start : start + FIRE_GROUP])

    async def _fire_group(
        self, incidents: IncidentService, incident_ids: list[int]
    ) -> list[IncidentChange]:
        try:
            return await incidents.write(lambda w: self._fire(w, incident_ids))
        except IntegrityError:
            if len(incident_ids) == 1:
                # Another instance claimed this step first; it has been (or will be) sent once.
                log.info("an escalation step of #%s was claimed elsewhere", incident_ids[0])
                return []
        fired: list[IncidentChange] = []
        for incident_id in incident_ids:  # find the one claimed elsewhere; fire the rest
            fired += await self._fire_group(incidents, [incident_id])
        return fired

    def _fire(self, write: IncidentWrite, incident_ids: Sequence[int]) -> list[IncidentChange]:
        """Inside `write`: lapse run-out acknowledgements, claim the due steps and missed
        deadlines of these incidents, record them, and store each one's next wake-up."""
        lapse_acknowledgements(write, incident_ids)
        session, now = write.session, write.now
        runs = self._runs(session, incident_ids, lock=True)
        claims: list[dict[str, Any]] = []
        missed: list[dict[str, Any]] = []
        changes: list[IncidentChange] = []
        for incident_id in sorted(runs):
            run = runs[incident_id]
            incident, state = run.incident, run.state
            due = due_steps(state, self.policy, now)
            for step in due:
                claims.append(
                    {
                        "incident_id": incident_id,
                        "epoch": run.epoch,
                        "step_index": step.index,
                        "seq": step.seq,
                        "step_name": step.step.name,
                        "due_at": step.due_at,
                        "fired_at": now,
                        "late_seconds": int((now - step.due_at).total_seconds()),
                    }
                )
                details = _step_details(
                    step,
                    epoch=run.epoch,
                    user_ids=self._oncall.recipients(session, step.step.target, now),
                    late=now - step.due_at,
                )
                extra = self._step_details.get(step.step.name)
                if extra is not None:
                    details.update(extra(session, incident_id, dict(details)))
                changes.append(
                    IncidentChange(ChangeKind.ESCALATED, incident, "escalation", now, details)
                )
            if deadline_due(state, now):
                missed.append({"b_id": incident_id, "b_at": now})
                after = replace(state, fired={**state.fired, **{d.index: d.seq for d in due}})
                changes.append(
                    IncidentChange(
                        ChangeKind.DEADLINE_MISSED,
                        incident,
                        "escalation",
                        now,
                        self._missed_details(session, after, now),
                    )
                )
        conn = session.connection()
        execute_many(conn, _INSERT_FIRINGS, claims)  # the claims: a second claimant fails here
        execute_many(conn, _MARK_MISSED, missed)
        write.record(changes)
        session.flush()
        wakes = self._rewake(session, incident_ids)
        for incident_id, wake in wakes.items():
            if wake is not None and wake <= now:
                # The decisions are built so this cannot happen; if it does, never spin.
                log.error(
                    "escalation: #%s is still due after firing; retrying in 1 s", incident_id
                )
                execute_many(
                    conn, _SET_WAKE, [{"b_id": incident_id, "b_wake": now + timedelta(seconds=1)}]
                )
        return changes

    def _missed_details(
        self, session: Session, state: LadderState, now: datetime
    ) -> dict[str, Any]:
        """What the missed-deadline message says: the deadline, how long the incident has
        gone unacknowledged, and who is paged next and when."""
        assert state.deadline is not None
        details: dict[str, Any] = {
            "deadline": state.deadline.isoformat(),
            "severity": state.severity.value,
            "response_seconds": int(self.policy.deadline_after[state.severity].total_seconds()),
            "unacknowledged_seconds": int((now - state.started_at).total_seconds()),
            "next": None,
        }
        upcoming = next_step(state, self.policy)
        if upcoming is not None:
            step = upcoming.step
            details["next"] = {
                "step": step.name,
                "target": step.target,
                "message": step.message,
                "due_at": upcoming.due_at.isoformat(),
                "user_ids": self._oncall.recipients(session, step.target, upcoming.due_at),
            }
        return details

    # -- what the timer and the watchdog read -------------------------------------------------

    async def earliest_wakeup(self, *, overdue_before: datetime) -> tuple[datetime | None, int]:
        """The soonest wake-up in the database, and how many are older than
        `overdue_before` (the gauge is set from it). Index reads only: the timer asks this
        every turn, on every instance."""
        async with self._db.read() as session:
            soonest = await session.scalar(select(func.min(EscalationLadder.next_wake_at)))
            count = 0
            if soonest is not None and soonest < overdue_before:
                count = int(
                    await session.scalar(
                        select(func.count()).where(EscalationLadder.next_wake_at < overdue_before)
                    )
                    or 0
                )
        self._metrics.overdue.set(count)
        return soonest, count

    async def overdue(self, *, before: datetime) -> Overdue:
        async with self._db.read() as session:
            count = int(
                await session.scalar(select(func.count()).where(_LADDERS.c.next_wake_at < before))
                or 0
            )
            oldest = (
                await session.execute(
                    select(_LADDERS.c.incident_id, _LADDERS.c.next_wake_at)
                    .where(_LADDERS.c.next_wake_at < before)
                    .order_by(_LADDERS.c.next_wake_at)
                    .limit(1)
                )
            ).first()
        self._metrics.overdue.set(count)
        if oldest is None:
            return Overdue(count)
        return Overdue(count, int(oldest[0]), oldest[1])

    async def rewake_all(self) -> int:
        """Recompute every open incident's wake-up from the database (at taking the lead, and
        now and then): repairs anything a write left behind, e.g. a policy changed between
        runs. Returns how many stored wake-ups were wrong."""
        async with self._db.read() as session:
            ids: list[int] = list(
                (
                    await session.scalars(
                        select(_LADDERS.c.incident_id).where(
                            _LADDERS.c.incident_id.in_(
                                select(_INCIDENTS.c.id).where(
                                    _INCIDENTS.c.state != IncidentState.RESOLVED.value
                                )
                            )
                            | _LADDERS.c.next_wake_at.is_not(None)
                        )
                    )
                ).all()
            )
        wrong = 0
        for start in range(0, len(ids), QUERY_CHUNK):
            wrong += await self._db.write_sync(
                partial(self._repair, incident_ids=ids[start : start + QUERY_CHUNK])
            )
            await asyncio.sleep(0)  # let requests in between chunks
        return wrong

    def _repair(self, session: Session, incident_ids: Sequence[int]) -> int:
        stored: dict[int, datetime | None] = dict(
            session.execute(
                select(_LADDERS.c.incident_id, _LADDERS.c.next_wake_at).where(
                    _LADDERS.c.incident_id.in_(list(incident_ids))
                )
            ).all()
        )
        runs = self._runs(session, incident_ids)
        fixes = []
        for incident_id in incident_ids:
            run = runs.get(incident_id)
            wake = None if run is None else next_wakeup(run.state, self.policy)
            if stored.get(incident_id) != wake:
                fixes.append({"b_id": incident_id, "b_wake": wake})
        execute_many(session.connection(), _SET_WAKE, fixes)
        return len(fixes)

    # -- queries for the edges ----------------------------------------------------------------

    async def next_step_for(self, incident_id: int) -> NextStepInfo | None:
        return (await self.next_steps_for([incident_id])).get(incident_id)

    async def next_steps_for(self, incident_ids: Sequence[int]) -> dict[int, NextStepInfo | None]:
        """The next step of each incident (the card, the board): three reads for all."""
        if not incident_ids:
            return {}
        async with self._db.read() as session:
            runs = await session.run_sync(self._runs, list(incident_ids))
        steps: dict[int, NextStepInfo | None] = {}
        for incident_id in incident_ids:
            run = runs.get(incident_id)
            upcoming = None if run is None else next_step(run.state, self.policy)
            steps[incident_id] = (
                None
                if upcoming is None
                else NextStepInfo(
                    upcoming.step.name,
                    upcoming.step.target,
                    upcoming.step.message,
                    upcoming.due_at,
                )
            )
        return steps


def _step_details(
    due: DueStep, *, epoch: int, user_ids: list[int], late: timedelta
) -> dict[str, Any]:
    details: dict[str, Any] = {
        "step": due.step.name,
        "target": due.step.target,
        "user_ids": user_ids,
        "message": due.step.message,
        "late": late > LATE_AFTER,
        "due_at": due.due_at.isoformat(),
        "epoch": epoch,
        "repeat": due.seq,
        "initial": due.step.initial,
    }
    if late > LATE_AFTER:
        details["late_by_seconds"] = int(late.total_seconds())
    return details
