"""The outbox hook: turns each incident change into Telegram work, inside its transaction."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.aio import wait_event
from services.clock import Clock
from services.config import Settings
from services.db import Database
from services.incident_types import ChangeKind, IncidentChange
from services.models import OutboxMessage, OutboxStatus
from services.severity import Severity


class Op:
    """What a row asks of Telegram."""

    # Post the incident's alert message, or edit it once posted (always the latest state).
    CARD = "card"
    # A reply in the alert message's thread (escalation step, missed deadline, ...).
    REPLY = "reply"
    # A direct message to one person (paged at the PD step).
    DIRECT = "direct"
    # A plain message (e.g. the playbook's test message).
    TEXT = "text"
    # The full text of an alert that was too long for one message.
    DOCUMENT = "document"
    # A file of its own (the weekly report's chart): payload filename, base64 content, text.
    FILE = "file"
    # Post or edit a chat's storm digest (services/notify/storm.py): payload digest_id.
    DIGEST = "digest"


# Changes that also get a reply in the alert's thread, besides the edit.
REPLY_KINDS = frozenset(
    {
        ChangeKind.ESCALATED,
        ChangeKind.DEADLINE_MISSED,
        ChangeKind.UNACKNOWLEDGED,
        ChangeKind.SNOOZED,
        # A resolved incident is back: said in its thread, not only by an edit no one sees.
        ChangeKind.REOPENED,
    }
)
FALLBACK_SEVERITIES = frozenset({Severity.P0, Severity.P1})
# Changes a person makes: the edit (and reply) answering them goes in the urgent tier, ahead
# of new P2/P3 cards and occurrence updates, so an Ack during a storm shows within seconds.
PERSON_KINDS = frozenset(
    {
        ChangeKind.ACKNOWLEDGED,
        ChangeKind.RESOLVED,
        ChangeKind.SNOOZED,
        ChangeKind.REOPENED,
        ChangeKind.CHECKLIST,
        ChangeKind.ANNOTATED,
        ChangeKind.POSTMORTEM,
    }
)
# Actors that are people: Telegram users, the CLI's user, an admin API caller.
PERSON_ACTORS = ("tg:", "cli:", "api:")
# The tier a person's answer is sent in: P1's (urgent, within the limits' headroom).
PERSON_PRIORITY = Severity.P1.rank


def priority_of(change: IncidentChange) -> int:
    """The sending order of a change's rows: its severity's rank, raised to the urgent tier
    when it answers a person's action."""
    rank = change.incident.severity.rank
    if change.kind in PERSON_KINDS and change.actor.startswith(PERSON_ACTORS):
        return min(rank, PERSON_PRIORITY)
    return rank


def change_summary(change: IncidentChange) -> dict[str, Any]:
    """The JSON a row keeps of a change, enough to render it later in any language."""
    return {
        "kind": change.kind.value,
        "actor": change.actor,
        "at": change.at.isoformat(),
        "details": change.details,
    }


def change_key(change: IncidentChange) -> str:
    """Deterministic per change: recording the same change twice queues nothing new."""
    view = change.incident
    return f"inc:{view.id}:{change.kind.value}:{change.at.isoformat()}:{view.occurrence_count}"


@dataclass(frozen=True)
class Target:
    chat_id: int
    thread_id: int | None


@dataclass(frozen=True)
class Row:
    """One outbox row a change asks for, before its key is made unique and a card merges."""

    suffix: str
    target: Target
    op: str
    payload: dict[str, Any]
    incident_id: int | None
    wants_fallback: bool = False


@dataclass(frozen=True)
class Pending:
    """A pending row as the sender reads it once a step: what it needs to choose the next
    row, and what the storm digest's settle needs to fold (services/notify/storm.py)."""

    id: int
    chat_id: int
    thread_id: int | None
    priority: int
    op: str
    incident_id: int | None
    next_attempt_at: datetime
    # The digest a DIGEST row posts or edits (0 for other ops).
    digest_id: int = 0
    # The row's incident has its card posted.
    carded: bool = False
    # The row's incident is folded into a storm digest, and whether it got its own card since.
    folded: bool = False
    opened: bool = False


def rows_for(change: IncidentChange, team: Target | None) -> list[Row]:
    """The Telegram work a change asks for, as a pure function of the change: the card (to
    post, or to edit once posted), a reply under it for the changes that need one, and a
    direct message to each person an escalation step names (even without a team chat)."""
    view = change.incident
    summary = change_summary(change)
    rows: list[Row] = []
    if team is not None:
        # The ladder's first step at 0 min is the alert itself: no separate reply for it.
        # The reply goes before the card's edit: it is the message that notifies (an edit
        # is silent), and the two share the chat's one message a second. A card not yet
        # posted is an earlier row of the incident, so the reply still follows it.
        if change.kind in REPLY_KINDS and not change.details.get("initial"):
            rows.append(Row("reply", team, Op.REPLY, {"change": summary}, view.id))
        rows.append(
            Row(
                "card",
                team,
                Op.CARD,
                {"last": summary, "merges": 0},
                view.id,
                _wants_fallback(change),
            )
        )
    if change.kind is ChangeKind.ESCALATED:
        for user_id in _user_ids(change.details.get("user_ids")):
            rows.append(
                Row(
                    f"direct:{user_id}",
                    Target(user_id, None),
                    Op.DIRECT,
                    {"change": summary, "incident_id": view.id},
                    None,
                )
            )
    return rows


