"""Telegram updates taken in (webhook mode): each one is handled once across instances."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from services.clock import Clock
from services.db import Database
from services.models import TelegramUpdate

# Telegram gives up redelivering an update within a day; ids older than this are forgotten.
KEEP_UPDATES = timedelta(days=2)


class UpdateLog:
    """Claims update ids by a primary key: behind a round-robin proxy, a retried update that
    lands on the other instance finds its id taken and is answered without being handled."""

    def __init__(self, db: Database, clock: Clock, *, instance: str) -> None:
        self._db = db
        self._clock = clock
        self.instance = instance

    async def claim(self, update_id: int) -> bool:
        """True the first time this update id is seen (by any instance), False after."""
        try:
            async with self._db.write() as session:
                session.add(
                    TelegramUpdate(
                        update_id=update_id,
                        received_at=self._clock.now(),
                        instance=self.instance[:200],
                    )
                )
        except IntegrityError:
            return False
        return True

    async def prune(self, *, older_than: timedelta = KEEP_UPDATES) -> int:
        cutoff = self._clock.now() - older_than
        async with self._db.write() as session:
            result = await session.execute(
                delete(TelegramUpdate).where(TelegramUpdate.received_at < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)
