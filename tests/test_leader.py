"""The scheduler lease: acquire, renew, expiry, release, fencing; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.clock import FrozenClock
from services.db import Database
from services.leader import (
    SCHEDULER_LEASE,
    Duties,
    Grant,
    Leadership,
    LeaseLost,
    LeaseStore,
    instance_name,
)
from services.models import Lease, TelegramUpdate
from services.scheduler import SchedulerService
from services.updates import UpdateLog

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
TTL = timedelta(seconds=15)


@pytest.fixture
async def database(migrated_url: str) -> AsyncIterator[Database]:
    db = Database(migrated_url)
    yield db
    await db.dispose()


def store(db: Database, clock: FrozenClock, holder: str) -> LeaseStore:
    return LeaseStore(db, clock, name=SCHEDULER_LEASE, holder=holder, ttl=TTL)


async def test_the_first_instance_gets_the_lease_and_the_second_waits(
    database: Database,
) -> None:
    clock = FrozenClock(T0)
    a, b = store(database, clock, "a:8081"), store(database, clock, "b:8082")
    grant = await a.acquire()
    assert grant == Grant("a:8081", 1, T0 + TTL)
    assert await b.acquire() is None
    clock.advance(seconds=14)
    assert await b.acquire() is None  # not expired yet
    current = await a.current()
    assert current is not None and current.holder == "a:8081" and current.token == 1


async def test_renewal_keeps_the_token_and_pushes_expiry(database: Database) -> None:
    clock = FrozenClock(T0)
    a, b = store(database, clock, "a"), store(database, clock, "b")
    grant = await a.acquire()
    assert grant is not None
    for _ in range(5):
        clock.advance(seconds=5)
        renewed = await a.renew(grant)
        assert renewed is not None and renewed.token == 1
        assert renewed.expires_at == clock.now() + TTL
        grant = renewed
        assert await b.acquire() is None  # 25 s in: renewals keep it held


async def test_an_expired_lease_goes_to_the_next_with_a_new_token(database: Database) -> None:
    clock = FrozenClock(T0)
    a, b = store(database, clock, "a"), store(database, clock, "b")
    old = await a.acquire()
    assert old is not None
    clock.advance(seconds=15)
    new = await b.acquire()
    assert new is not None and new.token == 2 and new.holder == "b"
    # The deposed holder learns it at its next renewal, and cannot take it back early.
    assert await a.renew(old) is None
    assert await a.acquire() is None


async def test_a_restart_under_the_same_name_takes_its_lease_back_at_once(
    database: Database,
) -> None:
    clock = FrozenClock(T0)
    before = await store(database, clock, "ops:8081").acquire()
    assert before is not None
    after = await store(database, clock, "ops:8081").acquire()  # not expired, same name
    assert after is not None and after.token == before.token + 1


async def test_release_lets_the_next_take_over_without_waiting(database: Database) -> None:
    clock = FrozenClock(T0)
    a, b = store(database, clock, "a"), store(database, clock, "b")
    grant = await a.acquire()
    assert grant is not None
    await a.release(grant)
    taken = await b.acquire()
    assert taken is not None and taken.token == 2


async def test_two_racing_for_a_free_lease_get_one_winner(database: Database) -> None:
    clock = FrozenClock(T0)
    stores = [store(database, clock, f"i{n}") for n in range(6)]
    grants = await asyncio.gather(*(s.acquire() for s in stores))
    assert len([g for g in grants if g is not None]) == 1
    async with database.read() as session:
        assert await session.scalar(select(func.count()).select_from(Lease)) == 1


async def test_the_fence_refuses_a_deposed_leaders_write(database: Database) -> None:
    clock = FrozenClock(T0)
    a, b = store(database, clock, "a"), store(database, clock, "b")
    old = await a.acquire()
    assert old is not None
    async with database.write() as session:
        await a.check(session, old.token)  # still ours: passes
    clock.advance(seconds=20)
    new = await b.acquire()
    assert new is not None
    with pytest.raises(LeaseLost):
        async with database.write() as session:
            session.add(TelegramUpdate(update_id=1, received_at=T0, instance="a"))
            await a.check(session, old.token)
    async with database.read() as session:  # the late write was rolled back
        assert await session.get(TelegramUpdate, 1) is None
    async with database.write() as session:
        await b.check(session, new.token)


async def test_leadership_fences_writes_and_steps_down_when_taken_over(
    database: Database,
) -> None:
    clock = FrozenClock(T0)
    events: list[str] = []
    leadership = Leadership(store(database, clock, "a"))

    async def gained() -> None:
        events.append("gain")

    async def lost() -> None:
        events.append("loss")

    await leadership.start(Duties(gained=gained, lost=lost))
    try:
        assert leadership.is_leader and leadership.token == 1 and events == ["gain"]
        with leadership.fenced():
            async with database.write() as session:
                session.add(TelegramUpdate(update_id=7, received_at=T0, instance="a"))
        # Another instance takes the lease (ours looked expired to it): the next fenced write
        # is refused, and the next renewal makes us step down.
        clock.advance(seconds=16)
        assert await store(database, clock, "b").acquire() is not None
        with pytest.raises(LeaseLost), leadership.fenced():
            async with database.write() as session:
                session.add(TelegramUpdate(update_id=8, received_at=T0, instance="a"))
        # The one-hop synchronous path (the SQLite writer thread) is fenced the same way.
        with pytest.raises(LeaseLost), leadership.fenced():
            await database.write_sync(
                lambda s: s.add(TelegramUpdate(update_id=10, received_at=T0, instance="a"))
            )
        await leadership._attempt()
        assert not leadership.is_leader and events == ["gain", "loss"]
        with pytest.raises(LeaseLost), leadership.fenced():
            async with database.write() as session:
                session.add(TelegramUpdate(update_id=9, received_at=T0, instance="a"))
    finally:
        await leadership.stop()
    async with database.read() as session:
        ids = (await session.scalars(select(TelegramUpdate.update_id))).all()
    assert list(ids) == [7]


async def test_stop_releases_the_lease(database: Database) -> None:
    clock = FrozenClock(T0)
    leadership = Leadership(store(database, clock, "a"))
    await leadership.start()
    assert leadership.is_leader
    await leadership.stop()
    assert not leadership.is_leader
    assert await store(database, clock, "b").acquire() is not None


async def test_scheduled_jobs_run_only_on_the_leader(database: Database) -> None:
    clock = FrozenClock(T0)
    ran: list[str] = []
    leadership = Leadership(store(database, clock, "a"))
    scheduler = SchedulerService(gate=leadership)

    async def job(name: str) -> None:
        ran.append(name)

    other = store(database, clock, "b")
    held = await other.acquire()
    assert held is not None
    await leadership.start()  # competing, but "b" holds the lease
    try:
        await scheduler._gated(job, "follower")
        await other.release(held)
        await leadership._attempt()
        await scheduler._gated(job, "leader")
    finally:
        await leadership.stop()
    # Not competing (stopped, or a bare service never started): nobody to defer to.
    await scheduler._gated(job, "alone")
    assert ran == ["leader", "alone"]


async def test_a_takeover_waits_for_a_fenced_write_in_flight(
    database: Database, db_kind: str
) -> None:
    """PostgreSQL: the fence's FOR SHARE lock orders a late write before the takeover."""
    if db_kind != "postgresql":
        pytest.skip("SQLite serialises every write transaction anyway")
    clock = FrozenClock(T0)
    a, b = store(database, clock, "a"), store(database, clock, "b")
    old = await a.acquire()
    assert old is not None
    clock.advance(seconds=20)
    order: list[str] = []
    checked = asyncio.Event()

    async def late_write() -> None:
        async with database.write() as session:
            await a.check(session, old.token)
            checked.set()
            await asyncio.sleep(0.5)
            session.add(TelegramUpdate(update_id=42, received_at=T0, instance="a"))
        order.append("write committed")

    async def takeover() -> None:
        await checked.wait()
        assert await b.acquire() is not None
        order.append("taken over")

    await asyncio.gather(late_write(), takeover())
    assert order == ["write committed", "taken over"]


