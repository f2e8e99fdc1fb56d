"""/sse_reset: the SSE runbook's three recovery actions, each behind a confirmation button."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InaccessibleMessage, InlineKeyboardMarkup, Message

from bot.callbacks import SSEAction, SSECallback
from bot.keyboards import sse_keyboard
from bot.locales import Catalogue
from bot.render import esc
from services.sse import AdminResult, SSEHub


async def cmd_sse_reset(message: Message, sse: SSEHub, catalogue: Catalogue) -> None:
    await message.answer(
        catalogue.t("sse.choose", connections=len(sse.connections)),
        reply_markup=sse_keyboard(catalogue),
    )


async def _edit(
    query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    """The menu message becomes the next question, then the result (no new messages)."""
    await query.answer()
    if query.message is not None and not isinstance(query.message, InaccessibleMessage):
        await query.message.edit_text(text, reply_markup=markup)


async def cb_sse_choose(
    query: CallbackQuery, callback_data: SSECallback, sse: SSEHub, catalogue: Catalogue
) -> None:
    action = callback_data.action
    if action is SSEAction.CANCEL:
        await _edit(query, catalogue.t("sse.cancelled"))
        return
    text = catalogue.t(
        "sse.confirm",
        action=catalogue.t(f"sse.action.{action.value}"),
        connections=len(sse.connections),
    )
    await _edit(query, text, sse_keyboard(catalogue, confirm=action))


async def cb_sse_confirm(
    query: CallbackQuery,
    callback_data: SSECallback,
    sse: SSEHub,
    catalogue: Catalogue,
    actor: str,
) -> None:
    runs = {
        SSEAction.RESTART: sse.restart,
        SSEAction.RESET: sse.reset_connections,
        SSEAction.BROADCAST: sse.broadcast_reconnect,
    }
    result: AdminResult = await runs[callback_data.action]()
    text = catalogue.t(
        "sse.done",
        action=catalogue.t(f"sse.action.{callback_data.action.value}"),
        actor=esc(actor),
        before=result.connections_before,
        after=result.connections_after,
        closed=result.closed,
    )
    if result.cluster is not None:  # REDIS_URL: the counts are the sums over the instances
        text += "\n" + catalogue.t(
            "sse.instances",
            answered=result.cluster["instances_answered"],
            reached=result.cluster["instances_reached"],
        )
    await _edit(query, text)


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_sse_reset, Command("sse_reset"))
    router.callback_query.register(
        cb_sse_confirm,
        SSECallback.filter(F.confirm & (F.action != SSEAction.CANCEL)),
    )
    router.callback_query.register(cb_sse_choose, SSECallback.filter())
    return router
