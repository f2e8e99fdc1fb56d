"""The outbox sender: drains pending rows to the chat (a `Delivery`) within its limits, in
priority order."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import case, delete, select

from services.clock import Clock
from services.db import FENCE, Database
from services.incident_types import IncidentView
from services.models import (
    Incident,
    IncidentMessage,
    OutboxMessage,
    OutboxStatus,
    StormEntry,
)
from services.notify.delivery import (
    Delivery,
    DeliveryError,
    Refusal,
    Refused,
    RetryAfter,
    Unavailable,
)
from services.notify.outbox import Doorbell, Op, Pending, Target, add_row
from services.notify.storm import DIGEST_PRIORITY, StormDigests
from services.scheduler import Gate

log = logging.getLogger(__name__)

# Sent and dead rows are kept this long for inspection, then pruned.
KEEP_SENT = timedelta(days=7)


@dataclass(frozen=True)
class Rendered:
    """A message ready for Telegram: HTML, its plain-text twin, buttons, an optional file."""

    html: str
    plain: str
    reply_markup: dict[str, Any] | None = None
    # Set when `html` had to be trimmed: the whole text, sent as a document beside it.
    full_text: str | None = None
    filename: str = "message.txt"


# Facts about an incident that live outside its row (the next escalation step, unticked
# checklist items): merged into a card's payload at send time so the card shows them.
CardFacts = Callable[[int], Awaitable[dict[str, Any]]]


class Renderer(Protocol):
    """Turns an outbox row into text; the bot supplies it (language, HTML, buttons)."""

    def render(
        self, op: str, payload: dict[str, Any], incident: IncidentView | None, now: datetime
    ) -> Rendered: ...


@dataclass
class SenderStats:
    sent: int = 0
    edits: int = 0
    retry_after: int = 0
    failures: int = 0
    dead: int = 0
    plain_resends: int = 0


@dataclass(frozen=True)
class _Candidate:
    id: int
    priority: int
    chat_id: int
    stream: str
    next_attempt_at: datetime


def _candidates(pending: list[Pending]) -> list[_Candidate]:
    """Pending rows that are first in their stream (an incident, or a chat), by priority."""
    heads: dict[str, _Candidate] = {}
    for row in sorted(pending, key=lambda r: r.id):
        stream = f"i{row.incident_id}" if row.incident_id is not None else f"c{row.chat_id}"
        if stream not in heads:
            heads[stream] = _Candidate(
                row.id, row.priority, row.chat_id, stream, row.next_attempt_at
            )
    return sorted(heads.values(), key=lambda c: (c.priority, c.id))


class OutboxSender:
    """One loop per process; every send is preceded by a committed row and followed by a mark."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        delivery: Delivery,
        renderer: Renderer,
        *,
        max_backoff: float = 30.0,
        stats: SenderStats | None = None,
        card_facts: CardFacts | None = None,
        gate: Gate | None = None,
        storms: StormDigests | None = None,
        doorbell: Doorbell | None = None,
    ) -> None:
        self._card_facts = card_facts
        # New cards a group's minute cannot carry fold into its storm digest.
        self._storms = storms
        # Several instances: only the leader sends, and its bookkeeping writes are fenced.
        self._gate = gate
        self._db = db
        self._clock = clock
        self._delivery = delivery
        self._renderer = renderer
        self._max_backoff = max_backoff
        # Rung by the outbox's writers (services/notify/outbox.py): rows to send.
        self._doorbell = doorbell or Doorbell()
        self._task: asyncio.Task[None] | None = None
        self._blocked_until: dict[int, float] = {}
        self._global_blocked_until = 0.0
        self._backoff = 0.0
        self.stats = stats or SenderStats()
        # When Telegram started failing (None while it works); read by the fallback.
        self.failing_since: datetime | None = None
        self.last_success_at: datetime | None = None
        self.last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------

    def wake(self) -> None:
        self._doorbell.ring()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def prune(self, *, older_than: timedelta = KEEP_SENT) -> int:
        """Forget rows Telegram settled long ago; the timeline keeps the story."""
        cutoff = self._clock.now() - older_than
        async with self._db.write() as session:
            result = await session.execute(
                delete(OutboxMessage).where(
                    OutboxMessage.status != OutboxStatus.PENDING.value,
                    OutboxMessage.created_at < cutoff,
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def _run(self) -> None:
        if self._gate is not None and self._gate.running:
            # This task's own context: every write below checks the fencing token.
            FENCE.set(self._gate)
        next_prune = 0.0
        while True:
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + 3600
                try:
                    await self.prune()
                except Exception:
                    log.exception("outbox prune failed")
            seen = self._doorbell.rings
            try:
                delay = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad row must not stop the sender
                log.exception("outbox sender step failed")
                delay = 1.0
            if delay > 0:
                await self._doorbell.wait(seen, min(delay, 1.0))

    # -- one step -----------------------------------------------------------------

    async def step(self) -> float:
        """Send at most one row; return how long to wait before the next step (0: at once)."""
        if self._gate is not None and self._gate.running and not self._gate.is_leader:
            return 1.0  # deposed (or not yet confirmed): another instance may be sending
        pending = await self.pending()
        digest_due: float | None = None
        if self._storms is not None:
            # Fold what the groups' minutes cannot carry before choosing what goes next. What
            # it took is dropped from this list rather than read again: it writes on about
            # half a storm's steps (47 of 85 in the 500-alert benchmark).
            settled = await self._storms.settle(pending, self._room)
            digest_due = settled.due
            pending = settled.left(pending)
        candidates = _candidates(pending)
        if not candidates:
            return 60.0 if digest_due is None else max(min(digest_due, 60.0), 0.005)
        now_wall = self._clock.now()
        now = time.monotonic()
        best: _Candidate | None = None
        wait = 60.0
        # A chat whose earlier message waits (its retry time after a failure) sends nothing
        # else before it, so a backlog arrives in the order it was written.
        held: set[int] = set()
        for cand in candidates:
            if cand.chat_id in held:
                continue
            until = max(
                self._global_blocked_until - now,
                self._blocked_until.get(cand.chat_id, 0.0) - now,
                (cand.next_attempt_at - now_wall).total_seconds(),
                self._delivery.wait(cand.chat_id, cand.priority, now),
            )
            if until <= 0:
                best = cand
                break
            wait = min(wait, until)
            held.add(cand.chat_id)
        if best is None:
            if digest_due is not None:
                wait = min(wait, digest_due)
            return max(wait, 0.005)
        await self._deliver(best.id)
        return 0.0

    def _room(self, chat_id: int) -> tuple[int, int] | None:
        room = self._delivery.room(chat_id, DIGEST_PRIORITY, time.monotonic())
        capacity = self._delivery.per_minute(chat_id, DIGEST_PRIORITY)
        return None if room is None or capacity is None else (room, capacity)

    async def pending(self) -> list[Pending]:
        """Every pending row, by id: one read a step, for the storm's settle and the choice."""
        async with self._db.read() as session:
            rows = (
                await session.execute(
                    select(
                        OutboxMessage.id,
                        OutboxMessage.chat_id,
                        OutboxMessage.thread_id,
                        OutboxMessage.priority,
                        OutboxMessage.op,
                        OutboxMessage.incident_id,
                        OutboxMessage.next_attempt_at,
                        # Only a digest row's payload is needed (its digest id).
                        case((OutboxMessage.op == Op.DIGEST, OutboxMessage.payload)).label(
                            "digest"
                        ),
                        IncidentMessage.incident_id.label("carded"),
                        StormEntry.incident_id.label("folded"),
                        StormEntry.opened_at.label("opened"),
                    )
                    .outerjoin(
                        IncidentMessage, IncidentMessage.incident_id == OutboxMessage.incident_id
                    )
                    .outerjoin(StormEntry, StormEntry.incident_id == OutboxMessage.incident_id)
                    .where(OutboxMessage.status == OutboxStatus.PENDING.value)
                    .order_by(OutboxMessage.id)
                )
            ).all()
        return [
            Pending(
                id=row.id,
                chat_id=row.chat_id,
                thread_id=row.thread_id,
                priority=row.priority,
                op=row.op,
                incident_id=row.incident_id,
                next_attempt_at=row.next_attempt_at,
                digest_id=int((row.digest or {}).get("digest_id", 0)),
                carded=row.carded is not None,
                folded=row.folded is not None,
                opened=row.opened is not None,
            )
            for row in rows
        ]

    async def _deliver(self, row_id: int) -> None:
        async with self._db.read() as session:
            row = await session.get(OutboxMessage, row_id)
            if row is None or row.status != OutboxStatus.PENDING.value:
                return
            # A direct page names its incident in the payload: it is in the person's stream.
            about = row.incident_id or row.payload.get("incident_id")
            incident_row = await session.get(Incident, int(about)) if about else None
            incident = IncidentView.of(incident_row) if incident_row else None
            # The incident's card; a page links to it ("Open in group").
            posted = await session.get(IncidentMessage, int(about)) if about else None
            merges = int(row.payload.get("merges", 0))
            chat_id, thread_id, op, payload = row.chat_id, row.thread_id, row.op, row.payload
            priority = row.priority
            posted_at = (posted.chat_id, posted.message_id) if posted else None
            card_at = (
                {"chat_id": posted.chat_id, "message_id": posted.message_id}
                | ({"thread_id": posted.thread_id} if posted.thread_id else {})
                if posted
                else None
            )
        now_wall = self._clock.now()
        digest_id = int(payload.get("digest_id", 0)) if op == Op.DIGEST else 0
        if op == Op.DIGEST:
            shown = await self._storms.view(digest_id) if self._storms else None
            if shown is None or self._storms is None:
                await self._mark(row_id, OutboxStatus.DEAD, error="no such storm digest")
                return
            payload = {**payload, "digest": shown}
            posted_at = await self._storms.message_of(digest_id)
        if op in {Op.CARD, Op.DOCUMENT} and incident is not None and self._card_facts:
            payload = {**payload, **await self._card_facts(incident.id)}
        if op == Op.CARD and posted_at is None and merges == 0:
            # A new card shows what the incident is; the change that made it is no news.
            payload = {k: v for k, v in payload.items() if k != "last"}
        if op == Op.DIRECT:
            if card_at is not None:
                payload = {**payload, "card": card_at}
            posted_at = None  # a page is a message of its own, never an edit or a reply
        rendered = self._renderer.render(op, payload, incident, now_wall)
        self._delivery.record(chat_id, time.monotonic())
        new_message: int | None = None
        try:
            if op in {Op.CARD, Op.DIGEST} and posted_at is not None:
                await self._edit(posted_at[0], posted_at[1], rendered)
                self.stats.edits += 1
            elif op == Op.FILE:
                new_message = await self._delivery.send_document(
                    chat_id,
                    str(payload.get("filename") or "file.bin"),
                    base64.b64decode(str(payload.get("content") or "")),
                    caption=rendered.plain or None,
                    thread_id=thread_id,
                )
            elif op == Op.DOCUMENT:
                reply_to = posted_at[1] if posted_at else None
                new_message = await self._delivery.send_document(
                    chat_id,
                    rendered.filename,
                    (rendered.full_text or rendered.plain).encode(),
                    thread_id=thread_id,
                    reply_to=reply_to,
                )
            else:
                reply_to = posted_at[1] if op == Op.REPLY and posted_at else None
                new_message = await self._send(
                    chat_id,
                    rendered,
                    thread_id=thread_id,
                    reply_to=reply_to,
                    markup=rendered.reply_markup
                    if op in (Op.CARD, Op.DIRECT, Op.DIGEST)
                    else None,
                )
        except RetryAfter as exc:
            self.stats.retry_after += 1
            self._blocked_until[chat_id] = time.monotonic() + exc.retry_after
            await self._reschedule(row_id, exc, timedelta(seconds=exc.retry_after))
            return
        except Refused as exc:
            if exc.reason is Refusal.FORBIDDEN and op != Op.DIRECT:
                # Kicked from the team chat: keep the alerts and let the fallback carry them.
                await self._unavailable(row_id, exc, now_wall)
                return
            if op == Op.CARD and posted_at is not None and exc.reason is Refusal.TARGET_GONE:
                # The alert message was deleted or is too old to edit: post it afresh.
                await self._forget_card(row_id)
                return
            if op == Op.DIGEST and posted_at is not None and exc.reason is Refusal.TARGET_GONE:
                async with self._db.write() as session:
                    await StormDigests.digest_gone(session, digest_id)
                return
            self.stats.dead += 1
            log.warning("outbox row %s refused by Telegram: %s", row_id, exc)
            await self._mark(row_id, OutboxStatus.DEAD, error=str(exc))
            return
        except Unavailable as exc:
            await self._unavailable(row_id, exc, now_wall)
            return
        self._success()
        await self._mark_sent(
            row_id,
            merges=merges,
            new_message=new_message,
            rendered=rendered,
            op=op,
            target=Target(chat_id, thread_id),
            priority=priority,
            rendered_at=now_wall,
        )

    def _success(self) -> None:
        if self.failing_since is not None:
            log.info(
                "Telegram is reachable again (failing since %s); delivering the backlog",
                self.failing_since.isoformat(timespec="seconds"),
            )
        self._backoff = 0.0
        self.failing_since = None
        self.last_error = None
        self.last_success_at = self._clock.now()
        self.stats.sent += 1

    async def _unavailable(self, row_id: int, exc: DeliveryError, now_wall: datetime) -> None:
        self.stats.failures += 1
        self._backoff = min(self._max_backoff, max(0.25, self._backoff * 2))
        self._global_blocked_until = time.monotonic() + self._backoff
        if self.failing_since is None:
            log.warning("Telegram is unreachable (%s); messages wait in the outbox", exc)
            self.failing_since = now_wall
        self.last_error = str(exc)
        await self._reschedule(row_id, exc, timedelta(seconds=self._backoff))

    async def _send(
        self,
        chat_id: int,
        rendered: Rendered,
        *,
        thread_id: int | None,
        reply_to: int | None,
        markup: dict[str, Any] | None,
    ) -> int:
        try:
            return await self._delivery.send_message(
                chat_id, rendered.html, thread_id=thread_id, reply_to=reply_to, reply_markup=markup
            )
        except Refused as exc:
            if exc.reason is not Refusal.BAD_MARKUP:
                raise
        # Never drop a message over markup: say it plainly instead.
        self.stats.plain_resends += 1
        return await self._delivery.send_message(
            chat_id,
            rendered.plain,
            html=False,
            thread_id=thread_id,
            reply_to=reply_to,
            reply_markup=markup,
        )

    async def _edit(self, chat_id: int, message_id: int, rendered: Rendered) -> None:
        try:
            await self._delivery.edit_message(
                chat_id, message_id, rendered.html, reply_markup=rendered.reply_markup
            )
            return
        except Refused as exc:
            if exc.reason is Refusal.NOT_MODIFIED:
                return
            if exc.reason is not Refusal.BAD_MARKUP:
                raise
        self.stats.plain_resends += 1
        try:
            await self._delivery.edit_message(
                chat_id,
                message_id,
                rendered.plain,
                html=False,
                reply_markup=rendered.reply_markup,
            )
        except Refused as again:
            if again.reason is not Refusal.NOT_MODIFIED:
                raise

    # -- bookkeeping --------------------------------------------------------------

    async def _reschedule(self, row_id: int, exc: DeliveryError, delay: timedelta) -> None:
        async with self._db.write() as session:
            row = await session.get(OutboxMessage, row_id)
            if row is None:
                return
            row.attempts += 1
            row.last_error = str(exc)[:500]
            row.next_attempt_at = self._clock.now() + delay

    async def _mark(self, row_id: int, status: OutboxStatus, *, error: str | None) -> None:
        async with self._db.write() as session:
            row = await session.get(OutboxMessage, row_id)
            if row is None:
                return
            row.status = status.value
            row.attempts += 1
            row.last_error = error[:500] if error else None

    async def _forget_card(self, row_id: int) -> None:
        async with self._db.write() as session:
            row = await session.get(OutboxMessage, row_id)
            if row is None or row.incident_id is None:
                return
            posted = await session.get(IncidentMessage, row.incident_id)
            if posted is not None:
                await session.delete(posted)

    async def _mark_sent(
        self,
        row_id: int,
        *,
        merges: int,
        new_message: int | None,
        rendered: Rendered,
        op: str,
        target: Target,
        priority: int,
        rendered_at: datetime,
    ) -> None:
        now = self._clock.now()
        async with self._db.write() as session:
            row = await session.get(OutboxMessage, row_id, with_for_update=True)
            if row is None:
                return
            row.attempts += 1
            row.last_error = None
            if op == Op.DIGEST:
                await StormDigests.digest_sent(
                    session, int(row.payload.get("digest_id", 0)), new_message, rendered_at
                )
            if op == Op.CARD and row.incident_id is not None:
                posted = await session.get(IncidentMessage, row.incident_id)
                if posted is None and new_message is not None:
                    session.add(
                        IncidentMessage(
                            incident_id=row.incident_id,
                            chat_id=target.chat_id,
                            message_id=new_message,
                            thread_id=target.thread_id,
                            posted_at=now,
                        )
                    )
                    await StormDigests.card_posted(session, row.incident_id, now)
                    if rendered.full_text is not None:
                        add_row(
                            session,
                            key=f"{row.idempotency_key}:document",
                            target=target,
                            priority=priority,
                            incident_id=row.incident_id,
                            op=Op.DOCUMENT,
                            payload=dict(row.payload),
                            now=now,
                        )
                elif posted is not None:
                    posted.edited_at = now
                if int(row.payload.get("merges", 0)) != merges:
                    # The incident changed while this was in flight: edit again.
                    row.telegram_message_id = new_message or row.telegram_message_id
                    return
            row.status = OutboxStatus.SENT.value
            row.sent_at = now
            row.telegram_message_id = new_message
