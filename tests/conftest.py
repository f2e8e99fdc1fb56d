"""Shared fixtures: a migrated SQLite file per test, the services, and an HTTP client."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import event
from sqlalchemy.engine import Engine

from services import db
from services.config import Settings
from services.main import Services, background_contexts, open_services
from services.web.app import create_app

INTAKE = "intake-test-token-0123"
ADMIN = "admin-test-token-4567"

Client = TestClient[web.Request, web.Application]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_program(name: str) -> str:
    """The path of a Debian program an end-to-end test needs; skip (or fail in CI) without it."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path:
        return path
    if os.environ.get("REQUIRE_E2E") == "1":
        pytest.fail(f"{name} is not installed and REQUIRE_E2E=1 (CI installs it in .ci/run)")
    pytest.skip(f"{name} is not installed (apt-get install {name}); CI runs this test")


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> str:
    """The Redis the tests share (TEST_REDIS_URL); skip (or fail in CI) when it is not up."""
    where = urlsplit(REDIS_URL)
    try:
        with socket.create_connection(
            (where.hostname or "127.0.0.1", where.port or 6379), 1
        ) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return REDIS_URL
    except OSError:
        pass
    if os.environ.get("REQUIRE_E2E") == "1":
        pytest.fail(f"Redis is not answering at {REDIS_URL} and REQUIRE_E2E=1")
    pytest.skip(f"Redis is not answering at {REDIS_URL} (apt-get install redis-server)")


PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=["sqlite", "postgresql"],
        default=os.environ.get("TEST_DB", "sqlite"),
        help="database the suite runs on: sqlite (a temp file per test, the default) or "
        "postgresql (a fresh database per test on TEST_POSTGRES_URL)",
    )


@pytest.fixture
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--db"))


@pytest.fixture
async def db_url(tmp_path: Path, db_kind: str) -> AsyncIterator[str]:
    if db_kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'sunflow.db'}"
        return
    import asyncpg

    name = f"sunflow_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def migrated_url(db_url: str) -> str:
    await asyncio.to_thread(db.upgrade, db_url)
    return db_url


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "intake_token": INTAKE,
        "admin_token": ADMIN,
        "telegram_bot_token": None,
        "http_port": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def settings(migrated_url: str) -> Settings:
    return make_settings(migrated_url)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    async with open_services(settings) as built:
        yield built


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[Client]:
    """The real app with its background parts (intake group commit, scheduler) running."""
    app = create_app(settings, services)
    app.cleanup_ctx.extend(background_contexts(services))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def intake_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {INTAKE}"}


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database of its own, migrated, dropped afterwards (whatever --db the
    suite runs on): for tests that start several instances on one database."""
    import asyncpg

    try:
        admin = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("REQUIRE_E2E") == "1":
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} and REQUIRE_E2E=1")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    name = f"sunflow_cluster_{uuid.uuid4().hex[:10]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    try:
        await asyncio.to_thread(db.upgrade, url)
        yield url
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextmanager
def statements_seen(keep: Callable[[str], bool]) -> Iterator[list[str]]:
    """The SQL statements of any engine for which `keep` holds, while the block runs
    (what goes through SQLAlchemy: `services.db.execute_many` and `sqlite_rows` do not)."""
    seen: list[str] = []

    def statement(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        if keep(sql):
            seen.append(sql)

    event.listen(Engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", statement)