async def test_each_telegram_update_is_claimed_once(database: Database) -> None:
    clock = FrozenClock(T0)
    a = UpdateLog(database, clock, instance="a")
    b = UpdateLog(database, clock, instance="b")
    results = await asyncio.gather(*(log.claim(1001) for log in (a, b, a, b)))
    assert sorted(results) == [False, False, False, True]
    assert await b.claim(1002)
    clock.advance(days=3)
    assert await a.prune() == 2
    assert await a.claim(1001)  # forgotten after two days


def test_instance_names() -> None:
    assert instance_name("ops-a", port=8081) == "ops-a"
    assert instance_name(None, port=8081).endswith(":8081")
    assert instance_name(None, port=0).rsplit(":", 1)[1].isdigit()


async def test_only_the_leader_sends_and_a_deposed_one_stops(migrated_url: str) -> None:
    from services.incident_types import AlertIn
    from services.main import open_services
    from services.severity import Severity
    from tests.botkit import bot_settings, running_fake

    async with running_fake() as fake:
        settings = bot_settings(migrated_url, fake)
        clock = FrozenClock(T0)
        async with open_services(settings, clock=clock) as services:
            await services.incidents.trigger(AlertIn(Severity.P1, "lease test", "lease"))
            # The sender the composition root built, gated by this instance's leadership.
            sender, leadership = services.notify.sender, services.leader
            assert sender is not None
            other = store(services.db, clock, "b")
            held = await other.acquire()
            assert held is not None
            await leadership.start()  # competing, while "b" holds the lease
            try:
                assert await sender.step() == 1.0  # a follower sends nothing
                assert fake.sent() == []
                await other.release(held)
                await leadership._attempt()
                assert await sender.step() == 0.0
                assert len(fake.sent()) == 1
                # Taken over behind its back: the next renewal finds out, and it stops.
                clock.advance(seconds=16)
                assert await store(services.db, clock, "b").acquire() is not None
                await services.incidents.trigger(AlertIn(Severity.P1, "second", "second"))
                await leadership._attempt()
                assert await sender.step() == 1.0
                assert len(fake.sent()) == 1
            finally:
                await leadership.stop()


