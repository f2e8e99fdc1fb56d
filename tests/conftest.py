"""Shared fixtures: a migrated SQLite file per test, the services, and an HTTP client."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool

from services import db
from services.config import Settings
from services.container import Services
from services.main import background_contexts, open_services
from services.web.app import create_app

INTAKE = "intake-test-token-0123"
ADMIN = "admin-test-token-4567"

Client = TestClient[web.Request, web.Application]


# Ports handed to servers the tests start: below the kernel's ephemeral range, a block of its
# own per pytest-xdist worker, taken in turn. A test that restarts a server on its port (the
# kill loops) must not find another worker's server there in between, which port 0 allows.
_PORT_BLOCK = 4000
_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
_ports = itertools.cycle(
    range(
        12000 + _PORT_BLOCK * (int(_worker) if _worker.isdigit() else 0) % 16000,
        12000 + _PORT_BLOCK * (int(_worker) if _worker.isdigit() else 0) % 16000 + _PORT_BLOCK,
    )
)


def free_port() -> int:
    for _ in range(_PORT_BLOCK):
        port = next(_ports)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this worker's block")


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


PG_BASE = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


def _pg_reachable() -> None:
    """Skip (or fail in CI) when the PostgreSQL the suite needs is not answering."""
    try:
        with socket.create_connection(
            (urlsplit(PG_ADMIN_URL).hostname or "127.0.0.1", urlsplit(PG_ADMIN_URL).port or 5432),
            2,
        ):
            return
    except OSError as exc:
        if os.environ.get("REQUIRE_E2E") == "1":
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} and REQUIRE_E2E=1")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")


class Templates:
    """One migrated database per test session and kind, copied for each test: a file copy
    on SQLite, `CREATE DATABASE ... TEMPLATE` on PostgreSQL. Alembic runs once per session
    (test_db.py still runs every migration up and down on an empty database)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._made: dict[str, str] = {}

    def template(self, kind: str) -> str:
        if kind not in self._made:
            if kind == "sqlite":
                url = f"sqlite+aiosqlite:///{self._root / 'template.db'}"
            else:
                _pg_reachable()
                name = f"sunflow_tpl_{uuid.uuid4().hex[:12]}"
                asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
                url = f"{PG_BASE}/{name}"
            db.upgrade(url)
            self._made[kind] = url
        return self._made[kind]

    async def copy(self, kind: str, where: Path) -> str:
        template = self._made[kind]
        if kind == "sqlite":
            where.mkdir(parents=True, exist_ok=True)
            target = where / "sunflow.db"
            shutil.copyfile(template.split("///", 1)[1], target)
            return f"sqlite+aiosqlite:///{target}"
        name = f"sunflow_t_{uuid.uuid4().hex[:12]}"
        source = template.rsplit("/", 1)[1]
        await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        return f"{PG_BASE}/{name}"

    @staticmethod
    async def drop(url: str) -> None:
        if url.startswith("postgresql"):
            name = url.rsplit("/", 1)[1]
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_all(self) -> None:
        for kind, url in self._made.items():
            if kind != "sqlite":
                asyncio.run(self.drop(url))


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    made = Templates(tmp_path_factory.mktemp("templates"))
    yield made
    made.drop_all()


@pytest.fixture
async def db_url(tmp_path: Path, db_kind: str) -> AsyncIterator[str]:
    """An empty database of the selected kind (for the migration tests)."""
    if db_kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'sunflow.db'}"
        return
    name = f"sunflow_t_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        await Templates.drop(f"{PG_BASE}/{name}")


@pytest.fixture
def _template_url(templates: Templates, db_kind: str) -> str:
    # Sync on purpose: Alembic runs its own event loop, outside the test's.
    return templates.template(db_kind)


@pytest.fixture
async def migrated_url(
    templates: Templates, db_kind: str, tmp_path: Path, _template_url: str
) -> AsyncIterator[str]:
    """A fresh migrated database of the selected kind, dropped afterwards."""
    url = await templates.copy(db_kind, tmp_path)
    try:
        yield url
    finally:
        await templates.drop(url)


class DatabaseFactory(Protocol):
    async def __call__(self, kind: str | None = None) -> str: ...


@pytest.fixture
async def fresh_databases(
    templates: Templates, db_kind: str, tmp_path: Path, _template_url: str
) -> AsyncIterator[DatabaseFactory]:
    """Makes as many fresh migrated databases as a test needs (fault trials run side by
    side, each on its own), of the selected kind or the one asked for, all dropped at the
    test's end."""
    made: list[str] = []

    async def make(kind: str | None = None) -> str:
        kind = kind or db_kind
        await asyncio.to_thread(templates.template, kind)
        url = await templates.copy(kind, tmp_path / f"db{len(made)}")
        made.append(url)
        return url

    yield make
    for url in made:
        await templates.drop(url)


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
def _pg_template(templates: Templates) -> str:
    return templates.template("postgresql")


@pytest.fixture
async def pg_url(templates: Templates, tmp_path: Path, _pg_template: str) -> AsyncIterator[str]:
    """A fresh migrated PostgreSQL database of its own, dropped afterwards (whatever --db the
    suite runs on): for tests that start several instances on one database."""
    url = await templates.copy("postgresql", tmp_path)
    try:
        yield url
    finally:
        await templates.drop(url)


@contextmanager
def statements_seen(keep: Callable[[str], bool]) -> Iterator[list[str]]:
    """The SQL statements of any engine for which `keep` holds, while the block runs: what
    goes through SQLAlchemy, and on the plain sqlite3 connections of `write_sync` what goes
    straight to the driver (`execute_many`, `insert_returning`, `sqlite_rows`) too, as
    SQLite's trace callback sees it."""
    seen: list[str] = []
    traced: list[sqlite3.Connection] = []

    def statement(conn: Connection, _cursor: object, sql: str, *_args: object) -> None:
        if keep(sql) and conn.dialect.driver != "pysqlite":
            seen.append(sql)

    def trace(sql: str) -> None:
        if keep(sql):
            seen.append(sql)

    def checkout(dbapi: object, _record: object, _proxy: object) -> None:
        if isinstance(dbapi, sqlite3.Connection):
            dbapi.set_trace_callback(trace)
            traced.append(dbapi)

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Pool, "checkout", checkout)
    try:
        yield seen
    finally:
        event.remove(Pool, "checkout", checkout)
        event.remove(Engine, "before_cursor_execute", statement)
        for dbapi in traced:
            dbapi.set_trace_callback(None)
