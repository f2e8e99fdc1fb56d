"""The last real call to each provider (fal.ai, Cloudinary, Instagram): health reads it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from services.clock import Clock
from services.db import Database
from services.models import ProviderCall

log = logging.getLogger(__name__)

PROVIDERS = ("instagram", "cloudinary", "fal")


@dataclass(frozen=True)
class CallFailure:
    """One failed call to a provider, as the logs, the trace and the health report tell it."""

    provider: str
    operation: str
    status: int | None
    error: str

    @property
    def status_text(self) -> str:
        return str(self.status) if self.status is not None else "-"

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "operation": self.operation,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
class ProviderState:
    provider: str
    last_ok_at: datetime | None
    last_failed_at: datetime | None
    operation: str
    status: int | None
    error: str
    trace_id: str | None
    failures: int

    @property
    def failing(self) -> bool:
        """The latest real call failed (no success since: a success resets the count)."""
        return self.failures > 0 and self.last_failed_at is not None

    def describe(self) -> str:
        """`last real call (generate at 09:05 UTC) failed, HTTP 500, 3 in a row: ...`."""
        assert self.last_failed_at is not None
        status = f"HTTP {self.status}, " if self.status is not None else ""
        return (
            f"last real call ({self.operation} at {self.last_failed_at:%H:%M} UTC) failed, "
            f"{status}{self.failures} in a row: {self.error[:160]}"
        )

    @classmethod
    def of(cls, row: ProviderCall) -> ProviderState:
        return cls(
            provider=row.provider,
            last_ok_at=row.last_ok_at,
            last_failed_at=row.last_failed_at,
            operation=row.operation,
            status=row.status,
            error=row.error,
            trace_id=row.trace_id,
            failures=row.failures,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "last_ok_at": self.last_ok_at.isoformat() if self.last_ok_at else None,
            "last_failed_at": self.last_failed_at.isoformat() if self.last_failed_at else None,
            "failing": self.failing,
            "operation": self.operation,
            "status": self.status,
            "error": self.error,
            "trace_id": self.trace_id,
            "failures": self.failures,
        }


class ProviderCalls:
    """Records every real call's outcome in the database, so that the service's health and a
    CLI run see the same thing (a `publish` from the shell fails, `health` says so)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def ok(self, provider: str, operation: str) -> None:
        now = self._clock.now()
        async with self._db.write() as session:
            await session.execute(
                update(ProviderCall)
                .where(ProviderCall.provider == provider)
                .values(last_ok_at=now, operation=operation, failures=0)
            )

    async def failed(self, failure: CallFailure, *, trace_id: str | None = None) -> None:
        now = self._clock.now()
        async with self._db.write() as session:
            await session.execute(
                update(ProviderCall)
                .where(ProviderCall.provider == failure.provider)
                .values(
                    last_failed_at=now,
                    operation=failure.operation,
                    status=failure.status,
                    error=failure.error[:2000],
                    trace_id=trace_id,
                    failures=ProviderCall.failures + 1,
                )
            )

    async def get(self, provider: str) -> ProviderState | None:
        async with self._db.read() as session:
            row = await session.get(ProviderCall, provider)
            return ProviderState.of(row) if row else None

    async def all(self) -> dict[str, ProviderState]:
        async with self._db.read() as session:
            rows = await session.scalars(select(ProviderCall))
            return {r.provider: ProviderState.of(r) for r in rows}
