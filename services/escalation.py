"""The escalation engine: ladders per incident, fired once each, armed from the database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.clock import Clock
from services.db import Database, execute_many
from services.errors import InvalidInput
from services.incidents import ChangeKind, IncidentChange, IncidentService, IncidentView
from services.metrics import Metrics
from services.models import (
    EscalationFiring,
    EscalationLadder,
    Incident,
    IncidentState,
    OncallOverride,
)
from services.policy import MAX_REPEATS, Override, Person, Policy, Step, next_handover, oncall_at
from services.scheduler import SchedulerService
from services.severity import Severity

log = logging.getLogger(__name__)

# Firing later than this after the due time is called late in the timeline (process was down).
LATE_AFTER = timedelta(seconds=5)


# -- pure decisions -------------------------------------------------------------------------


@dataclass(frozen=True)
class LadderState:
    """What the decisions need to know of one incident's ladder."""

    severity: Severity
    state: IncidentState
    started_at: datetime
    shift: timedelta
    snoozed_until: datetime | None
    fired: frozenset[tuple[int, int]]


@dataclass(frozen=True)
class DueStep:
    index: int
    seq: int
    step: Step
    due_at: datetime


def step_due_at(ladder: LadderState, step: Step, seq: int) -> datetime:
    repeat = step.repeat or timedelta(0)
    return ladder.started_at + ladder.shift + step.after + seq * repeat


def _pending_occurrences(ladder: LadderState, steps: Sequence[Step]) -> Iterable[DueStep]:
    """For each step, its first occurrence not fired yet (repeats until acknowledged)."""
    for index, step in enumerate(steps):
        limit = MAX_REPEATS if step.repeat else 1
        for seq in range(limit):
            if (index, seq) not in ladder.fired:
                yield DueStep(index, seq, step, step_due_at(ladder, step, seq))
                break


def next_step(ladder: LadderState, policy: Policy) -> DueStep | None:
    """The next step to fire and when; None when the ladder stands (acknowledged, resolved)."""
    if ladder.state is not IncidentState.TRIGGERED:
        return None
    pending = list(_pending_occurrences(ladder, policy.ladder(ladder.severity)))
    if not pending:
        return None
    soonest = min(pending, key=lambda d: (d.due_at, d.index))
    if ladder.snoozed_until and soonest.due_at < ladder.snoozed_until:
        return DueStep(soonest.index, soonest.seq, soonest.step, ladder.snoozed_until)
    return soonest


def due_steps(ladder: LadderState, policy: Policy, now: datetime) -> list[DueStep]:
    """Every step due at `now`, each once; missed repeats collapse into their latest one."""
    if ladder.state is not IncidentState.TRIGGERED:
        return []
    if ladder.snoozed_until and now < ladder.snoozed_until:
        return []
    due: list[DueStep] = []
    for index, step in enumerate(policy.ladder(ladder.severity)):
        latest: DueStep | None = None
        limit = MAX_REPEATS if step.repeat else 1
        for seq in range(limit):
            at = step_due_at(ladder, step, seq)
            if at > now:
                break
            if (index, seq) not in ladder.fired:
                latest = DueStep(index, seq, step, at)
        if latest is not None:
            due.append(latest)
    return sorted(due, key=lambda d: (d.due_at, d.index))


def deadline_at(
    *, severity: Severity, started_at: datetime, shift: timedelta, policy: Policy
) -> datetime:
    return started_at + shift + policy.deadline_after[severity]


def deadline_missed(ladder: LadderState, policy: Policy, now: datetime, *, already: bool) -> bool:
    if already or ladder.state is not IncidentState.TRIGGERED:
        return False
    at = deadline_at(
        severity=ladder.severity, started_at=ladder.started_at, shift=ladder.shift, policy=policy
    )
    return now >= at


def snooze_shift(ladder: LadderState, policy: Policy, until: datetime) -> timedelta:
    """How far a snooze moves the rest of the ladder: the next step lands at `until`."""
    upcoming = next_step(
        LadderState(
            ladder.severity,
            ladder.state,
            ladder.started_at,
            ladder.shift,
            None,
            ladder.fired,
        ),
        policy,
    )
    if upcoming is None or upcoming.due_at >= until:
        return timedelta(0)
    return until - upcoming.due_at


# -- the service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NextStepInfo:
    name: str
    target: str
    message: str
    due_at: datetime


@dataclass(frozen=True)
class OncallInfo:
    person: Person | None
    overridden_until: datetime | None
    next_handover: datetime | None
    pd_user_ids: list[int]


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
            "Incidents not acknowledged within their severity's response time.",
            ["severity"],
            registry=registry,
        )


