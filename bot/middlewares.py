"""The role gate: every command and button press passes here before any handler runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiogram import BaseMiddleware, Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import EditMessageText, SendDocument, SendMessage, TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import CallbackQuery, Message, TelegramObject, User

from bot.filters import (
    GRANTED_COMMANDS,
    INCIDENT_COMMANDS,
    Role,
    RolePolicy,
    button_role,
    command_incident,
    command_name,
    granted_incident,
    required_role,
)
from bot.locales import Catalogue
from bot.render import esc, html_to_plain, role_name
from services.audit import AuditService
from services.grants import GrantService
from services.notify.delivery import Pacing
from services.notify.service import NotifyService

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def actor_of(user: User) -> str:
    """How a Telegram user appears in the timeline: `tg:<id> (@name)`."""
    name = f"@{user.username}" if user.username else user.full_name
    return f"tg:{user.id} ({name})"[:200]


class RoleMiddleware(BaseMiddleware):
    """Works out the sender's role; refuses politely, records the refusal, calls nothing.

    Someone paged for an incident may ack, snooze and resolve that incident whatever their
    role (services/grants.py). A command that replies to one of our messages about an
    incident (its card, a reply under it, a page) acts on that incident: handlers get it as
    `replied_incident`."""

    def __init__(
        self,
        policy: RolePolicy,
        audit: AuditService,
        catalogue: Catalogue,
        *,
        grants: GrantService | None = None,
        notify: NotifyService | None = None,
    ) -> None:
        self._policy = policy
        self._audit = audit
        self._catalogue = catalogue
        self._grants = grants
        self._notify = notify

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is None or user.is_bot:
            return None
        incident_id: int | None = None
        granted = False
        if isinstance(event, Message):
            command = command_name(event.text)
            if command is None:
                return None  # chatter, not a command: nothing to do
            if "@" in (event.text or "").split(maxsplit=1)[0]:
                bot: Bot = data["bot"]
                me = await bot.me()
                if command_name(event.text, me.username) is None:
                    return None  # addressed to another bot in the group
            needed = required_role(command, event.text)
            label = command
            chat_id: int | None = event.chat.id
            replied = await self._replied_incident(event, command)
            data["replied_incident"] = replied
            if command in GRANTED_COMMANDS:
                incident_id = command_incident(event.text, replied)
                granted = True
        elif isinstance(event, CallbackQuery):
            button = button_role(event.data or "")
            if button is None:
                return None
            needed, label = button
            chat_id = event.message.chat.id if event.message else None
            incident_id = granted_incident(event.data or "")
            granted = incident_id is not None
        else:
            return await handler(event, data)
        role = self._policy.role_of(user.id, chat_id)
        if role < needed and not (
            granted
            and incident_id is not None
            and self._grants is not None
            and await self._grants.holds(user.id, incident_id)
        ):
            await self._refuse(
                event=event, user=user, chat_id=chat_id, command=label, role=role, needed=needed
            )
            return None
        data["role"] = role
        data["actor"] = actor_of(user)
        return await handler(event, data)

    async def _replied_incident(self, message: Message, command: str) -> int | None:
        reply = message.reply_to_message
        if reply is None or self._notify is None or command not in INCIDENT_COMMANDS:
            return None
        return await self._notify.incident_of_message(message.chat.id, reply.message_id)

    async def _refuse(
        self,
        *,
        event: Message | CallbackQuery,
        user: User,
        chat_id: int | None,
        command: str,
        role: Role,
        needed: Role,
    ) -> None:
        log.info("refused %s to Telegram user %s (%s)", command, user.id, role.label)
        await self._audit.record_refusal(
            user_id=user.id,
            username=user.username,
            chat_id=chat_id,
            command=command,
            user_role=role.label,
            required_role=needed.label,
        )
        text = self._catalogue.t(
            "refused",
            required=role_name(self._catalogue, needed.label),
            role=role_name(self._catalogue, role.label),
            user_id=esc(user.id),
        )
        if isinstance(event, Message):
            await event.answer(text)
        else:
            await event.answer(text, show_alert=True)


class LimitsMiddleware(BaseRequestMiddleware):
    """Command replies share the outbox sender's budget, so together they stay in limits."""

    SENDING = (SendMessage, EditMessageText, SendDocument)

    def __init__(self, limits: Pacing) -> None:
        self._limits = limits

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        chat_id = getattr(method, "chat_id", None)
        if isinstance(method, self.SENDING) and isinstance(chat_id, int):
            # A person is waiting for this answer: it counts as urgent (P1).
            while (wait := self._limits.wait(chat_id, 1, time.monotonic())) > 0:
                await asyncio.sleep(wait)
            self._limits.record(chat_id, time.monotonic())
        return await make_request(bot, method)


class PlainResendMiddleware(BaseRequestMiddleware):
    """A reply Telegram cannot parse goes again as plain text rather than being dropped."""

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        try:
            return await make_request(bot, method)
        except TelegramBadRequest as exc:
            if not isinstance(method, SendMessage | EditMessageText) or (
                "can't parse entities" not in exc.message.lower()
            ):
                raise
            log.warning("Telegram could not parse a reply; sending it as plain text")
            plain = cast(
                "TelegramMethod[TelegramType]",
                method.model_copy(
                    update={"text": html_to_plain(method.text or ""), "parse_mode": None}
                ),
            )
            return await make_request(bot, plain)
