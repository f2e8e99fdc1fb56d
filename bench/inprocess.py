"""The whole service inside the benchmark's process, listening on its settings' port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from services.config import Settings
from services.container import Services
from services.main import background_contexts, open_services
from services.web.app import create_app


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Services, str]]:
    """Its services and the alert intake's URL, with the background work running."""
    async with open_services(settings) as services:
        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", settings.http_port).start()
            yield services, f"http://127.0.0.1:{settings.http_port}/api/alerts"
        finally:
            await runner.cleanup()
