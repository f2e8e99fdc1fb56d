"""Instagram Graph API client: media containers, publishing, insights, token debugging."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp

from services.errors import Unavailable


class InstagramError(Exception):
    """The Graph API refused or failed; the message never holds the token."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class InstagramUnauthorized(InstagramError):
    """401 or OAuthException 190: the access token is expired or revoked."""


class InstagramRateLimited(InstagramError):
    """429 or a Graph rate-limit code; `retry_after` is the server's wish, when it said one."""

    def __init__(self, message: str, *, status: int, retry_after: timedelta | None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


# Graph API error codes: 190 invalid token; 4, 17, 32, 613 rate limits.
_AUTH_CODES = {190}
_RATE_CODES = {4, 17, 32, 613}


def parse_retry_after(value: str | None) -> timedelta | None:
    """`Retry-After` in seconds (the Graph API does not send HTTP dates)."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    return timedelta(seconds=int(text))


class InstagramClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        version: str,
        token: str | None,
        user_id: str | None,
        timeout: float = 30,
    ) -> None:
        self._session = session
        self._base = f"{base_url.rstrip('/')}/{version}"
        self._token = token
        self.user_id = user_id
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    @property
    def configured(self) -> bool:
        return bool(self._token and self.user_id)

    def _require(self) -> tuple[str, str]:
        if not self._token:
            raise Unavailable(
                "INSTAGRAM_ACCESS_TOKEN is not set",
                detail={"reason": "not_set", "setting": "INSTAGRAM_ACCESS_TOKEN"},
            )
        if not self.user_id:
            raise Unavailable(
                "INSTAGRAM_USER_ID is not set",
                detail={"reason": "not_set", "setting": "INSTAGRAM_USER_ID"},
            )
        return self._token, self.user_id

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        query = dict(params or {})
        query["access_token"] = token or self._require()[0]
        url = f"{self._base}/{path.lstrip('/')}"
        try:
            if method == "GET":
                request = self._session.get(url, params=query, timeout=self._timeout)
            else:
                request = self._session.post(url, data=query, timeout=self._timeout)
            async with request as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {}
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except TimeoutError:
            raise InstagramError(f"Graph API {path}: no answer in time") from None
        except aiohttp.ClientError as exc:
            # str(exc) may carry the URL and so the token: name the type only.
            raise InstagramError(f"Graph API {path}: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            body = {}
        error = body.get("error") if isinstance(body.get("error"), dict) else None
        if status < 400 and error is None:
            return body
        code = int(error.get("code", 0)) if error else 0
        message = str(error.get("message", "")) if error else ""
        text = f"Graph API {path} answered {status}" + (f": {message[:200]}" if message else "")
        if status == 401 or code in _AUTH_CODES:
            raise InstagramUnauthorized(text, status=status)
        if status == 429 or code in _RATE_CODES:
            raise InstagramRateLimited(text, status=status, retry_after=retry_after)
        raise InstagramError(text, status=status)

    async def account(self) -> dict[str, Any]:
        _, user_id = self._require()
        return await self._call(
            "GET", user_id, params={"fields": "id,username,followers_count,media_count"}
        )

    async def create_container(
        self,
        *,
        image_url: str | None = None,
        caption: str | None = None,
        is_carousel_item: bool = False,
        children: list[str] | None = None,
    ) -> str:
        """`POST /{ig-user-id}/media`: a container for one image, or a carousel of children."""
        _, user_id = self._require()
        params: dict[str, str] = {}
        if children:
            params["media_type"] = "CAROUSEL"
            params["children"] = ",".join(children)
        elif image_url:
            params["image_url"] = image_url
        if is_carousel_item:
            params["is_carousel_item"] = "true"
        if caption and not is_carousel_item:
            params["caption"] = caption
        body = await self._call("POST", f"{user_id}/media", params=params)
        return str(body["id"])

    async def publish(self, creation_id: str) -> str:
        """`POST /{ig-user-id}/media_publish`: the media id of the post."""
        _, user_id = self._require()
        body = await self._call(
            "POST", f"{user_id}/media_publish", params={"creation_id": creation_id}
        )
        return str(body["id"])

    async def account_insights(
        self, metrics: tuple[str, ...] = ("reach", "profile_views", "accounts_engaged")
    ) -> dict[str, Any]:
        _, user_id = self._require()
        body = await self._call(
            "GET",
            f"{user_id}/insights",
            params={"metric": ",".join(metrics), "period": "day", "metric_type": "total_value"},
        )
        values: dict[str, Any] = {}
        for item in body.get("data", []):
            name = item.get("name")
            total = (item.get("total_value") or {}).get("value")
            if total is None and item.get("values"):
                total = item["values"][-1].get("value")
            if name:
                values[str(name)] = total
        return values

    async def recent_media(self, *, limit: int = 10) -> list[dict[str, Any]]:
        _, user_id = self._require()
        body = await self._call(
            "GET",
            f"{user_id}/media",
            params={
                "fields": "id,caption,timestamp,like_count,comments_count,permalink",
                "limit": str(limit),
            },
        )
        return [m for m in body.get("data", []) if isinstance(m, dict)]

    async def debug_token(self, *, app_id: str, app_secret: str) -> dict[str, Any]:
        """`GET /debug_token`: is_valid and expires_at (epoch seconds, 0 = never)."""
        token = self._require()[0]
        body = await self._call(
            "GET",
            "debug_token",
            params={"input_token": token},
            token=f"{app_id}|{app_secret}",
        )
        data = body.get("data")
        return data if isinstance(data, dict) else {}
