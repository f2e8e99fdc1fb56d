"""Every `web.AppKey` of the application, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from services.config import Settings
    from services.container import Services

SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings")
SERVICES_KEY: web.AppKey[Services] = web.AppKey("services")
