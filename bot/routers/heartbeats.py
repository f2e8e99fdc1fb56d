"""/heartbeats: every dead-man's switch with its state, last ping and due time."""

from __future__ import annotations

from datetime import datetime

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.locales import Catalogue
from bot.render import age, at, esc, split_html
from services.heartbeats import HeartbeatService, HeartbeatState, HeartbeatView

_BADGE = {
    HeartbeatState.UP: "💚",
    HeartbeatState.WAITING: "⏳",
    HeartbeatState.LATE: "🟡",
    HeartbeatState.DOWN: "🔴",
}


def render_heartbeats(views: list[HeartbeatView], now: datetime, catalogue: Catalogue) -> str:
    t = catalogue.t
    if not views:
        return t("heartbeats.none")
    lines = [t("heartbeats.title", count=len(views))]
    for view in views:
        state = view.state(now)
        last = (
            t("heartbeats.ago", delta=age(now - view.last_ping_at))
            if view.last_ping_at
            else t("heartbeats.never")
        )
        lines.append(
            t(
                "heartbeats.line",
                badge=_BADGE[state],
                name=esc(view.name),
                state=t(f"heartbeats.state.{state.value}"),
                every=age(view.every),
                grace=age(view.grace),
                severity=view.severity.value,
                last=last,
                due=at(view.due_at),
            )
        )
    return "\n".join(lines)


async def cmd_heartbeats(
    message: Message, heartbeats: HeartbeatService, catalogue: Catalogue
) -> None:
    views = await heartbeats.views()
    for part in split_html(render_heartbeats(views, heartbeats.now(), catalogue)):
        await message.answer(part)


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_heartbeats, Command("heartbeats"))
    return router