class Doorbell:
    """Rung when rows are committed to the outbox (or another instance queued some): the
    sender and the fallback, built after the writers, each wait for a ring they have not
    seen (`rings` read before their step)."""

    def __init__(self) -> None:
        self.rings = 0
        self._rung: asyncio.Event | None = None

    def ring(self) -> None:
        self.rings += 1
        if self._rung is not None:
            self._rung.set()
            self._rung = None

    async def wait(self, seen: int, timeout: float) -> None:
        """Until a ring after `seen` (at once if one came already), or `timeout` seconds."""
        if self.rings != seen:
            return
        if self._rung is None:
            self._rung = asyncio.Event()
        await wait_event(self._rung, timeout)


class OutboxHook:
    """An `IncidentHook`: writes the outbox rows of each change in its transaction (a card
    still waiting absorbs later edits of its incident), then wakes the sender."""

    def __init__(self, target: Target | None, wake: Callable[[], None]) -> None:
        self._target = target
        self._wake = wake

    def apply(self, session: Session, changes: Sequence[IncidentChange]) -> None:
        planned = [(change, rows_for(change, self._target)) for change in changes]
        if not any(rows for _, rows in planned):
            return
        # One lookup of the keys and one of the pending cards for the whole write.
        taken = _taken_keys_sync(
            session, [f"{change_key(c)}:{row.suffix}" for c, rows in planned for row in rows]
        )
        cards = _pending_cards(
            session,
            sorted(
                {
                    r.incident_id
                    for _, rows in planned
                    for r in rows
                    if r.op == Op.CARD and r.incident_id is not None
                }
            ),
        )
        for change, rows in planned:
            for row in rows:
                card = None
                if row.op == Op.CARD and row.incident_id is not None:
                    card = cards.get(row.incident_id)
                if card is not None:
                    _merge(card, change, row.payload["last"])
                    continue
                added = add_row(
                    session,
                    key=_free_key_sync(session, f"{change_key(change)}:{row.suffix}", taken),
                    target=row.target,
                    priority=priority_of(change),
                    incident_id=row.incident_id,
                    op=row.op,
                    payload=row.payload,
                    now=change.at,
                    wants_fallback=row.wants_fallback,
                )
                if row.op == Op.CARD and row.incident_id is not None:
                    cards[row.incident_id] = added
        session.flush()

    def committed(self, changes: Sequence[IncidentChange]) -> None:
        if changes:
            self._wake()


def _pending_cards(session: Session, incident_ids: list[int]) -> dict[int, OutboxMessage]:
    """The card rows still waiting to go, by incident. FOR UPDATE (PostgreSQL): a sender
    marking one sent at the same moment either sees our merge and edits again, or has
    finished and we queue a fresh edit."""
    cards: dict[int, OutboxMessage] = {}
    for start in range(0, len(incident_ids), _CHUNK):
        query = (
            select(OutboxMessage)
            .where(
                OutboxMessage.incident_id.in_(incident_ids[start : start + _CHUNK]),
                OutboxMessage.op == Op.CARD,
                OutboxMessage.status == OutboxStatus.PENDING.value,
            )
            .order_by(OutboxMessage.id)
            .with_for_update()
        )
        for found in session.scalars(query):
            if found.incident_id is not None:
                cards.setdefault(found.incident_id, found)
    return cards


# Keys or ids per `IN (...)` list, well under SQLite's and asyncpg's parameter limits.
_CHUNK = 500


def _wants_fallback(change: IncidentChange) -> bool:
    return change.incident.severity in FALLBACK_SEVERITIES and (
        change.kind in (ChangeKind.TRIGGERED, ChangeKind.REOPENED)
        or "severity_raised" in change.details
    )


def _merge(card: OutboxMessage, change: IncidentChange, summary: dict[str, Any]) -> None:
    """Edits that pile up while waiting merge into one: the card is rendered from the
    incident's state when it is sent; `merges` tells a sender mid-flight to go again."""
    payload = dict(card.payload)
    payload["last"] = summary
    payload["merges"] = int(payload.get("merges", 0)) + 1
    card.payload = payload
    card.priority = min(card.priority, priority_of(change))
    card.wants_fallback = card.wants_fallback or _wants_fallback(change)


class _Keys:
    """Idempotency keys whose fate is known in this transaction: `checked` were looked up,
    `taken` exist (in the table or added since)."""

    def __init__(self) -> None:
        self.checked: set[str] = set()
        self.taken: set[str] = set()


