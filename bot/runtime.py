"""Runs the bot inside `sunflow-ops serve`: the seam the composition root calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

from bot.dispatcher import create_dispatcher

if TYPE_CHECKING:
    from services.main import Services

log = logging.getLogger(__name__)


def bot_context(services: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    settings = services.settings
    token = settings.telegram_bot_token
    if token is None:
        raise ValueError("bot_context needs TELEGRAM_BOT_TOKEN")

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_base))
        bot = Bot(token.get_secret_value(), session=session)
        dispatcher = create_dispatcher(services)
        polling = asyncio.create_task(
            dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False),
            name="telegram-polling",
        )
        log.info("Telegram bot polling %s", settings.telegram_api_base)
        try:
            yield
        finally:
            with contextlib.suppress(RuntimeError):
                await dispatcher.stop_polling()
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            await bot.session.close()

    return ctx
