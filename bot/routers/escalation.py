"""/oncall: who the PD is now, and an admin's override (`/oncall set USER_ID 8h`)."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.errors import Usage
from bot.locales import Catalogue
from bot.render import at, esc
from services.durations import parse_duration
from services.oncall import OncallInfo, OncallService


def render_oncall(info: OncallInfo, catalogue: Catalogue) -> str:
    t = catalogue.t
    lines = [t("oncall.title")]
    if info.person is not None:
        lines.append(t("oncall.person", name=esc(info.person.name), user_id=info.person.user_id))
    else:
        lines.append(t("oncall.nobody"))
    if info.overridden_until is not None:
        lines.append(t("oncall.override", until=at(info.overridden_until)))
    if info.next_handover is not None:
        lines.append(t("oncall.handover", at=at(info.next_handover)))
    if info.pd_user_ids:
        lines.append(t("oncall.pd", ids=", ".join(f"<code>{i}</code>" for i in info.pd_user_ids)))
    return "\n".join(lines)


async def cmd_oncall(
    message: Message,
    command: CommandObject,
    oncall: OncallService,
    catalogue: Catalogue,
    actor: str,
) -> None:
    words = (command.args or "").split(maxsplit=3)
    if not words:
        await message.answer(render_oncall(await oncall.oncall(), catalogue))
        return
    # `set USER_ID DURATION [name]`; the role gate already asked for an admin.
    if (
        words[0].lower() != "set"
        or len(words) < 3
        or not (words[1].isascii() and words[1].isdigit())
    ):
        raise Usage("oncall")
    try:
        duration = parse_duration(words[2])
    except ValueError:
        raise Usage("oncall") from None
    user_id = int(words[1])
    name = words[3] if len(words) > 3 else f"tg:{user_id}"
    info = await oncall.set_oncall(user_id=user_id, name=name, duration=duration, actor=actor)
    until = at(info.overridden_until) if info.overridden_until else "?"
    who = esc(info.person.name) if info.person else esc(name)
    await message.answer(catalogue.t("oncall.set", name=who, until=until, actor=esc(actor)))


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_oncall, Command("oncall"))
    return router
