import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
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


async def test_instances_starting_together_migrate_once(db_url: str, db_kind: str) -> None:
    """Several instances on one new PostgreSQL database each migrate at start: one at a time,
    under an advisory lock, so none fails on a table another has just created."""
    if db_kind != "postgresql":
        pytest.skip("one SQLite file is served by one instance")
    import asyncpg

    from services.db import MIGRATION_LOCK

    plain = db_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    holder = await asyncpg.connect(plain)
    env = {**os.environ, "DATABASE_URL": db_url}

    def upgrade() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "db", "upgrade"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        procs = [upgrade() for _ in range(3)]
        # All three wait for the lock (as they would for an instance already migrating).
        for _ in range(600):
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            if waiting == 3:
                break
            assert all(p.poll() is None for p in procs), "an upgrade ran without the lock"
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the upgrades never waited for the migration lock")
        assert "incidents" not in await table_names(db_url)
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        results = [await asyncio.to_thread(p.communicate, timeout=120) for p in procs]
    finally:
        await holder.close()
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    assert "leases" in await table_names(db_url)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 22, 3, 4, 5, 0, tzinfo=UTC),
        datetime(2026, 1, 2, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(999, 12, 31, 0, 0, 0, 7, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 30, 0, 123, tzinfo=timezone(timedelta(hours=9))),
        None,
    ],
)
def test_sqlite_datetime_text_is_sqlalchemys_own(value: datetime | None) -> None:
    """UTCDateTime's one-step SQLite bind gives the text of the TypeDecorator chain it
    replaces (SQLite compares these as text, so one character off would misorder rows)."""
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.types import DateTime

    from services.models import UTCDateTime

    dialect = sqlite.dialect()
    ours = UTCDateTime().bind_processor(dialect)
    chain = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None and chain is not None
    expected = None if value is None else chain(value.astimezone(UTC).replace(tzinfo=None))
    assert ours(value) == expected
    assert ours(value) == expected  # the same object again: its remembered text
    other = datetime(2027, 5, 6, 7, 8, 9, 10, tzinfo=UTC)
    assert ours(other) == chain(other.replace(tzinfo=None))
    assert ours(value) == expected  # and back
    with pytest.raises(ValueError, match="naive"):
        ours(datetime(2026, 1, 1))  # noqa: DTZ001 (naive on purpose)


def _open_incident(key: str) -> sa.Insert:
    from services.models import Incident

    now = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
    return sa.insert(Incident).values(
        dedup_key=key,
        severity="P2",
        title=key,
        description="",
        source="test",
        labels={},
        state="triggered",
        occurrence_count=1,
        first_seen_at=now,
        last_seen_at=now,
        response_deadline=now,
    )


async def test_write_sync_commits_before_it_returns_and_rolls_back_on_error(
    migrated_url: str,
) -> None:
    """What `write_sync` returns is committed (another connection sees it at once); what
    it raises left nothing behind, and the next write goes through."""
    from services.models import Incident

    database, other = db.Database(migrated_url), db.Database(migrated_url)
    try:

        def keys() -> sa.Select[str]:
            return sa.select(Incident.dedup_key).order_by(Incident.dedup_key)

        await database.write_sync(lambda s: s.execute(_open_incident("kept")))
        async with other.read() as session:
            assert list(await session.scalars(keys())) == ["kept"]

        def fails(session: sa.orm.Session) -> None:
            session.execute(_open_incident("lost"))
            raise ValueError("refused after a write")

        with pytest.raises(ValueError, match="refused"):
            await database.write_sync(fails)
        await database.write_sync(lambda s: s.execute(_open_incident("next")))
        async with other.read() as session:
            assert list(await session.scalars(keys())) == ["kept", "next"]
    finally:
        await database.dispose()
        await other.dispose()


