"""`create_app(settings, services)`: builds the aiohttp application and starts nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from services.web import alerts, health, incidents, metrics, openapi, pipeline
from services.web.errors import error_middleware
from services.web.keys import SERVICES_KEY, SETTINGS_KEY

if TYPE_CHECKING:
    from services.config import Settings
    from services.main import Services


def create_app(settings: Settings, services: Services) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # metrics outermost so errors turned into JSON are counted with their status.
        middlewares=[metrics.metrics_middleware, error_middleware],
    )
    app[SETTINGS_KEY] = settings
    app[SERVICES_KEY] = services
    for module in (health, alerts, incidents, metrics, pipeline, openapi):
        app.add_routes(module.routes)
    app[openapi.DOCUMENT_KEY] = openapi.build_document()
    return app
