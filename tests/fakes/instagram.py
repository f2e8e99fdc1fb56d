"""A fake Instagram Graph API: containers, publishing, insights, debug_token, and faults."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from tests.fakes import FakeServer

VERSION = "v21.0"
USER_ID = "17841400000000000"
APP_ID = "1234567890"
APP_SECRET = "fake-app-secret-abcdef"


class FakeInstagram(FakeServer):
    def __init__(self, *, token: str) -> None:
        super().__init__()
        self.valid_tokens = {token}
        self.token_expires_at = 0  # what debug_token reports (epoch seconds)
        # Fault injection: None, "401", "403", "429" or "500" on every call; "lost" publishes
        # on media_publish but answers only after `lost_for` seconds (a lost answer).
        self.fault: str | None = None
        self.lost_for = 2.0
        self.retry_after: int | None = None
        self.containers: dict[str, dict[str, str]] = {}
        self.published: list[dict[str, str]] = []
        app = web.Application()
        app.router.add_get(f"/{VERSION}/debug_token", self.debug_token)
        app.router.add_get(f"/{VERSION}/{{user}}", self.account)
        app.router.add_post(f"/{VERSION}/{{user}}/media", self.media)
        app.router.add_get(f"/{VERSION}/{{user}}/media", self.media_list)
        app.router.add_post(f"/{VERSION}/{{user}}/media_publish", self.media_publish)
        app.router.add_get(f"/{VERSION}/{{user}}/insights", self.insights)
        self.app = app

    @staticmethod
    def _error(
        status: int, message: str, code: int, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response(
            {"error": {"message": message, "type": "OAuthException", "code": code}},
            status=status,
            headers=headers,
        )

    async def _check(self, request: web.Request) -> tuple[dict[str, str], web.Response | None]:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        self.requests.append(f"{request.method} {request.path}")
        if self.fault == "429":
            headers = {"Retry-After": str(self.retry_after)} if self.retry_after else None
            return params, self._error(429, "Application request limit reached", 4, headers)
        if self.fault == "500":
            return params, self._error(500, "An unexpected error has occurred", 2)
        if self.fault == "403":
            return params, self._error(403, "Application does not have permission", 10)
        if self.fault == "401" or params.get("access_token") not in self.valid_tokens:
            return params, self._error(401, "Error validating access token", 190)
        if request.match_info.get("user", USER_ID) != USER_ID:
            return params, self._error(400, "Unsupported get request", 100)
        return params, None

    async def account(self, request: web.Request) -> web.Response:
        _, error = await self._check(request)
        if error:
            return error
        return web.json_response(
            {"id": USER_ID, "username": "sunflow", "followers_count": 1200, "media_count": 42}
        )

    async def media(self, request: web.Request) -> web.Response:
        params, error = await self._check(request)
        if error:
            return error
        if "image_url" not in params and "children" not in params:
            return self._error(400, "image_url or children is required", 100)
        creation = str(17900000000000000 + len(self.containers))
        self.containers[creation] = params
        return web.json_response({"id": creation})

    async def media_publish(self, request: web.Request) -> web.Response:
        params, error = await self._check(request)
        if error:
            return error
        container = self.containers.get(params.get("creation_id", ""))
        if container is None:
            return self._error(400, "unknown creation_id", 100)
        media_id = str(18000000000000000 + len(self.published))
        self.published.append({"id": media_id, **container})
        if self.fault == "lost":
            await asyncio.sleep(self.lost_for)
        return web.json_response({"id": media_id})

    async def media_list(self, request: web.Request) -> web.Response:
        _, error = await self._check(request)
        if error:
            return error
        data: list[dict[str, Any]] = [
            {"id": p["id"], "caption": p.get("caption", ""), "like_count": 7, "comments_count": 1}
            for p in self.published
        ]
        return web.json_response({"data": data})

    async def insights(self, request: web.Request) -> web.Response:
        params, error = await self._check(request)
        if error:
            return error
        names = params.get("metric", "").split(",")
        return web.json_response(
            {"data": [{"name": n, "period": "day", "total_value": {"value": 10}} for n in names]}
        )

    async def debug_token(self, request: web.Request) -> web.Response:
        self.requests.append(f"GET {request.path}")
        if request.query.get("access_token") != f"{APP_ID}|{APP_SECRET}":
            return self._error(400, "Invalid OAuth access token signature", 190)
        valid = request.query.get("input_token") in self.valid_tokens and self.fault != "401"
        data: dict[str, Any] = {"app_id": APP_ID, "is_valid": valid, "expires_at": 0}
        if valid:
            data["expires_at"] = self.token_expires_at
        else:
            data["error"] = {"code": 190, "message": "Session has expired"}
        return web.json_response({"data": data})
