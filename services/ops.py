"""Pipeline operations wired together: integrations, tokens, retries, traces, stats, backups."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from services.backups import BackupService
from services.bundles import BundleService
from services.clock import Clock
from services.config import Settings
from services.db import Database
from services.errors import InvalidInput
from services.health import ComponentHealth, HealthCheck, HealthWatch, Status
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
from services.models import IncidentState
from services.pipeline import PipelineService
from services.providers import ProviderCalls, ProviderState
from services.publications import PublicationService
from services.retry import JobRunner, RetryService
from services.scheduler import SchedulerService
from services.stats import StatsService
from services.tokens import TokenService, TokenStatus
from services.traces import TraceService

log = logging.getLogger(__name__)

RETRY_TICK_SECONDS = 30


@dataclass
class PipelineOps:
    """What the bot, the CLI and the HTTP routes call for the pipeline (see docs/operations.md)."""

    instagram: InstagramClient
    cloudinary: CloudinaryClient
    fal: FalClient
    traces: TraceService
    retry: RetryService
    # Runs a stored job of any kind with the service that owns the kind (`/retry 7`, the
    # scheduler's due retries).
    runner: JobRunner
    tokens: TokenService
    pipeline: PipelineService
    stats: StatsService
    backups: BackupService
    bundles: BundleService
    publications: PublicationService
    providers: ProviderCalls


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
    post_to_team: Callable[[TokenStatus], Awaitable[None]] | None = None,
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
        export = settings.log_dir / "traces" if settings.log_dir is not None else None
        traces = TraceService(db, clock, export_dir=export)
        providers = ProviderCalls(db, clock)
        retry = RetryService(
            db, clock, incidents, delays=settings.retry_schedule, providers=providers
        )
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
            token=_secret(settings.instagram_access_token),
            env_file=settings.env_file_path,
            post=post_to_team,
        )
        publications = PublicationService(
            db,
            clock,
            zone=ZoneInfo(settings.publish_timezone),
            daily_limit=settings.publish_daily_limit,
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
            publications=publications,
            providers=providers,
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
            retry=retry,
            providers=providers,
        )
        # Each kind of job runs with the service that owns it.
        runner = JobRunner(retry, {**pipeline.runners, "collect_stats": stats.run_collect_job})
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
            retry=retry,
        )
        ops = PipelineOps(
            instagram=instagram,
            cloudinary=cloudinary,
            fal=fal,
            traces=traces,
            retry=retry,
            runner=runner,
            tokens=tokens,
            pipeline=pipeline,
            stats=stats,
            backups=BackupService(settings, clock),
            bundles=bundles,
            publications=publications,
            providers=providers,
        )
        yield ops
    finally:
        await session.close()


def with_last_call(component: ComponentHealth, state: ProviderState | None) -> ComponentHealth:
    """A probe's verdict weighed with the last real call: the probe answering does not make
    a provider healthy while the work it does for us keeps failing."""
    if state is None or not state.failing:
        return component
    figures = {**component.figures, "last_call": state.to_json()}
    detail = f"{state.describe()} (probe: {component.detail})"
    return ComponentHealth(
        component.name, Status.DOWN, detail, figures, reason="last_call", params=last_call(state)
    )


def last_call(state: ProviderState) -> dict[str, Any]:
    """The failing last real call as values for a chat's own sentence."""
    assert state.last_failed_at is not None
    return {
        "operation": state.operation,
        "at": state.last_failed_at.isoformat(),
        "status": state.status,
        "failures": state.failures,
        "error": state.error[:160],
    }


