"""Instagram stats collection: a scheduled job writing the database and `instagram_stats.json`."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from services.clock import Clock
from services.db import Database
from services.errors import Unavailable
from services.health import ComponentHealth, Status
from services.incident_types import AlertIn, wording
from services.incidents import IncidentService
from services.integrations.instagram import InstagramClient, InstagramError, InstagramUnauthorized
from services.models import StatsSnapshot
from services.providers import CallFailure, ProviderCalls
from services.retry import JobFailed, JobView, RetryService
from services.scheduler import SchedulerService
from services.severity import Severity
from services.tokens import TokenService

log = logging.getLogger(__name__)

STATS_KEY = "stats:collector"
JOB_ID = "stats-collector"


def is_stale(*, last_updated: datetime | None, now: datetime, stale_after: timedelta) -> bool:
    """Past the freshness limit: at the limit itself the data is stale already."""
    return last_updated is None or now - last_updated >= stale_after


@dataclass(frozen=True)
class CollectResult:
    """`detail` is English (CLI, API, logs); `reason` names our own outcome for the chat to
    word ("collected", "fresh", "not_configured"), and is None when `detail` quotes the
    provider's answer."""

    collected: bool
    last_updated: datetime | None
    detail: str
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "collected": self.collected,
            "last_updated": self.last_updated.isoformat() if self.last_updated else None,
            "detail": self.detail,
        }


