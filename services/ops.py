"""Pipeline operations wired together: integrations, tokens, retries, traces, stats, backups."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import aiohttp

from services.backups import BackupService
from services.bundles import BundleService
from services.clock import Clock
from services.config import Settings
from services.db import Database
from services.errors import InvalidInput
from services.health import ComponentHealth, HealthService, HealthWatch, Status
from services.incidents import IncidentService
from services.integrations.cloudinary import (
    CloudinaryAccount,
    CloudinaryClient,
    CloudinaryError,
    parse_cloudinary_url,
)
from services.integrations.fal import FalClient, FalError
from services.integrations.instagram import InstagramClient
from services.logs import secret_values
from services.pipeline import PipelineService
from services.retry import JobFailed, JobView, RetryService
from services.scheduler import SchedulerService
from services.stats import StatsService
from services.tokens import TokenService
from services.traces import TraceService

if TYPE_CHECKING:
    from services.main import Services

log = logging.getLogger(__name__)

RETRY_TICK_SECONDS = 30


@dataclass
class PipelineOps:
    """What the bot, the CLI and the HTTP routes call for the pipeline (see README)."""

    instagram: InstagramClient
    cloudinary: CloudinaryClient
    fal: FalClient
    traces: TraceService
    retry: RetryService
    tokens: TokenService
    pipeline: PipelineService
    stats: StatsService
    backups: BackupService
    bundles: BundleService
    watch: HealthWatch


def _secret(value: object) -> str | None:
    from pydantic import SecretStr

    return value.get_secret_value() if isinstance(value, SecretStr) else None


def cloudinary_account(settings: Settings) -> CloudinaryAccount | None:
    url = _secret(settings.cloudinary_url)
    if url is None:
        return None
    try:
        return parse_cloudinary_url(url)
    except InvalidInput as exc:
        log.warning("CLOUDINARY_URL: %s; Cloudinary is off", exc.message)
        return None


@asynccontextmanager
async def open_pipeline_ops(
    settings: Settings,
    *,
    db: Database,
    clock: Clock,
    incidents: IncidentService,
    scheduler: SchedulerService,
    health: HealthService,
) -> AsyncIterator[PipelineOps]:
    session = aiohttp.ClientSession()
    try:
        timeout = settings.integration_timeout_seconds
        instagram = InstagramClient(
            session,
            base_url=settings.instagram_api_base,
            version=settings.instagram_graph_version,
            token=_secret(settings.instagram_access_token),
            user_id=settings.instagram_user_id,
            timeout=timeout,
        )
        account = cloudinary_account(settings)
        cloudinary = CloudinaryClient(account, timeout=timeout)
        fal = FalClient(
            session,
            base_url=settings.fal_api_base,
            key=_secret(settings.fal_key),
            model=settings.fal_model,
            timeout=settings.fal_timeout_seconds,
        )
        traces = TraceService(db, clock, export_dir=settings.log_dir / "traces")
        retry = RetryService(db, clock, incidents, delays=settings.retry_schedule)
        warning_days, critical_days = settings.token_alert_thresholds
        tokens = TokenService(
            db,
            clock,
            incidents,
            instagram,
            configured=settings.instagram_access_token is not None,
            warning_days=warning_days,
            critical_days=critical_days,
            lifetime_days=settings.token_lifetime_days,
            app_id=settings.instagram_app_id,
            app_secret=_secret(settings.instagram_app_secret),
            language=settings.bot_language,
        )
        pipeline = PipelineService(
            content_dir=settings.content_dir,
            incidents=incidents,
            traces=traces,
            retry=retry,
            tokens=tokens,
            instagram=instagram,
            cloudinary=cloudinary,
            fal=fal,
        )
        stats = StatsService(
            db,
            clock,
            incidents,
            instagram,
            tokens=tokens,
            scheduler=scheduler,
            stats_file=settings.stats_file,
            interval=timedelta(minutes=settings.stats_interval_minutes),
            stale_after=timedelta(hours=settings.stats_stale_hours),
        )

        stats.retry = retry

        async def collect_job(_job: JobView) -> str | None:
            result = await stats.collect(force=True, from_job=True)
            if not result.collected:
                raise JobFailed(result.detail)
            return None  # stats collection has no trace

        retry.register("collect_stats", collect_job)
        secrets = secret_values(settings)
        if account is not None:
            secrets += account.secrets
        bundles = BundleService(
            clock,
            incidents,
            traces,
            log_dir=settings.log_dir,
            out_dir=settings.backup_dir.parent / "bundles",
            secrets=secrets,
        )
        ops = PipelineOps(
            instagram=instagram,
            cloudinary=cloudinary,
            fal=fal,
            traces=traces,
            retry=retry,
            tokens=tokens,
            pipeline=pipeline,
            stats=stats,
            backups=BackupService(settings, clock),
            bundles=bundles,
            watch=HealthWatch(health, incidents),
        )
        register_checks(health, ops, settings, session)
        yield ops
    finally:
        await session.close()


def register_checks(
    health: HealthService, ops: PipelineOps, settings: Settings, session: aiohttp.ClientSession
) -> None:
    """The pipeline's components in the health report; SSE and the outbox register elsewhere."""

    async def cloudinary() -> ComponentHealth:
        if not ops.cloudinary.configured:
            return ComponentHealth("cloudinary", Status.DEGRADED, "not configured")
        try:
            await ops.cloudinary.ping()
        except CloudinaryError as exc:
            return ComponentHealth("cloudinary", Status.DOWN, str(exc))
        return ComponentHealth("cloudinary", Status.HEALTHY, "reachable")

    async def fal() -> ComponentHealth:
        if not ops.fal.configured:
            return ComponentHealth("fal", Status.DEGRADED, "not configured")
        try:
            await ops.fal.reachable()
        except FalError as exc:
            return ComponentHealth("fal", Status.DOWN, str(exc))
        return ComponentHealth("fal", Status.HEALTHY, f"{ops.fal.model} reachable")

    # A component is checked once its setting is set: a bare install reports healthy, and
    # an integration that is not used never pages anyone.
    if ops.tokens.configured:
        health.register("instagram_token", ops.tokens.health, critical=True)
        health.register("stats", ops.stats.health)
    if ops.cloudinary.configured:
        health.register("cloudinary", cloudinary)
    if ops.fal.configured:
        health.register("fal", fal)


def add_jobs(services: Services) -> None:
    """The pipeline's periodic jobs; the database stays the source of truth for each."""
    ops, settings = services.ops, services.settings
    scheduler = services.scheduler
    now = services.clock.now()

    def every(
        job_id: str, func: Callable[[], Awaitable[object]], seconds: float, first: float
    ) -> None:
        async def run() -> None:
            try:
                await func()
            except Exception:
                log.exception("scheduled job %s failed", job_id)

        scheduler.add_job(
            run,
            "interval",
            seconds=seconds,
            id=job_id,
            replace_existing=True,
            next_run_time=now + timedelta(seconds=first),
        )

    every("retry-due", ops.retry.run_due, RETRY_TICK_SECONDS, 5)
    every("token-check", ops.tokens.check, 86400, 10)
    every("token-weekly", ops.tokens.weekly_post, 7 * 86400, 7 * 86400)
    every("health-watch", ops.watch.run, settings.health_interval_seconds, 15)
    ops.stats.schedule()
