"""Storm digests: new cards a group's limits cannot carry fold into one message, edited in place.

Telegram lets a bot send 20 messages a minute to a group (16 of them for P2/P3, the rest kept
for P0/P1 and people's actions: bot/limits.py). When more new P2/P3 cards wait than
that minute can still take, the sender folds the rest into the chat's storm digest: one
message with counts by severity and source, the newest titles and a button that lists them.
A folded incident's later changes edit the digest (spaced, coalesced) instead of posting; an
urgent change (P0/P1, a person's action, opening it from the list) gives it its own card.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.clock import Clock
from services.db import Database
from services.models import (
    Incident,
    IncidentMessage,
    IncidentState,
    OutboxMessage,
    OutboxStatus,
    StormDigest,
    StormEntry,
)
from services.notify.outbox import (
    PERSON_PRIORITY,
    Op,
    Pending,
    Target,
    add_row,
    unique_key,
)

# The priority of a digest's own message: the P2/P3 tier it stands for.
DIGEST_PRIORITY = 2
# Titles the digest shows (the newest), sources it names, entries per page of its list.
NEWEST = 5
SOURCES = 5
PAGE = 8
# At most this many of a minute's P2/P3 messages are kept for the digest's own edits.
MAX_DIGEST_SLOTS = 8


# -- the decision ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatBacklog:
    """What waits for one group chat, in P2/P3 messages, beside its window's state."""

    # New cards: P2/P3 incidents with no card posted and not folded yet.
    new: int
    # Everything else in the P2/P3 tier (edits of posted cards, replies, texts).
    other: int
    # P2/P3 messages the group's minute still takes now (the Delivery's `room`, bot/limits.py).
    room: int
    # P2/P3 messages a whole minute of the group takes (`per_minute`).
    capacity: int
    # A digest of this chat is open: the storm is on.
    storm: bool
    # Messages of the minute the digest's own edits need while the storm lasts.
    digest_slots: int


@dataclass(frozen=True)
class StormPlan:
    # How many of the new cards, the last in sending order, fold into the digest.
    fold: int = 0
    # The queue has drained: close the digest (nothing new folds in; it still follows).
    close: bool = False


def plan(backlog: ChatBacklog) -> StormPlan:
    """Fold what the group's minute cannot carry; close the storm once its queue drains.

    Without a storm, new cards go as cards while a minute of the group carries them beside
    the rest of the queue (and one card alone never folds: a digest would cost the same
    message). Past that, and for as long as the storm lasts, the digest keeps `digest_slots`
    of what the minute still takes for its edits, and only the new cards that fit beside
    them go as cards."""
    if backlog.storm and backlog.new == 0 and backlog.other == 0:
        return StormPlan(close=True)
    if not backlog.storm and backlog.new <= max(backlog.capacity - backlog.other, 1):
        return StormPlan()
    kept = max(0, backlog.room - backlog.other - backlog.digest_slots)
    return StormPlan(fold=max(0, backlog.new - kept))


def digest_slots(edit_every: timedelta) -> int:
    """A minute's worth of digest edits at one per `edit_every`, within MAX_DIGEST_SLOTS."""
    return max(1, min(MAX_DIGEST_SLOTS, math.ceil(60 / edit_every.total_seconds())))


# -- what the digest shows ------------------------------------------------------------------


@dataclass(frozen=True)
class DigestEntry:
    incident_id: int
    severity: str
    title: str
    state: str
    carded: bool


@dataclass(frozen=True)
class DigestPage:
    digest_id: int
    page: int
    pages: int
    total: int
    entries: list[DigestEntry]


@dataclass
class _ChatQueue:
    new: list[int] = field(default_factory=list)  # outbox row ids, in sending order
    absorb: list[int] = field(default_factory=list)
    other: int = 0
    thread_id: int | None = None


# A chat's (room now, capacity of a minute) for P2/P3; None for a chat without a minute limit.
RoomOf = Callable[[int], tuple[int, int] | None]


