"""Any other command: point to /help. Included last."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import Message

from bot.locales import Catalogue

router = Router(name=__name__)


@router.message(F.text.startswith("/"))
async def cmd_unknown(message: Message, catalogue: Catalogue) -> None:
    await message.answer(catalogue.t("unknown"))
