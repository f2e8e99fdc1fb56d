"""The incident lifecycle: trigger with deduplication, acknowledge, resolve, reopen, annotate;
the one write path (`IncidentService.write`) every change goes through. Types are in
incident_types.py, row SQL in incident_rows.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services import incident_rows
from services.clock import Clock
from services.db import Database, execute_many, insert_returning
from services.errors import InvalidInput, InvalidTransition, NotFound
from services.incident_types import (
    AlertIn,
    BatchOutcome,
    ChangeKind,
    IncidentChange,
    IncidentDetail,
    IncidentHook,
    IncidentView,
    TimelineEntry,
    TriggerResult,
    validate_alert,
)
from services.models import Incident, IncidentState, TimelineEvent
from services.policy import DEFAULT_DEADLINE_AFTER
from services.severity import Severity

T = TypeVar("T")

# What resolves an open incident: its dedup key, or an alert whose group is resolved.
Resolving = str | AlertIn


def _key(resolving: Resolving) -> str:
    return resolving if isinstance(resolving, str) else resolving.dedup_key


class IncidentWrite:
    """One write transaction's incident changes: each `record` writes their timeline entries
    and hands them to every hook, in the transaction. Made by `IncidentService.write`."""

    def __init__(self, session: Session, now: datetime, hooks: Sequence[IncidentHook]) -> None:
        self.session = session
        self.now = now
        self.changes: list[IncidentChange] = []
        self._hooks = hooks

    def record(self, changes: Sequence[IncidentChange]) -> None:
        if not changes:
            return
        self.session.flush()  # ORM changes first: hooks and the timeline go through Core
        execute_many(
            self.session.connection(),
            incident_rows.INSERT_TIMELINE,
            [
                {
                    "incident_id": c.incident.id,
                    "at": c.at,
                    "kind": c.kind.value,
                    "actor": c.actor,
                    "details": c.details,
                }
                for c in changes
            ],
        )
        for hook in self._hooks:
            hook.apply(self.session, changes)
        self.changes.extend(changes)


# A transition: checks the incident's row, changes it, returns the timeline details.
Transition = Callable[[Session, Incident, datetime], dict[str, Any]]


class IncidentService:
    """Owns every incident transition; each writes its timeline entry in the same transaction.

    Every write goes through `write`: one transaction, synchronous statements (on SQLite they
    run on the loop and only the COMMIT in the writer thread, `Database.write_sync`), the
    hooks' rows in it, the hooks told after the commit."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        deadlines: Mapping[Severity, timedelta] = DEFAULT_DEADLINE_AFTER,
        hooks: Sequence[IncidentHook] = (),
    ) -> None:
        self._db = db
        self._clock = clock
        # How long each severity has before its response deadline (the policy's [deadlines]).
        self._deadlines = dict(deadlines)
        # Told of every write, in this order: in its transaction (`apply`), then once it
        # has committed (`committed`). The composition root lists them.
        self._hooks = tuple(hooks)

    def deadline_after(self, severity: Severity) -> timedelta:
        return self._deadlines[severity]

    # -- writes ---------------------------------------------------------------

    async def write(self, fn: Callable[[IncidentWrite], T]) -> T:
        """One write transaction in which `fn` changes incidents and records the changes;
        the hooks are told once it has committed."""

        def run(session: Session) -> tuple[T, list[IncidentChange]]:
            write = IncidentWrite(session, self._clock.now(), self._hooks)
            return fn(write), write.changes

        result, changes = await self._db.write_sync(run)
        for hook in self._hooks:
            hook.committed(changes)
        return result

    async def trigger(self, alert: AlertIn, *, actor: str = "intake") -> TriggerResult:
        outcome = await self.apply_batch([alert], [], actor=actor)
        return outcome.triggered[0]

    async def apply_batch(
        self, firing: Sequence[AlertIn], resolved_keys: Sequence[Resolving], *, actor: str
    ) -> BatchOutcome:
        """Open or absorb `firing` and resolve `resolved_keys` (a dedup key, or the last
        notification of an Alertmanager group, whose alerts are kept), all in one
        transaction."""
        return (await self.apply_batches([(firing, resolved_keys)], actor=actor))[0]

    async def apply_batches(
        self,
        batches: Sequence[tuple[Sequence[AlertIn], Sequence[Resolving]]],
        *,
        actor: str,
    ) -> list[BatchOutcome]:
        """Several intake batches in one transaction (group commit); outcomes in order."""
        for firing, _ in batches:
            for alert in firing:
                validate_alert(alert)
        for attempt in range(3):
            try:
                return await self.write(partial(self._apply_batches, batches=batches, actor=actor))
            except IntegrityError:
                # Another writer (another process on PostgreSQL) opened the same dedup key
                # between our lookup and insert; the retry finds it and absorbs into it.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _apply_batches(
        self,
        write: IncidentWrite,
        batches: Sequence[tuple[Sequence[AlertIn], Sequence[Resolving]]],
        actor: str,
    ) -> list[BatchOutcome]:
        # The hot path of intake, in SQLAlchemy Core and set-based on purpose: one lookup and
        # one executemany per table per group, instead of ORM round trips per alert.
        outcomes = [BatchOutcome() for _ in batches]
        now = write.now
        # Core on the session's connection: the Session's own execute path costs per call.
        conn = write.session.connection()
        keys = {a.dedup_key for firing, _ in batches for a in firing}
        keys.update(_key(k) for _, resolved in batches for k in resolved)
        open_rows = incident_rows.open_rows_by_key(conn, keys)
        # (outcome, kind, details, row, snapshot of the row right after this change)
        pending: list[
            tuple[BatchOutcome, ChangeKind, dict[str, Any], dict[str, Any], dict[str, Any]]
        ] = []
        inserts: list[dict[str, Any]] = []
        updated: dict[int, dict[str, Any]] = {}
        for (firing, resolved_keys), outcome in zip(batches, outcomes, strict=True):
            for alert in firing:
                row = open_rows.get(alert.dedup_key)
                if row is None:
                    row = incident_rows.new_row(alert, now, self._deadlines[alert.severity])
                    inserts.append(row)
                    open_rows[alert.dedup_key] = row
                    details: dict[str, Any] = {
                        "severity": alert.severity.value,
                        "title": alert.title,
                        "source": alert.source,
                    }
                    kind = ChangeKind.TRIGGERED
                else:
                    details = incident_rows.absorb(
                        row, alert, now, self._deadlines[alert.severity]
                    )
                    kind = ChangeKind.DEDUPLICATED
                    if row["id"] is not None:
                        updated[row["id"]] = row
                pending.append((outcome, kind, details, row, dict(row)))
            for resolving in resolved_keys:
                key = _key(resolving)
                row = open_rows.pop(key, None)
                if row is None:
                    outcome.resolved_unknown.append(key)
                    continue
                if isinstance(resolving, AlertIn):
                    incident_rows.merge_group(row, resolving)
                incident_rows.close_row(row, actor, now)
                if row["id"] is not None:
                    updated[row["id"]] = row
                pending.append((outcome, ChangeKind.RESOLVED, {"source": "alert"}, row, dict(row)))
        if updated:
            # Updates before inserts: a key resolved and re-opened in one group must not
            # trip the one-open-incident-per-key index.
            execute_many(
                conn,
                incident_rows.UPDATE_INCIDENT,
                [incident_rows.update_params(r) for r in updated.values()],
            )
        if inserts:
            params = [{k: v for k, v in r.items() if k != "id"} for r in inserts]
            if len({r["dedup_key"] for r in inserts}) == len(inserts):
                # Matched by dedup key, not by position: unordered, the group is one multi-row
                # INSERT ... RETURNING, where SQLite takes a row at a time for ordered ids.
                new_ids = dict(insert_returning(conn, incident_rows.INSERT_INCIDENTS, params))
                for row in inserts:
                    row["id"] = new_ids[row["dedup_key"]]
            else:  # a key opened, resolved and opened again within the group
                ordered: list[int] = list(
                    conn.execute(incident_rows.INSERT_INCIDENTS_ORDERED, params).scalars()
                )
                for row, new_id in zip(inserts, ordered, strict=True):
                    row["id"] = new_id
        changes: list[IncidentChange] = []
        # Each change reports the incident as it was right after that change (snapshot
        # taken then), even if a later alert in the group moved it on.
        for outcome, kind, details, row, snapshot in pending:
            snapshot["id"] = row["id"]
            view = IncidentView.from_row(snapshot)
            changes.append(IncidentChange(kind, view, actor, now, details))
            if kind is ChangeKind.RESOLVED:
                outcome.resolved.append(view)
            else:
                outcome.triggered.append(TriggerResult(view, kind is ChangeKind.TRIGGERED))
        write.record(changes)
        return outcomes

    async def acknowledge(
        self,
        incident_id: int,
        *,
        actor: str,
        note: str | None = None,
        duration: timedelta | None = None,
    ) -> IncidentView:
        """Acknowledge; with `duration`, only for that long (then escalation resumes)."""
        if duration is not None and duration <= timedelta(0):
            raise InvalidInput(
                "an acknowledgement duration must be positive", detail={"reason": "ack_duration"}
            )

        def apply(session: Session, row: Incident, now: datetime) -> dict[str, Any]:
            if row.state == IncidentState.RESOLVED:
                raise InvalidTransition(
                    f"incident #{row.id} is resolved; reopen it first",
                    detail={"id": row.id, "reason": "ack_resolved"},
                )
            if row.state == IncidentState.ACKNOWLEDGED:
                raise InvalidTransition(
                    f"incident #{row.id} is already acknowledged by {row.acknowledged_by}",
                    detail={
                        "id": row.id,
                        "acknowledged_by": row.acknowledged_by,
                        "reason": "already_acknowledged",
                    },
                )
            row.state = IncidentState.ACKNOWLEDGED.value
            row.acknowledged_at = now
            row.acknowledged_by = actor
            row.ack_expires_at = now + duration if duration else None
            details: dict[str, Any] = {"note": note} if note else {}
            if row.ack_expires_at:
                details["until"] = row.ack_expires_at.isoformat()
            return details

        return await self.transition(incident_id, ChangeKind.ACKNOWLEDGED, actor, apply)

    async def resolve(
        self, incident_id: int, *, actor: str, note: str | None = None
    ) -> IncidentView:
        def apply(session: Session, row: Incident, now: datetime) -> dict[str, Any]:
            if row.state == IncidentState.RESOLVED:
                raise InvalidTransition(
                    f"incident #{row.id} is already resolved by {row.resolved_by}",
                    detail={
                        "id": row.id,
                        "resolved_by": row.resolved_by,
                        "reason": "already_resolved",
                    },
                )
            incident_rows.close(row, actor, now)
            return {"note": note} if note else {}

        return await self.transition(incident_id, ChangeKind.RESOLVED, actor, apply)

    async def resolve_by_dedup_key(self, dedup_key: str, *, actor: str) -> IncidentView | None:
        """Resolve the open incident with this key, if any (an Alertmanager 'resolved')."""
        outcome = await self.apply_batch([], [dedup_key], actor=actor)
        return outcome.resolved[0] if outcome.resolved else None

    async def reopen(
        self, incident_id: int, *, actor: str, note: str | None = None
    ) -> IncidentView:
        def apply(session: Session, row: Incident, now: datetime) -> dict[str, Any]:
            if row.state != IncidentState.RESOLVED:
                raise InvalidTransition(
                    f"incident #{row.id} is not resolved (it is {row.state})",
                    detail={"id": row.id, "state": row.state, "reason": "not_resolved"},
                )
            if incident_rows.open_by_dedup_key(session, row.dedup_key) is not None:
                raise InvalidTransition(
                    f"another open incident already has dedup key {row.dedup_key!r}",
                    detail={"id": row.id, "reason": "key_open"},
                )
            row.state = IncidentState.TRIGGERED.value
            row.acknowledged_at = None
            row.acknowledged_by = None
            row.resolved_at = None
            row.resolved_by = None
            row.ack_expires_at = None
            row.snoozed_until = None
            row.response_deadline = now + self._deadlines[Severity(row.severity)]
            return {"note": note} if note else {}

        return await self.transition(incident_id, ChangeKind.REOPENED, actor, apply)

    async def snooze(self, incident_id: int, *, actor: str, duration: timedelta) -> IncidentView:
        """Hold escalation still for `duration`; the incident stays open."""
        if not timedelta(minutes=1) <= duration <= timedelta(days=7):
            raise InvalidInput(
                "snooze for between 1 minute and 7 days, e.g. 30m or 2h",
                detail={"reason": "snooze_range"},
            )

        def apply(session: Session, row: Incident, now: datetime) -> dict[str, Any]:
            if row.state == IncidentState.RESOLVED:
                raise InvalidTransition(
                    f"incident #{row.id} is resolved; there is nothing to snooze",
                    detail={"id": row.id, "reason": "snooze_resolved"},
                )
            row.snoozed_until = now + duration
            return {
                "until": row.snoozed_until.isoformat(),
                "seconds": int(duration.total_seconds()),
            }

        return await self.transition(incident_id, ChangeKind.SNOOZED, actor, apply)

    async def annotate(self, incident_id: int, *, actor: str, text: str) -> IncidentView:
        text = text.strip()
        if not text:
            raise InvalidInput("a note needs some text")

        def apply(session: Session, row: Incident, now: datetime) -> dict[str, Any]:
            return {"text": text[:4000]}

        return await self.transition(incident_id, ChangeKind.ANNOTATED, actor, apply)

    async def transition(
        self, incident_id: int, kind: ChangeKind, actor: str, apply: Transition
    ) -> IncidentView:
        """One change to one incident: `apply` checks and changes its row (and may write
        rows of its own, e.g. a checklist tick) and returns the timeline details."""

        def run(write: IncidentWrite) -> IncidentView:
            row = write.session.get(Incident, incident_id, with_for_update={"key_share": True})
            if row is None:
                raise NotFound(
                    f"no incident #{incident_id}",
                    detail={"id": incident_id, "reason": "no_incident"},
                )
            details = apply(write.session, row, write.now)
            change = IncidentChange(kind, IncidentView.of(row), actor, write.now, details)
            write.record([change])
            return change.incident

        return await self.write(run)

    # -- reads ----------------------------------------------------------------

    async def get(self, incident_id: int) -> IncidentDetail:
        async with self._db.read() as session:
            row = await session.get(Incident, incident_id)
            if row is None:
                raise NotFound(
                    f"no incident #{incident_id}",
                    detail={"id": incident_id, "reason": "no_incident"},
                )
            events = (
                await session.scalars(
                    select(TimelineEvent)
                    .where(TimelineEvent.incident_id == incident_id)
                    .order_by(TimelineEvent.id)
                )
            ).all()
            return IncidentDetail(
                IncidentView.of(row),
                [TimelineEntry(e.id, e.at, e.kind, e.actor, dict(e.details)) for e in events],
            )

    async def list(
        self,
        *,
        states: Sequence[IncidentState] | None = None,
        severities: Sequence[Severity] | None = None,
        limit: int = 100,
    ) -> list[IncidentView]:
        query = select(Incident)
        if states:
            query = query.where(Incident.state.in_([s.value for s in states]))
        if severities:
            query = query.where(Incident.severity.in_([s.value for s in severities]))
        query = query.order_by(Incident.severity, Incident.id.desc()).limit(limit)
        async with self._db.read() as session:
            rows = (await session.scalars(query)).all()
            return [IncidentView.of(r) for r in rows]

    async def open_dedup_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` an open incident has: a read, to resolve only what is open."""
        if not keys:
            return set()
        query = select(Incident.dedup_key).where(
            Incident.dedup_key.in_(list(keys)), Incident.state != IncidentState.RESOLVED.value
        )
        async with self._db.read() as session:
            return set((await session.scalars(query)).all())

    async def count_open(self) -> dict[str, int]:
        query = (
            select(Incident.severity, func.count())
            .where(Incident.state != IncidentState.RESOLVED.value)
            .group_by(Incident.severity)
        )
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
        counts = {s.value: 0 for s in Severity}
        counts.update({sev: n for sev, n in rows})
        return counts


def lapse_acknowledgements(write: IncidentWrite, incident_ids: Sequence[int]) -> None:
    """Inside `write`: un-acknowledge those of these incidents whose timed
    acknowledgement has run out (escalation resumes where it stood)."""
    rows = write.session.scalars(
        select(Incident)
        .where(
            Incident.id.in_(list(incident_ids)),
            Incident.state == IncidentState.ACKNOWLEDGED.value,
            Incident.ack_expires_at <= write.now,
        )
        .order_by(Incident.id)
        .with_for_update(key_share=True)
    ).all()
    changes = []
    for row in rows:
        details = {"acknowledged_by": row.acknowledged_by}
        row.state = IncidentState.TRIGGERED.value
        row.acknowledged_at = None
        row.acknowledged_by = None
        row.ack_expires_at = None
        changes.append(
            IncidentChange(
                ChangeKind.UNACKNOWLEDGED, IncidentView.of(row), "timer", write.now, details
            )
        )
    write.record(changes)
