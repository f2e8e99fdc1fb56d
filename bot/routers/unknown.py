"""Any other command: point to /help. Included last."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import Message

from bot.locales import Catalogue


async def cmd_unknown(message: Message, catalogue: Catalogue) -> None:
    await message.answer(catalogue.t("unknown"))


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_unknown, F.text.startswith("/"))
    return router
