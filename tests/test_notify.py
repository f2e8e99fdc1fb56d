"""services.notify: the outbox hook, the sender, the fallback channel and the test message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.clock import FrozenClock
from services.container import Services
from services.errors import InvalidTransition
from services.incident_types import AlertIn, ChangeKind, IncidentChange, IncidentView
from services.main import fallback_wording, open_services
from services.models import IncidentState, OutboxMessage
from services.notify.outbox import Doorbell, Op, Target, add_row, priority_of
from services.severity import Severity
from tests.botkit import PD_USER, TEAM, TOKEN, bot_settings, running_fake
from tests.conftest import free_port, make_settings
from tests.fakes.smtp import FakeSmtp
from tests.fakes.telegram import FakeTelegram

START = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def take(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


async def rows(services: Services) -> list[OutboxMessage]:
    async with services.db.read() as session:
        return list(
            (await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
        )


@pytest.fixture
async def notified(migrated_url: str) -> AsyncIterator[Services]:
    fake = FakeTelegram(TOKEN)  # never started: these tests run no sender
    fake.port = free_port()
    settings = bot_settings(migrated_url, fake)
    async with open_services(settings, clock=FrozenClock(START)) as services:
        yield services


async def test_changes_queue_one_card_and_pending_edits_merge(notified: Services) -> None:
    incidents = notified.incidents
    first = await incidents.trigger(AlertIn(Severity.P2, "stats failing", "stats"))
    await incidents.trigger(AlertIn(Severity.P2, "stats failing", "stats"))
    await incidents.acknowledge(first.incident.id, actor="tg:1 (@kim)")
    queued = await rows(notified)
    assert [(r.op, r.chat_id, r.status) for r in queued] == [(Op.CARD, TEAM, "pending")]
    assert queued[0].payload["merges"] == 2
    assert queued[0].payload["last"]["kind"] == "acknowledged"
    assert not queued[0].wants_fallback


async def test_a_failed_change_queues_nothing(notified: Services) -> None:
    view = (await notified.incidents.trigger(AlertIn(Severity.P0, "down", "down"))).incident
    await notified.incidents.resolve(view.id, actor="cli")
    before = len(await rows(notified))
    with pytest.raises(InvalidTransition):
        await notified.incidents.acknowledge(view.id, actor="cli")
    assert len(await rows(notified)) == before


async def test_escalation_replies_and_pages_each_user(notified: Services) -> None:
    view = (await notified.incidents.trigger(AlertIn(Severity.P0, "down", "down"))).incident
    await notified.incidents.write(
        lambda w: w.record(
            [
                IncidentChange(
                    ChangeKind.ESCALATED,
                    view,
                    "escalation",
                    w.now,
                    {"step": "pd", "target": "pd", "user_ids": [PD_USER, 77], "message": "m"},
                )
            ]
        )
    )
    ops = [(r.op, r.chat_id) for r in await rows(notified)]
    assert ops == [(Op.CARD, TEAM), (Op.REPLY, TEAM), (Op.DIRECT, PD_USER), (Op.DIRECT, 77)]
    assert (await rows(notified))[0].wants_fallback  # a P0 alert


async def test_idempotency_key_is_unique(notified: Services) -> None:
    with pytest.raises(IntegrityError):
        async with notified.db.write() as session:
            for _ in range(2):
                add_row(
                    session,
                    key="same",
                    target=Target(TEAM, None),
                    priority=0,
                    incident_id=None,
                    op=Op.TEXT,
                    payload={},
                    now=START,
                )


@pytest.mark.parametrize(
    ("token", "failing_for", "age", "expect"),
    [
        (None, None, timedelta(0), "bot_off"),
        (TOKEN, None, timedelta(minutes=4), None),
        (TOKEN, None, timedelta(minutes=5), "not_delivered"),
        (TOKEN, timedelta(minutes=6), timedelta(seconds=1), "telegram_failing"),
        (TOKEN, timedelta(minutes=1), timedelta(seconds=1), None),
    ],
)
async def test_when_to_fall_back(
    migrated_url: str,
    token: str | None,
    failing_for: timedelta | None,
    age: timedelta,
    expect: str | None,
) -> None:
    from services.notify.fallback import FallbackService

    settings = make_settings(migrated_url, telegram_bot_token=token)
    failing = START - failing_for if failing_for else None
    fallback = FallbackService(
        settings,
        None,  # type: ignore[arg-type]
        FrozenClock(START),
        wording=fallback_wording(settings),
        failing_since=lambda: failing,
    )
    row = OutboxMessage(created_at=START - age)
    reason = fallback.due(row, START)
    if expect is None:
        assert reason is None
    else:
        assert reason is not None and reason.code == expect


async def test_stuck_p0_goes_to_email_and_webhook_once(migrated_url: str) -> None:
    smtp = FakeSmtp(free_port())
    smtp.start()
    try:
        async with webhook_receiver() as (url, received):
            fake = FakeTelegram(TOKEN)
            fake.port = free_port()
            settings = bot_settings(
                migrated_url,
                fake,
                smtp_url=smtp.url,
                alert_email_to="oncall@example.test",
                fallback_webhook_url=url,
            )
            clock = FrozenClock(START)
            async with open_services(settings, clock=clock) as services:
                await services.incidents.trigger(AlertIn(Severity.P0, "publishing down", "pub"))
                await services.incidents.trigger(AlertIn(Severity.P2, "stats slow", "stats"))
                assert await services.notify.fallback.step() == 0
                clock.advance(minutes=5)
                assert await services.notify.fallback.step() == 1
                assert await services.notify.fallback.step() == 0
    finally:
        smtp.stop()
    assert [m["Subject"] for m in smtp.messages] == ["[P0] #1 publishing down"]
    body = smtp.messages[0].get_payload(decode=True)
    assert isinstance(body, bytes)
    assert "not delivered to Telegram within 5m" in body.decode()
    assert len(received) == 1
    assert received[0]["incident"]["title"] == "publishing down"


async def test_notify_test_command_line(migrated_url: str, tmp_path: Path) -> None:
    smtp = FakeSmtp(free_port())
    smtp.start()
    try:
        async with running_fake() as fake, webhook_receiver() as (url, received):
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")},
                "DATABASE_URL": migrated_url,
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "TELEGRAM_API_BASE": fake.base,
                "TELEGRAM_TEAM_CHAT_ID": str(TEAM),
                "SMTP_URL": smtp.url,
                "ALERT_EMAIL_TO": "oncall@example.test",
                "FALLBACK_WEBHOOK_URL": url,
            }

            def run(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, "-m", "services.cli", "notify", "test"],
                    env={**env, **extra},
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )

            done = await asyncio.to_thread(run, {})
            assert done.returncode == 0, done.stdout + done.stderr
            assert [line.split()[:2] for line in done.stdout.splitlines()] == [
                ["telegram", "ok"],
                ["email", "ok"],
                ["webhook", "ok"],
            ]
            # In the chat's language (Korean by default) on every channel.
            assert "SunFlow Ops 테스트 메시지" in fake.in_chat(TEAM)[0].text
            assert received[0]["test"] is True
            assert received[0]["subject"] == "SunFlow Ops 테스트 메시지"
            assert TOKEN not in done.stdout + done.stderr

            fake.down = True
            failed = await asyncio.to_thread(run, {})
            assert failed.returncode == 1
            assert "telegram  FAILED" in failed.stdout
            assert TOKEN not in failed.stdout + failed.stderr

            none = await asyncio.to_thread(
                run,
                {"TELEGRAM_BOT_TOKEN": "", "SMTP_URL": "", "FALLBACK_WEBHOOK_URL": ""},
            )
            assert none.returncode == 2
    finally:
        smtp.stop()
    assert len(smtp.messages) == 2


async def test_escalation_pages_people_even_without_a_team_chat(migrated_url: str) -> None:
    async with open_services(make_settings(migrated_url), clock=FrozenClock(START)) as services:
        view = (await services.incidents.trigger(AlertIn(Severity.P0, "down", "down"))).incident
        await services.incidents.write(
            lambda w: w.record(
                [
                    IncidentChange(
                        ChangeKind.ESCALATED,
                        view,
                        "escalation",
                        w.now,
                        {"step": "pd", "target": "pd", "user_ids": [PD_USER], "message": "m"},
                    )
                ]
            )
        )
        assert [(r.op, r.chat_id) for r in await rows(services)] == [(Op.DIRECT, PD_USER)]


async def test_settled_rows_are_pruned_after_a_week(notified: Services) -> None:
    from services.models import OutboxStatus
    from services.notify.sender import OutboxSender

    await notified.incidents.trigger(AlertIn(Severity.P2, "old", "old"))
    await notified.incidents.trigger(AlertIn(Severity.P2, "pending", "pending"))
    async with notified.db.write() as session:
        first = await session.get(OutboxMessage, 1)
        assert first is not None
        first.status = OutboxStatus.SENT.value
    clock = FrozenClock(START + timedelta(days=8))
    assert notified.notify.delivery is not None
    sender = OutboxSender(notified.db, clock, notified.notify.delivery, None)  # type: ignore[arg-type]
    assert await sender.prune() == 1
    assert [r.status for r in await rows(notified)] == ["pending"]


def test_a_bad_fallback_delay_names_the_setting() -> None:
    from services.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match="setting TELEGRAM_FALLBACK_AFTER"):
        load_settings(_env_file=None, telegram_fallback_after="soon")
    assert load_settings(_env_file=None).fallback_after == timedelta(minutes=5)


async def test_changes_at_the_same_instant_never_collide(notified: Services) -> None:
    """A frozen clock makes every change share one instant; each still gets its message."""
    from services.models import OutboxStatus

    view = (await notified.incidents.trigger(AlertIn(Severity.P1, "same", "same"))).incident
    for _ in range(3):
        async with notified.db.write() as session:
            for row in await session.scalars(select(OutboxMessage)):
                row.status = OutboxStatus.SENT.value  # as if the sender had been quick
        await notified.incidents.snooze(view.id, actor="cli", duration=timedelta(hours=1))
    keys = [r.idempotency_key for r in await rows(notified)]
    assert len(keys) == len(set(keys)) == 7  # the card, then an edit and a reply per snooze


def _incident(severity: Severity) -> IncidentView:
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    return IncidentView(
        id=1,
        dedup_key="k",
        severity=severity,
        title="t",
        description="",
        source="api",
        labels={},
        state=IncidentState.TRIGGERED,
        occurrence_count=1,
        first_seen_at=now,
        last_seen_at=now,
        response_deadline=now,
        acknowledged_at=None,
        acknowledged_by=None,
        resolved_at=None,
        resolved_by=None,
    )


@pytest.mark.parametrize(
    ("severity", "kind", "actor", "expected"),
    [
        # A person's answer goes in the urgent tier, ahead of new P2/P3 cards.
        (Severity.P2, ChangeKind.ACKNOWLEDGED, "tg:1003 (@kim)", 1),
        (Severity.P3, ChangeKind.RESOLVED, "cli:lee", 1),
        (Severity.P3, ChangeKind.SNOOZED, "api:deploy-bot", 1),
        (Severity.P2, ChangeKind.CHECKLIST, "tg:1003 (@kim)", 1),
        (Severity.P2, ChangeKind.REOPENED, "tg:1003 (@kim)", 1),
        # A P0's own rank is already higher.
        (Severity.P0, ChangeKind.ACKNOWLEDGED, "tg:1003 (@kim)", 0),
        # New cards, repeats and machines' changes keep their severity's rank.
        (Severity.P2, ChangeKind.TRIGGERED, "intake", 2),
        (Severity.P3, ChangeKind.DEDUPLICATED, "intake", 3),
        (Severity.P2, ChangeKind.RESOLVED, "intake", 2),
        (Severity.P2, ChangeKind.ESCALATED, "escalation", 2),
        (Severity.P2, ChangeKind.UNACKNOWLEDGED, "timer", 2),
    ],
)
def test_priority_of_a_change(
    severity: Severity, kind: ChangeKind, actor: str, expected: int
) -> None:
    at = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert priority_of(IncidentChange(kind, _incident(severity), actor, at)) == expected


async def test_the_doorbell_wakes_every_waiter_and_keeps_a_ring_that_came_early() -> None:
    """The outbox's writers ring once; the sender and the fallback both wake. A ring during
    a waiter's step (after it read `rings`) is not lost: its next wait returns at once."""
    bell = Doorbell()
    seen = bell.rings
    sender = asyncio.create_task(bell.wait(seen, 30))
    fallback = asyncio.create_task(bell.wait(seen, 30))
    await asyncio.sleep(0)
    assert not sender.done() and not fallback.done()
    bell.ring()
    await asyncio.wait_for(asyncio.gather(sender, fallback), 5)
    seen = bell.rings
    bell.ring()  # while the waiter was busy with its step
    await asyncio.wait_for(bell.wait(seen, 30), 5)
    seen = bell.rings
    waiting = asyncio.create_task(bell.wait(seen, 0.01))  # nothing rings: the timeout ends it
    await asyncio.wait_for(waiting, 5)
    assert bell.rings == seen
