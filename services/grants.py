"""Paged means empowered: whoever a step pages may acknowledge, snooze and resolve that incident.

A grant is written in the transaction that records the page (this service is an
`IncidentHook`), so a page that reached someone always came with the right to answer it; it
ends in the transaction that resolves the incident. A reopened incident pages again and so
grants again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.db import Database
from services.incident_types import ChangeKind, IncidentChange
from services.models import Incident, IncidentGrant, IncidentState


@dataclass(frozen=True)
class Grant:
    incident_id: int
    user_id: int
    step: str
    granted_at: datetime
    ended_at: datetime | None

    @property
    def active(self) -> bool:
        return self.ended_at is None


def paged_user_ids(change: IncidentChange) -> list[int]:
    """The Telegram users an escalation change paged (its `user_ids`)."""
    if change.kind is not ChangeKind.ESCALATED:
        return []
    value = change.details.get("user_ids")
    if not isinstance(value, list):
        return []
    return [
        int(v)
        for v in value
        if isinstance(v, int) or (isinstance(v, str) and v.isascii() and v.isdigit())
    ]


class GrantService:
    """Writes grants with the pages and ends them with the resolution; answers who holds one."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- the hook ---------------------------------------------------------------------------

    def apply(self, session: Session, changes: Sequence[IncidentChange]) -> None:
        paged: dict[tuple[int, int], tuple[str, datetime]] = {}
        resolved: dict[int, datetime] = {}
        for change in changes:
            incident_id = change.incident.id
            if change.kind is ChangeKind.RESOLVED:
                resolved[incident_id] = change.at
                for key in [k for k in paged if k[0] == incident_id]:
                    del paged[key]
                continue
            if change.kind is ChangeKind.REOPENED:
                resolved.pop(incident_id, None)
            for user_id in paged_user_ids(change):
                paged[(incident_id, user_id)] = (str(change.details.get("step", "")), change.at)
        if paged:
            incident_ids = sorted({i for i, _ in paged})
            existing = {
                (g.incident_id, g.user_id): g
                for g in session.scalars(
                    select(IncidentGrant).where(IncidentGrant.incident_id.in_(incident_ids))
                )
            }
            for (incident_id, user_id), (step, at) in sorted(paged.items()):
                grant = existing.get((incident_id, user_id))
                if grant is None:
                    session.add(
                        IncidentGrant(
                            incident_id=incident_id, user_id=user_id, step=step, granted_at=at
                        )
                    )
                elif grant.ended_at is not None:
                    # Paged again after a reopen: the grant starts afresh.
                    grant.step, grant.granted_at, grant.ended_at = step, at, None
        for incident_id, at in resolved.items():
            session.execute(
                update(IncidentGrant)
                .where(IncidentGrant.incident_id == incident_id, IncidentGrant.ended_at.is_(None))
                .values(ended_at=at)
            )
        if paged or resolved:
            session.flush()

    def committed(self, changes: Sequence[IncidentChange]) -> None:
        return None

    # -- reads ------------------------------------------------------------------------------

    async def holds(self, user_id: int, incident_id: int) -> bool:
        """True while `user_id` was paged for this incident and it is not resolved."""
        query = (
            select(IncidentGrant.user_id)
            .join(Incident, Incident.id == IncidentGrant.incident_id)
            .where(
                IncidentGrant.incident_id == incident_id,
                IncidentGrant.user_id == user_id,
                IncidentGrant.ended_at.is_(None),
                Incident.state != IncidentState.RESOLVED.value,
            )
        )
        async with self._db.read() as session:
            return (await session.scalar(query)) is not None

    async def of_incident(self, incident_id: int) -> list[Grant]:
        async with self._db.read() as session:
            rows = (
                await session.scalars(
                    select(IncidentGrant)
                    .where(IncidentGrant.incident_id == incident_id)
                    .order_by(IncidentGrant.granted_at, IncidentGrant.user_id)
                )
            ).all()
        return [Grant(r.incident_id, r.user_id, r.step, r.granted_at, r.ended_at) for r in rows]
