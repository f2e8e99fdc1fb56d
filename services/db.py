"""Database access: the async engine, write transactions, and Alembic migrations."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import ValuesBase

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).parent
T = TypeVar("T")
# PostgreSQL advisory lock held while migrating ("sunf" in ASCII): instances starting
# together on a new database migrate one at a time (migrations/env.py).
MIGRATION_LOCK = 0x73756E66


class Fence(Protocol):
    """Checks, inside a write transaction, that this instance still leads (raises if not)."""

    async def check(self, session: AsyncSession) -> None: ...

    def check_sync(self, session: Session) -> None: ...


# Set in the scheduled work of the leading instance (services/leader.py): every write
# transaction made there first checks the fencing token, so a deposed leader's late write
# is refused instead of committed.
FENCE: ContextVar[Fence | None] = ContextVar("sunflow_fence", default=None)


class _Prepared:
    """A DML statement compiled once for one set of parameter names: the SQL, and how to
    turn a row into its parameters (the values in placeholder order, bind-processed)."""

    __slots__ = ("getter", "processors", "sql")

    def __init__(self, stmt: ValuesBase, keys: Sequence[str], dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        names = compiled.positiontup
        if compiled.insert_prefetch or compiled.update_prefetch or not names:
            raise LookupError("needs SQLAlchemy's own defaults or names")
        self.sql = compiled.string
        self.getter = itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
        binds = compiled.binds
        processors = (
            binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
        )
        self.processors = tuple((i, p) for i, p in enumerate(processors) if p is not None)

    def params(self, row: Mapping[str, Any]) -> tuple[Any, ...] | list[Any]:
        values = self.getter(row)
        if not self.processors:
            return values
        values = list(values)
        for i, processor in self.processors:
            values[i] = processor(values[i])
        return values


# Keyed by the statement itself (module-level constants), so an id is never reused.
_PREPARED: dict[tuple[ValuesBase, tuple[str, ...]], _Prepared | None] = {}


def _prepared(stmt: ValuesBase, keys: tuple[str, ...], dialect: Dialect) -> _Prepared | None:
    """`stmt` compiled once for these keys; None when it needs SQLAlchemy's own execution."""
    if (stmt, keys) not in _PREPARED:
        try:
            _PREPARED[(stmt, keys)] = _Prepared(stmt, keys, dialect)
        except LookupError:
            _PREPARED[(stmt, keys)] = None
    return _PREPARED[(stmt, keys)]


def execute_many(conn: Connection, stmt: ValuesBase, rows: Sequence[Mapping[str, Any]]) -> None:
    """`conn.execute(stmt, rows)` for a module-level INSERT or UPDATE without RETURNING
    whose rows all have the same keys. On a plain sqlite3 connection (`write_sync`'s) it
    goes straight to the driver's `executemany`, compiled once per statement and set of
    keys, with the same SQL, bind processing and exceptions: written by hand for speed,
    SQLAlchemy's own per-execution work being a tenth of an intake group's (figures in
    docs/benchmarks-history.md). Elsewhere, `conn.execute`."""
    if not rows:
        return
    dialect = conn.dialect
    prepared = _prepared(stmt, tuple(rows[0]), dialect) if plain_sqlite(conn) else None
    if prepared is None:
        conn.execute(stmt, list(rows))
        return
    params = [prepared.params(row) for row in rows]
    dbapi = conn.connection.driver_connection
    assert isinstance(dbapi, sqlite3.Connection)
    try:
        dbapi.executemany(prepared.sql, params)
    except sqlite3.Error as err:
        raise sa_exc.DBAPIError.instance(
            prepared.sql, params, err, sqlite3.Error, dialect=dialect
        ) from err


def insert_returning(
    conn: Connection, stmt: ValuesBase, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    """`conn.execute(stmt, rows)` for a module-level INSERT … RETURNING of plain columns
    (ints and text, not processed) whose rows all have the same keys: the returned rows,
    in no particular order. On a plain sqlite3 connection, one multi-row
    `INSERT … VALUES (…), (…) … RETURNING` per chunk straight to the driver, from the
    statement compiled once (written by hand for speed, like `execute_many`: SQLAlchemy's
    insertmanyvalues cost a sixth of an intake group); elsewhere, `conn.execute`."""
    if not rows:
        return []
    keys = tuple(rows[0])
    prepared = _prepared(stmt, keys, conn.dialect) if plain_sqlite(conn) else None
    if prepared is None:
        return [tuple(r) for r in conn.execute(stmt, list(rows))]
    head, values, returning = _split_values(prepared.sql)
    dbapi = conn.connection.driver_connection
    assert isinstance(dbapi, sqlite3.Connection)
    per_chunk = max(1, dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(keys))
    returned: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), per_chunk):
        chunk = rows[start : start + per_chunk]
        sql = f"{head} VALUES {', '.join([values] * len(chunk))} RETURNING {returning}"
        params = [value for row in chunk for value in prepared.params(row)]
        try:
            returned += dbapi.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise sa_exc.DBAPIError.instance(
                sql, params, err, sqlite3.Error, dialect=conn.dialect
            ) from err
    return returned