def _taken_keys_sync(session: Session, keys: list[str]) -> _Keys:
    candidates = sorted({k[:190] for k in keys})
    known = _Keys()
    known.checked.update(candidates)
    taken = known.taken
    for start in range(0, len(candidates), _CHUNK):
        taken.update(
            session.scalars(
                select(OutboxMessage.idempotency_key).where(
                    OutboxMessage.idempotency_key.in_(candidates[start : start + _CHUNK])
                )
            )
        )
    return known


def _free_key_sync(session: Session, key: str, known: _Keys) -> str:
    """`unique_key` for the sync path: keys not looked up in bulk are looked up here."""
    candidate, n = key[:190], 1
    while True:
        if candidate not in known.checked:
            known.checked.add(candidate)
            found = session.scalar(
                select(OutboxMessage.id).where(OutboxMessage.idempotency_key == candidate)
            )
            if found is not None:
                known.taken.add(candidate)
        if candidate not in known.taken:
            break
        n += 1
        candidate = f"{key[:190]}#{n}"
    known.taken.add(candidate)
    return candidate


def _user_ids(value: object) -> list[int]:
    if not isinstance(value, list):
        return []
    return [
        int(v)
        for v in value
        if isinstance(v, int) or (isinstance(v, str) and (v.isascii() and v.isdigit()))
    ]


async def unique_key(session: AsyncSession, key: str) -> str:
    """`key`, or `key#2`, `key#3`...: two changes can share an instant (a frozen clock, a
    coarse one, two escalation records in one transaction) and must not collide."""
    candidate, n = key[:190], 1
    while await session.scalar(
        select(OutboxMessage.id).where(OutboxMessage.idempotency_key == candidate)
    ):
        n += 1
        candidate = f"{key[:190]}#{n}"
    return candidate


def add_row(
    session: AsyncSession | Session,
    *,
    key: str,
    target: Target,
    priority: int,
    incident_id: int | None,
    op: str,
    payload: dict[str, Any],
    now: datetime,
    wants_fallback: bool = False,
) -> OutboxMessage:
    row = OutboxMessage(
        idempotency_key=key[:200],
        chat_id=target.chat_id,
        thread_id=target.thread_id,
        priority=priority,
        incident_id=incident_id,
        op=op,
        payload=payload,
        status=OutboxStatus.PENDING.value,
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        wants_fallback=wants_fallback,
    )
    session.add(row)
    return row


def team_target(settings: Settings) -> Target | None:
    """The team chat (and forum topic) from the settings; None when none is set."""
    if settings.telegram_team_chat_id is None:
        return None
    return Target(settings.telegram_team_chat_id, settings.telegram_team_thread_id)


class Outbox:
    """The outbox's writers, built before the incidents (they take `hook`) and before the
    sender that drains it (services/notify/service.py): each incident change's rows, and
    plain posts to the team chat; both ring `doorbell` once committed."""

    def __init__(self, db: Database, clock: Clock, target: Target | None) -> None:
        self._db = db
        self._clock = clock
        self.target = target
        self.doorbell = Doorbell()
        self.hook = OutboxHook(target, self.doorbell.ring)

    async def post_to_team(self, payload: dict[str, Any], *, key: str = "text") -> bool:
        """Queue a message to the team chat as data the renderer words in the chat's language
        (e.g. the weekly token status); False when there is no team chat. It goes through the
        outbox, so it survives an outage."""
        if self.target is None:
            return False
        now = self._clock.now()
        async with self._db.write() as session:
            key = await unique_key(session, f"{key}:{now.isoformat()}")
            self._add_to_team(session, key, Op.TEXT, payload, now)
        self.doorbell.ring()
        return True

    async def queue_to_team(
        self, key: str, text: str, *, file: tuple[str, bytes] | None = None
    ) -> bool:
        """Queue `text` (and a file after it) for the team chat through the outbox; False
        when there is no team chat. `key` makes a repeat of the same report queue nothing."""
        if self.target is None:
            return False
        now = self._clock.now()
        async with self._db.write() as session:
            exists = await session.scalar(
                select(OutboxMessage.id).where(OutboxMessage.idempotency_key == f"{key}:text")
            )
            if exists is not None:
                return True
            self._add_to_team(session, f"{key}:text", Op.TEXT, {"text": text}, now)
            if file is not None:
                payload = {
                    "filename": file[0],
                    "content": base64.b64encode(file[1]).decode(),
                    "text": "",
                }
                file_key = await unique_key(session, f"{key}:file")
                self._add_to_team(session, file_key, Op.FILE, payload, now)
        self.doorbell.ring()
        return True

    def _add_to_team(
        self, session: AsyncSession, key: str, op: str, payload: dict[str, Any], now: datetime
    ) -> None:
        assert self.target is not None
        add_row(
            session,
            key=key,
            target=self.target,
            priority=Severity.P3.rank,
            incident_id=None,
            op=op,
            payload=payload,
            now=now,
        )
