"""Storm digests: the list under a digest, its pages, and an entry's own card from it."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery, Message

from bot.callbacks import DigestAction, DigestCallback
from bot.keyboards import digest_list_keyboard
from bot.render import TelegramRenderer, html_to_plain
from services.notify.service import NotifyService


async def cb_digest_list(
    query: CallbackQuery,
    callback_data: DigestCallback,
    notify: NotifyService,
    renderer: TelegramRenderer,
) -> None:
    page = await notify.storms.page(callback_data.id, callback_data.page)
    if page is None:
        await query.answer(renderer.t("storm.gone"), show_alert=True)
        return
    await query.answer()
    message = query.message
    if not isinstance(message, Message):
        return
    text = renderer.digest_list(page)
    markup = digest_list_keyboard(page, renderer.catalogue)
    if callback_data.action is DigestAction.PAGE:
        await message.edit_text(text, reply_markup=markup)
    else:
        await message.reply(text, reply_markup=markup)


async def cb_digest_open(
    query: CallbackQuery,
    callback_data: DigestCallback,
    notify: NotifyService,
    renderer: TelegramRenderer,
) -> None:
    incident_id = callback_data.id
    key = "storm.opened" if await notify.open_folded(incident_id) else "storm.already"
    await query.answer(html_to_plain(renderer.t(key, id=incident_id)))


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.callback_query.register(
        cb_digest_list,
        DigestCallback.filter(F.action.in_({DigestAction.LIST, DigestAction.PAGE})),
    )
    router.callback_query.register(
        cb_digest_open, DigestCallback.filter(F.action == DigestAction.OPEN)
    )
    return router
