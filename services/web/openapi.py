"""`GET /api/openapi.json`: the OpenAPI 3 document, kept as one file beside the routes
(openapi.yaml); tests/test_openapi.py holds it against the router."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

routes = web.RouteTableDef()

DOCUMENT = Path(__file__).with_name("openapi.yaml")
# The Telegram webhook's operation, placed at TELEGRAM_WEBHOOK_URL's path in webhook mode.
WEBHOOK = "x-telegram-webhook"


def load_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return document


def build_document(webhook_path: str | None = None) -> dict[str, Any]:
    """The document this app serves: the file, with the webhook's route when there is one."""
    document = copy.deepcopy(_DOCUMENT)
    webhook = document.pop(WEBHOOK)
    if webhook_path is not None:
        document["paths"][webhook_path] = webhook
    return document


_DOCUMENT = load_document()

DOCUMENT_KEY = web.AppKey("openapi_document", dict)


@routes.get("/api/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT_KEY])
