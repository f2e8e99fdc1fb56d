"""services.notify.fallback: Telegram's own outage is announced on the fallback channel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from services.clock import FrozenClock
from services.config import Settings
from services.container import Services
from services.incident_types import AlertIn
from services.main import fallback_wording, open_services
from services.notify.fallback import ANNOUNCE_RETRY, FallbackService
from services.severity import Severity
from tests.botkit import TOKEN
from tests.conftest import free_port, make_settings
from tests.test_locales import english
from tests.test_notify import webhook_receiver

START = datetime(2026, 1, 30, 3, 0, tzinfo=UTC)


def _telegram_and_webhook(database_url: str, webhook: str, **overrides: object) -> Settings:
    """The bot on, a team chat, and the fallback webhook at `webhook`."""
    return make_settings(
        database_url,
        telegram_bot_token=TOKEN,
        telegram_team_chat_id=-100123,
        fallback_webhook_url=webhook,
        **overrides,
    )


def _fallback(
    services: Services, clock: FrozenClock, failing_since: Callable[[], datetime | None]
) -> FallbackService:
    """A fallback service of its own on `services`' database and settings, whose Telegram
    has been failing since what `failing_since` says."""
    settings = services.settings
    wording = fallback_wording(settings)
    return FallbackService(
        settings, services.db, clock, wording=wording, failing_since=failing_since
    )


async def test_an_outage_is_announced_once_and_its_end_once(migrated_url: str) -> None:
    async with webhook_receiver() as (url, received):
        settings = _telegram_and_webhook(migrated_url, url, bot_language="en")
        clock = FrozenClock(START)
        failing: dict[str, datetime | None] = {"since": None}
        async with open_services(settings, clock=clock) as services:
            fallback = _fallback(services, clock, lambda: failing["since"])
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
    assert "Telegram has not accepted a message since 2026-01-30 03:00 UTC" in down["text"]
    assert TOKEN not in str(received)


async def test_a_failing_channel_is_tried_again_later(migrated_url: str) -> None:
    settings = make_settings(
        migrated_url,
        telegram_bot_token=TOKEN,
        fallback_webhook_url=f"http://127.0.0.1:{free_port()}/nobody",
    )
    clock = FrozenClock(START)
    async with open_services(settings, clock=clock) as services:
        fallback = _fallback(services, clock, lambda: START - timedelta(minutes=6))
        assert await fallback.announce() is None  # nobody listens: not announced
        assert fallback.outage_announced is None
        assert fallback._announce_after == START + ANNOUNCE_RETRY


async def test_no_bot_no_announcement(migrated_url: str) -> None:
    async with webhook_receiver() as (url, received):
        settings = make_settings(migrated_url, fallback_webhook_url=url)  # the bot is off
        clock = FrozenClock(START)
        async with open_services(settings, clock=clock) as services:
            fallback = _fallback(services, clock, lambda: START - timedelta(hours=1))
            assert await fallback.announce() is None
    assert received == []


async def test_the_fallback_speaks_the_chats_language(migrated_url: str) -> None:
    """In Korean (the default) the outage notices and a stuck P0 read in Korean: the card's
    title for our own incidents, our words around the alert's own content."""
    async with webhook_receiver() as (url, received):
        settings = _telegram_and_webhook(migrated_url, url)
        assert settings.bot_language == "ko"
        clock = FrozenClock(START)
        failing: dict[str, datetime | None] = {"since": None}
        async with open_services(settings, clock=clock) as services:
            fallback = _fallback(services, clock, lambda: failing["since"])
            await services.incidents.trigger(
                AlertIn(Severity.P0, "Cloudinary upload failing", "cdn", source="cloudinary")
            )
            failing["since"] = clock.now()
            clock.advance(minutes=5)
            assert await fallback.step() == 1  # the outage notice, then the P0
            failing["since"] = None
            assert await fallback.announce() == "up"
    assert [r.get("event", "alert") for r in received] == ["telegram_down", "alert", "telegram_up"]
    for message in received:
        text = f"{message['subject']}\n{message['text']}"
        assert english(text) <= {"cloudinary"}, text  # the alert's own source
    assert "Cloudinary 업로드" in received[1]["subject"]
    assert "2026-01-30 03:00 UTC부터 텔레그램 전송이 실패하고 있습니다" in received[1]["text"]
