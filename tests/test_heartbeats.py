"""Heartbeats: the overdue rule as a table, the service with a frozen clock, the ping route,
the service's own jobs pinging theirs, and /heartbeats in both languages."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiogram.types import Update
from aiohttp.test_utils import TestClient, TestServer

from bot.dispatcher import create_dispatcher
from bot.runtime import make_bot
from services.clock import FrozenClock
from services.config import Settings
from services.container import Services
from services.errors import InvalidInput, NotFound
from services.heartbeats import HeartbeatState, dedup_key, state_at, watch_own_jobs
from services.main import background_contexts, open_services
from services.models import IncidentState
from services.severity import Severity
from services.web.app import create_app
from tests.botkit import TEAM, TOKEN, VIEWER, bot_settings, running_fake
from tests.conftest import INTAKE, Client, free_port

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
HOUR, TEN = timedelta(hours=1), timedelta(minutes=10)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("last_ping", "now", "expected"),
    [
        (None, at(0), HeartbeatState.WAITING),  # just added
        (None, at(60), HeartbeatState.WAITING),  # a whole period after the add: still due
        (None, at(61), HeartbeatState.LATE),
        (None, at(70), HeartbeatState.LATE),  # the grace ends exactly here
        (None, at(70.01), HeartbeatState.DOWN),
        (at(30), at(31), HeartbeatState.UP),
        (at(30), at(90), HeartbeatState.UP),
        (at(30), at(95), HeartbeatState.LATE),
        (at(30), at(100), HeartbeatState.LATE),
        (at(30), at(101), HeartbeatState.DOWN),
        (at(30), at(60 * 24), HeartbeatState.DOWN),
    ],
)
def test_state_at(last_ping: datetime | None, now: datetime, expected: HeartbeatState) -> None:
    state = state_at(created_at=T0, last_ping_at=last_ping, every=HOUR, grace=TEN, now=now)
    assert state is expected


def test_no_grace_is_down_right_after_the_period() -> None:
    kwargs = {"created_at": T0, "last_ping_at": at(0), "every": HOUR, "grace": timedelta(0)}
    assert state_at(**kwargs, now=at(60)) is HeartbeatState.UP  # type: ignore[arg-type]
    assert state_at(**kwargs, now=at(60.01)) is HeartbeatState.DOWN  # type: ignore[arg-type]


@pytest.fixture
async def frozen(settings: Settings) -> AsyncIterator[tuple[Services, FrozenClock]]:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        yield services, clock


async def test_a_missed_ping_opens_an_incident_and_the_next_ping_resolves_it(
    frozen: tuple[Services, FrozenClock],
) -> None:
    services, clock = frozen
    beats = services.heartbeats
    view, created = await beats.add(
        "nightly-backup", every=HOUR, grace=TEN, severity=Severity.P1, actor="test"
    )
    assert created and view.state(clock.now()) is HeartbeatState.WAITING
    clock.advance(minutes=65)
    assert await beats.check() == []  # late, within its grace
    clock.advance(minutes=6)
    assert await beats.check() == ["nightly-backup"]
    [incident] = await services.incidents.list(states=[IncidentState.TRIGGERED])
    assert incident.dedup_key == dedup_key("nightly-backup") == "heartbeat:nightly-backup"
    assert incident.severity is Severity.P1 and incident.source == "heartbeat"
    assert incident.title == "Heartbeat nightly-backup missed: never pinged since it was added"
    health = await beats.health()
    assert health.detail == "overdue: nightly-backup" and health.status.value == "degraded"
    clock.advance(minutes=30)
    assert await beats.check() == []  # one incident per miss, not one per check
    assert (await services.incidents.get(incident.id)).incident.occurrence_count == 1

    result = await beats.ping("nightly-backup")
    assert result.resolved is not None and result.resolved.id == incident.id
    assert result.heartbeat.down_since is None
    assert result.heartbeat.state(clock.now()) is HeartbeatState.UP
    detail = await services.incidents.get(incident.id)
    assert (detail.incident.state, detail.incident.resolved_by) == (
        IncidentState.RESOLVED,
        "heartbeat",
    )
    assert (await beats.ping("nightly-backup")).resolved is None
    # A second miss is a new incident, titled with the last ping.
    clock.advance(minutes=71)
    assert await beats.check() == ["nightly-backup"]
    [again] = await services.incidents.list(states=[IncidentState.TRIGGERED])
    assert again.id != incident.id and "no ping since 2026-11-21T04:41:00+00:00" in again.title


async def test_add_change_list_remove(frozen: tuple[Services, FrozenClock]) -> None:
    services, clock = frozen
    beats = services.heartbeats
    await beats.add("a-job", every=HOUR, grace=TEN, actor="test")
    view, created = await beats.add("a-job", every=2 * HOUR, grace=timedelta(0), actor="test")
    assert not created and view.every == 2 * HOUR and view.grace == timedelta(0)
    assert [v.name for v in await beats.views()] == ["a-job"]
    clock.advance(hours=3)
    assert await beats.check() == ["a-job"]
    resolved = await beats.remove("a-job", actor="test")
    assert resolved is not None and resolved.state is IncidentState.RESOLVED
    assert await beats.views() == []
    with pytest.raises(NotFound):
        await beats.remove("a-job", actor="test")
    with pytest.raises(NotFound, match="heartbeat add a-job"):
        await beats.ping("a-job")


@pytest.mark.parametrize(
    ("name", "every", "grace", "field"),
    [
        ("", HOUR, TEN, "name"),
        ("-dash-first", HOUR, TEN, "name"),
        ("x" * 65, HOUR, TEN, "name"),
        ("has space", HOUR, TEN, "name"),
        ("ok", timedelta(seconds=59), TEN, "every"),
        ("ok", timedelta(days=400), TEN, "every"),
        ("ok", HOUR, timedelta(days=8), "grace"),
        ("ok", HOUR, timedelta(seconds=-1), "grace"),
    ],
)
async def test_bad_heartbeats_are_refused_naming_the_field(
    frozen: tuple[Services, FrozenClock], name: str, every: timedelta, grace: timedelta, field: str
) -> None:
    services, _ = frozen
    with pytest.raises(InvalidInput) as info:
        await services.heartbeats.add(name, every=every, grace=grace, actor="test")
    assert info.value.detail == {"field": field}


async def test_the_ping_route(
    client: Client, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await services.heartbeats.add("cron.hourly", every=HOUR, grace=TEN, actor="test")
    bearer = {"Authorization": f"Bearer {INTAKE}"}
    for method, url, headers in (
        ("POST", "/api/heartbeats/cron.hourly/ping", bearer),
        ("GET", "/api/heartbeats/cron.hourly/ping", bearer),
        ("GET", f"/api/heartbeats/cron.hourly/ping?token={INTAKE}", {}),
        ("POST", f"/api/heartbeats/cron.hourly/ping?token={INTAKE}", {}),
    ):
        response = await client.request(method, url, headers=headers)
        assert response.status == 200, (method, url, await response.text())
        body = await response.json()
        assert (body["name"], body["state"], body["every"]) == ("cron.hourly", "up", "1h")
        assert body["resolved_incident"] is None
    for url, headers in (
        ("/api/heartbeats/cron.hourly/ping", {}),
        ("/api/heartbeats/cron.hourly/ping?token=wrong-token-value", {}),
        ("/api/heartbeats/cron.hourly/ping", {"Authorization": "Bearer wrong-token-value"}),
    ):
        response = await client.post(url, headers=headers)
        assert response.status == 401
        assert "?token=" in (await response.json())["detail"]
    response = await client.post("/api/heartbeats/nope/ping", headers=bearer)
    assert response.status == 404
    assert "heartbeat add nope" in (await response.json())["detail"]["message"]
    response = await client.post("/api/heartbeats/bad%20name/ping", headers=bearer)
    assert response.status == 400
    response = await client.head(f"/api/heartbeats/cron.hourly/ping?token={INTAKE}")
    assert response.status == 405  # HEAD must not change anything
    listing = await (await client.get("/api/heartbeats")).json()
    # With the service's own (the client runs the leader's jobs).
    assert "cron.hourly" in [h["name"] for h in listing["heartbeats"]]
    # The token in the address never reaches a log line of ours, right or wrong (the test
    # server's access log is aiohttp's default; `serve` has none: see the test below).
    logged = "\n".join(
        record.getMessage() for record in caplog.records if record.name != "aiohttp.access"
    )
    assert INTAKE not in logged and "wrong-token-value" not in logged


async def test_serve_never_logs_the_token_of_a_ping(tmp_path: Path, settings: Settings) -> None:
    async with open_services(settings) as services:
        await services.heartbeats.add("cron.hourly", every=HOUR, grace=TEN, actor="test")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "HTTP_"))}
    env.update(
        HTTP_PORT=str(port),
        DATABASE_URL=settings.database_url,
        INTAKE_TOKEN=INTAKE,
        LOG_LEVEL="DEBUG",
    )
    # The log goes to a file: at DEBUG a pipe nobody reads fills up and stalls the server.
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"{base}/api/health") as response:
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            for token, status in ((INTAKE, 200), ("wrong-token-value", 401)):
                url = f"{base}/api/heartbeats/cron.hourly/ping?token={token}"
                async with http.get(url) as response:
                    assert response.status == status
            async with http.get(f"{base}/api/heartbeats/nope/ping?token={INTAKE}") as response:
                assert response.status == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    stderr = (tmp_path / "serve.log").read_text()
    assert "DEBUG" in stderr  # the log was on, at its most talkative
    assert INTAKE not in stderr and "wrong-token-value" not in stderr


async def test_the_service_own_jobs_ping_their_heartbeats(settings: Settings) -> None:
    async with open_services(settings) as services:
        scheduler = services.scheduler
        scheduler.start()
        try:
            await watch_own_jobs(services.heartbeats, scheduler.scheduler, timedelta(hours=6))
            await watch_own_jobs(services.heartbeats, scheduler.scheduler, timedelta(hours=6))
            names = {v.name: v for v in await services.heartbeats.views()}
            assert set(names) == {"sunflow-token-check", "sunflow-stats-collection"}
            assert names["sunflow-stats-collection"].every == timedelta(hours=6)
            runs: list[str] = []

            async def token_check() -> None:
                runs.append("token-check")

            # The job as services/ops.py arms it: the same id, run by the scheduler.
            scheduler.add_job(token_check, "date", id="token-check", run_date=datetime.now(UTC))
            for _ in range(100):
                views = {v.name: v for v in await services.heartbeats.views()}
                if views["sunflow-token-check"].last_ping_at is not None:
                    break
                await asyncio.sleep(0.05)
            assert runs == ["token-check"]
            assert views["sunflow-token-check"].last_ping_at is not None
            assert views["sunflow-stats-collection"].last_ping_at is None
            # A built-in heartbeat follows the settings; one re-added by hand is left alone.
            await watch_own_jobs(services.heartbeats, scheduler.scheduler, timedelta(hours=2))
            views = {v.name: v for v in await services.heartbeats.views()}
            assert views["sunflow-stats-collection"].every == timedelta(hours=2)
            await services.heartbeats.add(
                "sunflow-stats-collection", every=HOUR, grace=TEN, actor="cli:ops"
            )
            await watch_own_jobs(services.heartbeats, scheduler.scheduler, timedelta(hours=2))
            views = {v.name: v for v in await services.heartbeats.views()}
            assert views["sunflow-stats-collection"].every == HOUR
        finally:
            scheduler.shutdown()


async def test_stop_lets_the_ping_of_a_job_that_ran_finish(settings: Settings) -> None:
    """The scheduler stops right after a job has run: its heartbeat's ping is committed
    when `stop` returns, not left pending (lost, with its connection held, at exit)."""
    async with open_services(settings) as services:
        scheduler = services.scheduler
        await services.heartbeats.add("nightly", every=HOUR, grace=TEN, actor="cli:ops")
        services.heartbeats.watch_jobs(scheduler.scheduler, {"nightly-job": "nightly"})
        ran = asyncio.Event()

        async def job() -> None:
            ran.set()

        scheduler.add_job(job, "date", id="nightly-job", run_date=datetime.now(UTC))
        scheduler.start()
        await asyncio.wait_for(ran.wait(), 10)
        await scheduler.stop()
        await services.heartbeats.stop()
        pinging = [t for t in asyncio.all_tasks() if "_beat" in repr(t.get_coro())]
        assert not pinging, "a ping still pending after stop"
        [view] = [v for v in await services.heartbeats.views() if v.name == "nightly"]
        assert view.last_ping_at is not None


async def test_the_leader_runs_the_check(settings: Settings) -> None:
    """`serve`'s background contexts make this (lone) instance the leader, which arms the
    heartbeat check beside the other periodic jobs."""
    async with open_services(settings) as services:
        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        async with TestClient(TestServer(app)):
            for _ in range(100):
                if services.scheduler.scheduler.get_job("heartbeat-check") is not None:
                    break
                await asyncio.sleep(0.05)
            job = services.scheduler.scheduler.get_job("heartbeat-check")
            assert job is not None and job.trigger.interval == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("language", "title", "state"),
    [("en", "Heartbeats (1)", "missed"), ("ko", "하트비트 (1)", "누락")],
)
async def test_heartbeats_command_in_both_languages(
    migrated_url: str, tmp_path: Path, language: str, title: str, state: str
) -> None:
    clock = FrozenClock(T0)
    async with running_fake() as fake:
        settings = bot_settings(migrated_url, fake, bot_language=language)
        async with open_services(settings, clock=clock) as services:
            bot = make_bot(TOKEN, fake.base)
            try:
                dispatcher = create_dispatcher(services)

                async def say(text: str) -> str:
                    before = len(fake.calls)
                    update = Update.model_validate(
                        fake.message_update(VIEWER, TEAM, text), context={"bot": bot}
                    )
                    await dispatcher.feed_update(bot, update)
                    return "\n".join(
                        str(c.params.get("text", ""))
                        for c in fake.calls[before:]
                        if c.method == "sendMessage"
                    )

                assert "sunflow-ops heartbeat add NAME" in await say("/heartbeats")
                await services.heartbeats.add("nightly-backup", every=HOUR, grace=TEN, actor="t")
                clock.advance(minutes=30)
                await services.heartbeats.ping("nightly-backup")
                clock.advance(hours=2)
                reply = await say("/heartbeats")
                assert title in reply and "nightly-backup" in reply and state in reply
                assert "🔴" in reply and "2h" in reply and "P2" in reply
                help_text = await say("/help")
                assert "/heartbeats" in help_text
            finally:
                await bot.session.close()
