"""/notify_test: the playbook's "send a test message", on every configured channel."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.render import TelegramRenderer
from services.notify.service import NotifyService


async def cmd_notify_test(
    message: Message,
    notify: NotifyService,
    renderer: TelegramRenderer,
    actor: str,
) -> None:
    results = await notify.send_test(actor=actor)
    await message.answer(renderer.notify_results(results))


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_notify_test, Command("notify_test"))
    return router
