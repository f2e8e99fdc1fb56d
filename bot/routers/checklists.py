"""The playbook's checklists as checkboxes under the incident's card."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery, InaccessibleMessage

from bot.callbacks import ChecklistCallback, IncidentAction, IncidentCallback
from bot.keyboards import checklist_keyboard
from bot.locales import Catalogue
from bot.render import esc
from services.checklists import CHECKLISTS, ChecklistService, ChecklistState, label
from services.errors import InvalidInput


def render_checklists(state: ChecklistState, catalogue: Catalogue) -> str:
    lines = [catalogue.t("checklist.title", id=state.incident_id)]
    for checklist in CHECKLISTS:
        done, total = state.counts(checklist)
        lines.append(
            catalogue.t(
                "checklist.list",
                name=esc(label(checklist, catalogue.language)),
                done=done,
                total=total,
            )
        )
    return "\n".join(lines)


async def cb_checklist(
    query: CallbackQuery,
    callback_data: IncidentCallback,
    checklists: ChecklistService,
    catalogue: Catalogue,
) -> None:
    """The card's Checklist button: a message of checkboxes, in reply to the card."""
    state = await checklists.state(callback_data.incident_id)
    await query.answer()
    if query.message is None:
        return
    await query.bot.send_message(  # type: ignore[union-attr]
        query.message.chat.id,
        render_checklists(state, catalogue),
        reply_markup=checklist_keyboard(state, catalogue.language),
        reply_to_message_id=query.message.message_id,
    )


async def cb_tick(
    query: CallbackQuery,
    callback_data: ChecklistCallback,
    checklists: ChecklistService,
    catalogue: Catalogue,
    actor: str,
) -> None:
    items = CHECKLISTS.get(callback_data.checklist, ())
    if not 0 <= callback_data.item < len(items):
        raise InvalidInput("this checklist button is out of date")
    state = await checklists.toggle(
        callback_data.incident_id,
        callback_data.checklist,
        items[callback_data.item],
        actor=actor,
    )
    await query.answer()
    message = query.message
    if message is not None and not isinstance(message, InaccessibleMessage):
        await message.edit_text(
            render_checklists(state, catalogue),
            reply_markup=checklist_keyboard(state, catalogue.language),
        )


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.callback_query.register(
        cb_checklist, IncidentCallback.filter(F.action == IncidentAction.CHECKLIST)
    )
    router.callback_query.register(cb_tick, ChecklistCallback.filter())
    return router
