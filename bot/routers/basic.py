"""/start and /help."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message

from bot.filters import COMMAND_ROLES, Role
from bot.locales import Catalogue
from bot.render import role_name


async def cmd_start(message: Message, catalogue: Catalogue, role: Role) -> None:
    await message.answer(catalogue.t("start", role=role_name(catalogue, role.label)))


async def cmd_help(message: Message, catalogue: Catalogue, role: Role) -> None:
    lines = [catalogue.t("help.title")]
    for name, needed in COMMAND_ROLES.items():
        if role >= needed:
            lines.append(f"/{name} — {catalogue.t(f'cmd.{name}')}")
    lines += ["", catalogue.t("help.role", role=role_name(catalogue, role.label))]
    await message.answer("\n".join(lines))


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_start, CommandStart())
    router.message.register(cmd_help, Command("help"))
    return router
