"""Leadership: one instance at a time runs the scheduled work, under a fenced database lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.clock import Clock
from services.db import FENCE, Database
from services.health import ComponentHealth, Status
from services.incident_types import IncidentChange
from services.models import Lease

log = logging.getLogger(__name__)

# The one lease there is: who runs the scheduler (escalation timers, periodic jobs, outbox).
SCHEDULER_LEASE = "scheduler"
# How often a follower tries to take the lease (seconds).
FOLLOWER_RETRY = 1.0
# PostgreSQL NOTIFY channel: a follower tells the leader "incident N changed" on commit.
CHANNEL = "sunflow_ops"


def instance_name(instance_id: str | None, *, port: int) -> str:
    """INSTANCE_ID, else host:port (a restarted instance takes its own lease back at once),
    else host:pid when the port is chosen by the system (port 0, in tests)."""
    if instance_id:
        return instance_id
    host = socket.gethostname()
    return f"{host}:{port}" if port else f"{host}:{os.getpid()}"


class LeaseLost(Exception):
    """This instance no longer holds the lease: its write was refused (fencing)."""


@dataclass(frozen=True)
class Grant:
    """A lease as this instance holds it."""

    holder: str
    token: int
    expires_at: datetime


@dataclass(frozen=True)
class LeaseState:
    holder: str
    token: int
    expires_at: datetime


class LeaseStore:
    """Acquire, renew, release and check one named lease by conditional UPDATEs.

    Works the same on SQLite and PostgreSQL: an UPDATE's WHERE decides who wins, so two
    instances racing for an expired lease cannot both get it.
    """

    def __init__(
        self, db: Database, clock: Clock, *, name: str, holder: str, ttl: timedelta
    ) -> None:
        self.db = db
        self.clock = clock
        self.name = name
        self.holder = holder
        self.ttl = ttl

    @contextlib.asynccontextmanager
    async def _write(self) -> Any:
        # The lease's own writes are what the fence checks against: never fenced themselves.
        reset = FENCE.set(None)
        try:
            async with self.db.write() as session:
                yield session
        finally:
            FENCE.reset(reset)

    async def acquire(self) -> Grant | None:
        """Take the lease when it is free, expired or already ours; a new fencing token."""
        now = self.clock.now()
        expires = now + self.ttl
        try:
            async with self._write() as session:
                result = await session.execute(
                    update(Lease)
                    .where(
                        Lease.name == self.name,
                        (Lease.expires_at <= now) | (Lease.holder == self.holder),
                    )
                    .values(
                        holder=self.holder,
                        token=Lease.token + 1,
                        acquired_at=now,
                        expires_at=expires,
                    )
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(result) == 1:
                    token = await session.scalar(
                        select(Lease.token).where(Lease.name == self.name)
                    )
                    assert token is not None
                    return Grant(self.holder, int(token), expires)
                exists = await session.scalar(select(Lease.name).where(Lease.name == self.name))
                if exists is not None:
                    return None
                session.add(
                    Lease(
                        name=self.name,
                        holder=self.holder,
                        token=1,
                        acquired_at=now,
                        expires_at=expires,
                    )
                )
        except IntegrityError:  # another instance created the row first
            return None
        return Grant(self.holder, 1, expires)

    async def renew(self, grant: Grant) -> Grant | None:
        """Extend our lease; None when someone else has taken it since (we were deposed)."""
        now = self.clock.now()
        expires = now + self.ttl
        async with self._write() as session:
            result = await session.execute(
                update(Lease)
                .where(
                    Lease.name == self.name,
                    Lease.holder == self.holder,
                    Lease.token == grant.token,
                )
                .values(expires_at=expires)
                .execution_options(synchronize_session=False)
            )
        if _rowcount(result) != 1:
            return None
        return Grant(self.holder, grant.token, expires)

    async def release(self, grant: Grant) -> None:
        """Let the lease go at once (a clean stop): the next instance need not wait it out."""
        async with self._write() as session:
            await session.execute(
                update(Lease)
                .where(
                    Lease.name == self.name,
                    Lease.holder == self.holder,
                    Lease.token == grant.token,
                )
                .values(expires_at=self.clock.now())
                .execution_options(synchronize_session=False)
            )

    async def current(self) -> LeaseState | None:
        async with self.db.read() as session:
            row = await session.get(Lease, self.name)
            if row is None:
                return None
            return LeaseState(row.holder, int(row.token), row.expires_at)

    async def check(self, session: AsyncSession, token: int) -> None:
        """The fence, inside the caller's write transaction: the lease still carries our
        token. FOR SHARE (PostgreSQL) makes a takeover wait until this transaction ends, so
        a write that passed the check commits before the next leader starts."""
        row = (
            await session.execute(
                select(Lease.holder, Lease.token)
                .where(Lease.name == self.name)
                .with_for_update(read=True)
            )
        ).one_or_none()
        self._verify(row, token)

    def check_sync(self, session: Session, token: int) -> None:
        """`check` for a synchronous write transaction (the SQLite writer thread)."""
        row = session.execute(
            select(Lease.holder, Lease.token)
            .where(Lease.name == self.name)
            .with_for_update(read=True)
        ).one_or_none()
        self._verify(row, token)

    def _verify(self, row: Any, token: int) -> None:
        if row is None or row[0] != self.holder or int(row[1]) != token:
            raise LeaseLost(
                f"lease {self.name!r} is no longer held by {self.holder} (token {token})"
            )


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


Callback = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Duties:
    """What an instance does as it gains and loses the lease, and with each payload another
    instance NOTIFYs (PostgreSQL only); handed to `Leadership.start`."""

    gained: Callback = _nothing
    lost: Callback = _nothing
    heard: Callable[[str], None] | None = None


class Leadership:
    """Keeps trying to hold the scheduler lease; runs its duties' `gained` when it gets it
    and `lost` when it goes. Also the `Fence` that the leader's scheduled writes check.

    The lease lasts `ttl`; the leader renews it every ttl/3 and counts itself leader only
    until ttl minus a margin after its last successful renewal began (by the monotonic
    clock), so it stops before anyone else can have taken over. A follower tries every
    second: a dead leader is replaced within about ttl + 1 s of its last renewal.
    """

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        self.instance = store.holder
        ttl = store.ttl.total_seconds()
        self.renew_every = ttl / 3
        self._valid_for = ttl - max(1.0, ttl / 5)
        self._grant: Grant | None = None
        self._valid_until = 0.0
        self._duties = Duties()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self.gained_at: datetime | None = None
        # True between `start` and `stop` (a bare service in tests never competes).
        self.running = False
        # Times this instance became leader (a figure in /api/health).
        self.terms = 0

    # -- what others ask ------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._grant is not None and time.monotonic() < self._valid_until

    @property
    def token(self) -> int | None:
        return self._grant.token if self._grant is not None else None

    def explain(self) -> str:
        """Where this instance stands with the lease, for a log line (no database read)."""
        if not self.running:
            return f"{self.instance} does not compete for the lease"
        if self._grant is None:
            return f"{self.instance} follows (it holds no lease)"
        left = self._valid_until - time.monotonic()
        if left > 0:
            return f"{self.instance} leads (fencing token {self._grant.token}, {left:.1f} s left)"
        return (
            f"{self.instance} holds token {self._grant.token} but its lease looked expired "
            f"{-left:.1f} s ago (a pause?); it renews or steps down at its next attempt"
        )

    async def check(self, session: AsyncSession) -> None:
        grant = self._grant
        if grant is None or time.monotonic() >= self._valid_until:
            raise LeaseLost(f"{self.instance} does not hold the {self.store.name!r} lease")
        await self.store.check(session, grant.token)

    def check_sync(self, session: Session) -> None:
        grant = self._grant
        if grant is None or time.monotonic() >= self._valid_until:
            raise LeaseLost(f"{self.instance} does not hold the {self.store.name!r} lease")
        self.store.check_sync(session, grant.token)

    @contextlib.contextmanager
    def fenced(self) -> Iterator[None]:
        """Every write transaction inside is checked against our fencing token."""
        reset = FENCE.set(self)
        try:
            yield
        finally:
            FENCE.reset(reset)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, duties: Duties | None = None) -> None:
        """Compete for the lease doing `duties`: one attempt now (a lone instance leads
        before `start` returns), then a loop."""
        self._duties = duties or Duties()
        self.running = True
        await self._attempt()
        self._task = asyncio.create_task(self._run(), name="leadership")
        await self._listen()

    async def stop(self) -> None:
        self.running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._unlisten()
        grant = self._grant
        if grant is not None:
            await self._step_down("stopping")
            try:
                await self.store.release(grant)
            except Exception:
                log.exception("could not release the %r lease", self.store.name)

    async def _run(self) -> None:
        while True:
            # A follower asks every second (an UPDATE that matches no row while the lease is
            # held), so it takes over within about a second of the lease running out.
            await asyncio.sleep(self.renew_every if self._grant is not None else FOLLOWER_RETRY)
            await self._attempt()
            if self._listener is not None and self._listener.is_closed():
                self._listener = None
            if self._listener is None:
                await self._listen()  # the connection dropped (or never came up): again

    async def _attempt(self) -> None:
        started = time.monotonic()
        try:
            if self._grant is None:
                grant = await self.store.acquire()
                if grant is not None:
                    await self._take(grant, started)
                return
            renewed = await self.store.renew(self._grant)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("lease %r: database call failed (%s)", self.store.name, exc)
            if self._grant is not None and time.monotonic() >= self._valid_until:
                await self._step_down("could not renew the lease in time")
            return
        if renewed is None:
            await self._step_down("the lease was taken over")
            return
        if started >= self._valid_until:
            log.warning(
                "%s renewed its lease %.1f s after it looked expired (the process was paused "
                "or its loop blocked); nobody took over meanwhile",
                self.instance,
                started - self._valid_until,
            )
        self._grant = renewed
        self._valid_until = started + self._valid_for

    async def _take(self, grant: Grant, started: float) -> None:
        self._grant = grant
        self._valid_until = started + self._valid_for
        self.gained_at = self.store.clock.now()
        self.terms += 1
        log.info(
            "%s leads now (lease %r, fencing token %s)",
            self.instance,
            self.store.name,
            grant.token,
        )
        try:
            await self._duties.gained()
        except Exception:
            log.exception("starting the leader's work failed")

    async def _step_down(self, why: str) -> None:
        level = logging.INFO if why == "stopping" else logging.WARNING
        log.log(level, "%s no longer leads: %s", self.instance, why)
        self._grant = None
        self._valid_until = 0.0
        try:
            await self._duties.lost()
        except Exception:
            log.exception("stopping the leader's work failed")

    # -- wake-ups from other instances (PostgreSQL LISTEN/NOTIFY) --------------------------

    async def _listen(self) -> None:
        if self.store.db.is_sqlite or self._duties.heard is None:
            return
        import asyncpg

        url = make_url(self.store.db.url).set(drivername="postgresql")
        try:
            conn = await asyncpg.connect(url.render_as_string(hide_password=False))
            await conn.add_listener(CHANNEL, self._heard)
        except (OSError, asyncpg.PostgresError) as exc:
            # The poll fallback still delivers; only the wake-up is slower.
            log.warning("LISTEN %s failed (%s); relying on polling", CHANNEL, exc)
            return
        self._listener = conn

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        heard = self._duties.heard
        if heard is None:
            return
        try:
            heard(str(payload))
        except Exception:
            log.exception("handling NOTIFY %r failed", payload)

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    # -- reporting ---------------------------------------------------------------------------

    async def health(self) -> ComponentHealth:
        current = await self.store.current()
        figures: dict[str, Any] = {
            "instance": self.instance,
            "leader": self.is_leader,
            "token": self.token,
            "holder": current.holder if current else None,
            "terms": self.terms,
        }
        params: dict[str, Any] = {"instance": self.instance, "token": self.token}
        if self.is_leader:
            detail, reason = f"{self.instance} leads (fencing token {self.token})", "leader_leads"
        elif current is not None and current.expires_at > self.store.clock.now():
            detail, reason = f"{self.instance} follows {current.holder}", "leader_follows"
            params["holder"] = current.holder
        else:
            detail, reason = f"{self.instance} follows; no leader at the moment", "leader_none"
        return ComponentHealth(
            "leader", Status.HEALTHY, detail, figures, reason=reason, params=params
        )


class FollowerHook:
    """An `IncidentHook`: on a follower, a committed change wakes the leader (its escalation
    timer re-reads the wake-ups, its sender the outbox) through PostgreSQL NOTIFY, which is
    delivered only if the transaction commits. One NOTIFY per incident of a write."""

    def __init__(self, leadership: Leadership, db: Database) -> None:
        self._leadership = leadership
        self._enabled = not db.is_sqlite

    def apply(self, session: Session, changes: Sequence[IncidentChange]) -> None:
        leadership = self._leadership
        if not (self._enabled and leadership.running and not leadership.is_leader):
            return
        for incident_id in dict.fromkeys(c.incident.id for c in changes):
            session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": CHANNEL, "payload": f"incident:{incident_id}"},
            )

    def committed(self, changes: Sequence[IncidentChange]) -> None:
        return None
