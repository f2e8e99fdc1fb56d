"""Telegram Bot API reachability (`getMe`) for the health check; no aiogram here."""

from __future__ import annotations

from typing import Any

import aiohttp


class TelegramError(Exception):
    """getMe failed; the message never holds the bot token."""


async def get_me(
    session: aiohttp.ClientSession, *, base_url: str, token: str, timeout: float = 5
) -> dict[str, Any]:
    url = f"{base_url.rstrip('/')}/bot{token}/getMe"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.json(content_type=None)
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        raise TelegramError(f"getMe failed: {type(exc).__name__}") from None
    if status != 200 or not isinstance(body, dict) or not body.get("ok"):
        description = body.get("description", "") if isinstance(body, dict) else ""
        raise TelegramError(f"getMe answered {status}: {str(description)[:200]}")
    result = body.get("result")
    return result if isinstance(result, dict) else {}
