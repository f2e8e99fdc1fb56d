"""The playbook's publishing guards: a topic is posted once, and at most N posts a day.

A publish claims its topic before any Instagram call, in the transaction that checks the
guards, and settles the claim afterwards: two runs racing (a `publish` from the shell and the
retry job the scheduler starts) cannot both post, and a crash mid-post leaves a claim that
says so rather than a silent second post on the next try.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from services.clock import Clock
from services.db import Database
from services.errors import InvalidTransition
from services.models import Publication, PublicationState

# A claim older than this with no outcome belongs to a run that died (the longest publish,
# fal.ai's 2-minute generation plus uploads and the Graph API calls, takes a few minutes).
STALE_CLAIM = timedelta(minutes=15)
# Counted as posted: what Instagram may show (an interrupted run may have published).
COUNTED = (PublicationState.POSTED.value, PublicationState.INTERRUPTED.value)


class Refusal(enum.StrEnum):
    POSTED = "posted"
    INTERRUPTED = "interrupted"
    DAILY_LIMIT = "daily_limit"
    BUSY = "busy"


class PublishRefused(InvalidTransition):
    """A publish the guards refuse; `reason` says which, `retry_at` when it may go."""

    def __init__(self, message: str, *, reason: Refusal, retry_at: datetime | None = None):
        super().__init__(message, detail={"reason": reason.value})
        self.reason = reason
        self.retry_at = retry_at


@dataclass(frozen=True)
class PostRecord:
    id: int
    topic: str
    day: str
    state: PublicationState
    claimed_at: datetime
    posted_at: datetime | None
    media_id: str | None
    trace_id: str | None
    forced: bool

    @classmethod
    def of(cls, row: Publication) -> PostRecord:
        return cls(
            id=row.id,
            topic=row.topic,
            day=row.day,
            state=PublicationState(row.state),
            claimed_at=row.claimed_at,
            posted_at=row.posted_at,
            media_id=row.media_id,
            trace_id=row.trace_id,
            forced=row.forced,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "day": self.day,
            "state": self.state.value,
            "claimed_at": self.claimed_at.isoformat(),
            "posted_at": self.posted_at.isoformat() if self.posted_at else None,
            "media_id": self.media_id,
            "trace_id": self.trace_id,
            "forced": self.forced,
        }

    def said(self) -> str:
        """`media 18000000000000000 at 2026-01-30 09:00 UTC, trace SF-...`."""
        when = self.posted_at or self.claimed_at
        parts = [
            f"media {self.media_id}" if self.media_id else "",
            f"at {when:%Y-%m-%d %H:%M} UTC",
        ]
        if self.trace_id:
            parts.append(f"trace {self.trace_id}")
        return ", ".join(p for p in parts if p)


def day_of(moment: datetime, zone: ZoneInfo) -> str:
    """The calendar day a moment falls on in the publishing time zone, YYYY-MM-DD."""
    if moment.tzinfo is None:
        raise ValueError("day_of needs an aware datetime")
    return moment.astimezone(zone).date().isoformat()


def next_day_start(moment: datetime, zone: ZoneInfo) -> datetime:
    """Midnight after `moment` in the publishing time zone, as an aware datetime."""
    local = moment.astimezone(zone)
    return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)


def refusal(
    *,
    topic: str,
    of_topic: Sequence[PostRecord],
    today: Sequence[PostRecord],
    day: str,
    limit: int,
    force: bool,
) -> tuple[Refusal, str] | None:
    """Why publishing `topic` now must not go ahead, or None. `--force` overrides both
    guards (a person who checked the account decided)."""
    if force:
        return None
    counted = [p for p in of_topic if p.state.value in COUNTED]
    if counted:
        last = counted[-1]
        if last.state is PublicationState.INTERRUPTED:
            return (
                Refusal.INTERRUPTED,
                f"a publish of {topic} was interrupted ({last.said()}): whether Instagram "
                f"posted it is unknown; check the account, then publish with --force",
            )
        return (
            Refusal.POSTED,
            f"{topic} is already posted ({last.said()}); to post it again, use --force",
        )
    posted_today = [p for p in today if p.state.value in COUNTED]
    if len(posted_today) >= limit:
        names = ", ".join(p.topic for p in posted_today)
        return (
            Refusal.DAILY_LIMIT,
            f"the daily limit is reached: {len(posted_today)} of PUBLISH_DAILY_LIMIT={limit} "
            f"on {day} ({names}); publish tomorrow, or now with --force",
        )
    return None


class PublicationService:
    """Claims, settles and reads publications (the CLI, the bot and the retry jobs alike)."""

    def __init__(self, db: Database, clock: Clock, *, zone: ZoneInfo, daily_limit: int) -> None:
        self._db = db
        self._clock = clock
        self.zone = zone
        self.daily_limit = daily_limit

    def today(self) -> str:
        return day_of(self._clock.now(), self.zone)

    async def of_topic(self, topic: str) -> list[PostRecord]:
        async with self._db.read() as session:
            rows = await session.scalars(
                select(Publication).where(Publication.topic == topic).order_by(Publication.id)
            )
            return [PostRecord.of(r) for r in rows]

    async def on_day(self, day: str) -> list[PostRecord]:
        async with self._db.read() as session:
            rows = await session.scalars(
                select(Publication).where(Publication.day == day).order_by(Publication.id)
            )
            return [PostRecord.of(r) for r in rows]

    async def check(self, topic: str, *, force: bool = False) -> tuple[Refusal, str] | None:
        """The guards as `claim` would apply them now (for `publish --dry-run`)."""
        day = self.today()
        return refusal(
            topic=topic,
            of_topic=await self.of_topic(topic),
            today=await self.on_day(day),
            day=day,
            limit=self.daily_limit,
            force=force,
        )

    async def claim(
        self, topic: str, *, actor: str, force: bool, job_id: int | None = None
    ) -> int:
        """Check the guards and claim the topic in one transaction; the claim's id, or
        `PublishRefused` saying why not."""
        now = self._clock.now()
        day = day_of(now, self.zone)
        async with self._db.write() as session:
            # A claim nobody settled belongs to a run that died: said so for good, even if
            # this claim is refused.
            await session.execute(
                update(Publication)
                .where(
                    Publication.state == PublicationState.POSTING.value,
                    Publication.claimed_at < now - STALE_CLAIM,
                )
                .values(state=PublicationState.INTERRUPTED.value)
            )
        try:
            async with self._db.write() as session:
                busy = await session.scalar(
                    select(Publication).where(Publication.state == PublicationState.POSTING.value)
                )
                if busy is not None:
                    raise PublishRefused(
                        f"another publish is in progress ({busy.topic}, since "
                        f"{busy.claimed_at:%H:%M:%S} UTC); try again in a minute",
                        reason=Refusal.BUSY,
                        retry_at=now + timedelta(minutes=1),
                    )
                rows = await session.scalars(
                    select(Publication)
                    .where((Publication.topic == topic) | (Publication.day == day))
                    .order_by(Publication.id)
                )
                records = [PostRecord.of(r) for r in rows]
                refused = refusal(
                    topic=topic,
                    of_topic=[r for r in records if r.topic == topic],
                    today=[r for r in records if r.day == day],
                    day=day,
                    limit=self.daily_limit,
                    force=force,
                )
                if refused is not None:
                    reason, message = refused
                    retry_at = (
                        next_day_start(now, self.zone) if reason is Refusal.DAILY_LIMIT else None
                    )
                    raise PublishRefused(message, reason=reason, retry_at=retry_at)
                row = Publication(
                    topic=topic,
                    day=day,
                    state=PublicationState.POSTING.value,
                    claimed_at=now,
                    job_id=job_id,
                    actor=actor[:200],
                    forced=force,
                )
                session.add(row)
                await session.flush()
                return row.id
        except IntegrityError:
            # Another process claimed between our read and our insert (PostgreSQL).
            raise PublishRefused(
                "another publish is in progress; try again in a minute",
                reason=Refusal.BUSY,
                retry_at=now + timedelta(minutes=1),
            ) from None

    async def posted(self, claim_id: int, *, media_id: str, trace_id: str) -> None:
        await self._settle(
            claim_id,
            state=PublicationState.POSTED,
            media_id=media_id,
            trace_id=trace_id,
            posted_at=self._clock.now(),
        )

    async def not_posted(self, claim_id: int, *, trace_id: str | None) -> None:
        """The run failed before Instagram published anything: the claim is released."""
        await self._settle(claim_id, state=PublicationState.FAILED, trace_id=trace_id)

    async def interrupted(self, claim_id: int, *, trace_id: str | None) -> None:
        """The publish call got no answer: Instagram may have posted (see INTERRUPTED)."""
        await self._settle(claim_id, state=PublicationState.INTERRUPTED, trace_id=trace_id)

    async def _settle(self, claim_id: int, *, state: PublicationState, **values: Any) -> None:
        async with self._db.write() as session:
            await session.execute(
                update(Publication)
                .where(Publication.id == claim_id)
                .values(state=state.value, **values)
            )
