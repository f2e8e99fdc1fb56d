"""Shared set-up for the bot tests: the fake Bot API, settings, and users of each role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from services.config import Settings
from tests.conftest import free_port, make_settings
from tests.fakes.telegram import FakeTelegram

TOKEN = "123456:TEST-token-never-logged"
TEAM = -1001234567890
OUTSIDER, VIEWER, RESPONDER, ADMIN_USER = 1001, 1002, 1003, 1004
PD_USER = 1005


def bot_settings(database_url: str, fake: FakeTelegram, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_bot_token": TOKEN,
        "telegram_api_base": fake.base,
        "telegram_team_chat_id": TEAM,
        "telegram_admin_user_ids": str(ADMIN_USER),
        "telegram_responder_user_ids": str(RESPONDER),
        "telegram_pd_user_ids": str(PD_USER),
        "telegram_retry_max_seconds": 0.5,
        "bot_language": "en",
    }
    values.update(overrides)
    return make_settings(database_url, **values)


@asynccontextmanager
async def running_fake(*, enforce_limits: bool = False) -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram(TOKEN, enforce_limits=enforce_limits)
    await fake.start(free_port())
    try:
        yield fake
    finally:
        await fake.stop()
