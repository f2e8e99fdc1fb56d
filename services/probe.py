"""The database health check: a real write within a short timeout, and the alarm when it fails.

`SELECT 1` answers while the disk is full, the file is read-only or the role has lost its
write privileges; the incidents this service exists for could then not be recorded. So the
check upserts a row of its own (`health_probes`, one per instance) and reports `down` when
that write fails. Its alarm opens a P0 when incidents can still be written (the probe's own
table refused, a slow disk) and otherwise goes out on the fallback channel (e-mail, webhook),
which needs no database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.clock import Clock
from services.db import FENCE, Database
from services.health import ComponentHealth, Status
from services.incident_types import AlertIn, wording
from services.incidents import IncidentService
from services.models import HealthProbe
from services.notify.fallback import ChannelResult
from services.severity import Severity

log = logging.getLogger(__name__)

# The write must finish within this (seconds); the health check's own timeout is longer.
PROBE_TIMEOUT = 3.0
CHECK_TIMEOUT = PROBE_TIMEOUT + 1.0
# When a fallback alarm could not be delivered, the next failing check tries again after this.
ALARM_RETRY = timedelta(minutes=5)
DEDUP_KEY = "health:database"

# The fallback channel's database alarm (FallbackService.alarm_database): instance, what the
# check found, why no incident could be written; one result per channel.
FallbackAlarm = Callable[[str, str, str], Awaitable[list[ChannelResult]]]


def describe(exc: BaseException) -> str:
    """One line naming the failure (the driver's message, never a traceback)."""
    cause = getattr(exc, "orig", None) or exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}"[:200] if first else type(cause).__name__


class DatabaseProbe:
    """The `database` health component; `start` also runs it on a timer on every instance,
    leader or not, so a database that refuses writes is noticed without any request."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        incidents: IncidentService,
        *,
        instance: str,
        interval: float = 60.0,
        fallback: FallbackAlarm | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._incidents = incidents
        self._instance = instance[:200]
        self._interval = interval
        # The fallback channel's alarm (NotifyService.fallback.alarm_database).
        self.fallback = fallback
        self._down_since: datetime | None = None
        self._alarmed_at: datetime | None = None
        self._alarm: asyncio.Task[str] | None = None
        self._loop: asyncio.Task[None] | None = None

    async def check(self) -> ComponentHealth:
        started = self._clock.now()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._write(started)
        except TimeoutError:
            detail = f"a write did not finish within {PROBE_TIMEOUT:g} s"
        except Exception as exc:  # any refusal of the write is the finding
            detail = describe(exc)
        else:
            if self._down_since is not None:
                log.warning("database: writes work again (down since %s)", self._down_since)
            self._down_since = None
            self._alarmed_at = None
            return ComponentHealth(
                "database", Status.HEALTHY, "read and write ok", reason="database_ok"
            )
        if self._down_since is None:
            self._down_since = started
            log.error("database: the health check's write failed: %s", detail)
        self._raise_alarm(detail)
        return ComponentHealth(
            "database",
            Status.DOWN,
            f"writes fail: {detail}",
            reason="database_fails",
            params={"error": detail},
        )

    async def _write(self, now: datetime) -> None:
        table: Table = HealthProbe.__table__  # type: ignore[assignment]
        insert = sqlite_insert if self._db.is_sqlite else pg_insert
        stmt = insert(table).values(instance=self._instance, written_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.instance], set_={"written_at": now}
        )
        # Not fenced by the scheduler's lease: a deposed leader's database works as well.
        token = FENCE.set(None)
        try:
            async with self._db.write() as session:
                if not self._db.is_sqlite:
                    await session.execute(
                        text(f"SET LOCAL statement_timeout = {int(PROBE_TIMEOUT * 1000)}")
                    )
                await session.execute(stmt)
        finally:
            FENCE.reset(token)

    def _raise_alarm(self, detail: str) -> None:
        now = self._clock.now()
        if self._alarm is not None and not self._alarm.done():
            return
        if self._alarmed_at is not None and now - self._alarmed_at < ALARM_RETRY:
            return
        self._alarmed_at = now
        self._alarm = asyncio.create_task(self.alarm(detail), name="database-alarm")

    async def alarm(self, detail: str) -> str:
        """Open the P0 if an incident can be written, else use the fallback channel; says
        which (and is retried by the next failing check while nothing got through)."""
        alert = AlertIn(
            severity=Severity.P0,
            title="Health check: database is down",
            dedup_key=DEDUP_KEY,
            source="health_check",
            description=f"The database refuses writes: {detail}",
            labels={"component": "database", "instance": self._instance},
            wording=wording("database", error=detail),
        )
        try:
            await self._incidents.trigger(alert, actor="health_check")
        except Exception as exc:  # the database that fails the probe fails this too
            reason = describe(exc)
        else:
            return "incident"
        if self.fallback is None:
            log.error("database: no incident can be written (%s); no fallback configured", reason)
            return "none"
        results = await self.fallback(self._instance, detail, reason)
        if not any(r.ok for r in results):
            log.error("database: the fallback alarm did not get through: %s", results)
            return "failed"
        log.error("database: writes fail; alarm sent on the fallback channel")
        return "fallback"

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="database-probe")

    async def stop(self) -> None:
        tasks: list[asyncio.Task[Any]] = [t for t in (self._loop, self._alarm) if t is not None]
        for task in tasks:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop = self._alarm = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                async with asyncio.timeout(CHECK_TIMEOUT):
                    await self.check()
            except Exception:
                log.exception("database probe failed to run")
