"""The database health check writes for real: a database that refuses writes is `down`, for
real (a PostgreSQL role without write privileges, a read-only one, a SQLite file the OS
will not let grow), and the alarm opens a P0 or reaches the fallback channel."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import make_url, select

from services import db
from services.clock import FrozenClock
from services.config import Settings
from services.main import open_services
from services.models import HealthProbe, IncidentState
from services.probe import DEDUP_KEY
from services.web.app import create_app
from tests.conftest import INTAKE, PG_ADMIN_URL, free_port, make_settings, require_program
from tests.test_notify import webhook_receiver

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


async def test_a_healthy_check_writes_its_row(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        result = await services.probe.check()
        assert (result.status.value, result.detail) == ("healthy", "read and write ok")
        clock.advance(seconds=60)
        await services.probe.check()
        async with services.db.read() as session:
            rows = (await session.scalars(select(HealthProbe))).all()
        assert [(r.instance, r.written_at) for r in rows] == [
            (services.leader.instance, clock.now())
        ]
        report = await services.health.run()
        assert {c.name: c.status.value for c in report.components}["database"] == "healthy"


# -- PostgreSQL: a role that may not write ------------------------------------------------


@pytest.fixture
async def pg_role(pg_url: str) -> AsyncIterator[tuple[str, str]]:
    """A login role of its own on `pg_url`'s database: (its name, its URL)."""
    name = f"sunflow_ro_{uuid.uuid4().hex[:8]}"
    database = pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE ROLE "{name}" LOGIN')
    finally:
        await admin.close()
    as_role = make_url(pg_url).set(username=name, password=None)
    try:
        yield name, as_role.render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}")
        try:
            await admin.execute(f'REASSIGN OWNED BY "{name}" TO CURRENT_USER')
            await admin.execute(f'DROP OWNED BY "{name}"')
        finally:
            await admin.close()
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        finally:
            await admin.close()


async def grant(pg_url: str, *statements: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}")
    try:
        for statement in statements:
            await admin.execute(statement)
    finally:
        await admin.close()


def role_settings(url: str, tmp_path: Path, **overrides: object) -> Settings:
    return make_settings(
        url,
        backup_dir=tmp_path / "backups",
        log_dir=tmp_path / "logs",
        stats_file=tmp_path / "stats.json",
        content_dir=tmp_path / "content",
        env_file_path=tmp_path / ".env",
        **overrides,
    )


