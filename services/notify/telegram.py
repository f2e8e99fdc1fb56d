"""A small Telegram Bot API client on aiohttp for the outbox sender (no aiogram here)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from pydantic import SecretStr

# Bot API statuses and descriptions the sender treats specially.
_CANT_PARSE = "can't parse entities"
_NOT_MODIFIED = "message is not modified"
_EDIT_GONE = ("message to edit not found", "message can't be edited")


class TelegramError(Exception):
    """A Bot API call failed; the message never holds the token."""

    def __init__(self, method: str, description: str) -> None:
        super().__init__(f"{method}: {description}")
        self.method = method
        self.description = description


class RetryAfter(TelegramError):
    """429 Too Many Requests: Telegram says when to try again."""

    def __init__(self, method: str, description: str, retry_after: float) -> None:
        super().__init__(method, description)
        self.retry_after = retry_after


class TelegramUnavailable(TelegramError):
    """Network trouble or a 5xx: worth retrying with backoff."""


class TelegramRejected(TelegramError):
    """A 4xx other than 429: retrying the same request will not help."""

    def __init__(self, method: str, description: str, status: int) -> None:
        super().__init__(method, description)
        self.status = status

    @property
    def cant_parse_entities(self) -> bool:
        return _CANT_PARSE in self.description.lower()

    @property
    def not_modified(self) -> bool:
        return _NOT_MODIFIED in self.description.lower()

    @property
    def edit_target_gone(self) -> bool:
        text = self.description.lower()
        return any(phrase in text for phrase in _EDIT_GONE)


class TelegramClient:
    """sendMessage, editMessageText, sendDocument and getMe against a configurable base URL."""

    def __init__(self, api_base: str, token: SecretStr, *, timeout: float = 15.0) -> None:
        self._base = api_base.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
            raise TelegramUnavailable(method, self._clean(type(exc).__name__)) from None
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
            raise TelegramUnavailable(method, description or f"HTTP {status}")
        if status in {401, 404}:
            # A revoked or mistyped token (or a wrong API base) fails every call alike: that is
            # Telegram being unusable for us, not this one message being bad.
            raise TelegramUnavailable(
                method, f"{description or status}: check TELEGRAM_BOT_TOKEN and TELEGRAM_API_BASE"
            )
        raise TelegramRejected(method, description or f"HTTP {status}", status)

    async def get_me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("getMe", {})
        return result

    async def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        parse_mode: str | None = "HTML",
        thread_id: int | None = None,
        reply_to: int | None = None,
        reply_markup: dict[str, Any] | None = None,
    ) -> int:
        params: dict[str, Any] = {
            "chat_id": chat_id,
            "text": text,
            "parse_mode": parse_mode,
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

    async def edit_message_text(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        *,
        parse_mode: str | None = "HTML",
        reply_markup: dict[str, Any] | None = None,
    ) -> None:
        await self.call(
            "editMessageText",
            {
                "chat_id": chat_id,
                "message_id": message_id,
                "text": text,
                "parse_mode": parse_mode,
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