async def test_execute_many_writes_what_sqlalchemy_writes(migrated_url: str) -> None:
    """`execute_many` (straight to sqlite3 on SQLite) stores the very values SQLAlchemy's
    own `execute` stores, raises SQLAlchemy's exceptions, and hands rows that need
    SQLAlchemy's column defaults to SQLAlchemy."""
    from services.models import Incident, TimelineEvent

    timeline, incidents = TimelineEvent.__table__, Incident.__table__
    assert isinstance(timeline, sa.Table) and isinstance(incidents, sa.Table)
    insert_timeline, insert_incident = sa.insert(timeline), sa.insert(incidents)
    at = datetime(2026, 12, 4, 12, 0, 5, 123, tzinfo=timezone(timedelta(hours=9)))
    database = db.Database(migrated_url)
    try:

        def entries(incident_id: int) -> list[dict[str, object]]:
            return [
                {
                    "incident_id": incident_id,
                    "at": at,
                    "kind": kind,
                    "actor": "관리자",
                    "details": d,
                }
                for kind, d in (("note", {"text": "한국어 ✓", "n": 1}), ("escalated", {}))
            ]

        def write(session: sa.orm.Session) -> tuple[int, int]:
            ids = [
                session.execute(_open_incident(key).returning(Incident.id)).scalar_one()
                for key in ("ours", "theirs")
            ]
            conn = session.connection()
            db.execute_many(conn, insert_timeline, entries(ids[0]))
            conn.execute(insert_timeline, entries(ids[1]))
            return ids[0], ids[1]

        ours, theirs = await database.write_sync(write)
        query = sa.text(
            "SELECT incident_id, at, kind, actor, details FROM timeline_events ORDER BY id"
        )
        async with database.read() as session:
            stored = (await session.execute(query)).all()
        assert [r[1:] for r in stored if r[0] == ours] == [r[1:] for r in stored if r[0] == theirs]
        assert len(stored) == 4

        # Two open incidents with one dedup key: the unique index refuses the second.
        row = {
            "dedup_key": "dup",
            "severity": "P2",
            "title": "t",
            "description": "",
            "source": "test",
            "labels": {},
            "state": "triggered",
            "occurrence_count": 1,
            "first_seen_at": at,
            "last_seen_at": at,
            "response_deadline": at,
        }
        with pytest.raises(sa.exc.IntegrityError):
            await database.write_sync(
                lambda s: db.execute_many(s.connection(), insert_incident, [row, dict(row)])
            )
        # Without `description`, the column's default fills it: SQLAlchemy's job.
        lean = {k: v for k, v in row.items() if k != "description"}
        await database.write_sync(
            lambda s: db.execute_many(s.connection(), insert_incident, [lean])
        )
        async with database.read() as session:
            found = await session.execute(sa.select(Incident).where(Incident.dedup_key == "dup"))
            assert [i.description for i in found.scalars()] == [""]
    finally:
        await database.dispose()


@pytest.mark.parametrize(
    "value",
    [
        {"text": "한국어 ✓ \u2028", "n": 1, "nested": [1.5, None, True, {"k": "v"}]},
        {1: "int key", "s": "str key"},
        {"big": 2**70},
        [],
        "plain",
    ],
)
def test_json_dumps_reads_back_as_the_standard_library_would(value: object) -> None:
    import json

    assert json.loads(db.json_dumps(value)) == json.loads(json.dumps(value))


KST = timezone(timedelta(hours=9))


async def test_sqlite_rows_reads_what_sqlalchemy_reads(migrated_url: str) -> None:
    """`sqlite_rows` (straight to sqlite3) hands back the values SQLAlchemy's own SELECT
    does: aware datetimes, None, JSON as objects."""
    from services.models import Incident

    incidents = Incident.__table__
    assert isinstance(incidents, sa.Table)
    database = db.Database(migrated_url)
    try:
        Rows = list[dict[str, object]]

        def write_and_read(session: sa.orm.Session) -> tuple[Rows | None, Rows]:
            session.execute(_open_incident("a"))
            session.execute(
                _open_incident("b").values(
                    labels={"shard": "3", "팀": "콘텐츠"},
                    acknowledged_at=datetime(
                        2026, 12, 4, 9, 30, tzinfo=timezone(timedelta(hours=9))
                    ),
                    acknowledged_by="alice",
                )
            )
            conn = session.connection()
            ours = (
                db.sqlite_rows(conn, incidents, "dedup_key IN (?, ?) ORDER BY id", ["a", "b"])
                if db.plain_sqlite(conn)
                else None
            )
            theirs = [
                dict(r)
                for r in conn.execute(sa.select(incidents).order_by(incidents.c.id)).mappings()
            ]
            return ours, theirs

        ours, theirs = await database.write_sync(write_and_read)
        if ours is not None:  # SQLite
            assert ours == theirs
            assert ours[1]["acknowledged_at"] == datetime(2026, 12, 4, 0, 30, tzinfo=UTC)
    finally:
        await database.dispose()
