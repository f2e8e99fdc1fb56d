"""/health and /status: the read-only views of the whole service."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.render import TelegramRenderer, split_html
from services.health import HealthService
from services.incidents import IncidentService


async def cmd_health(message: Message, health: HealthService, renderer: TelegramRenderer) -> None:
    report = await health.run()
    for part in split_html(renderer.health_card(report)):
        await message.answer(part)


async def cmd_status(
    message: Message,
    incidents: IncidentService,
    renderer: TelegramRenderer,
) -> None:
    await message.answer(renderer.status(await incidents.count_open()))


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_health, Command("health"))
    router.message.register(cmd_status, Command("status"))
    return router
