"""Runs the bot inside `sunflow-ops serve`: the seam the composition root calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import AiogramError
from aiogram.fsm.storage.base import BaseStorage, DefaultKeyBuilder
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.fsm.storage.redis import RedisStorage
from aiohttp import web

from bot.dispatcher import bot_commands, create_dispatcher
from bot.locales import Catalogue
from bot.middlewares import LimitsMiddleware, PlainResendMiddleware
from services.config import Settings
from services.notify.delivery import Pacing

if TYPE_CHECKING:
    from services.container import Services

log = logging.getLogger(__name__)

BOOTSTRAP_RETRY_SECONDS = 2.0


def make_bot(token: str, api_base: str, *, limits: Pacing | None = None) -> Bot:
    """The aiogram bot: HTML by default, plain-text resend, and (given) the shared limits."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_base))
    if limits is not None:
        session.middleware(LimitsMiddleware(limits))
    session.middleware(PlainResendMiddleware())
    return Bot(token, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))


def fsm_storage(settings: Settings) -> BaseStorage:
    """Where conversation state lives: Redis with REDIS_URL (so any instance can take the next
    update of a conversation), this process's memory otherwise."""
    if settings.redis_url is None:
        return MemoryStorage()
    return RedisStorage.from_url(
        settings.redis_url,
        key_builder=DefaultKeyBuilder(prefix=f"{settings.redis_key_prefix}fsm"),
    )


async def _bootstrap(
    bot: Bot, dispatcher: Dispatcher, services: Services, secret: str | None
) -> None:
    """Register the commands and the update mode; retry while Telegram is unreachable."""
    settings = services.settings
    catalogue: Catalogue = dispatcher["catalogue"]
    while True:
        try:
            await bot.set_my_commands(bot_commands(catalogue))
            if settings.telegram_webhook_url:
                await bot.set_webhook(
                    settings.telegram_webhook_url,
                    secret_token=secret,
                    allowed_updates=dispatcher.resolve_used_update_types(),
                )
            else:
                await bot.delete_webhook()
            return
        except AiogramError as exc:
            log.warning("Telegram start-up call failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(BOOTSTRAP_RETRY_SECONDS)


def bot_context(services: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    """The chat front end: aiogram's dispatcher over the services, polling or fed by the
    webhook route; its replies share the outbox's Telegram limits (`services.notify`)."""
    settings = services.settings
    token = settings.telegram_bot_token
    if token is None:
        raise ValueError("bot_context needs TELEGRAM_BOT_TOKEN")

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        bot = make_bot(
            token.get_secret_value(), settings.telegram_api_base, limits=services.notify.delivery
        )
        catalogue = Catalogue(settings.bot_language)
        storage = fsm_storage(settings)
        dispatcher = create_dispatcher(services, catalogue=catalogue, storage=storage)
        secret: str | None = None
        pending: set[asyncio.Task[Any]] = set()
        if settings.telegram_webhook_url:
            secret = (
                settings.telegram_webhook_secret.get_secret_value()
                if settings.telegram_webhook_secret
                else secrets.token_urlsafe(32)
            )

            async def feed(update: dict[str, Any]) -> None:
                # Answer Telegram at once; the update is handled in the background.
                task = asyncio.create_task(dispatcher.feed_raw_update(bot, update))
                pending.add(task)
                task.add_done_callback(pending.discard)

            services.webhook.open(feed, secret)

        async def run() -> None:
            await _bootstrap(bot, dispatcher, services, secret)
            if settings.telegram_webhook_url:
                return
            # Polling starts with getMe; if Telegram fails then (or later), start again with
            # backoff instead of leaving the bot deaf until the next restart (scenario 6).
            delay = 1.0
            while True:
                try:
                    await dispatcher.start_polling(
                        bot, handle_signals=False, close_bot_session=False, polling_timeout=10
                    )
                    return  # stopped on purpose
                except Exception as exc:
                    log.warning(
                        "Telegram polling stopped (%s); starting it again in %.0f s",
                        type(exc).__name__,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 60.0)

        runner = asyncio.create_task(run(), name="telegram-bot")
        mode = "webhook" if settings.telegram_webhook_url else "long polling"
        log.info("Telegram bot started (%s)", mode)
        try:
            yield
        finally:
            services.webhook.close()
            with contextlib.suppress(RuntimeError):
                await dispatcher.stop_polling()
            runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("the Telegram bot stopped with an error")
            for task in list(pending):
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await bot.session.close()
            await storage.close()

    return ctx
