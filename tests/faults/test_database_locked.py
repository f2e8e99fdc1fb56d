"""Another process holding the database's write lock: callers wait, then get their answer.

SQLite: a second connection holds `BEGIN IMMEDIATE` (what `sqlite3` on the command line or a
backup does). PostgreSQL: a transaction holds `LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator

import pytest

from tests.conftest import Client, admin_headers, intake_headers

# Well under SQLite's busy_timeout (10 s, services/db.py) and under the health probe's write
# timeout (3 s, services/probe.py): a lock held that long is a database refusing writes, which
# the probe rightly reports as an error (it did, when this hold was 3 s).
HOLD_SECONDS = 2.0


@contextlib.asynccontextmanager
async def locked(database_url: str, seconds: float) -> AsyncIterator[None]:
    """The write lock taken by someone else for `seconds`, starting now."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]
        taken = threading.Event()

        def hold() -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE incidents SET title = title WHERE id < 0")
                taken.set()
                threading.Event().wait(seconds)
                conn.execute("COMMIT")
            finally:
                conn.close()

        thread = threading.Thread(target=hold)
        thread.start()
        await asyncio.to_thread(taken.wait, 10)
        try:
            yield
        finally:
            await asyncio.to_thread(thread.join)
        return
    import asyncpg

    url = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE")
        release = asyncio.get_running_loop().call_later(
            seconds, lambda: asyncio.ensure_future(tx.commit())
        )
        try:
            yield
        finally:
            await asyncio.sleep(max(0.0, release.when() - asyncio.get_running_loop().time()))
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


@pytest.mark.slow
async def test_writes_and_reads_wait_out_a_lock_held_elsewhere(
    client: Client, migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = await client.post(
        "/api/alerts", json={"severity": "P2", "title": "before"}, headers=intake_headers()
    )
    assert first.status in {200, 201, 202}
    incident_id = (await first.json())["created"][0]

    async def alert(n: int) -> int:
        response = await client.post(
            "/api/alerts",
            json={"severity": "P3", "title": f"during the lock {n}", "dedup_key": f"lock-{n}"},
            headers=intake_headers(),
        )
        return response.status

    async def ack() -> int:
        response = await client.post(f"/api/incidents/{incident_id}/ack", headers=admin_headers())
        return response.status

    async def read() -> int:
        return (await client.get("/api/incidents")).status

    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def tick() -> None:
        """The event loop's longest stall: waiting for the lock must not be one."""
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()

    async with locked(migrated_url, HOLD_SECONDS):
        ticker = asyncio.create_task(tick())
        began = loop.time()
        statuses = await asyncio.gather(
            *(alert(n) for n in range(20)), ack(), *(read() for _ in range(5))
        )
        waited = loop.time() - began
        ticker.cancel()
    print(
        f"locked for {HOLD_SECONDS}s: statuses {sorted(set(statuses))}, waited {waited:.1f}s,"
        f" longest loop stall {max(gaps):.3f}s"
    )
    assert waited >= HOLD_SECONDS * 0.8  # the lock was real: the writes had to wait for it
    # The loop went on serving meanwhile (a busy wait on it would stall it for the whole hold).
    assert max(gaps) < HOLD_SECONDS / 3
    assert all(200 <= s < 300 for s in statuses), statuses
    listed = await (await client.get("/api/incidents?limit=100")).json()
    titles = {i["title"] for i in listed["incidents"]}
    assert {f"during the lock {n}" for n in range(20)} <= titles
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]
