"""The Bot API client the outbox sender delivers through: `services.notify.delivery.Delivery`
over aiohttp (aiogram serves the chat front end; this one only sends, within the limits)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from pydantic import SecretStr

from bot.limits import TelegramLimits
from services.config import Settings
from services.notify.delivery import Refusal, Refused, RetryAfter, Unavailable

# Bot API descriptions the sender acts on (lower case, as contained in the description).
_REFUSALS: tuple[tuple[str, Refusal], ...] = (
    ("can't parse entities", Refusal.BAD_MARKUP),
    ("message is not modified", Refusal.NOT_MODIFIED),
    ("message to edit not found", Refusal.TARGET_GONE),
    ("message can't be edited", Refusal.TARGET_GONE),
)


def refusal(status: int, description: str) -> Refusal:
    """Why the Bot API refused a call (a 4xx other than 429, 401 and 404)."""
    text = description.lower()
    for phrase, reason in _REFUSALS:
        if phrase in text:
            return reason
    return Refusal.FORBIDDEN if status == 403 else Refusal.OTHER


def parse_mode(html: bool) -> str | None:
    return "HTML" if html else None


class TelegramClient:
    """sendMessage, editMessageText, sendDocument and getMe against a configurable base URL,
    paced by the limits it shares with the aiogram bot."""

    def __init__(
        self,
        api_base: str,
        token: SecretStr,
        *,
        limits: TelegramLimits | None = None,
        timeout: float = 15.0,
    ) -> None:
        self._base = api_base.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        # One budget for everything this process sends to Telegram (the bot's replies too).
        self.limits = limits or TelegramLimits()

    @classmethod
    def from_settings(cls, settings: Settings) -> TelegramClient:
        """The client for TELEGRAM_BOT_TOKEN at TELEGRAM_API_BASE, with the TELEGRAM_RATE_*
        limits."""
        if settings.telegram_bot_token is None:
            raise ValueError("the Telegram client needs TELEGRAM_BOT_TOKEN")
        limits = TelegramLimits(
            global_per_second=settings.telegram_rate_global_per_second,
            chat_per_second=settings.telegram_rate_chat_per_second,
            group_per_minute=settings.telegram_rate_group_per_minute,
        )
        return cls(settings.telegram_api_base, settings.telegram_bot_token, limits=limits)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- pacing (Delivery) -------------------------------------------------------------

    def wait(self, chat_id: int, priority: int, now: float) -> float:
        return self.limits.wait(chat_id, priority, now)

    def record(self, chat_id: int, now: float) -> None:
        self.limits.record(chat_id, now)

    def room(self, chat_id: int, priority: int, now: float) -> int | None:
        return self.limits.room(chat_id, priority, now)

    def per_minute(self, chat_id: int, priority: int) -> int | None:
        return self.limits.per_minute(chat_id, priority)

    # -- calls ---------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        secret = self._token.get_secret_value()
        return text.replace(secret, "***") if secret else text

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        files: dict[str, tuple[str, bytes]] | None = None,
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = f"{self._base}/bot{self._token.get_secret_value()}/{method}"
        body: aiohttp.FormData | None = None
        if files:
            body = aiohttp.FormData()
            for key, value in params.items():
                if value is None:
                    continue
                body.add_field(key, value if isinstance(value, str) else json.dumps(value))
            for key, (filename, content) in files.items():
                body.add_field(key, content, filename=filename, content_type="text/plain")
        payload = {k: v for k, v in params.items() if v is not None}
        try:
            if body is not None:
                request = self._session.post(url, data=body)
            else:
                request = self._session.post(url, json=payload)
            async with request as response:
                status = response.status
                try:
                    data = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    data = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(method, self._clean(type(exc).__name__)) from None
        if isinstance(data, dict) and data.get("ok") is True:
            return data.get("result")
        description = ""
        parameters: dict[str, Any] = {}
        if isinstance(data, dict):
            description = self._clean(str(data.get("description", "")))
            parameters = data.get("parameters") or {}
        if status == 429 or "retry_after" in parameters:
            retry_after = float(parameters.get("retry_after", 1))
            raise RetryAfter(method, description or "Too Many Requests", retry_after)
        if status >= 500 or data is None:
            raise Unavailable(method, description or f"HTTP {status}")
        if status in {401, 404}:
            # A revoked or mistyped token (or a wrong API base) fails every call alike: that is
            # Telegram being unusable for us, not this one message being bad.
            raise Unavailable(
                method, f"{description or status}: check TELEGRAM_BOT_TOKEN and TELEGRAM_API_BASE"
            )
        detail = description or f"HTTP {status}"
        raise Refused(method, detail, refusal(status, detail))

    async def get_me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("getMe", {})
        return result

    async def identify(self) -> str:
        me = await self.get_me()
        return f"@{me.get('username', '?')}"

    async def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        html: bool = True,
        thread_id: int | None = None,
        reply_to: int | None = None,
        reply_markup: dict[str, Any] | None = None,
    ) -> int:
        params: dict[str, Any] = {
            "chat_id": chat_id,
            "text": text,
            "parse_mode": parse_mode(html),
            "message_thread_id": thread_id,
            "reply_markup": reply_markup,
            "link_preview_options": {"is_disabled": True},
        }
        if reply_to is not None:
            params["reply_parameters"] = {
                "message_id": reply_to,
                "allow_sending_without_reply": True,
            }
        result = await self.call("sendMessage", params)
        return int(result["message_id"])

    async def edit_message(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        *,
        html: bool = True,
        reply_markup: dict[str, Any] | None = None,
    ) -> None:
        await self.call(
            "editMessageText",
            {
                "chat_id": chat_id,
                "message_id": message_id,
                "text": text,
                "parse_mode": parse_mode(html),
                "reply_markup": reply_markup,
                "link_preview_options": {"is_disabled": True},
            },
        )

    async def send_document(
        self,
        chat_id: int,
        filename: str,
        content: bytes,
        *,
        caption: str | None = None,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        params: dict[str, Any] = {
            "chat_id": str(chat_id),
            "caption": caption,
            "message_thread_id": str(thread_id) if thread_id is not None else None,
        }
        if reply_to is not None:
            params["reply_parameters"] = {
                "message_id": reply_to,
                "allow_sending_without_reply": True,
            }
        result = await self.call("sendDocument", params, files={"document": (filename, content)})
        return int(result["message_id"])
