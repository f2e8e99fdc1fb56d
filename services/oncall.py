"""Who is on call: the policy's rotation, admins' overrides, and whom a step pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.clock import Clock
from services.db import Database
from services.errors import InvalidInput
from services.models import OncallOverride
from services.policy import Override, Person, Rotation, Target, next_handover, oncall_at


@dataclass(frozen=True)
class OncallInfo:
    person: Person | None
    overridden_until: datetime | None
    next_handover: datetime | None
    pd_user_ids: list[int]


def recipients(
    target: Target,
    *,
    rotation: Rotation | None,
    overrides: Sequence[Override],
    pd_user_ids: Sequence[int],
    now: datetime,
) -> list[int]:
    """The Telegram user ids a step to `target` pages: nobody for the team chat; the person
    on call for `oncall`; the person on call and the PD ids for `pd`."""
    if target == "team":
        return []
    person = oncall_at(rotation, now, overrides)
    ids = [person.user_id] if person else []
    if target == "pd":
        ids += [i for i in pd_user_ids if i not in ids]
    return ids


class OncallService:
    """The rotation from the policy, overrides from the database, the PD ids from settings."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        rotation: Rotation | None,
        pd_user_ids: Sequence[int] = (),
    ) -> None:
        self._db = db
        self._clock = clock
        self.rotation = rotation
        self.pd_user_ids = list(pd_user_ids)

    @staticmethod
    def overrides(session: Session, now: datetime) -> list[Override]:
        rows = session.scalars(select(OncallOverride).where(OncallOverride.ends_at > now)).all()
        return [Override(Person(r.user_id, r.name), r.starts_at, r.ends_at) for r in rows]

    def recipients(self, session: Session, target: Target, now: datetime) -> list[int]:
        """Whom a step to `target` pages at `now`, read in the caller's transaction."""
        if target == "team":
            return []
        return recipients(
            target,
            rotation=self.rotation,
            overrides=self.overrides(session, now),
            pd_user_ids=self.pd_user_ids,
            now=now,
        )

    async def oncall(self) -> OncallInfo:
        now = self._clock.now()
        async with self._db.read() as session:
            overrides = await session.run_sync(self.overrides, now)
        person = oncall_at(self.rotation, now, overrides)
        covering = [o for o in overrides if o.starts_at <= now < o.ends_at]
        until = max(covering, key=lambda o: o.starts_at).ends_at if covering else None
        return OncallInfo(person, until, next_handover(self.rotation, now), list(self.pd_user_ids))

    async def set_oncall(
        self, *, user_id: int, name: str, duration: timedelta, actor: str
    ) -> OncallInfo:
        if not timedelta(minutes=5) <= duration <= timedelta(days=30):
            raise InvalidInput(
                "an on-call override lasts between 5 minutes and 30 days, e.g. 8h",
                detail={"reason": "oncall_range"},
            )
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
