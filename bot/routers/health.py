"""/health and /status: the read-only views of the whole service."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.render import TelegramRenderer, split_html
from services.health import HealthService
from services.incidents import IncidentService
from services.notify.service import NotifyService

router = Router(name=__name__)


@router.message(Command("health"))
async def cmd_health(message: Message, health: HealthService, renderer: TelegramRenderer) -> None:
    report = await health.run()
    for part in split_html(renderer.health(report)):
        await message.answer(part)


@router.message(Command("status"))
async def cmd_status(
    message: Message,
    incidents: IncidentService,
    notify: NotifyService,
    renderer: TelegramRenderer,
) -> None:
    counts = await incidents.count_open()
    backlog = await notify.backlog()
    await message.answer(renderer.status(counts, backlog.pending))