_LADDER_CHANGES = {
    ChangeKind.TRIGGERED,
    ChangeKind.REOPENED,
    ChangeKind.ACKNOWLEDGED,
    ChangeKind.UNACKNOWLEDGED,
    ChangeKind.SNOOZED,
    ChangeKind.RESOLVED,
}


# Incidents fired per transaction when their wake-ups are due at once: enough to share the
# commit, few enough that the intake's group commits are not held up behind it.
_TICK_GROUP = 16
# Ids per `IN (...)` list, well under SQLite's and asyncpg's bound-parameter limits.
_QUERY_CHUNK = 500


class _NeedsAsync(Exception):
    """The writer-thread path cannot do this group (a step's details come from a callback)."""


# Marks a missed deadline among the step claims of `_fire_group`, to keep their order.
_DEADLINE = DueStep(
    -1, 0, Step("deadline", timedelta(0), "team", ""), datetime.min.replace(tzinfo=UTC)
)

# Ladder moves that need reads (`in_transaction`); never recorded in bulk.
_SYNC_UNSUPPORTED = frozenset(
    {
        ChangeKind.REOPENED,
        ChangeKind.ACKNOWLEDGED,
        ChangeKind.UNACKNOWLEDGED,
        ChangeKind.SNOOZED,
    }
)

StepDetails = Callable[[int, dict[str, Any]], Awaitable[dict[str, Any]]]

_INCIDENTS: Table = Incident.__table__  # type: ignore[assignment]
_LADDERS: Table = EscalationLadder.__table__  # type: ignore[assignment]
_FIRINGS: Table = EscalationFiring.__table__  # type: ignore[assignment]
_INSERT_LADDERS = insert(_LADDERS)
_INSERT_FIRINGS = insert(_FIRINGS)
_MARK_MISSED = (
    update(_LADDERS)
    .where(_LADDERS.c.incident_id == bindparam("b_id"))
    .values(deadline_missed_at=bindparam("b_at"))
)


@dataclass(frozen=True)
class _Ladder:
    """An incident's ladder row as the claims read it (Core rows: the hot path of intake)."""

    incident_id: int
    epoch: int
    started_at: datetime
    shift_seconds: int
    deadline_missed_at: datetime | None


# Timers share one scheduler job per tenth of a second of wake-up time: a storm opens
# hundreds of incidents a second, their next steps come due together, and a job each cost
# more than the incident itself (APScheduler inspects the callable on every add_job).
_BUCKET_US = 100_000


def _bucket(wake: datetime) -> datetime:
    """The wake-up rounded up to its bucket: a timer never fires early."""
    late = (wake.microsecond % _BUCKET_US) and _BUCKET_US - wake.microsecond % _BUCKET_US
    return wake + timedelta(microseconds=late)


