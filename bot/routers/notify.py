"""/notify_test: the playbook's "send a test message", on every configured channel."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.render import TelegramRenderer, at
from services.clock import Clock
from services.notify.service import NotifyService


async def cmd_notify_test(
    message: Message,
    notify: NotifyService,
    renderer: TelegramRenderer,
    clock: Clock,
    actor: str,
) -> None:
    text = renderer.t("notify.text", actor=actor, at=at(clock.now()))
    results = await notify.send_test(actor=actor, text=text)
    await message.answer(renderer.notify_results(results))


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_notify_test, Command("notify_test"))
    return router
