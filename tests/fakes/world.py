"""The pipeline against its fakes: settings pointing at them, the services, a frozen clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from services.clock import FrozenClock
from services.config import Settings
from services.main import Services, open_services
from tests.conftest import make_settings
from tests.fakes import FakeServer
from tests.fakes.cloudinary import FakeCloudinary
from tests.fakes.fal import KEY as FAL_KEY
from tests.fakes.fal import MODEL, PNG, FakeFal
from tests.fakes.instagram import APP_ID, APP_SECRET, USER_ID, VERSION, FakeInstagram

TOKEN = "IGQVJ-fake-instagram-token-0001"
BOT_TOKEN = "123456:fake-telegram-bot-token"
START = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
CAPTION = "Sunflowers at dawn. #sunflower #garden @sunflow"


class FakeTelegram(FakeServer):
    """Only `getMe`, which the health check calls; `fault` makes it answer 401."""

    def __init__(self) -> None:
        super().__init__()
        self.fault = False
        app = web.Application()
        app.router.add_get("/bot{token}/getMe", self.get_me)
        app.router.add_post("/bot{token}/getMe", self.get_me)
        # Enough for a polling bot to idle against it: no updates, every call accepted.
        app.router.add_route("*", "/bot{token}/{method}", self.other)
        self.app = app

    async def other(self, request: web.Request) -> web.Response:
        self.requests.append(request.match_info["method"])
        if request.match_info["method"] == "getUpdates":
            await asyncio.sleep(1)
            return web.json_response({"ok": True, "result": []})
        return web.json_response({"ok": True, "result": True})

    async def get_me(self, request: web.Request) -> web.Response:
        self.requests.append("getMe")
        if self.fault or request.match_info["token"] != BOT_TOKEN:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        return web.json_response(
            {
                "ok": True,
                "result": {
                    "id": 123456,
                    "is_bot": True,
                    "first_name": "SunFlow Ops",
                    "username": "sunflow_ops_bot",
                },
            }
        )


@dataclass
class World:
    services: Services
    settings: Settings
    clock: FrozenClock
    instagram: FakeInstagram
    cloudinary: FakeCloudinary
    fal: FakeFal
    telegram: FakeTelegram
    root: Path

    @property
    def content(self) -> Path:
        return self.settings.content_dir

    def add_topic(self, topic: str, *, images: int = 1, caption: str = CAPTION) -> Path:
        folder = self.content / "images" / topic
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(images):
            (folder / f"{topic}-{index + 1}.png").write_bytes(PNG)
        captions = self.content / "captions"
        captions.mkdir(parents=True, exist_ok=True)
        (captions / f"{topic}.txt").write_text(caption, "utf-8")
        return folder


def world_settings(
    database_url: str,
    root: Path,
    *,
    instagram: FakeInstagram,
    cloudinary: FakeCloudinary,
    fal: FakeFal,
    telegram: FakeTelegram,
    **overrides: object,
) -> Settings:
    values: dict[str, object] = {
        "instagram_access_token": TOKEN,
        "instagram_api_base": instagram.base_url,
        "instagram_graph_version": VERSION,
        "instagram_user_id": USER_ID,
        "instagram_app_id": APP_ID,
        "instagram_app_secret": APP_SECRET,
        "cloudinary_url": cloudinary.url(),
        "fal_key": FAL_KEY,
        "fal_api_base": fal.base_url,
        "fal_model": MODEL,
        "fal_timeout_seconds": 2,
        "telegram_bot_token": BOT_TOKEN,
        "telegram_api_base": telegram.base_url,
        "content_dir": root / "content",
        "stats_file": root / "config" / "data" / "instagram_stats.json",
        "backup_dir": root / "data" / "backups",
        "log_dir": root / "config" / "logs",
        "env_file_path": root / ".env",
    }
    values.update(overrides)
    return make_settings(database_url, **values)


@asynccontextmanager
async def pipeline_world(
    database_url: str, root: Path, **overrides: object
) -> AsyncIterator[World]:
    async with (
        FakeInstagram(token=TOKEN) as ig,
        FakeCloudinary() as cl,
        FakeFal() as fal,
        FakeTelegram() as tg,
    ):
        settings = world_settings(
            database_url, root, instagram=ig, cloudinary=cl, fal=fal, telegram=tg, **overrides
        )
        clock = FrozenClock(START)
        async with open_services(settings, clock=clock) as services:
            services.ops.fal.poll_interval = 0.01
            yield World(services, settings, clock, ig, cl, fal, tg, root)


@asynccontextmanager
async def reopened(world: World, **overrides: object) -> AsyncIterator[Services]:
    """The same database and fakes with other settings: a restart after editing .env."""
    settings = world_settings(
        world.settings.database_url,
        world.root,
        instagram=world.instagram,
        cloudinary=world.cloudinary,
        fal=world.fal,
        telegram=world.telegram,
        **overrides,
    )
    async with open_services(settings, clock=world.clock) as services:
        services.ops.fal.poll_interval = 0.01
        yield services