class EscalationService:
    """Keeps each open incident's next step armed in the scheduler and fires steps once.

    The database holds the ladders and every firing; the scheduler only wakes us up. A step
    is claimed by inserting its row (unique per incident, epoch, step and repeat) in the same
    transaction that records it on the incident's timeline and queues its notifications.
    """

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        incidents: IncidentService,
        scheduler: SchedulerService,
        policy: Policy,
        metrics: Metrics,
        pd_user_ids: Sequence[int] = (),
    ) -> None:
        self._db = db
        self._clock = clock
        self._incidents = incidents
        self._scheduler = scheduler
        self.policy = policy
        self._metrics = EscalationMetrics(metrics)
        self._pd_user_ids = list(pd_user_ids)
        self._armed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # Incidents whose timers a commit moved, re-armed together by one task: an alert
        # storm opens hundreds of incidents a second, and one read per incident (plus one
        # transaction each for their 0 s steps) would starve the intake of the database.
        self._to_rearm: set[int] = set()
        self._rearm_task: asyncio.Task[None] | None = None
        # More for a step's firing, by step name: the retry service fills the 30-minute step
        # ("retries_done") with the retry state of the incident's jobs.
        self.step_details: dict[str, StepDetails] = {}
        # The next wake-up of incidents whose first steps fired in the transaction that
        # opened them, by (incident, opened at): scheduled when that transaction commits.
        self._opened_wakes: dict[tuple[int, datetime], datetime] = {}
        # Armed timers: each incident's bucket, and the incidents of each bucket's job.
        self._bucket_of: dict[int, datetime] = {}
        self._buckets: dict[datetime, set[int]] = {}
        incidents.add_hook(self)
        incidents.add_follow_up(self._fire_opened)

    # -- hook: keep the ladder in step with the incident ------------------------------------

    async def in_transaction(self, session: AsyncSession, change: IncidentChange) -> None:
        kind, incident = change.kind, change.incident
        if kind is ChangeKind.TRIGGERED:
            session.add(EscalationLadder(incident_id=incident.id, epoch=1, started_at=change.at))
            return
        if kind not in {
            ChangeKind.REOPENED,
            ChangeKind.ACKNOWLEDGED,
            ChangeKind.UNACKNOWLEDGED,
            ChangeKind.SNOOZED,
        }:
            return
        ladder = await session.get(EscalationLadder, incident.id)
        if ladder is None:  # an incident from before escalation existed
            ladder = EscalationLadder(
                incident_id=incident.id, epoch=1, started_at=incident.first_seen_at
            )
            session.add(ladder)
            await session.flush()
        if kind is ChangeKind.REOPENED:
            ladder.epoch += 1
            ladder.started_at = change.at
            ladder.shift_seconds = 0
            ladder.paused_at = None
            ladder.deadline_missed_at = None
        elif kind is ChangeKind.ACKNOWLEDGED:
            # Only a timed acknowledgement will come back; remember where the ladder stood.
            ladder.paused_at = change.at
        elif kind is ChangeKind.UNACKNOWLEDGED and ladder.paused_at is not None:
            ladder.shift_seconds += int((change.at - ladder.paused_at).total_seconds())
            ladder.paused_at = None
        elif kind is ChangeKind.SNOOZED and incident.snoozed_until is not None:
            state = await self._state(session, ladder, incident.severity, incident.state, None)
            ladder.shift_seconds += int(
                snooze_shift(state, self.policy, incident.snoozed_until).total_seconds()
            )

    def in_transaction_sync(self, session: Session, changes: Sequence[IncidentChange]) -> None:
        """Changes recorded in bulk: new incidents' ladders in one statement (repeats,
        resolves and firings leave the ladder as it is, as in `in_transaction`)."""
        moving = {c.kind for c in changes} & _SYNC_UNSUPPORTED
        if moving:
            raise ValueError(f"in_transaction_sync cannot move a ladder for {sorted(moving)}")
        new = [
            {"incident_id": c.incident.id, "epoch": 1, "started_at": c.at, "shift_seconds": 0}
            for c in changes
            if c.kind is ChangeKind.TRIGGERED
        ]
        if new:
            execute_many(session.connection(), _INSERT_LADDERS, new)

    def _fire_opened(
        self, session: Session, changes: Sequence[IncidentChange]
    ) -> list[IncidentChange]:
        """The steps due at once (the 0 s team step) of the incidents an intake group opened,
        fired in the group's own transaction: their ladders are new, so nothing is read, and
        the alert and its first step commit together. Only where the timers run (here the
        leader's timer would fire them a moment later anyway; each step is claimed once)."""
        if not self._armed:
            return []
        latest: dict[int, IncidentChange] = {}
        opened: list[IncidentChange] = []
        for change in changes:
            latest[change.incident.id] = change
            if change.kind is ChangeKind.TRIGGERED:
                opened.append(change)
        nothing_fired: frozenset[tuple[int, int]] = frozenset()
        targets = [
            # The incident as the group left it (a later alert may have raised its severity).
            (
                latest[c.incident.id].incident,
                _Ladder(c.incident.id, 1, c.at, 0, None),
                nothing_fired,
            )
            for c in opened
            if latest[c.incident.id].incident.state is IncidentState.TRIGGERED
        ]
        if not targets:
            return []
        wakes: dict[int, datetime] = {}
        try:
            claimed = self._claim_targets(session, targets, wakes, allow_extra=False)
        except _NeedsAsync:
            return []  # a step needs a callback: `after_commit` leaves them to the timer
        for change in opened:
            wake = wakes.get(change.incident.id)
            if wake is not None:
                self._opened_wakes[change.incident.id, change.at] = wake
        entries = [(incident, kind, details) for incident, kind, details, _ in claimed]
        return self._incidents.timeline_sync(session, entries, actor="escalation")

    def after_commit(self, change: IncidentChange) -> None:
        incident = change.incident
        if change.kind is ChangeKind.TRIGGERED:
            wake = self._opened_wakes.pop((incident.id, change.at), None)
            if wake is not None:  # its first steps fired as it opened (`_fire_opened`)
                if self._armed:
                    self._schedule(incident.id, wake)
                return
        if change.kind is ChangeKind.ACKNOWLEDGED:
            self._metrics.time_to_ack.labels(incident.severity.value).observe(
                (change.at - incident.first_seen_at).total_seconds()
            )
        elif change.kind is ChangeKind.RESOLVED:
            self._metrics.time_to_resolve.labels(incident.severity.value).observe(
                (change.at - incident.first_seen_at).total_seconds()
            )
        moves_ladder = change.kind in _LADDER_CHANGES or "severity_raised" in change.details
        if moves_ladder:
            self.rearm_soon(incident.id)

    def rearm_soon(self, incident_id: int) -> None:
        """Re-arm this incident's timer in the background (when this instance runs timers):
        its ladder moved here, or on another instance that told us so. Incidents moved
        together are re-armed together."""
        if not self._armed:
            return
        self._to_rearm.add(incident_id)
        if self._rearm_task is None:
            task = asyncio.get_running_loop().create_task(self._rearm_moved())
            self._rearm_task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _rearm_moved(self) -> None:
        try:
            while self._to_rearm and self._armed:
                ids = sorted(self._to_rearm)
                self._to_rearm.clear()
                gate = self._scheduler.gate
                if gate is None:
                    await self.rearm_many(ids, fire_due=True)
                    continue
                if not gate.is_leader:
                    return
                with gate.fenced():  # the due steps fired here are the leader's writes
                    await self.rearm_many(ids, fire_due=True)
        finally:
            self._rearm_task = None

    # -- timers --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Arm every open incident from the database (steps that came due fire now)."""
        self._armed = True
        await self.rearm_all()
        self._scheduler.add_job(
            self._guarded,
            "interval",
            args=[self.sweep],
            seconds=60,
            id="escalation:sweep",
            replace_existing=True,
        )

    async def _guarded(self, job: Callable[..., Awaitable[object]], *args: object) -> None:
        """How the scheduler runs our jobs: tracked, so `stop` can finish them before the
        database closes (a job left running past that would wait forever)."""
        if not self._armed:
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await job(*args)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def stop(self) -> None:
        """Disarm: no timers, nothing running (at shutdown, or when another instance leads)."""
        self._armed = False
        self._opened_wakes.clear()
        for job in self._scheduler.scheduler.get_jobs():
            if job.id.startswith("escalation:"):
                job.remove()
        self._buckets.clear()
        self._bucket_of.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def sweep(self) -> None:
        """Arm open incidents that have no timer (opened by another process, say)."""
        await self.rearm_all(only_unarmed=True)

    async def rearm_all(self, *, only_unarmed: bool = False) -> None:
        async with self._db.read() as session:
            ids = (
                await session.scalars(
                    select(Incident.id).where(Incident.state != IncidentState.RESOLVED.value)
                )
            ).all()
        if only_unarmed:
            ids = [i for i in ids if i not in self._bucket_of]
        await self.rearm_many(ids)

    async def rearm(self, incident_id: int) -> None:
        """Schedule this incident's next wake-up (next step, deadline or ack expiry)."""
        await self.rearm_many([incident_id])

    async def rearm_many(self, incident_ids: Sequence[int], *, fire_due: bool = False) -> None:
        """`rearm` for many incidents in three queries; with `fire_due`, wake-ups already
        due (the 0 s step of a new incident) fire here, a few incidents per transaction,
        instead of as one scheduler job and two transactions each."""
        if len(incident_ids) > _QUERY_CHUNK:
            for start in range(0, len(incident_ids), _QUERY_CHUNK):
                chunk = incident_ids[start : start + _QUERY_CHUNK]
                await self.rearm_many(chunk, fire_due=fire_due)
            return
        wakes, acknowledged = await self._wakeups(incident_ids)
        now = self._clock.now()
        due: list[int] = []
        for incident_id in incident_ids:
            wake = wakes.get(incident_id)
            if wake is None or (fire_due and wake <= now):
                self._unschedule(incident_id)
                if wake is not None:
                    due.append(incident_id)
                continue
            self._schedule(incident_id, wake)
        for start in range(0, len(due), _TICK_GROUP):
            group = due[start : start + _TICK_GROUP]
            await self._tick_group(group, [i for i in group if i in acknowledged])

    def _schedule(self, incident_id: int, wake: datetime) -> None:
        at = _bucket(wake)
        if self._bucket_of.get(incident_id) == at:
            return
        self._unschedule(incident_id)
        ids = self._buckets.get(at)
        if ids is None:
            ids = self._buckets[at] = set()
            self._scheduler.add_job(
                self._guarded,
                "date",
                run_date=at,
                args=[self._wake, at],
                id=f"escalation:at:{at.isoformat()}",
                replace_existing=True,
                misfire_grace_time=None,
            )
        ids.add(incident_id)
        self._bucket_of[incident_id] = at

    def _unschedule(self, incident_id: int) -> None:
        at = self._bucket_of.pop(incident_id, None)
        ids = self._buckets.get(at) if at is not None else None
        if at is None or ids is None:
            return
        ids.discard(incident_id)
        if not ids:
            del self._buckets[at]
            job = self._scheduler.scheduler.get_job(f"escalation:at:{at.isoformat()}")
            if job is not None:
                job.remove()

    async def _wake(self, at: datetime) -> None:
        """A bucket's time came: fire what is due for its incidents and re-arm them."""
        ids = self._buckets.pop(at, set())
        for incident_id in ids:
            if self._bucket_of.get(incident_id) == at:
                del self._bucket_of[incident_id]
        if ids:
            await self.rearm_many(sorted(ids), fire_due=True)

    async def next_wakeup(self, incident_id: int) -> datetime | None:
        return (await self._wakeups([incident_id]))[0].get(incident_id)

    async def _wakeups(
        self, incident_ids: Sequence[int]
    ) -> tuple[dict[int, datetime | None], set[int]]:
        """Each incident's next wake-up (next step, deadline or ack expiry), set-based; and
        which of them are acknowledged (their wake-up is the acknowledgement's expiry)."""
        ids = list(incident_ids)
        wakes: dict[int, datetime | None] = dict.fromkeys(ids)
        acknowledged: set[int] = set()
        if not ids:
            return wakes, acknowledged
        async with self._db.read() as session:
            incidents = (
                await session.execute(
                    select(
                        _INCIDENTS.c.id,
                        _INCIDENTS.c.state,
                        _INCIDENTS.c.severity,
                        _INCIDENTS.c.ack_expires_at,
                        _INCIDENTS.c.snoozed_until,
                    ).where(_INCIDENTS.c.id.in_(ids))
                )
            ).all()
            ladders = await session.run_sync(self._ladders, ids)
            fired = await session.run_sync(self._fired, ladders)
        for incident in incidents:
            if incident.state == IncidentState.RESOLVED.value:
                continue
            if incident.state == IncidentState.ACKNOWLEDGED.value:
                wakes[incident.id] = incident.ack_expires_at
                acknowledged.add(incident.id)
                continue
            ladder = ladders.get(incident.id)
            if ladder is None:
                continue
            state = LadderState(
                severity=Severity(incident.severity),
                state=IncidentState(incident.state),
                started_at=ladder.started_at,
                shift=timedelta(seconds=ladder.shift_seconds),
                snoozed_until=incident.snoozed_until,
                fired=frozenset(fired[incident.id]),
            )
            times = []
            upcoming = next_step(state, self.policy)
            if upcoming is not None:
                times.append(upcoming.due_at)
            if ladder.deadline_missed_at is None:
                times.append(
                    deadline_at(
                        severity=state.severity,
                        started_at=state.started_at,
                        shift=state.shift,
                        policy=self.policy,
                    )
                )
            wakes[incident.id] = min(times) if times else None
        return wakes, acknowledged

    @staticmethod
    def _ladders(session: Session, ids: Sequence[int]) -> dict[int, _Ladder]:
        rows = session.execute(
            select(
                _LADDERS.c.incident_id,
                _LADDERS.c.epoch,
                _LADDERS.c.started_at,
                _LADDERS.c.shift_seconds,
                _LADDERS.c.deadline_missed_at,
            ).where(_LADDERS.c.incident_id.in_(list(ids)))
        )
        return {row[0]: _Ladder(row[0], row[1], row[2], row[3], row[4]) for row in rows}

    @staticmethod
    def _fired(session: Session, ladders: dict[int, _Ladder]) -> dict[int, set[tuple[int, int]]]:
        """The (step, repeat) pairs fired in each ladder's current epoch."""
        fired: dict[int, set[tuple[int, int]]] = {i: set() for i in ladders}
        if not ladders:
            return fired
        rows = session.execute(
            select(
                EscalationFiring.incident_id,
                EscalationFiring.epoch,
                EscalationFiring.step_index,
                EscalationFiring.seq,
            ).where(EscalationFiring.incident_id.in_(list(ladders)))
        )
        for incident_id, epoch, index, seq in rows:
            if epoch == ladders[incident_id].epoch:
                fired[incident_id].add((index, seq))
        return fired

    async def _tick_group(self, incident_ids: list[int], acknowledged: list[int]) -> None:
        """`tick` for several incidents whose wake-up is due, in one write transaction."""
        for incident_id in acknowledged:
            await self._incidents.expire_acknowledgement(incident_id)
        changes: list[IncidentChange] = []
        wakes: dict[int, datetime] = {}
        try:
            try:
                if not self._incidents.hooks_all_sync():
                    raise _NeedsAsync
                changes = await self._db.write_sync(
                    partial(self._fire_group_sync, incident_ids=incident_ids, wakes=wakes)
                )
            except _NeedsAsync:
                wakes = {}
                async with self._db.write() as session:
                    changes = await self._fire_group(session, incident_ids, wakes)
        except IntegrityError:
            # Another process claimed one of these steps: go one by one, as the timer would.
            for incident_id in incident_ids:
                await self.tick(incident_id)
            return
        self._incidents.published(changes)
        # The next wake-up of the incidents just fired is known; the others are looked up.
        for incident_id, wake in wakes.items():
            self._schedule(incident_id, wake)
        await self.rearm_many([i for i in incident_ids if i not in wakes])

    async def tick(self, incident_id: int) -> list[IncidentChange]:
        """Fire whatever is due for this incident now; each step at most once, ever."""
        await self._incidents.expire_acknowledgement(incident_id)
        changes: list[IncidentChange] = []
        try:
            async with self._db.write() as session:
                changes = await self._fire_due(session, incident_id)
        except IntegrityError:
            # Another process claimed the same step first; it has been (or will be) sent once.
            log.info("escalation step for incident %s already claimed elsewhere", incident_id)
            changes = []
        self._incidents.published(changes)
        await self.rearm(incident_id)
        return changes

    async def _fire_due(self, session: AsyncSession, incident_id: int) -> list[IncidentChange]:
        return await self._fire_group(session, [incident_id])

    async def _fire_group(
        self,
        session: AsyncSession,
        incident_ids: Sequence[int],
        wakes: dict[int, datetime] | None = None,
    ) -> list[IncidentChange]:
        """Claim and record every step due now for these incidents (and missed deadlines);
        `wakes` gets the next wake-up of each incident fired, as `next_wakeup` would say."""
        claimed = await session.run_sync(self._claim, incident_ids, wakes, True)
        entries: list[tuple[IncidentView, ChangeKind, dict[str, Any]]] = []
        for incident, kind, details, extra in claimed:
            if extra is not None:
                details.update(await extra(incident.id, dict(details)))
            entries.append((incident, kind, details))
        if not entries:
            return []
        return await self._incidents.record_many(session, entries, actor="escalation")

    def _fire_group_sync(
        self, session: Session, incident_ids: Sequence[int], wakes: dict[int, datetime]
    ) -> list[IncidentChange]:
        """`_fire_group` as sync code, for the writer thread: all in one hop. Raises
        `_NeedsAsync` (before writing anything) when a due step's details need a callback."""
        claimed = self._claim(session, incident_ids, wakes, False)
        if not claimed:
            return []
        entries = [(incident, kind, details) for incident, kind, details, _ in claimed]
        return self._incidents.record_many_sync(session, entries, actor="escalation")

    def _claim(
        self,
        session: Session,
        incident_ids: Sequence[int],
        wakes: dict[int, datetime] | None,
        allow_extra: bool,
    ) -> list[tuple[IncidentView, ChangeKind, dict[str, Any], StepDetails | None]]:
        """Claim the due steps and missed deadlines: the timeline entries to record, each
        with the callback that adds to its details, if any. Set-based, in Core: three reads
        and one statement for the claims, however many incidents."""
        rows = session.execute(
            select(_INCIDENTS)
            .where(
                _INCIDENTS.c.id.in_(list(incident_ids)),
                _INCIDENTS.c.state == IncidentState.TRIGGERED.value,
            )
            .order_by(_INCIDENTS.c.id)
        ).mappings()
        incidents = [IncidentView.from_row(dict(row)) for row in rows]
        if not incidents:
            return []
        ladders = self._ladders(session, [i.id for i in incidents])
        fired = self._fired(session, ladders)
        targets = [
            (incident, ladders[incident.id], frozenset(fired[incident.id]))
            for incident in incidents
            if incident.id in ladders
        ]
        return self._claim_targets(session, targets, wakes, allow_extra)

    def _claim_targets(  # noqa: PLR0914
        self,
        session: Session,
        targets: Sequence[tuple[IncidentView, _Ladder, frozenset[tuple[int, int]]]],
        wakes: dict[int, datetime] | None,
        allow_extra: bool,
    ) -> list[tuple[IncidentView, ChangeKind, dict[str, Any], StepDetails | None]]:
        """`_claim` for incidents whose ladder and firings are known (read, or just made).
        Raises `_NeedsAsync` before writing anything when a step's details need a callback
        and `allow_extra` is false."""
        now = self._clock.now()
        claims: list[tuple[IncidentView, Severity, DueStep, timedelta, _Ladder]] = []
        firings: list[dict[str, Any]] = []
        missed_at: list[dict[str, Any]] = []
        entries: list[tuple[IncidentView, ChangeKind, dict[str, Any]]] = []
        for incident, ladder, fired in targets:
            severity = incident.severity
            state = LadderState(
                severity=severity,
                state=IncidentState.TRIGGERED,
                started_at=ladder.started_at,
                shift=timedelta(seconds=ladder.shift_seconds),
                snoozed_until=incident.snoozed_until,
                fired=fired,
            )
            due_now = due_steps(state, self.policy, now)
            if not allow_extra and any(d.step.name in self.step_details for d in due_now):
                raise _NeedsAsync
            for due in due_now:
                late = now - due.due_at
                firings.append(
                    {
                        "incident_id": incident.id,
                        "epoch": ladder.epoch,
                        "step_index": due.index,
                        "seq": due.seq,
                        "step_name": due.step.name,
                        "due_at": due.due_at,
                        "fired_at": now,
                        "late_seconds": int(late.total_seconds()),
                    }
                )
                claims.append((incident, severity, due, late, ladder))
            deadline = deadline_at(
                severity=severity,
                started_at=state.started_at,
                shift=state.shift,
                policy=self.policy,
            )
            missed_now = deadline_missed(
                state, self.policy, now, already=ladder.deadline_missed_at is not None
            )
            if missed_now:
                missed_at.append({"b_id": incident.id, "b_at": now})
                missed: dict[str, Any] = {
                    "deadline": deadline.isoformat(),
                    "severity": severity.value,
                    "response_time": str(severity.response_time),
                }
                claims.append((incident, severity, _DEADLINE, timedelta(0), ladder))
                entries.append((incident, ChangeKind.DEADLINE_MISSED, missed))
            if wakes is not None and (due_now or missed_now):
                after = LadderState(
                    severity=severity,
                    state=IncidentState.TRIGGERED,
                    started_at=state.started_at,
                    shift=state.shift,
                    snoozed_until=state.snoozed_until,
                    fired=state.fired | {(d.index, d.seq) for d in due_now},
                )
                times = [] if missed_now or ladder.deadline_missed_at is not None else [deadline]
                upcoming = next_step(after, self.policy)
                if upcoming is not None:
                    times.append(upcoming.due_at)
                if times:
                    wakes[incident.id] = min(times)
        if not claims:
            return []
        if firings:
            # The claims, one statement; a second claimant fails here.
            execute_many(session.connection(), _INSERT_FIRINGS, firings)
        if missed_at:
            execute_many(session.connection(), _MARK_MISSED, missed_at)
        return self._entries(session, claims, entries, now)

    def _entries(
        self,
        session: Session,
        claims: Sequence[tuple[IncidentView, Severity, DueStep, timedelta, _Ladder]],
        deadline_entries: Sequence[tuple[IncidentView, ChangeKind, dict[str, Any]]],
        now: datetime,
    ) -> list[tuple[IncidentView, ChangeKind, dict[str, Any], StepDetails | None]]:
        """The timeline entries of the claims, in the order a tick per incident would
        write them."""
        overrides: list[Override] | None = None
        ordered: list[tuple[IncidentView, ChangeKind, dict[str, Any], StepDetails | None]] = []
        deadlines = iter(deadline_entries)
        for incident, severity, due, late, ladder in claims:
            if due is _DEADLINE:
                ordered.append((*next(deadlines), None))
                self._metrics.deadlines_missed.labels(severity.value).inc()
                continue
            if overrides is None and due.step.target != "team":
                overrides = self._overrides_sync(session, now)
            details: dict[str, Any] = {
                "step": due.step.name,
                "target": due.step.target,
                "user_ids": self._recipients_of(due.step, now, overrides or []),
                "message": due.step.message,
                "late": late > LATE_AFTER,
                "due_at": due.due_at.isoformat(),
                "epoch": ladder.epoch,
                "repeat": due.seq,
                "initial": due.step.initial,
            }
            if late > LATE_AFTER:
                details["late_by_seconds"] = int(late.total_seconds())
            ordered.append(
                (incident, ChangeKind.ESCALATED, details, self.step_details.get(due.step.name))
            )
            self._metrics.steps_fired.labels(severity.value, due.step.name).inc()
            self._metrics.lateness.observe(max(0.0, late.total_seconds()))
        return ordered

    async def _state(  # noqa: PLR0917
        self,
        session: AsyncSession,
        ladder: EscalationLadder,
        severity: Severity,
        state: IncidentState,
        snoozed_until: datetime | None,
    ) -> LadderState:
        rows = (
            await session.execute(
                select(EscalationFiring.step_index, EscalationFiring.seq).where(
                    EscalationFiring.incident_id == ladder.incident_id,
                    EscalationFiring.epoch == ladder.epoch,
                )
            )
        ).all()
        return LadderState(
            severity=severity,
            state=state,
            started_at=ladder.started_at,
            shift=timedelta(seconds=ladder.shift_seconds),
            snoozed_until=snoozed_until,
            fired=frozenset((r[0], r[1]) for r in rows),
        )

    def _recipients_of(self, step: Step, now: datetime, overrides: list[Override]) -> list[int]:
        if step.target == "team":
            return []
        person = oncall_at(self.policy.rotation, now, overrides)
        ids = [person.user_id] if person else []
        if step.target == "pd":
            ids += [i for i in self._pd_user_ids if i not in ids]
        return ids

    # -- queries for the edges -----------------------------------------------------------------

    async def next_step_for(self, incident_id: int) -> NextStepInfo | None:
        async with self._db.read() as session:
            incident = await session.get(Incident, incident_id)
            ladder = await session.get(EscalationLadder, incident_id)
            if incident is None or ladder is None:
                return None
            state = await self._state(
                session,
                ladder,
                Severity(incident.severity),
                IncidentState(incident.state),
                incident.snoozed_until,
            )
        upcoming = next_step(state, self.policy)
        if upcoming is None:
            return None
        step = upcoming.step
        return NextStepInfo(step.name, step.target, step.message, upcoming.due_at)

    async def next_steps_for(
        self, incidents: Sequence[IncidentView]
    ) -> dict[int, NextStepInfo | None]:
        """`next_step_for` of many incidents in two queries (the board lists up to 200)."""
        ids = [i.id for i in incidents]
        if not ids:
            return {}
        async with self._db.read() as session:
            ladders = await session.run_sync(self._ladders, ids)
            fired = await session.run_sync(self._fired, ladders)
        steps: dict[int, NextStepInfo | None] = {}
        for incident in incidents:
            ladder = ladders.get(incident.id)
            upcoming = None
            if ladder is not None:
                state = LadderState(
                    severity=incident.severity,
                    state=incident.state,
                    started_at=ladder.started_at,
                    shift=timedelta(seconds=ladder.shift_seconds),
                    snoozed_until=incident.snoozed_until,
                    fired=frozenset(fired[incident.id]),
                )
                upcoming = next_step(state, self.policy)
            steps[incident.id] = (
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

    async def _overrides(self, session: AsyncSession, now: datetime) -> list[Override]:
        return await session.run_sync(self._overrides_sync, now)

    @staticmethod
    def _overrides_sync(session: Session, now: datetime) -> list[Override]:
        rows = session.scalars(select(OncallOverride).where(OncallOverride.ends_at > now)).all()
        return [Override(Person(r.user_id, r.name), r.starts_at, r.ends_at) for r in rows]

    async def oncall(self) -> OncallInfo:
        now = self._clock.now()
        async with self._db.read() as session:
            overrides = await self._overrides(session, now)
        person = oncall_at(self.policy.rotation, now, overrides)
        covering = [o for o in overrides if o.starts_at <= now < o.ends_at]
        until = max(covering, key=lambda o: o.starts_at).ends_at if covering else None
        return OncallInfo(
            person, until, next_handover(self.policy.rotation, now), self._pd_user_ids
        )

    async def set_oncall(
        self, *, user_id: int, name: str, duration: timedelta, actor: str
    ) -> OncallInfo:
        if not timedelta(minutes=5) <= duration <= timedelta(days=30):
            raise InvalidInput("an on-call override lasts between 5 minutes and 30 days, e.g. 8h")
        now = self._clock.now()
        async with self._db.write() as session:
            await session.execute(delete(OncallOverride).where(OncallOverride.ends_at <= now))
            session.add(
                OncallOverride(
                    user_id=user_id,
                    name=name[:200],
                    starts_at=now,
                    ends_at=now + duration,
                    set_by=actor,
                )
            )
        return await self.oncall()
