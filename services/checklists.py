"""The playbook's two checklists (during the incident, on recovery), ticked per incident."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.clock import Clock
from services.db import Database
from services.errors import InvalidInput, NotFound
from services.incident_types import ChangeKind
from services.incidents import IncidentService
from services.locales import Texts
from services.models import ChecklistTick, Incident

# The playbook's "체크리스트", in its order. Keys are stable; labels are per language.
CHECKLISTS: dict[str, tuple[str, ...]] = {
    "during": (
        "health_check",
        "error_logs",
        "trace_ids",
        "recovery_attempt",
        "verification",
        "postmortem",
    ),
    "recovery": ("normal_operation", "queued_work", "notification", "documented"),
}


def label(key: str, language: str) -> str:
    """A checklist's or an item's name in `language` (services/locales); an unknown key as
    it is."""
    return Texts(language).get(f"checklist.{key}") or key


@dataclass(frozen=True)
class ItemState:
    checklist: str
    item: str
    done: bool
    at: datetime | None
    actor: str | None


@dataclass(frozen=True)
class ChecklistState:
    incident_id: int
    items: list[ItemState]

    def open_items(self, checklist: str | None = None) -> list[ItemState]:
        return [
            i for i in self.items if not i.done and (checklist is None or i.checklist == checklist)
        ]

    def counts(self, checklist: str) -> tuple[int, int]:
        items = [i for i in self.items if i.checklist == checklist]
        return sum(i.done for i in items), len(items)


def _check(checklist: str, item: str) -> None:
    if checklist not in CHECKLISTS:
        raise InvalidInput(
            f"unknown checklist {checklist!r}; use {' or '.join(CHECKLISTS)}",
            detail={"field": "checklist"},
        )
    if item not in CHECKLISTS[checklist]:
        raise InvalidInput(
            f"unknown item {item!r} in {checklist}; use one of {', '.join(CHECKLISTS[checklist])}",
            detail={"field": "item"},
        )


class ChecklistService:
    """Ticks and unticks items; every change is on the incident's timeline."""

    def __init__(self, db: Database, clock: Clock, incidents: IncidentService) -> None:
        self._db = db
        self._clock = clock
        self._incidents = incidents

    async def state(self, incident_id: int) -> ChecklistState:
        async with self._db.read() as session:
            if await session.get(Incident, incident_id) is None:
                raise NotFound(f"no incident #{incident_id}", detail={"id": incident_id})
            rows = (
                await session.scalars(
                    select(ChecklistTick).where(ChecklistTick.incident_id == incident_id)
                )
            ).all()
        by_key = {(r.checklist, r.item): r for r in rows}
        items = []
        for checklist, keys in CHECKLISTS.items():
            for key in keys:
                row = by_key.get((checklist, key))
                items.append(
                    ItemState(
                        checklist,
                        key,
                        bool(row and row.done),
                        row.at if row else None,
                        row.actor if row else None,
                    )
                )
        return ChecklistState(incident_id, items)

    async def set(
        self, incident_id: int, checklist: str, item: str, *, done: bool, actor: str
    ) -> ChecklistState:
        _check(checklist, item)

        def tick(session: Session, incident: Incident, now: datetime) -> dict[str, Any]:
            row = session.get(ChecklistTick, (incident_id, checklist, item))
            if row is None:
                row = ChecklistTick(
                    incident_id=incident_id, checklist=checklist, item=item, done=done
                )
                session.add(row)
            row.done, row.at, row.actor = done, now, actor
            return {"checklist": checklist, "item": item, "done": done}

        await self._incidents.transition(incident_id, ChangeKind.CHECKLIST, actor, tick)
        return await self.state(incident_id)

    async def toggle(
        self, incident_id: int, checklist: str, item: str, *, actor: str
    ) -> ChecklistState:
        """What a checkbox button does: flip the item."""
        _check(checklist, item)
        current = await self.state(incident_id)
        done = next(i.done for i in current.items if (i.checklist, i.item) == (checklist, item))
        return await self.set(incident_id, checklist, item, done=not done, actor=actor)
