"""The Telegram webhook route (webhook mode): checks the secret header, hands the update on."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.web.auth import secret_matches
from services.web.body import read_json
from services.web.keys import SERVICES_KEY

# Telegram's update ids are positive and fit 32 bits today; the table holds 64-bit ones.
MAX_UPDATE_ID = 2**63 - 1

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def receive_update(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    receiver = services.webhook.receiver
    if receiver is None:
        return web.json_response({"error": "unavailable", "detail": "bot not running"}, status=503)
    feed, expected = receiver
    if not secret_matches(request.headers.get(SECRET_HEADER), expected):
        return web.json_response({"error": "forbidden", "detail": "bad secret token"}, status=403)
    update: Any = await read_json(request)  # every malformed body: 400 invalid_json
    if not isinstance(update, dict):
        return web.json_response({"error": "bad_request", "detail": "not an object"}, status=400)
    update_id = update.get("update_id")
    if (
        not isinstance(update_id, int)
        or isinstance(update_id, bool)
        or not 0 <= update_id <= MAX_UPDATE_ID
    ):
        return web.json_response(
            {"error": "bad_request", "detail": "update_id must be an integer from 0 to 2**63-1"},
            status=400,
        )
    # Telegram retries an update it got no answer for, and behind a round-robin proxy the
    # retry may reach another instance: the first to claim the id handles it.
    if not await services.updates.claim(update_id):
        return web.json_response({"ok": True, "duplicate": True})
    await feed(update)
    return web.json_response({"ok": True})


def add_webhook_route(app: web.Application, path: str) -> None:
    app.router.add_post(path, receive_update, name="telegram-webhook")
