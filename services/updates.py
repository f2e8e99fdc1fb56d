"""Telegram updates taken in (webhook mode): each one is handled once across instances."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from services.clock import Clock
from services.db import Database
from services.models import TelegramUpdate

Feed = Callable[[dict[str, Any]], Awaitable[None]]

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


class Webhook:
    """Where the webhook route hands updates: the bot (started after the services are built)
    opens it with its dispatcher's feed and the secret Telegram sends, and closes it on stop;
    while it is closed the route answers 503."""

    def __init__(self) -> None:
        self._feed: Feed | None = None
        self._secret: str | None = None

    def open(self, feed: Feed, secret: str) -> None:
        self._feed, self._secret = feed, secret

    def close(self) -> None:
        self._feed, self._secret = None, None

    @property
    def receiver(self) -> tuple[Feed, str] | None:
        """The bot's feed and the secret it expects, while the bot runs in webhook mode."""
        if self._feed is None or self._secret is None:
            return None
        return self._feed, self._secret