def _sort_out(pending: Sequence[Pending]) -> tuple[dict[int, _ChatQueue], set[int]]:
    """The pending P2/P3 work of each group chat, sorted out (its new cards in sending
    order), and the digests that have an edit queued already."""
    queues: dict[int, _ChatQueue] = {}
    queued_digests: set[int] = set()
    for row in sorted(pending, key=lambda r: (r.priority, r.id)):
        if row.chat_id >= 0:
            continue  # a person's direct messages: no group minute, no digest
        if row.op == Op.DIGEST:
            queued_digests.add(row.digest_id)
            continue
        if row.priority < DIGEST_PRIORITY:
            continue  # urgent: never folded, never counted against the P2/P3 minute
        queue = queues.setdefault(row.chat_id, _ChatQueue(thread_id=row.thread_id))
        if row.incident_id is not None and row.folded and not row.opened:
            queue.absorb.append(row.id)
        elif row.op == Op.CARD and row.incident_id is not None and not (row.carded or row.folded):
            queue.new.append(row.id)
        else:
            queue.other += 1
    return queues, queued_digests


@dataclass(frozen=True)
class Settled:
    """What a settle did to the step's pending rows, so the sender chooses from them."""

    # Seconds until the next digest edit falls due (None when none waits).
    due: float | None = None
    # Rows folded into a digest or absorbed by one: no longer pending.
    taken: frozenset[int] = frozenset()
    # The digest edit rows it queued.
    queued: tuple[Pending, ...] = ()

    def left(self, pending: Sequence[Pending]) -> list[Pending]:
        """The rows still pending after this settle, by id: what a read now would give."""
        return [row for row in pending if row.id not in self.taken] + list(self.queued)


