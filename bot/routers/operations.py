"""/sse_reset: a runbook action whose bot wiring arrives later (/token, /retry: pipeline.py)."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.locales import Catalogue


async def _not_yet(message: Message, catalogue: Catalogue, what: str) -> None:
    await message.answer(
        catalogue.t(
            "not_yet",
            what=catalogue.t(f"not_yet.{what}"),
            hint=catalogue.t(f"not_yet.{what}.hint"),
        )
    )


async def cmd_sse_reset(message: Message, catalogue: Catalogue) -> None:
    await _not_yet(message, catalogue, "sse_reset")


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_sse_reset, Command("sse_reset"))
    return router
