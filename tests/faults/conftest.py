"""Shared pieces of the fault tests: a served process over the test's database, a DB reader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import ADMIN, INTAKE
from tests.faults.process import Served


def base_settings(database_url: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "admin_token": ADMIN,
        "intake_token": INTAKE,
        "log_level": "INFO",
        "backup_dir": tmp_path / "backups",
        "log_dir": tmp_path / "logs",
        "stats_file": tmp_path / "stats.json",
        "content_dir": tmp_path / "content",
        "env_file_path": tmp_path / ".env",
    }


@pytest.fixture
async def served_factory(tmp_path: Path) -> AsyncIterator[list[Served]]:
    """Processes a test starts are stopped at its end, whatever happened."""
    started: list[Served] = []
    yield started
    for served in started:
        await served.stop()


async def query(database_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(sql), params)
            return [tuple(row) for row in result]
    finally:
        await engine.dispose()
