"""/incidents, /ack, /resolve, /snooze, /reopen and the alert buttons (and the page's)."""

from __future__ import annotations

from datetime import timedelta

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from bot.callbacks import IncidentAction, IncidentCallback
from bot.errors import Usage
from bot.filters import leading_id
from bot.keyboards import details_keyboard
from bot.locales import Catalogue
from bot.render import TelegramRenderer, at, esc, html_to_plain, split_html
from services.clock import Clock
from services.durations import parse_duration
from services.incidents import IncidentService
from services.models import IncidentState
from services.models import parse_id as parse_number


def parse_id(text: str, command: str) -> int:
    """An incident number as people type it (42, #42); otherwise the command's usage."""
    number = parse_number(text)
    if number is None:
        raise Usage(command)
    return number


def parse_args(
    command: CommandObject,
    name: str,
    *,
    duration: str = "no",
    replied: int | None = None,
) -> tuple[int, timedelta | None, str | None]:
    """`ID [DURATION]` (ack), `ID DURATION` (snooze), `ID [note]` (resolve); in a reply to
    one of an incident's messages the id may be left out (`/ack 30m`, `/resolve renewed`)."""
    parts = (command.args or "").split(maxsplit=1)
    named = leading_id(f"/{name} {command.args or ''}")
    if named is not None:
        incident_id = named
        rest = parts[1].strip() if len(parts) > 1 else None
    elif replied is not None:
        incident_id = replied
        rest = (command.args or "").strip() or None
    else:
        raise Usage(name)
    if duration == "no":
        return incident_id, None, rest
    if rest is None:
        if duration == "required":
            raise Usage(name)
        return incident_id, None, None
    try:
        return incident_id, parse_duration(rest), None
    except ValueError:
        raise Usage(name) from None


async def cmd_incidents(
    message: Message, incidents: IncidentService, renderer: TelegramRenderer, clock: Clock
) -> None:
    views = await incidents.list(states=[IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED])
    for part in split_html(renderer.incidents(views, clock.now())):
        await message.answer(part)


async def cmd_ack(
    message: Message,
    command: CommandObject,
    incidents: IncidentService,
    catalogue: Catalogue,
    actor: str,
    *,
    replied_incident: int | None = None,
) -> None:
    incident_id, duration, _ = parse_args(
        command, "ack", duration="optional", replied=replied_incident
    )
    view = await incidents.acknowledge(incident_id, actor=actor, duration=duration)
    if view.ack_expires_at:
        text = catalogue.t(
            "done.ack_until", id=view.id, actor=esc(actor), until=at(view.ack_expires_at)
        )
    else:
        text = catalogue.t("done.ack", id=view.id, actor=esc(actor))
    await message.answer(text)


async def cmd_resolve(
    message: Message,
    command: CommandObject,
    incidents: IncidentService,
    catalogue: Catalogue,
    actor: str,
    *,
    replied_incident: int | None = None,
) -> None:
    incident_id, _, note = parse_args(command, "resolve", replied=replied_incident)
    view = await incidents.resolve(incident_id, actor=actor, note=note)
    await message.answer(catalogue.t("done.resolve", id=view.id, actor=esc(actor)))


async def cmd_snooze(
    message: Message,
    command: CommandObject,
    incidents: IncidentService,
    catalogue: Catalogue,
    actor: str,
    *,
    replied_incident: int | None = None,
) -> None:
    incident_id, duration, _ = parse_args(
        command, "snooze", duration="required", replied=replied_incident
    )
    assert duration is not None
    view = await incidents.snooze(incident_id, actor=actor, duration=duration)
    assert view.snoozed_until is not None
    await message.answer(catalogue.t("done.snooze", id=view.id, until=at(view.snoozed_until)))


async def cmd_reopen(
    message: Message,
    command: CommandObject,
    incidents: IncidentService,
    catalogue: Catalogue,
    actor: str,
    *,
    replied_incident: int | None = None,
) -> None:
    incident_id, _, note = parse_args(command, "reopen", replied=replied_incident)
    view = await incidents.reopen(incident_id, actor=actor, note=note)
    await message.answer(catalogue.t("done.reopen", id=view.id, actor=esc(actor)))


async def cb_ack(
    query: CallbackQuery,
    callback_data: IncidentCallback,
    incidents: IncidentService,
    catalogue: Catalogue,
    actor: str,
) -> None:
    view = await incidents.acknowledge(callback_data.incident_id, actor=actor)
    # The alert itself is edited through the outbox, like every other change.
    await query.answer(html_to_plain(catalogue.t("done.ack", id=view.id, actor=esc(actor))))


async def cb_resolve(
    query: CallbackQuery,
    callback_data: IncidentCallback,
    incidents: IncidentService,
    catalogue: Catalogue,
    actor: str,
) -> None:
    view = await incidents.resolve(callback_data.incident_id, actor=actor)
    await query.answer(html_to_plain(catalogue.t("done.resolve", id=view.id, actor=esc(actor))))


async def cb_snooze(
    query: CallbackQuery,
    callback_data: IncidentCallback,
    incidents: IncidentService,
    catalogue: Catalogue,
    actor: str,
) -> None:
    minutes = callback_data.minutes or 60
    view = await incidents.snooze(
        callback_data.incident_id, actor=actor, duration=timedelta(minutes=minutes)
    )
    assert view.snoozed_until is not None
    text = catalogue.t("done.snooze", id=view.id, until=at(view.snoozed_until))
    await query.answer(html_to_plain(text))


async def cb_details(
    query: CallbackQuery,
    callback_data: IncidentCallback,
    incidents: IncidentService,
    renderer: TelegramRenderer,
    clock: Clock,
) -> None:
    detail = await incidents.get(callback_data.incident_id)
    await query.answer()
    if query.message is not None:
        *head, last = split_html(renderer.detail(detail, clock.now()))
        for part in head:
            await query.bot.send_message(  # type: ignore[union-attr]
                query.message.chat.id,
                part,
                reply_to_message_id=query.message.message_id,
            )
        # The Logs button (bot.routers.pipeline) sends the incident's log bundle.
        await query.bot.send_message(  # type: ignore[union-attr]
            query.message.chat.id,
            last,
            reply_to_message_id=query.message.message_id,
            reply_markup=details_keyboard(detail.incident.id, renderer.catalogue),
        )


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_incidents, Command("incidents"))
    router.message.register(cmd_ack, Command("ack"))
    router.message.register(cmd_resolve, Command("resolve"))
    router.message.register(cmd_snooze, Command("snooze"))
    router.message.register(cmd_reopen, Command("reopen"))
    router.callback_query.register(cb_ack, IncidentCallback.filter(F.action == IncidentAction.ACK))
    router.callback_query.register(
        cb_resolve, IncidentCallback.filter(F.action == IncidentAction.RESOLVE)
    )
    router.callback_query.register(
        cb_snooze, IncidentCallback.filter(F.action == IncidentAction.SNOOZE)
    )
    router.callback_query.register(
        cb_details, IncidentCallback.filter(F.action == IncidentAction.DETAILS)
    )
    return router
