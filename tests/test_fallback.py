"""services.notify.fallback: Telegram's own outage is announced on the fallback channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.clock import FrozenClock
from services.incident_types import AlertIn
from services.main import open_services
from services.notify.fallback import ANNOUNCE_RETRY, FallbackService
from services.severity import Severity
from tests.botkit import TOKEN
from tests.conftest import free_port, make_settings
from tests.test_notify import webhook_receiver

START = datetime(2026, 1, 30, 3, 0, tzinfo=UTC)


async def test_an_outage_is_announced_once_and_its_end_once(migrated_url: str) -> None:
    async with webhook_receiver() as (url, received):
        settings = make_settings(
            migrated_url,
            telegram_bot_token=TOKEN,
            telegram_team_chat_id=-100123,
            fallback_webhook_url=url,
        )
        clock = FrozenClock(START)
        failing: dict[str, datetime | None] = {"since": None}
        async with open_services(settings, clock=clock) as services:
            fallback = FallbackService(
                settings, services.db, clock, failing_since=lambda: failing["since"]
            )
            # Only a P2 waits in the outbox: severities do not matter for this message.
            await services.incidents.trigger(AlertIn(Severity.P2, "stats slow", "stats"))
            assert await fallback.announce() is None
            failing["since"] = clock.now()
            clock.advance(minutes=4, seconds=59)
            assert await fallback.announce() is None  # TELEGRAM_FALLBACK_AFTER is 5m
            clock.advance(seconds=1)
            assert await fallback.announce() == "down"
            for _ in range(3):
                assert await fallback.announce() is None
                clock.advance(minutes=10)
            failing["since"] = None
            assert await fallback.announce() == "up"
            assert await fallback.announce() is None
    assert [r["event"] for r in received] == ["telegram_down", "telegram_up"]
    down = received[0]
    assert down["subject"] == "[SunFlow Ops] Telegram failing: alerts do not reach the chat"
    assert down["failing_since"] == START.isoformat() and down["pending"] == 1
    assert "Telegram has not accepted a message since 2026-01-30T03:00:00+00:00" in down["text"]
    assert TOKEN not in str(received)


async def test_a_failing_channel_is_tried_again_later(migrated_url: str) -> None:
    settings = make_settings(
        migrated_url,
        telegram_bot_token=TOKEN,
        fallback_webhook_url=f"http://127.0.0.1:{free_port()}/nobody",
    )
    clock = FrozenClock(START)
    async with open_services(settings, clock=clock) as services:
        fallback = FallbackService(
            settings, services.db, clock, failing_since=lambda: START - timedelta(minutes=6)
        )
        assert await fallback.announce() is None  # nobody listens: not announced
        assert fallback.outage_announced is None
        assert fallback._announce_after == START + ANNOUNCE_RETRY


async def test_no_bot_no_announcement(migrated_url: str) -> None:
    async with webhook_receiver() as (url, received):
        settings = make_settings(migrated_url, fallback_webhook_url=url)  # the bot is off
        clock = FrozenClock(START)
        async with open_services(settings, clock=clock) as services:
            fallback = FallbackService(
                settings, services.db, clock, failing_since=lambda: START - timedelta(hours=1)
            )
            assert await fallback.announce() is None
    assert received == []