async def test_a_follower_wakes_the_leader_by_notify_once_per_incident_of_a_write(
    database: Database, migrated_url: str
) -> None:
    """Changes committed on a follower send one NOTIFY per incident of each write; a
    rolled-back write sends none."""
    if database.is_sqlite:
        pytest.skip("NOTIFY is PostgreSQL's; on SQLite one instance serves the file")
    import asyncpg

    from services.incident_types import ChangeKind, IncidentChange, IncidentView
    from services.leader import CHANNEL, FollowerHook

    clock = FrozenClock(T0)
    leader, follower = (
        Leadership(store(database, clock, "a")),
        Leadership(store(database, clock, "b")),
    )
    await leader.start()
    await follower.start()
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(migrated_url.replace("+asyncpg", "", 1))
    await listener.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:
        assert leader.is_leader and follower.running and not follower.is_leader
        hook = FollowerHook(follower, database)

        def change(incident_id: int) -> IncidentChange:
            # The hook reads only the incident's id.
            view = cast(IncidentView, SimpleNamespace(id=incident_id))
            return IncidentChange(ChangeKind.TRIGGERED, view, actor="test", at=T0)

        changes = [change(5), change(5), change(6)]
        await database.write_sync(lambda s: hook.apply(s, changes))
        await database.write_sync(lambda s: hook.apply(s, changes[2:]))

        def rolled_back(session: Session) -> None:
            hook.apply(session, [change(7)])
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await database.write_sync(rolled_back)
        got = [await asyncio.wait_for(heard.get(), 5) for _ in range(3)]
        assert got == ["incident:5", "incident:6", "incident:6"]
        await asyncio.sleep(0.3)
        assert heard.empty()  # incident 7's NOTIFY went with its rollback
    finally:
        await listener.close()
        await follower.stop()
        await leader.stop()
