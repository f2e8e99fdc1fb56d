"""`create_dispatcher(services)`: routers wired once, services injected by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Dispatcher, Router
from aiogram.filters import CommandStart
from aiogram.types import Message

if TYPE_CHECKING:
    from services.main import Services

router = Router(name=__name__)


@router.message(CommandStart())
async def cmd_start(message: Message) -> None:
    await message.answer("SunFlow Ops is running.")


def create_dispatcher(services: Services) -> Dispatcher:
    dispatcher = Dispatcher(
        services=services,
        incidents=services.incidents,
        health=services.health,
    )
    dispatcher.include_routers(router)
    return dispatcher
