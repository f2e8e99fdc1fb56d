"""The role gate: every command and button press passes here before any handler runs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.types import CallbackQuery, Message, TelegramObject, User

from bot.callbacks import IncidentCallback
from bot.filters import BUTTON_ROLES, Role, RolePolicy, command_name, required_role
from bot.locales import Catalogue
from bot.render import esc, role_name
from services.audit import AuditService

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def actor_of(user: User) -> str:
    """How a Telegram user appears in the timeline: `tg:<id> (@name)`."""
    name = f"@{user.username}" if user.username else user.full_name
    return f"tg:{user.id} ({name})"[:200]


class RoleMiddleware(BaseMiddleware):
    """Works out the sender's role; refuses politely, records the refusal, calls nothing."""

    def __init__(self, policy: RolePolicy, audit: AuditService, catalogue: Catalogue) -> None:
        self._policy = policy
        self._audit = audit
        self._catalogue = catalogue

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is None or user.is_bot:
            return None
        if isinstance(event, Message):
            command = command_name(event.text)
            if command is None:
                return None  # chatter, not a command: nothing to do
            if "@" in (event.text or "").split(maxsplit=1)[0]:
                bot: Bot = data["bot"]
                me = await bot.me()
                if command_name(event.text, me.username) is None:
                    return None  # addressed to another bot in the group
            needed = required_role(command)
            label = command
            chat_id: int | None = event.chat.id
        elif isinstance(event, CallbackQuery):
            try:
                callback = IncidentCallback.unpack(event.data or "")
            except (TypeError, ValueError):
                return None
            needed = BUTTON_ROLES[callback.action]
            label = f"button:{callback.action.name.lower()}"
            chat_id = event.message.chat.id if event.message else None
        else:
            return await handler(event, data)
        role = self._policy.role_of(user.id, chat_id)
        if role < needed:
            await self._refuse(
                event=event, user=user, chat_id=chat_id, command=label, role=role, needed=needed
            )
            return None
        data["role"] = role
        data["actor"] = actor_of(user)
        return await handler(event, data)

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
