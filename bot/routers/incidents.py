"""/incidents, /ack, /resolve, /snooze, /reopen and the alert buttons (and the page's)."""

from __future__ import annotations

from datetime import timedelta

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.exception import ExceptionTypeFilter
from aiogram.types import CallbackQuery, ErrorEvent, Message

from bot.callbacks import IncidentAction, IncidentCallback
from bot.filters import leading_id
from bot.keyboards import details_keyboard
from bot.locales import Catalogue
from bot.render import TelegramRenderer, at, esc, html_to_plain, split_html
from services.clock import Clock
from services.durations import parse_duration
from services.errors import DomainError
from services.incidents import IncidentService
from services.models import MAX_ID, IncidentState


class Usage(Exception):
    """Bad command arguments: the reply is the command's usage line."""

    def __init__(self, command: str) -> None:
        super().__init__(command)
        self.command = command


def parse_id(text: str, command: str) -> int:
    raw = text.lstrip("#")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or not 1 <= int(raw) <= MAX_ID:
        raise Usage(command)
    return int(raw)


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


def domain_error_text(exc: DomainError, catalogue: Catalogue) -> str:
    """The error in the bot's language when the service named its reason; else as said."""
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    reason = detail.get("reason")
    if isinstance(reason, str):
        values = {k: esc(v) for k, v in detail.items() if k != "reason"}
        try:
            return catalogue.t(f"error.{reason}", **values)
        except KeyError:
            pass
    return catalogue.t("error", message=esc(exc.message))


async def on_domain_error(event: ErrorEvent, catalogue: Catalogue) -> None:
    """Domain errors and bad arguments become one line in the chat, never a traceback."""
    exc = event.exception
    if isinstance(exc, Usage):
        text = esc(catalogue.t(f"usage.{exc.command}"))
    else:
        assert isinstance(exc, DomainError)
        text = domain_error_text(exc, catalogue)
    update = event.update
    if update.message is not None:
        await update.message.answer(text)
    elif update.callback_query is not None:
        await update.callback_query.answer(html_to_plain(text), show_alert=True)


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
    router.errors.register(on_domain_error, ExceptionTypeFilter(DomainError, Usage))
    return router
