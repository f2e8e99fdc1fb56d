"""The composition root: builds the services from settings, each given its collaborators in
its constructor, and runs `sunflow-ops serve`."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from services import db as dbmod
from services.audit import AuditService
from services.board import BOARD_JOB, BoardChanges, BoardService
from services.cards import CardFacts
from services.checklists import ChecklistService
from services.clock import Clock, SystemClock
from services.config import Settings
from services.container import Services
from services.db import Database
from services.escalation import EscalationService
from services.grants import GrantService
from services.health import HealthCheck, HealthService, HealthWatch
from services.heartbeats import CHECK_SECONDS, HeartbeatService, watch_own_jobs
from services.incidents import IncidentService
from services.intake import IntakeService
from services.leader import (
    SCHEDULER_LEASE,
    Duties,
    FollowerHook,
    Leadership,
    LeaseStore,
    instance_name,
)
from services.metrics import Metrics
from services.notify.delivery import Delivery
from services.notify.fallback import FallbackWording
from services.notify.outbox import Outbox, team_target
from services.notify.sender import Renderer
from services.notify.service import NotifyService
from services.oncall import OncallService
from services.ops import add_jobs, open_incidents_by_component, open_pipeline_ops, pipeline_checks
from services.pagerduty import PagerDutyService
from services.policy import load_policy
from services.postmortem import PostmortemService
from services.probe import CHECK_TIMEOUT, DatabaseProbe
from services.reports import ReportService, chart_png, summary_text
from services.retry import describe_retries
from services.scheduler import SchedulerService
from services.sse import HubConfig, SSEHub
from services.sse_redis import RedisRelay
from services.timers import Alarm, EscalationTimer
from services.tokens import TokenStatus
from services.updates import UpdateLog, Webhook

log = logging.getLogger("sunflow_ops")

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


@asynccontextmanager
async def open_services(
    settings: Settings, *, clock: Clock | None = None
) -> AsyncIterator[Services]:
    """Build every service over one database, each from the ones before it; nothing runs in
    the background yet. The path of an alert, read bottom-up here: intake -> incidents (one
    write path) -> its hooks (escalation, the outbox, the board, the follower wake-up) -> the
    outbox sender -> the chat's `Delivery` (the bot's Telegram client, `chat_delivery`)."""
    clock = clock or SystemClock()
    stack = AsyncExitStack()
    policy = load_policy(settings.escalation_policy_file)
    database = Database(settings.database_url)
    metrics = Metrics()
    instance = instance_id(settings)
    # Who runs the scheduled work and sends (one instance at a time, fenced); the gate of
    # the scheduler, the escalation timer and the outbox sender.
    leadership = Leadership(
        LeaseStore(
            database,
            clock,
            name=SCHEDULER_LEASE,
            holder=instance,
            ttl=timedelta(seconds=settings.leader_lease_seconds),
        )
    )
    scheduler = SchedulerService(gate=leadership)
    sse = SSEHub(
        hub_config(settings),
        clock=clock,
        registry=metrics.registry,
        relay=redis_link(settings, instance=instance, registry=metrics.registry),
    )
    relay = sse.relay if isinstance(sse.relay, RedisRelay) else None
    if relay is not None:
        stack.push_async_callback(relay.close)
    # What every incident write tells, in its transaction and after it commits.
    alarm = Alarm()
    oncall = OncallService(
        database, clock, rotation=policy.rotation, pd_user_ids=settings.pd_user_ids
    )
    escalation = EscalationService(
        database,
        clock=clock,
        policy=policy,
        oncall=oncall,
        metrics=metrics,
        alarm=alarm,
        # The ladder's 30-minute step says how the incident's automatic retries went.
        step_details={"retries_done": describe_retries},
    )
    delivery, renderer = chat_delivery(settings)
    if delivery is not None:
        stack.push_async_callback(delivery.close)
    # The outbox's writers: each incident change's chat messages, in its transaction; the
    # sender that drains them is built once what a card shows can be read (below).
    outbox = Outbox(database, clock, team_target(settings))
    board_changes = BoardChanges()
    # Whoever a step pages may act on that incident until it resolves.
    grants = GrantService(database)
    incidents = IncidentService(
        database,
        clock,
        deadlines=policy.deadline_after,
        hooks=[
            escalation,  # the ladder and its next wake-up
            grants,  # a page grants its person that incident
            outbox.hook,  # the chat messages, in the outbox before they are sent
            board_changes,  # the live board publishes again
            FollowerHook(leadership, database),  # on a follower: NOTIFY wakes the leader
        ],
    )
    intake = IntakeService(incidents)
    checklists = ChecklistService(database, clock, incidents)

    async def post_token_status(status: TokenStatus) -> None:
        await outbox.post_to_team({"token_weekly": status.to_json()}, key="token-weekly")

    ops = await stack.enter_async_context(
        open_pipeline_ops(
            settings,
            db=database,
            clock=clock,
            incidents=incidents,
            scheduler=scheduler,
            post_to_team=post_token_status,
        )
    )
    card_facts = CardFacts(
        incidents=incidents,
        escalation=escalation,
        checklists=checklists,
        retry=ops.retry,
        runbook_base_url=settings.runbook_base_url,
    )
    # The outbox's sender (through the chat's delivery), the fallback channels and the test.
    notify = NotifyService(
        settings,
        database,
        clock,
        outbox=outbox,
        delivery=delivery,
        renderer=renderer,
        fallback_wording=fallback_wording(settings),
        card_facts=card_facts,
        gate=leadership,
        registry=metrics.registry,
    )
    timer = EscalationTimer(
        escalation,
        incidents,
        alarm,
        clock,
        gate=leadership,
        sweep_seconds=settings.escalation_sweep_seconds,
    )
    # A real write within a short timeout, not SELECT 1 (services/probe.py).
    probe = DatabaseProbe(
        database,
        clock,
        incidents,
        instance=instance,
        interval=settings.health_interval_seconds,
        fallback=notify.fallback.alarm_database,
    )
    heartbeats = HeartbeatService(database, clock, incidents)
    # What the health report checks: the pipeline's components (those set up), then ours.
    checks = [
        *pipeline_checks(ops),
        HealthCheck("database", probe.check, critical=True, timeout=CHECK_TIMEOUT),
        HealthCheck("heartbeats", heartbeats.health),
        HealthCheck("scheduler", scheduler.check),
        HealthCheck("leader", leadership.health),
        HealthCheck("escalation", timer.check),
    ]
    if settings.telegram_bot_token is not None:
        # With the bot off by choice there is no Telegram component to be unhealthy.
        checks.append(HealthCheck("telegram", notify.check))
    checks.append(HealthCheck("sse", sse.check))
    if relay is not None:
        checks.append(HealthCheck("redis", relay.check))
    health = HealthService(
        checks,
        open_incidents=partial(open_incidents_by_component, incidents),
    )
    services = Services(
        settings=settings,
        clock=clock,
        db=database,
        metrics=metrics,
        incidents=incidents,
        intake=intake,
        health=health,
        # The scheduled health run: a component down raises its incident, recovery resolves.
        health_watch=HealthWatch(health, incidents),
        scheduler=scheduler,
        sse=sse,
        escalation=escalation,
        timer=timer,
        alarm=alarm,
        oncall=oncall,
        grants=grants,
        checklists=checklists,
        postmortems=PostmortemService(
            database, clock, incidents, checklists, language=settings.bot_language
        ),
        reports=ReportService(database, clock),
        ops=ops,
        notify=notify,
        card_facts=card_facts,
        audit=AuditService(database, clock),
        leader=leadership,
        updates=UpdateLog(database, clock, instance=instance),
        board=BoardService(
            changes=board_changes,
            incidents=incidents,
            escalation=escalation,
            health=health,
            hub=sse,
            clock=clock,
        ),
        pagerduty=PagerDutyService(database, intake, incidents),
        heartbeats=heartbeats,
        probe=probe,
        webhook=Webhook(),
        sse_relay=relay,
    )
    try:
        yield services
    finally:
        await stack.aclose()
        await database.dispose()


def chat_delivery(settings: Settings) -> tuple[Delivery | None, Renderer | None]:
    """The chat the outbox delivers to: the bot's Bot API client (with Telegram's limits) and
    its renderer; neither with the bot off. The composition root reaches into bot/ only at run
    time (here and for `bot_context`), so that no module of services/ imports it."""
    if settings.telegram_bot_token is None:
        return None, None
    from bot.locales import Catalogue
    from bot.render import TelegramRenderer
    from bot.telegram_api import TelegramClient

    return (
        TelegramClient.from_settings(settings),
        TelegramRenderer(Catalogue(settings.bot_language)),
    )


def fallback_wording(settings: Settings) -> FallbackWording:
    """The fallback channel's words, in the bot's language (bot/, reached at run time like
    `chat_delivery`); e-mail goes out with the bot off too, so always built."""
    from bot.fallback_text import FallbackText
    from bot.locales import Catalogue

    return FallbackText(Catalogue(settings.bot_language))


def redis_link(
    settings: Settings, *, instance: str, registry: CollectorRegistry
) -> Callable[[SSEHub], RedisRelay] | None:
    """With REDIS_URL: how the hub makes its link to the other instances (the link delivers
    into the hub, so the hub makes it)."""
    url = settings.redis_url
    if url is None:
        return None

    def link(hub: SSEHub) -> RedisRelay:
        return RedisRelay(
            hub,
            url,
            instance_id=instance,
            prefix=settings.redis_key_prefix,
            # The board is this instance's own, never shared.
            local_jobs=frozenset({BOARD_JOB}),
            registry=registry,
        )

    return link


# The weekly report goes to the team chat on Monday at 09:00 UTC.
WEEKLY_REPORT_CRON: dict[str, Any] = {"day_of_week": "mon", "hour": 9, "minute": 0}


async def post_weekly_report(services: Services) -> bool:
    """Queue the week's report text and chart for the team chat (the scheduler's job)."""
    report = await services.reports.weekly()
    from bot.locales import Catalogue  # the chat's words for our own titles (the root's)

    language = services.settings.bot_language
    text = summary_text(report, language=language, title=Catalogue(language).title)
    chart = await asyncio.to_thread(chart_png, report)
    key = f"report:weekly:{report.end:%Y-%m-%dT%H}"
    return await services.notify.outbox.queue_to_team(
        key, text, file=(f"incidents-{report.end:%Y-%m-%d}.png", chart)
    )


def instance_id(settings: Settings) -> str:
    """This process's name among the instances (lease, Redis, health): INSTANCE_ID, else
    host:HTTP_PORT (host:pid when the port is 0)."""
    return instance_name(settings.instance_id, port=settings.http_port)


def hub_config(settings: Settings) -> HubConfig:
    return HubConfig(
        max_connections=settings.max_sse_connections,
        heartbeat_seconds=settings.sse_heartbeat_seconds,
        idle_timeout_seconds=settings.sse_idle_timeout_seconds,
        cleanup_interval_seconds=settings.sse_cleanup_interval_seconds,
        history_size=settings.sse_history_size,
        history_seconds=settings.sse_history_seconds,
        retry_ms=settings.sse_retry_ms,
        client_buffer_bytes=settings.sse_client_buffer_bytes,
        probe_jobs=settings.probe_jobs,
    )


# Telegram update ids taken in (webhook mode) are forgotten after two days; checked hourly.
PRUNE_UPDATES_SECONDS = 3600


async def lead(services: Services) -> None:
    """This instance has become the leader: arm the timers and start the scheduled work."""
    try:
        with services.leader.fenced():
            await services.ops.retry.recover_interrupted()
    except Exception:  # the timers and the outbox matter more: start them regardless
        log.exception("could not mark interrupted retries; they wait for the next takeover")
    add_jobs(
        services.ops,
        services.scheduler,
        services.health_watch,
        now=services.clock.now(),
        health_interval=services.settings.health_interval_seconds,
    )
    services.scheduler.add_job(
        post_weekly_report,
        "cron",
        args=[services],
        id="weekly-report",
        replace_existing=True,
        **WEEKLY_REPORT_CRON,
    )
    services.scheduler.add_job(
        services.updates.prune,
        "interval",
        seconds=PRUNE_UPDATES_SECONDS,
        id="telegram-updates-prune",
        replace_existing=True,
    )
    services.scheduler.add_job(
        services.heartbeats.check,
        "interval",
        seconds=CHECK_SECONDS,
        id="heartbeat-check",
        replace_existing=True,
    )
    try:
        # The service's own periodic jobs ping heartbeats, so a job that stops running is
        # noticed like a cron job that stops.
        await watch_own_jobs(
            services.heartbeats,
            services.scheduler.scheduler,
            timedelta(minutes=services.settings.stats_interval_minutes),
        )
    except Exception:
        log.exception("could not set up the built-in heartbeats")
    services.timer.lead()
    await services.notify.lead(True)


async def follow(services: Services) -> None:
    """Another instance leads (or this one stops): no timers, no jobs, no sending here."""
    await services.notify.lead(False)
    services.scheduler.scheduler.remove_all_jobs()


def heard(services: Services, payload: str) -> None:
    """A follower committed a change to an incident: re-arm its timer, send its rows."""
    kind, _, value = payload.partition(":")
    if kind != "incident" or not value.isdigit() or not services.leader.is_leader:
        return
    services.alarm.hint()
    services.notify.wake()


def background_contexts(services: Services) -> list[CleanupCtx]:
    """What `serve` runs beside the HTTP routes, each started and stopped by the app."""

    async def intake_ctx(_app: web.Application) -> AsyncIterator[None]:
        await services.intake.start()
        yield
        await services.intake.stop()

    async def scheduler_ctx(_app: web.Application) -> AsyncIterator[None]:
        services.scheduler.start()
        yield
        await services.scheduler.stop()
        await services.heartbeats.stop()  # the pings of the jobs that ran

    async def leader_ctx(_app: web.Application) -> AsyncIterator[None]:
        # Escalation timers, periodic jobs and the outbox sender run on the one instance that
        # holds the lease; a lone instance gets it at once, before anything else starts.
        await services.notify.lead(False)
        await services.leader.start(
            Duties(
                gained=partial(lead, services),
                lost=partial(follow, services),
                heard=partial(heard, services),
            )
        )
        yield
        await services.leader.stop()

    async def timer_ctx(_app: web.Application) -> AsyncIterator[None]:
        services.timer.start()
        yield
        await services.timer.stop()

    async def notify_ctx(_app: web.Application) -> AsyncIterator[None]:
        services.notify.start()
        yield
        await services.notify.stop()

    async def sse_ctx(_app: web.Application) -> AsyncIterator[None]:
        relay = services.sse_relay
        if relay is not None:
            await relay.start()
            # A short wait so the first requests find the link up; Redis down is not fatal
            # (the reader keeps trying with backoff, /api/health says so).
            if not await relay.wait_subscribed(2.0):
                log.warning("Redis (REDIS_URL) is not reachable yet; retrying in the background")
        await services.sse.start()
        yield
        await services.sse.stop()
        if relay is not None:
            await relay.stop()

    async def board_ctx(_app: web.Application) -> AsyncIterator[None]:
        services.board.start()
        yield
        await services.board.stop()

    async def probe_ctx(_app: web.Application) -> AsyncIterator[None]:
        services.probe.start()
        yield
        await services.probe.stop()

    contexts: list[CleanupCtx] = [
        intake_ctx,
        scheduler_ctx,
        sse_ctx,
        leader_ctx,
        timer_ctx,
        notify_ctx,
        board_ctx,
        probe_ctx,
    ]
    if services.settings.telegram_bot_token is None:
        log.warning("TELEGRAM_BOT_TOKEN is not set: the Telegram bot is off, the service runs")
    else:
        # The seam to the chat front end; services/ itself never imports aiogram.
        from bot.runtime import bot_context

        contexts.append(bot_context(services))
    return contexts


async def serve(
    settings: Settings, *, ready: Callable[[int], Awaitable[None]] | None = None
) -> None:
    """Run until SIGINT/SIGTERM; accepted writes are committed before it returns."""
    from services.web.app import create_app
    from services.web.limits import (
        ConnectionGuard,
        GuardedSite,
        connection_budget,
        fds_in_use,
        nofile_warning,
        raise_nofile,
        server_options,
        wanted_nofile,
    )

    soft, _hard = raise_nofile(wanted_nofile(settings.max_sse_connections))
    warning = nofile_warning(soft=soft, max_sse_connections=settings.max_sse_connections)
    if warning:
        log.warning("%s", warning)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_services(settings) as services:
        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        runner = web.AppRunner(app, shutdown_timeout=3.0, **server_options(settings))
        await runner.setup()
        guard = ConnectionGuard(
            budget=connection_budget(soft, fds_in_use()),
            header_timeout=settings.request_header_timeout_seconds,
            held=lambda: len(services.sse.connections),
        )
        site = GuardedSite(runner, settings.http_host, settings.http_port, guard=guard)
        await site.start()
        port = _bound_port(runner) or settings.http_port
        # What start-up built (SQLAlchemy, pydantic, aiohttp, prometheus: ~125,000 objects)
        # lives as long as the process: frozen, no full collection walks it again.
        gc.collect()
        gc.freeze()
        log.info("serving on http://%s:%s", settings.http_host, port)
        _retitle(process_title(instance_id(settings), settings.http_host, port))
        if ready is not None:
            await ready(port)
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await runner.cleanup()
            gc.unfreeze()
    log.info("stopped")


def process_title(instance: str, host: str, port: int) -> str:
    """`pgrep -f generation-service` (the SSE runbook) finds every instance; with the
    instance id in the title, `pgrep -f 'generation-service ops-a:8002'` finds one."""
    return f"sunflow-ops serve (generation-service {instance}) http://{host}:{port}"


def _retitle(title: str) -> None:
    """Name the process as the SSE runbook looks for it: `pgrep -f generation-service`."""
    import setproctitle

    setproctitle.setproctitle(title)


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


def migrate(settings: Settings) -> None:
    dbmod.upgrade(settings.database_url)