@pytest.mark.parametrize(
    "how",
    [
        # Privileges revoked: reads work, every write is refused.
        "SELECT only",
        # A read-only database (what a hot standby, or a full disk set read-only, gives).
        "read-only transactions",
    ],
)
async def test_postgresql_refusing_writes_is_down_and_reaches_the_fallback(
    pg_url: str, pg_role: tuple[str, str], tmp_path: Path, how: str
) -> None:
    role, url = pg_role
    statements = [f'GRANT USAGE ON SCHEMA public TO "{role}"']
    if how == "SELECT only":
        statements.append(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    else:
        statements += [
            f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"',
            f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
            f'ALTER ROLE "{role}" SET default_transaction_read_only = on',
        ]
    await grant(pg_url, *statements)
    async with webhook_receiver() as (hook, received):
        settings = role_settings(url, tmp_path, fallback_webhook_url=hook)
        async with (
            open_services(settings) as services,
            TestClient(TestServer(create_app(settings, services))) as client,
        ):
            response = await client.get("/api/health")
            assert response.status == 503
            report = await response.json()
            assert report["status"] == "down"
            database = report["components"]["database"]
            assert database["status"] == "down"
            reason = "permission denied" if how == "SELECT only" else "read-only transaction"
            assert reason in database["detail"], database
            # Reads still work: that is what SELECT 1 used to report as healthy.
            assert (await client.get("/api/incidents")).status == 200
            # Intake tells its sender to retry: nothing was committed.
            alert = {"severity": "P1", "title": "x"}
            headers = {"Authorization": f"Bearer {INTAKE}"}
            refused = await client.post("/api/alerts", json=alert, headers=headers)
            assert refused.status == 503
            assert (await refused.json())["error"] == "unavailable"
            for _ in range(100):  # no incident can be written: the fallback channel
                if received:
                    break
                await asyncio.sleep(0.05)
            [sent] = received
            # In the chat's language (Korean by default), like the chat itself.
            assert sent["subject"].startswith("[P0] SunFlow Ops 데이터베이스 쓰기 거부")
            assert reason in sent["text"] and sent["component"] == "database"
            await client.get("/api/health")
            await asyncio.sleep(0.2)
            assert len(received) == 1  # once per outage, not once per check


async def test_postgresql_probe_table_refused_opens_a_p0(
    pg_url: str, pg_role: tuple[str, str], tmp_path: Path
) -> None:
    """When incidents can still be written (only the probe's own table is refused, or a
    write merely timed out), the alarm is the P0 incident itself."""
    role, url = pg_role
    await grant(
        pg_url,
        f'GRANT USAGE ON SCHEMA public TO "{role}"',
        f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"',
        f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
        f'REVOKE INSERT, UPDATE ON health_probes FROM "{role}"',
    )
    async with webhook_receiver() as (hook, received):
        settings = role_settings(url, tmp_path, fallback_webhook_url=hook)
        async with open_services(settings) as services:
            result = await services.probe.check()
            assert result.status.value == "down" and "permission denied" in result.detail
            assert await services.probe.alarm(result.detail) == "incident"
            [incident] = await services.incidents.list(states=[IncidentState.TRIGGERED])
            assert (incident.dedup_key, incident.severity.value) == (DEDUP_KEY, "P0")
            assert "permission denied" in incident.description
            assert received == []
            await grant(pg_url, f'GRANT INSERT, UPDATE ON health_probes TO "{role}"')
            assert (await services.probe.check()).status.value == "healthy"


# -- SQLite: a file the OS will not let grow (a full disk) ---------------------------------

FSIZE_LIMIT = 64 * 1024  # above the WAL index (32 KiB), below the WAL left behind


def fill_the_wal(path: Path) -> None:
    """Leave committed frames in the WAL past FSIZE_LIMIT, as a process killed before its
    checkpoint does: the next writer must append beyond the limit."""
    code = textwrap.dedent(
        f"""
        import os, sqlite3
        c = sqlite3.connect({str(path)!r}, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA wal_autocheckpoint=0")
        for i in range(40):
            c.execute("INSERT INTO health_probes VALUES (?, '2026-11-21 03:00:00.000000')",
                      (f"filler-{{i}}-" + "x" * 150,))
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert os.path.getsize(f"{path}-wal") > FSIZE_LIMIT


async def test_sqlite_that_cannot_grow_is_down_and_reaches_the_fallback(tmp_path: Path) -> None:
    """A real `sunflow-ops serve` whose files may not grow past FSIZE_LIMIT (RLIMIT_FSIZE,
    set by prlimit; Python ignores SIGXFSZ, so a write past it fails with EFBIG): every
    write fails as on a full disk, reads work."""
    prlimit = require_program("prlimit")
    path = tmp_path / "full.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(db.upgrade, url)
    fill_the_wal(path)
    port = free_port()
    async with webhook_receiver() as (hook, received):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "HTTP_"))}
        env.update(
            HTTP_PORT=str(port),
            DATABASE_URL=url,
            INTAKE_TOKEN=INTAKE,
            FALLBACK_WEBHOOK_URL=hook,
            HEALTH_INTERVAL_SECONDS="1",
            LOG_DIR=str(tmp_path / "logs"),
        )
        proc = subprocess.Popen(
            [prlimit, f"--fsize={FSIZE_LIMIT}", sys.executable, "-m", "services.cli", "serve"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                report: dict[str, Any] = {}
                for _ in range(300):
                    assert proc.poll() is None
                    try:
                        async with http.get(f"{base}/api/health") as response:
                            report = await response.json()
                            status = response.status
                            break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                assert status == 503, report
                assert report["status"] == "down"
                database = report["components"]["database"]
                assert database["status"] == "down", database
                assert database["detail"].startswith("writes fail: OperationalError"), database
                async with http.get(f"{base}/api/incidents") as response:
                    assert response.status == 200  # reads work: SELECT 1 would say healthy
                for _ in range(100):
                    if received:
                        break
                    await asyncio.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        assert received, stderr[-3000:]
        assert received[0]["subject"].startswith("[P0] SunFlow Ops 데이터베이스 쓰기 거부")
        assert "Traceback" not in stderr.split("database: the health check's write failed")[0]