class StormDigests:
    """The digests' state in the database; the sender calls `settle` before each choice."""

    def __init__(self, db: Database, clock: Clock, *, edit_every: timedelta) -> None:
        self._db = db
        self._clock = clock
        self.edit_every = edit_every
        self._slots = digest_slots(edit_every)

    # -- the sender's pass ------------------------------------------------------------

    async def settle(self, pending: Sequence[Pending], room_of: RoomOf) -> Settled:
        """Fold, absorb and close as `plan` says for every group chat with P2/P3 work in
        `pending` (the sender's read of this step), and queue each digest edit that is due."""
        queues, digest_rows = _sort_out(pending)
        async with self._db.read() as session:
            open_digests = {
                chat_id: digest_id
                for chat_id, digest_id in await session.execute(
                    select(StormDigest.chat_id, StormDigest.id).where(
                        StormDigest.closed_at.is_(None)
                    )
                )
            }
        folds: dict[int, list[int]] = {}
        closing: list[int] = []
        absorbing: list[int] = []
        for chat_id in set(queues) | set(open_digests):
            window = room_of(chat_id)
            if window is None:
                continue
            room, capacity = window
            queue = queues.get(chat_id) or _ChatQueue()
            absorbing += queue.absorb
            decided = plan(
                ChatBacklog(
                    new=len(queue.new),
                    other=queue.other,
                    room=room,
                    capacity=capacity,
                    storm=chat_id in open_digests,
                    digest_slots=self._slots,
                )
            )
            if decided.fold:
                folds[chat_id] = queue.new[len(queue.new) - decided.fold :]
            if decided.close and chat_id in open_digests:
                closing.append(open_digests[chat_id])
        now = self._clock.now()
        taken: set[int] = set()
        if folds or closing or absorbing:
            async with self._db.write() as session:
                for chat_id, row_ids in folds.items():
                    taken |= await self._fold(
                        session, chat_id, queues[chat_id].thread_id, row_ids, now
                    )
                taken |= await self._absorb(session, absorbing, now)
                for digest_id in closing:
                    digest = await session.get(StormDigest, digest_id)
                    if digest is not None and digest.closed_at is None:
                        digest.closed_at = now
                        digest.changed_at = now
        due, queued = await self._queue_due(digest_rows, now)
        return Settled(due=due, taken=frozenset(taken), queued=queued)

    async def _fold(
        self,
        session: AsyncSession,
        chat_id: int,
        thread_id: int | None,
        row_ids: list[int],
        now: datetime,
    ) -> set[int]:
        digest = await session.scalar(
            select(StormDigest).where(
                StormDigest.chat_id == chat_id, StormDigest.closed_at.is_(None)
            )
        )
        if digest is None:
            digest = StormDigest(
                chat_id=chat_id, thread_id=thread_id, opened_at=now, changed_at=now
            )
            session.add(digest)
            await session.flush()
        folded_ids: set[int] = set()
        for row_id in row_ids:
            row = await session.get(OutboxMessage, row_id)
            if row is None or row.status != OutboxStatus.PENDING.value or row.incident_id is None:
                continue
            folded = await session.get(StormEntry, row.incident_id)
            if row.priority < DIGEST_PRIORITY or folded is not None:
                continue  # raised to the urgent tier since we looked: it gets its card
            session.add(
                StormEntry(incident_id=row.incident_id, digest_id=digest.id, folded_at=now)
            )
            row.status = OutboxStatus.FOLDED.value
            folded_ids.add(row_id)
        digest.changed_at = now
        return folded_ids

    async def _absorb(self, session: AsyncSession, row_ids: list[int], now: datetime) -> set[int]:
        """A folded incident changed: its digest shows it, no card is posted."""
        absorbed: set[int] = set()
        for row_id in row_ids:
            row = await session.get(OutboxMessage, row_id)
            if row is None or row.status != OutboxStatus.PENDING.value or row.incident_id is None:
                continue
            if row.priority < DIGEST_PRIORITY:
                continue
            entry = await session.get(StormEntry, row.incident_id)
            if entry is None or entry.opened_at is not None:
                continue
            row.status = OutboxStatus.FOLDED.value
            absorbed.add(row_id)
            digest = await session.get(StormDigest, entry.digest_id)
            if digest is not None:
                digest.changed_at = now
        return absorbed

    async def _queue_due(
        self, queued: set[int], now: datetime
    ) -> tuple[float | None, tuple[Pending, ...]]:
        """An edit row for each digest whose shown state is out of date and whose last edit
        is `edit_every` ago; the seconds until the next one falls due, and the rows."""
        async with self._db.read() as session:
            stale = list(
                await session.scalars(
                    select(StormDigest).where(
                        or_(
                            StormDigest.sent_at.is_(None),
                            StormDigest.changed_at > StormDigest.sent_at,
                        )
                    )
                )
            )
        due: list[int] = []
        wait: float | None = None
        for digest in stale:
            if digest.id in queued:
                continue
            at = digest.sent_at + self.edit_every if digest.sent_at is not None else now
            if at <= now:
                due.append(digest.id)
            else:
                left = (at - now).total_seconds()
                wait = left if wait is None else min(wait, left)
        added: list[OutboxMessage] = []
        if due:
            async with self._db.write() as session:
                for digest_id in due:
                    found = await session.get(StormDigest, digest_id)
                    if found is None:
                        continue
                    added.append(
                        add_row(
                            session,
                            key=await unique_key(session, f"digest:{digest_id}:{now.isoformat()}"),
                            target=Target(found.chat_id, found.thread_id),
                            priority=DIGEST_PRIORITY,
                            incident_id=None,
                            op=Op.DIGEST,
                            payload={"digest_id": digest_id},
                            now=now,
                        )
                    )
        # Committed: each row has its id.
        rows = tuple(
            Pending(
                id=row.id,
                chat_id=row.chat_id,
                thread_id=row.thread_id,
                priority=row.priority,
                op=row.op,
                incident_id=None,
                next_attempt_at=row.next_attempt_at,
                digest_id=int(row.payload["digest_id"]),
            )
            for row in added
        )
        return wait, rows

    # -- after Telegram took a message ---------------------------------------------------

    @staticmethod
    async def digest_sent(
        session: AsyncSession, digest_id: int, message_id: int | None, rendered_at: datetime
    ) -> None:
        """The digest's message shows its state as of `rendered_at` (posted, or edited)."""
        digest = await session.get(StormDigest, digest_id)
        if digest is None:
            return
        if message_id is not None and digest.message_id is None:
            digest.message_id = message_id
        digest.sent_at = rendered_at

    @staticmethod
    async def digest_gone(session: AsyncSession, digest_id: int) -> None:
        """Its message was deleted (or is too old to edit): the next send posts it afresh."""
        digest = await session.get(StormDigest, digest_id)
        if digest is not None:
            digest.message_id = None

    @staticmethod
    async def card_posted(session: AsyncSession, incident_id: int, now: datetime) -> None:
        """A folded incident got its own card: from now on it behaves like any carded one."""
        entry = await session.get(StormEntry, incident_id)
        if entry is None or entry.opened_at is not None:
            return
        entry.opened_at = now
        digest = await session.get(StormDigest, entry.digest_id)
        if digest is not None:
            digest.changed_at = now

    # -- reads for the message and its list ---------------------------------------------

    async def message_of(self, digest_id: int) -> tuple[int, int] | None:
        """(chat, message) of a digest that is posted."""
        async with self._db.read() as session:
            digest = await session.get(StormDigest, digest_id)
        if digest is None or digest.message_id is None:
            return None
        return digest.chat_id, digest.message_id

    async def view(self, digest_id: int) -> dict[str, Any] | None:
        """What the digest's message shows, as JSON for the renderer."""
        async with self._db.read() as session:
            digest = await session.get(StormDigest, digest_id)
            if digest is None:
                return None
            rows = (
                await session.execute(
                    select(
                        Incident.id,
                        Incident.severity,
                        Incident.title,
                        Incident.source,
                        Incident.state,
                        StormEntry.opened_at,
                        Incident.occurrence_count,
                    )
                    .join(StormEntry, StormEntry.incident_id == Incident.id)
                    .where(StormEntry.digest_id == digest_id)
                    .order_by(Incident.id.desc())
                )
            ).all()
        severities = Counter(str(row[1]) for row in rows)
        sources = Counter(str(row[3]) for row in rows)
        states = Counter(str(row[4]) for row in rows)
        named = sources.most_common(SOURCES)
        return {
            "id": digest.id,
            "total": len(rows),
            "severities": dict(sorted(severities.items())),
            "sources": [[name, count] for name, count in named],
            "sources_other": sum(sources.values()) - sum(count for _, count in named),
            "open": len(rows) - states[IncidentState.RESOLVED.value],
            "resolved": states[IncidentState.RESOLVED.value],
            "carded": sum(1 for row in rows if row[5] is not None),
            "occurrences": sum(int(row[6]) for row in rows),
            "newest": [
                {"id": row[0], "severity": str(row[1]), "title": row[2]} for row in rows[:NEWEST]
            ],
            "opened_at": digest.opened_at.isoformat(),
            "changed_at": digest.changed_at.isoformat(),
            "closed_at": digest.closed_at.isoformat() if digest.closed_at else None,
        }

    async def page(self, digest_id: int, page: int) -> DigestPage | None:
        """One page of the digest's list, newest first."""
        async with self._db.read() as session:
            if await session.get(StormDigest, digest_id) is None:
                return None
            total = int(
                await session.scalar(
                    select(func.count())
                    .select_from(StormEntry)
                    .where(StormEntry.digest_id == digest_id)
                )
                or 0
            )
            pages = max(1, math.ceil(total / PAGE))
            page = min(max(0, page), pages - 1)
            rows = (
                await session.execute(
                    select(
                        Incident.id,
                        Incident.severity,
                        Incident.title,
                        Incident.state,
                        StormEntry.opened_at,
                    )
                    .join(StormEntry, StormEntry.incident_id == Incident.id)
                    .where(StormEntry.digest_id == digest_id)
                    .order_by(Incident.id.desc())
                    .offset(page * PAGE)
                    .limit(PAGE)
                )
            ).all()
        entries = [
            DigestEntry(i, str(severity), title, str(state), opened is not None)
            for i, severity, title, state, opened in rows
        ]
        return DigestPage(digest_id, page, pages, total, entries)

    # -- a person opens an entry -------------------------------------------------------

    async def open(self, incident_id: int) -> bool:
        """Queue the folded incident's own card, in the urgent tier (a person asked for it);
        False when it is not folded (it has its card, or never was in a digest)."""
        now = self._clock.now()
        async with self._db.write() as session:
            entry = await session.get(StormEntry, incident_id)
            if entry is None or await session.get(IncidentMessage, incident_id) is not None:
                return False
            digest = await session.get(StormDigest, entry.digest_id)
            if digest is None:
                return False
            waiting = await session.scalar(
                select(OutboxMessage).where(
                    OutboxMessage.incident_id == incident_id,
                    OutboxMessage.op == Op.CARD,
                    OutboxMessage.status == OutboxStatus.PENDING.value,
                )
            )
            if waiting is not None:
                waiting.priority = min(waiting.priority, PERSON_PRIORITY)
                return True
            add_row(
                session,
                key=await unique_key(session, f"open:{incident_id}:{now.isoformat()}"),
                target=Target(digest.chat_id, digest.thread_id),
                priority=PERSON_PRIORITY,
                incident_id=incident_id,
                op=Op.CARD,
                payload={"merges": 0},
                now=now,
            )
        return True
