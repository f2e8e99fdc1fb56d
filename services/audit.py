"""Audit of refused chat requests: who asked for what their role does not allow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from services.clock import Clock
from services.db import Database
from services.models import BotRefusal


@dataclass(frozen=True)
class Refusal:
    at: datetime
    user_id: int
    username: str | None
    chat_id: int | None
    command: str
    user_role: str
    required_role: str


class AuditService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def record_refusal(
        self,
        *,
        user_id: int,
        username: str | None,
        chat_id: int | None,
        command: str,
        user_role: str,
        required_role: str,
    ) -> None:
        async with self._db.write() as session:
            session.add(
                BotRefusal(
                    at=self._clock.now(),
                    user_id=user_id,
                    username=(username or None) and username[:200],
                    chat_id=chat_id,
                    command=command[:64],
                    user_role=user_role,
                    required_role=required_role,
                )
            )

    async def refusals(self, *, limit: int = 100) -> list[Refusal]:
        async with self._db.read() as session:
            rows = (
                await session.scalars(
                    select(BotRefusal).order_by(BotRefusal.id.desc()).limit(limit)
                )
            ).all()
            return [
                Refusal(
                    r.at, r.user_id, r.username, r.chat_id, r.command, r.user_role, r.required_role
                )
                for r in rows
            ]