class StatsService:
    """`stats collect [--force]`, `stats restart`, and the stats freshness health check."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        incidents: IncidentService,
        instagram: InstagramClient,
        *,
        tokens: TokenService,
        scheduler: SchedulerService,
        stats_file: Path,
        interval: timedelta,
        stale_after: timedelta,
        retry: RetryService | None = None,
        providers: ProviderCalls | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._incidents = incidents
        self._instagram = instagram
        self._tokens = tokens
        self._scheduler = scheduler
        self.stats_file = stats_file
        self.interval = interval
        self.stale_after = stale_after
        # A failed collection becomes a `collect_stats` job; calls are recorded per provider.
        self.retry = retry
        self.providers = providers

    async def last_updated(self) -> datetime | None:
        async with self._db.read() as session:
            return await session.scalar(
                select(StatsSnapshot.collected_at)
                .order_by(StatsSnapshot.collected_at.desc())
                .limit(1)
            )

    async def latest(self) -> dict[str, Any] | None:
        async with self._db.read() as session:
            row = await session.scalar(
                select(StatsSnapshot).order_by(StatsSnapshot.collected_at.desc()).limit(1)
            )
            return dict(row.data) if row else None

    async def collect(self, *, force: bool = False, from_job: bool = False) -> CollectResult:
        """Collect now unless the last collection is younger than the interval (or `force`).

        A failure is heard at once (the P2 `stats:collector` incident, counted into while it
        is open) and retried by a `collect_stats` job; a success resolves the incident and
        settles that job, so a manual `stats collect --force` leaves no retry behind.
        """
        now = self._clock.now()
        last = await self.last_updated()
        if not force and last is not None and now - last < self.interval:
            return CollectResult(
                False, last, "fresh enough; use --force to collect anyway", "fresh"
            )
        if not self._instagram.configured:
            return CollectResult(
                False,
                last,
                "INSTAGRAM_ACCESS_TOKEN or INSTAGRAM_USER_ID not set",
                "not_configured",
            )
        operation = "account"
        try:
            account = await self._instagram.account()
            operation = "insights"
            insights = await self._instagram.account_insights()
            operation = "media"
            media = await self._instagram.recent_media(limit=10)
        except (InstagramError, Unavailable) as exc:
            error = exc.message if isinstance(exc, Unavailable) else str(exc)
            if isinstance(exc, InstagramUnauthorized):
                await self._tokens.unauthorized(where="stats collection")
            status = exc.status or None if isinstance(exc, InstagramError) else None
            failed = JobFailed(
                error,
                alert=stats_alert(
                    error, self.retry.schedule if self.retry else "5m -> 15m -> 30m"
                ),
                call=CallFailure("instagram", operation, status, error)
                if isinstance(exc, InstagramError)
                else None,
                retryable=isinstance(exc, InstagramError),
            )
            if from_job:
                raise failed from None
            if self.retry is not None:
                await self.retry.failed("collect_stats", "", failed)
            else:
                await self._incidents.trigger(stats_alert(error), actor="stats_collector")
            return CollectResult(False, last, error)
        data = {
            "last_updated": now.isoformat(),
            "account": account,
            "insights": insights,
            "media": media,
        }
        async with self._db.write() as session:
            session.add(StatsSnapshot(collected_at=now, data=data))
        self._write_file(data)
        if self.providers is not None:
            await self.providers.ok("instagram", "insights")
        await self._incidents.resolve_by_dedup_key(STATS_KEY, actor="stats_collector")
        if self.retry is not None:
            await self.retry.settle("collect_stats", "", actor="stats collect")
        return CollectResult(
            True, now, f"{len(media)} media, {len(insights)} insights", "collected"
        )

    async def run_collect_job(self, _job: JobView) -> str | None:
        """A `collect_stats` job runs again: a forced collection (no trace of its own)."""
        result = await self.collect(force=True, from_job=True)
        if not result.collected:
            raise JobFailed(result.detail)
        return None

    def _write_file(self, data: dict[str, Any]) -> None:
        self.stats_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.stats_file.with_suffix(".json.tmp")
        partial.write_text(json.dumps(data, ensure_ascii=False, indent=2), "utf-8")
        os.replace(partial, self.stats_file)

    def schedule(self) -> datetime | None:
        """(Re)arm the periodic collection in this process; returns its next run time."""
        scheduler = self._scheduler.scheduler
        if scheduler.get_job(JOB_ID) is not None:
            scheduler.remove_job(JOB_ID)
        job = self._scheduler.add_job(
            self._scheduled,
            "interval",
            seconds=self.interval.total_seconds(),
            id=JOB_ID,
            next_run_time=self._clock.now() + timedelta(seconds=5),
        )
        when: datetime | None = job.next_run_time
        return when

    async def restart(self) -> RestartResult:
        """The playbook's "daemon restart": re-arm the job and collect at once. It worked only
        if that collection did (the exit status and the chat say which)."""
        self.schedule()
        collected = await self.collect(force=True)
        job = self._scheduler.scheduler.get_job(JOB_ID)
        return RestartResult(job.next_run_time if job else None, collected)

    async def _scheduled(self) -> None:
        try:
            await self.collect()
        except Exception:
            log.exception("stats collection crashed")

    async def health(self) -> ComponentHealth:
        """Down past the freshness limit (STATS_STALE_HOURS); degraded while the collection
        is failing (a `collect_stats` job is open) even if the data is still fresh."""
        now = self._clock.now()
        last = await self.last_updated()
        failing = await self.retry.open_job_for("collect_stats", "") if self.retry else None
        why = ""
        params: dict[str, Any] = {}
        if failing is not None:
            why = f"; collection failing since {failing.created_at:%Y-%m-%d %H:%M} UTC: "
            why += failing.last_error[:120]
            params = {"since": failing.created_at.isoformat(), "error": failing.last_error[:120]}
        if last is None:
            status = Status.DOWN if failing is not None else Status.DEGRADED
            return ComponentHealth(
                "stats",
                status,
                f"never collected{why}",
                {"age_s": None},
                reason="stats_never",
                params=params,
            )
        age = now - last
        figures = {
            "last_updated": last.isoformat(),
            "age_s": int(age.total_seconds()),
            "failing": failing is not None,
        }
        if is_stale(last_updated=last, now=now, stale_after=self.stale_after):
            hours = age.total_seconds() / 3600
            limit = self.stale_after.total_seconds() / 3600
            return ComponentHealth(
                "stats",
                Status.DOWN,
                f"stale: {hours:.1f} h old (limit {limit:g} h){why}",
                figures,
                reason="stats_stale",
                params={**params, "hours": f"{hours:.1f}", "limit": f"{limit:g}"},
            )
        minutes = int(age.total_seconds() // 60)
        status = Status.HEALTHY if failing is None else Status.DEGRADED
        return ComponentHealth(
            "stats",
            status,
            f"{minutes} min old{why}",
            figures,
            reason="stats_age",
            params={**params, "minutes": minutes},
        )


@dataclass(frozen=True)
class RestartResult:
    next_run: datetime | None
    collected: CollectResult

    @property
    def ok(self) -> bool:
        return self.collected.collected

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "next_run_time": self.next_run.isoformat() if self.next_run else None,
            "collected": self.collected.collected,
            "last_updated": self.collected.last_updated.isoformat()
            if self.collected.last_updated
            else None,
            "detail": self.collected.detail,
        }


def stats_alert(error: str, schedule: str = "5m -> 15m -> 30m") -> AlertIn:
    return AlertIn(
        severity=Severity.P2,
        title="Instagram stats collection failing",
        dedup_key=STATS_KEY,
        source="stats_collector",
        description=f"{error}. Recover: sunflow-ops stats collect --force; sunflow-ops stats "
        f"restart. The collect_stats job retries {schedule}.",
        labels={"component": "stats"},
        wording=wording("stats", error=error, schedule=schedule),
    )
