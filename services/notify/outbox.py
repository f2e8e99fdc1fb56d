"""The outbox hook: turns each incident change into Telegram work, inside its transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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
        wants_fallback = view.severity in FALLBACK_SEVERITIES and (
            change.kind in (ChangeKind.TRIGGERED, ChangeKind.REOPENED)
            or "severity_raised" in change.details
        )
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
            # Edits that pile up while waiting merge into one: the card is rendered from the
            # incident's state when it is sent; `merges` tells a sender mid-flight to go again.
            payload = dict(pending_card.payload)
            payload["last"] = summary
            payload["merges"] = int(payload.get("merges", 0)) + 1
            pending_card.payload = payload
            pending_card.priority = min(pending_card.priority, view.severity.rank)
            pending_card.wants_fallback = pending_card.wants_fallback or wants_fallback
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

    def after_commit(self, change: IncidentChange) -> None:
        self._wake()


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
    session: AsyncSession,
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
