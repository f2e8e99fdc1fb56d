"""`create_app(settings, services)`: builds the aiohttp application and starts nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from services.web import (
    alerts,
    board,
    faults,
    health,
    heartbeats,
    incidents,
    metrics,
    openapi,
    pagerduty,
    pipeline,
    sse,
)
from services.web.keys import SERVICES_KEY, SETTINGS_KEY
from services.web.telegram import add_webhook_route

if TYPE_CHECKING:
    from services.config import Settings
    from services.container import Services


def create_app(settings: Settings, services: Services) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # One middleware counts requests and turns errors into JSON, counted with their status.
        middlewares=[metrics.metrics_middleware],
    )
    app[SETTINGS_KEY] = settings
    app[SERVICES_KEY] = services
    for module in (
        health,
        alerts,
        pagerduty,
        heartbeats,
        incidents,
        metrics,
        sse,
        pipeline,
        openapi,
        board,
    ):
        app.add_routes(module.routes)
    if settings.fault_injection:
        app.add_routes(faults.routes)
    webhook_path = None
    if settings.telegram_webhook_url:
        # Webhook mode: Telegram posts updates to this app, at the path of the URL it was given.
        webhook_path = urlsplit(settings.telegram_webhook_url).path or "/"
        add_webhook_route(app, webhook_path)
    app[openapi.DOCUMENT_KEY] = openapi.build_document(webhook_path)
    app.on_shutdown.append(sse.on_shutdown)
    return app