def pipeline_checks(ops: PipelineOps) -> list[HealthCheck]:
    """The pipeline's components in the health report (the composition root adds the rest)."""

    async def cloudinary() -> ComponentHealth:
        if not ops.cloudinary.configured:
            return ComponentHealth(
                "cloudinary", Status.DEGRADED, "not configured", reason="not_configured"
            )
        try:
            await ops.cloudinary.ping()
        except CloudinaryError as exc:
            probe = ComponentHealth(
                "cloudinary", Status.DOWN, str(exc), reason="error", params={"error": str(exc)}
            )
        else:
            probe = ComponentHealth("cloudinary", Status.HEALTHY, "reachable", reason="reachable")
        return with_last_call(probe, await ops.providers.get("cloudinary"))

    async def fal() -> ComponentHealth:
        if not ops.fal.configured:
            return ComponentHealth(
                "fal", Status.DEGRADED, "not configured", reason="not_configured"
            )
        try:
            await ops.fal.reachable()
        except FalError as exc:
            probe = ComponentHealth(
                "fal", Status.DOWN, str(exc), reason="error", params={"error": str(exc)}
            )
        else:
            probe = ComponentHealth(
                "fal",
                Status.HEALTHY,
                f"{ops.fal.model} reachable",
                reason="fal_reachable",
                params={"model": ops.fal.model},
            )
        return with_last_call(probe, await ops.providers.get("fal"))

    async def instagram() -> ComponentHealth:
        """The Graph API as the last real call found it (429 degrades, other errors down)."""
        state = await ops.providers.get("instagram")
        if state is None or not state.failing:
            if state and state.last_ok_at:
                return ComponentHealth(
                    "instagram",
                    Status.HEALTHY,
                    f"last call ok at {state.last_ok_at:%H:%M} UTC",
                    reason="last_ok",
                    params={"at": state.last_ok_at.isoformat()},
                )
            return ComponentHealth("instagram", Status.HEALTHY, "no call yet", reason="no_call")
        status = Status.DEGRADED if state.status == 429 else Status.DOWN
        return ComponentHealth(
            "instagram",
            status,
            state.describe(),
            {"last_call": state.to_json()},
            reason="last_call",
            params=last_call(state),
        )

    # A component is checked once its setting is set: a bare install reports healthy, and
    # an integration that is not used never pages anyone.
    checks = []
    if ops.tokens.configured:
        checks += [
            HealthCheck("instagram_token", ops.tokens.health, critical=True),
            HealthCheck("instagram", instagram),
            HealthCheck("stats", ops.stats.health),
        ]
    if ops.cloudinary.configured:
        checks.append(HealthCheck("cloudinary", cloudinary))
    if ops.fal.configured:
        checks.append(HealthCheck("fal", fal))
    return checks


async def open_incidents_by_component(incidents: IncidentService) -> dict[str, tuple[str, int]]:
    """For `health`: the most urgent open incident naming each component (label)."""
    found: dict[str, tuple[str, int]] = {}
    views = await incidents.list(
        states=[IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED], limit=500
    )
    for view in sorted(views, key=lambda v: (v.severity.rank, v.id)):
        component = view.labels.get("component")
        if isinstance(component, str) and component not in found:
            found[component] = (view.severity.value, view.id)
    return found


# The weekly token status: Monday 09:00 UTC, whenever the service (re)started.
TOKEN_WEEKLY_CRON: dict[str, Any] = {"day_of_week": "mon", "hour": 9, "minute": 0}


def add_jobs(
    ops: PipelineOps,
    scheduler: SchedulerService,
    watch: HealthWatch,
    *,
    now: datetime,
    health_interval: float,
) -> None:
    """The pipeline's periodic jobs; the database stays the source of truth for each."""

    def every(
        job_id: str, func: Callable[[], Awaitable[object]], seconds: float, first: float
    ) -> None:
        scheduler.add_job(
            _logged(job_id, func),
            "interval",
            seconds=seconds,
            id=job_id,
            replace_existing=True,
            next_run_time=now + timedelta(seconds=first),
        )

    # Due retries are looked for every 30 s, or twice per shortest delay when the delays are
    # shorter (RETRY_DELAYS=10s,30s,60s for a rehearsal): never much later than due.
    shortest = min(d.total_seconds() for d in ops.retry.delays)
    every("retry-due", ops.runner.run_due, min(RETRY_TICK_SECONDS, max(1.0, shortest / 2)), 5)
    every("token-check", ops.tokens.check, 86400, 10)
    scheduler.add_job(
        _logged("token-weekly", ops.tokens.weekly_post),
        "cron",
        id="token-weekly",
        replace_existing=True,
        **TOKEN_WEEKLY_CRON,
    )
    every("health-watch", watch.run, health_interval, 15)
    ops.stats.schedule()


def _logged(job_id: str, func: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await func()
        except Exception:
            log.exception("scheduled job %s failed", job_id)

    run.__qualname__ = f"{job_id}:{getattr(func, '__qualname__', func)}"
    return run
