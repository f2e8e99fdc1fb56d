"""The outbox hook: turns each incident change into Telegram work, inside its transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.incidents import ChangeKind, IncidentChange
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


# Changes that also get a reply in the alert's thread, besides the edit.
REPLY_KINDS = frozenset(
    {
        ChangeKind.ESCALATED,
        ChangeKind.DEADLINE_MISSED,
        ChangeKind.UNACKNOWLEDGED,
        ChangeKind.SNOOZED,
    }
)
FALLBACK_SEVERITIES = frozenset({Severity.P0, Severity.P1})


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


class OutboxHook:
    """An `IncidentHook`: writes outbox rows in the change's transaction, then wakes a sender."""

    def __init__(self, target: Target | None, wake: Callable[[], None]) -> None:
        self._target = target
        self._wake = wake

    async def in_transaction(self, session: AsyncSession, change: IncidentChange) -> None:
        view = change.incident
        summary = change_summary(change)
        key = change_key(change)
        if self._target is not None:
            await self._team_rows(session, change, summary, key)
        if change.kind is ChangeKind.ESCALATED:
            # People named by an escalation step are paged even without a team chat.
            for user_id in _user_ids(change.details.get("user_ids")):
                add_row(
                    session,
                    key=await unique_key(session, f"{key}:direct:{user_id}"),
                    target=Target(user_id, None),
                    priority=view.severity.rank,
                    incident_id=None,
                    op=Op.DIRECT,
                    payload={"change": summary, "incident_id": view.id},
                    now=change.at,
                )
        await session.flush()

    async def _team_rows(
        self, session: AsyncSession, change: IncidentChange, summary: dict[str, Any], key: str
    ) -> None:
        assert self._target is not None
        view = change.incident
        wants_fallback = _wants_fallback(change)
        # FOR UPDATE (PostgreSQL): a sender marking this row sent at the same moment either
        # sees our merge and edits again, or has finished and we queue a fresh edit.
        pending_card = await session.scalar(
            select(OutboxMessage)
            .where(
                OutboxMessage.incident_id == view.id,
                OutboxMessage.op == Op.CARD,
                OutboxMessage.status == OutboxStatus.PENDING.value,
            )
            .with_for_update()
        )
        if pending_card is not None:
            _merge(pending_card, change, summary)
        else:
            add_row(
                session,
                key=await unique_key(session, f"{key}:card"),
                target=self._target,
                priority=view.severity.rank,
                incident_id=view.id,
                op=Op.CARD,
                payload={"last": summary, "merges": 0},
                now=change.at,
                wants_fallback=wants_fallback,
            )
        # The ladder's first step at 0 min is the alert itself: no separate reply for it.
        if change.kind in REPLY_KINDS and not change.details.get("initial"):
            add_row(
                session,
                key=await unique_key(session, f"{key}:reply"),
                target=self._target,
                priority=view.severity.rank,
                incident_id=view.id,
                op=Op.REPLY,
                payload={"change": summary},
                now=change.at,
            )

    def in_transaction_sync(self, session: Session, changes: Sequence[IncidentChange]) -> None:
        """An intake group: the rows `in_transaction` would write change by change, with one
        lookup of pending cards and one of taken keys for the whole group."""
        # Only cards are looked up in bulk: other rows (replies, pages) are rare on intake.
        cards_for = changes if self._target is not None else []
        taken = _taken_keys_sync(session, [f"{change_key(c)}:card" for c in cards_for])
        cards: dict[int, OutboxMessage] = {}
        if self._target is not None:
            ids = sorted({c.incident.id for c in changes})
            for start in range(0, len(ids), _CHUNK):
                query = (
                    select(OutboxMessage)
                    .where(
                        OutboxMessage.incident_id.in_(ids[start : start + _CHUNK]),
                        OutboxMessage.op == Op.CARD,
                        OutboxMessage.status == OutboxStatus.PENDING.value,
                    )
                    .order_by(OutboxMessage.id)
                    .with_for_update()
                )
                for found in session.scalars(query):
                    if found.incident_id is not None:
                        cards.setdefault(found.incident_id, found)
        for change in changes:
            view = change.incident
            if self._target is None and change.kind is not ChangeKind.ESCALATED:
                continue  # no team chat: only an escalation's direct messages are rows
            summary = change_summary(change)
            key = change_key(change)
            if self._target is not None:
                card = cards.get(view.id)
                if card is not None:
                    _merge(card, change, summary)
                else:
                    cards[view.id] = add_row(
                        session,
                        key=_free_key_sync(session, f"{key}:card", taken),
                        target=self._target,
                        priority=view.severity.rank,
                        incident_id=view.id,
                        op=Op.CARD,
                        payload={"last": summary, "merges": 0},
                        now=change.at,
                        wants_fallback=_wants_fallback(change),
                    )
                if change.kind in REPLY_KINDS and not change.details.get("initial"):
                    add_row(
                        session,
                        key=_free_key_sync(session, f"{key}:reply", taken),
                        target=self._target,
                        priority=view.severity.rank,
                        incident_id=view.id,
                        op=Op.REPLY,
                        payload={"change": summary},
                        now=change.at,
                    )
            if change.kind is ChangeKind.ESCALATED:
                for user_id in _user_ids(change.details.get("user_ids")):
                    add_row(
                        session,
                        key=_free_key_sync(session, f"{key}:direct:{user_id}", taken),
                        target=Target(user_id, None),
                        priority=view.severity.rank,
                        incident_id=None,
                        op=Op.DIRECT,
                        payload={"change": summary, "incident_id": view.id},
                        now=change.at,
                    )
        session.flush()

    def after_commit(self, change: IncidentChange) -> None:
        self._wake()


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
    card.priority = min(card.priority, change.incident.severity.rank)
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