def _split_values(sql: str) -> tuple[str, str, str]:
    """`INSERT INTO t (a, b) VALUES (?, ?) RETURNING x, y` -> its three parts."""
    head, found, rest = sql.partition(" VALUES ")
    values, found_returning, returning = rest.partition(" RETURNING ")
    if not found or not found_returning:
        raise ValueError(f"not a single-row INSERT … RETURNING: {sql}")
    return head, values, returning


def plain_sqlite(conn: Connection) -> bool:
    """Whether `conn` is one of `write_sync`'s plain sqlite3 connections (the ones
    `execute_many` and `sqlite_rows` take straight to the driver)."""
    return conn.dialect.driver == "pysqlite"


class _Reader:
    """Every column of a table: `SELECT … FROM table WHERE `, and each value's result
    processing."""

    __slots__ = ("names", "processors", "select")

    def __init__(self, table: Table, dialect: Dialect) -> None:
        columns = list(table.columns)
        preparer = dialect.identifier_preparer
        listed = ", ".join(preparer.quote(column.name) for column in columns)
        self.select = f"SELECT {listed} FROM {preparer.format_table(table)} WHERE "
        self.names = tuple(column.key for column in columns)
        processors = (
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
        self.processors = tuple((i, p) for i, p in enumerate(processors) if p is not None)


_READERS: dict[Table, _Reader] = {}


def sqlite_rows(
    conn: Connection, table: Table, where: str, params: Sequence[Any]
) -> list[dict[str, Any]]:
    """`SELECT * FROM table WHERE where` as dicts keyed by column, values as SQLAlchemy's
    own result processing gives them, straight on a plain sqlite3 connection
    (`plain_sqlite`): for intake's one read per group, where SQLAlchemy's execution cost
    more than the query (written by hand for speed, like `execute_many`)."""
    dialect = conn.dialect
    reader = _READERS.get(table)
    if reader is None:
        reader = _READERS[table] = _Reader(table, dialect)
    sql = reader.select + where
    dbapi = conn.connection.driver_connection
    assert isinstance(dbapi, sqlite3.Connection)
    try:
        fetched = dbapi.execute(sql, params).fetchall()
    except sqlite3.Error as err:
        raise sa_exc.DBAPIError.instance(sql, params, err, sqlite3.Error, dialect=dialect) from err
    names, processors = reader.names, reader.processors
    rows = []
    for raw in fetched:
        values = list(raw)
        for i, processor in processors:
            values[i] = processor(values[i])
        rows.append(dict(zip(names, values, strict=True)))
    return rows


def json_dumps(value: Any) -> str:
    """JSON text through orjson (several times the standard library's speed on intake's
    small objects); what orjson refuses (an int beyond 64 bits) through the standard
    library. Unlike `json.dumps`, NaN and the infinities, which JSON has not, become null."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not an ini option: URLs may hold '%' that ConfigParser would eat.
    cfg.attributes["database_url"] = database_url
    return cfg


def ensure_sqlite_dir(database_url: str) -> None:
    url = make_url(database_url)
    if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def upgrade(database_url: str, revision: str = "head") -> None:
    """`alembic upgrade`; synchronous, call it outside the event loop or in a thread."""
    ensure_sqlite_dir(database_url)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int = 10_000) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves so writers can take the lock up front (BEGIN IMMEDIATE):
        # a deferred transaction that upgrades to a writer can fail at once with SQLITE_BUSY.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _sync_sqlite(
    url: URL, echo: bool, busy_timeout_ms: int
) -> tuple[Engine, sessionmaker[Session]]:
    """A plain sqlite3 engine for `write_sync`, usable from the loop and the writer thread
    in turn, and its sessions' transactions starting with BEGIN IMMEDIATE."""
    engine = create_engine(
        url.set(drivername="sqlite"),
        echo=echo,
        json_serializer=json_dumps,
        pool_reset_on_return=None,
        connect_args={"check_same_thread": False},
    )
    _configure_sqlite(engine, busy_timeout_ms=busy_timeout_ms)
    return engine, sessionmaker(
        engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
    )


def _is_busy(exc: OperationalError) -> bool:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _commit(session: Session) -> None:
    try:
        session.commit()
    finally:
        session.close()


class Database:
    """Owns the engine; hands out read sessions and serialised write transactions."""

    def __init__(self, database_url: str, *, echo: bool = False) -> None:
        ensure_sqlite_dir(database_url)
        self.url = database_url
        self.is_sqlite = make_url(database_url).drivername.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo, "json_serializer": json_dumps}
        if self.is_sqlite:
            # Sessions always end their transactions themselves; the pool's extra ROLLBACK on
            # check-in would be one more thread round trip per transaction.
            kwargs["pool_reset_on_return"] = None
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine = create_async_engine(database_url, **kwargs)
        write_engine = self.engine
        if self.is_sqlite:
            _configure_sqlite(self.engine.sync_engine)
            write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessionmaker = async_sessionmaker(write_engine, expire_on_commit=False)
        # SQLite has one writer at a time; queueing writers here is fairer and faster than
        # letting them spin in SQLite's busy handler. Other processes still get busy_timeout.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        # `write_sync` on a SQLite file, with plain sqlite3 connections (hand-written: no
        # library has it): the statements run right here on the event loop, where each
        # statement through aiosqlite is a thread round trip of its own and a whole
        # transaction in a thread spends more waiting for the GIL than working; the COMMIT
        # (the fsync, which frees the GIL) runs in a writer thread, so the loop serves
        # requests meanwhile. The loop's connection never waits for the lock
        # (busy_timeout 0): when another process holds it, the transaction runs wholly in
        # the thread instead, which waits there (docs/benchmarks-history.md has the figures).
        self._sync_writer: ThreadPoolExecutor | None = None
        self._sync_engine: Engine | None = None
        self._inline_engine: Engine | None = None
        url = make_url(database_url)
        if self.is_sqlite and url.database and ":memory:" not in url.database:
            self._sync_engine, self._sync_sessionmaker = _sync_sqlite(url, echo, 10_000)
            self._inline_engine, self._inline_sessionmaker = _sync_sqlite(url, echo, 0)
            self._sync_writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed on normal exit, rolled back on error."""
        fence = FENCE.get()
        if self._write_lock is None:
            async with self._write_sessionmaker.begin() as session:
                if fence is not None:
                    await fence.check(session)
                yield session
            return
        async with self._write_lock, self._write_sessionmaker.begin() as session:
            if fence is not None:
                await fence.check(session)
            yield session

    async def write_sync(self, fn: Callable[[Session], T]) -> T:
        """One write transaction of synchronous code: `fn(session)`, committed when it returns.

        On a SQLite file `fn` runs on the loop and the COMMIT in the writer thread (all of it
        in the thread while another process holds the write lock); elsewhere (PostgreSQL) in
        an async write transaction through `AsyncSession.run_sync`.
        """
        if self._sync_writer is None or self._write_lock is None:
            async with self.write() as session:
                return await session.run_sync(fn)
        fence = FENCE.get()  # read here: the writer thread does not see this context
        async with self._write_lock:
            inline = self._inline_sessionmaker()
            try:
                inline.connection()  # BEGIN IMMEDIATE, at once or SQLITE_BUSY
            except OperationalError as exc:
                inline.close()
                if not _is_busy(exc):
                    raise
                # Another process writes: wait for it in the thread, not on the loop.
                return await self._in_thread(self._in_transaction, fn, fence)
            try:
                if fence is not None:
                    fence.check_sync(inline)
                result = fn(inline)
            except BaseException:
                inline.close()  # rolls back
                raise
            await self._in_thread(_commit, inline)
            return result

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._sync_writer is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def run() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, whatever it is
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

        # Straight to the thread, answered with one call_soon_threadsafe: a third of the
        # cost of `run_in_executor`'s chained concurrent future, once per transaction.
        self._sync_writer.submit(run)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread finishes its work regardless; keep the lock until it has, so no
            # other writer of this process runs beside it.
            await asyncio.wait([future])
            raise

    def _in_transaction(self, fn: Callable[[Session], T], fence: Fence | None) -> T:
        with self._sync_sessionmaker.begin() as session:
            if fence is not None:
                fence.check_sync(session)
            return fn(session)

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sync_writer is not None:
            for engine in (self._sync_engine, self._inline_engine):
                if engine is not None:
                    await asyncio.get_running_loop().run_in_executor(
                        self._sync_writer, engine.dispose
                    )
            self._sync_writer.shutdown()
