import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from services import db


async def table_names(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_migrations_up_and_down(db_url: str) -> None:
    await asyncio.to_thread(db.upgrade, db_url)
    assert {"incidents", "timeline_events", "alembic_version"} <= await table_names(db_url)
    await asyncio.to_thread(db.downgrade, db_url, "base")
    assert await table_names(db_url) <= {"alembic_version"}
    await asyncio.to_thread(db.upgrade, db_url)
    assert "incidents" in await table_names(db_url)


async def test_upgrade_is_idempotent(db_url: str) -> None:
    await asyncio.to_thread(db.upgrade, db_url)
    await asyncio.to_thread(db.upgrade, db_url)
    assert "incidents" in await table_names(db_url)


async def test_models_match_migrations(db_url: str) -> None:
    """autogenerate finds nothing to do: the ORM and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from services.models import Base

    await asyncio.to_thread(db.upgrade, db_url)
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


def test_the_selected_database_is_used(db_url: str, db_kind: str) -> None:
    assert db_url.startswith(
        {"sqlite": "sqlite+aiosqlite://", "postgresql": "postgresql+asyncpg://"}[db_kind]
    )
