"""The bot's one error handler, on the dispatcher (aiogram propagates a handler's error
through the routers in inclusion order, so a handler per router answers for the others too).

A domain error or a bad argument becomes one reply saying what was wrong and how to write
the command; anything else is logged and the person told it failed (never a traceback)."""

from __future__ import annotations

import logging

from aiogram.types import ErrorEvent

from bot.filters import command_name
from bot.locales import Catalogue
from bot.render import esc, html_to_plain
from services.errors import DomainError

log = logging.getLogger(__name__)


class Usage(Exception):
    """Bad command arguments: the reply is the command's usage line."""

    def __init__(self, command: str) -> None:
        super().__init__(command)
        self.command = command


def reply_for(exc: BaseException, command: str | None, catalogue: Catalogue) -> str:
    """The chat's answer (HTML) to an error of `command` (None: a button)."""
    usage = catalogue.get(f"usage.{command}") if command else None
    if isinstance(exc, Usage):
        return esc(catalogue.get(f"usage.{exc.command}") or usage or "")
    if isinstance(exc, DomainError):
        text = domain_error_text(exc, catalogue)
        return f"{text}\n{esc(usage)}" if usage else text
    return catalogue.t("error.internal")


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


async def on_error(event: ErrorEvent, catalogue: Catalogue) -> bool:
    exc = event.exception
    if not isinstance(exc, DomainError | Usage):
        log.error("bot handler failed", exc_info=exc)
    update = event.update
    if update.message is not None:
        await update.message.answer(reply_for(exc, command_name(update.message.text), catalogue))
    elif update.callback_query is not None:
        text = html_to_plain(reply_for(exc, None, catalogue))
        await update.callback_query.answer(text[:200], show_alert=True)
    return True
