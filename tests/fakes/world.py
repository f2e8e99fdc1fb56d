"""The pipeline against its fakes: settings pointing at them, the services, a frozen clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.clock import FrozenClock
from services.config import Settings
from services.container import Services
from services.main import open_services
from tests.conftest import free_port, make_settings
from tests.fakes.cloudinary import FakeCloudinary
from tests.fakes.fal import KEY as FAL_KEY
from tests.fakes.fal import MODEL, PNG, FakeFal
from tests.fakes.instagram import APP_ID, APP_SECRET, USER_ID, VERSION, FakeInstagram
from tests.fakes.telegram import FakeTelegram

TOKEN = "IGQVJ-fake-instagram-token-0001"
BOT_TOKEN = "123456:fake-telegram-bot-token"
START = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
CAPTION = "Sunflowers at dawn. #sunflower #garden @sunflow"


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
        "telegram_api_base": telegram.base,
        "content_dir": root / "content",
        "stats_file": root / "config" / "data" / "instagram_stats.json",
        "backup_dir": root / "data" / "backups",
        "log_dir": root / "config" / "logs",
        "env_file_path": root / ".env",
    }
    values.update(overrides)
    return make_settings(database_url, **values)


@asynccontextmanager
async def running_telegram() -> AsyncIterator[FakeTelegram]:
    """The fake Bot API the tests' bots talk to (it answers as the Bot API does)."""
    fake = FakeTelegram(BOT_TOKEN)
    await fake.start(free_port())
    try:
        yield fake
    finally:
        await fake.stop()


@asynccontextmanager
async def pipeline_world(
    database_url: str, root: Path, **overrides: object
) -> AsyncIterator[World]:
    async with (
        FakeInstagram(token=TOKEN) as ig,
        FakeCloudinary() as cl,
        FakeFal() as fal,
        running_telegram() as tg,
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
