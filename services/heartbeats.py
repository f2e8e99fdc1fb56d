"""Heartbeats (dead-man's switches): a missed ping opens an incident, the next one resolves it.

Something pings each heartbeat at least every `every` (a cron job's `curl`, the service's
own periodic jobs); when no ping has come for `every + grace`, the checker (a periodic job
on the leader) opens an incident with the heartbeat's severity. The next ping resolves it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from services.clock import Clock
from services.db import Database
from services.durations import MAX_DURATION, format_duration
from services.errors import InvalidInput, NotFound
from services.health import ComponentHealth, Status
from services.incident_types import AlertIn, IncidentView, wording
from services.incidents import IncidentService
from services.models import Heartbeat
from services.severity import Severity

if TYPE_CHECKING:
    from apscheduler.events import JobExecutionEvent
    from apscheduler.schedulers.base import BaseScheduler

log = logging.getLogger(__name__)

NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
MIN_EVERY = timedelta(minutes=1)
MAX_GRACE = timedelta(days=7)
# How often the leader looks for missed heartbeats.
CHECK_SECONDS = 30
SOURCE = "heartbeat"
BUILTIN = "sunflow-ops"


class HeartbeatState(enum.StrEnum):
    WAITING = "waiting"  # added, not pinged yet, not overdue
    UP = "up"
    LATE = "late"  # past `every`, within `grace`
    DOWN = "down"  # past `every + grace`: an incident is (or is about to be) open


def due_at(*, created_at: datetime, last_ping_at: datetime | None, every: timedelta) -> datetime:
    """When the next ping is expected: a period after the last one (or after the add)."""
    return (last_ping_at or created_at) + every


def state_at(
    *,
    created_at: datetime,
    last_ping_at: datetime | None,
    every: timedelta,
    grace: timedelta,
    now: datetime,
) -> HeartbeatState:
    """Where a heartbeat stands at `now`; DOWN is the checker's "overdue": open an incident."""
    due = due_at(created_at=created_at, last_ping_at=last_ping_at, every=every)
    if now > due + grace:
        return HeartbeatState.DOWN
    if now > due:
        return HeartbeatState.LATE
    return HeartbeatState.UP if last_ping_at is not None else HeartbeatState.WAITING


def dedup_key(name: str) -> str:
    return f"heartbeat:{name}"


@dataclass(frozen=True)
class HeartbeatView:
    name: str
    every: timedelta
    grace: timedelta
    severity: Severity
    created_at: datetime
    set_by: str
    last_ping_at: datetime | None
    down_since: datetime | None

    @classmethod
    def of(cls, row: Heartbeat) -> HeartbeatView:
        return cls(
            name=row.name,
            every=timedelta(seconds=row.every_seconds),
            grace=timedelta(seconds=row.grace_seconds),
            severity=Severity(row.severity),
            created_at=row.created_at,
            set_by=row.set_by,
            last_ping_at=row.last_ping_at,
            down_since=row.down_since,
        )

    def state(self, now: datetime) -> HeartbeatState:
        return state_at(
            created_at=self.created_at,
            last_ping_at=self.last_ping_at,
            every=self.every,
            grace=self.grace,
            now=now,
        )

    @property
    def due_at(self) -> datetime:
        return due_at(created_at=self.created_at, last_ping_at=self.last_ping_at, every=self.every)

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "name": self.name,
            "every": format_duration(self.every),
            "grace": format_duration(self.grace),
            "severity": self.severity.value,
            "state": self.state(now).value,
            "last_ping_at": self.last_ping_at.isoformat() if self.last_ping_at else None,
            "due_at": self.due_at.isoformat(),
            "down_since": self.down_since.isoformat() if self.down_since else None,
            "set_by": self.set_by,
        }


@dataclass(frozen=True)
class PingResult:
    heartbeat: HeartbeatView
    # The incident of the miss this ping ended, if there was one open.
    resolved: IncidentView | None


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidInput(
            f"{name!r} is not a heartbeat name: {NAME_RULE}", detail={"field": "name"}
        )
    return name


def _check_periods(every: timedelta, grace: timedelta) -> None:
    if not MIN_EVERY <= every <= MAX_DURATION:
        raise InvalidInput(
            "--every is from 1m to a year, e.g. 1h or 1d", detail={"field": "every"}
        )
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise InvalidInput("--grace is from 0 to 7d, e.g. 10m", detail={"field": "grace"})


class HeartbeatService:
    """Adds, lists, removes and pings heartbeats; `check` (the leader's job) raises misses."""

    def __init__(self, db: Database, clock: Clock, incidents: IncidentService) -> None:
        self._db = db
        self._clock = clock
        self._incidents = incidents
        self._watching = False
        self._beats: set[asyncio.Task[Any]] = set()

    # -- administration ------------------------------------------------------------------

    async def add(
        self,
        name: str,
        *,
        every: timedelta,
        grace: timedelta,
        severity: Severity = Severity.P2,
        actor: str,
    ) -> tuple[HeartbeatView, bool]:
        """Add a heartbeat, or change the periods of one that exists; (view, was it new)."""
        check_name(name)
        _check_periods(every, grace)
        async with self._db.write() as session:
            row = await session.get(Heartbeat, name)
            created = row is None
            if row is None:
                row = Heartbeat(
                    name=name,
                    created_at=self._clock.now(),
                    set_by=actor[:200],
                    last_ping_at=None,
                    down_since=None,
                )
                session.add(row)
            row.set_by = actor[:200]
            row.every_seconds = int(every.total_seconds())
            row.grace_seconds = int(grace.total_seconds())
            row.severity = severity.value
            await session.flush()
            return HeartbeatView.of(row), created

    async def remove(self, name: str, *, actor: str) -> IncidentView | None:
        """Remove a heartbeat; its open incident, if any, is resolved (and returned)."""
        async with self._db.write() as session:
            result = await session.execute(delete(Heartbeat).where(Heartbeat.name == name))
            if not result.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"no heartbeat named {name!r}", detail={"name": name})
        return await self._incidents.resolve_by_dedup_key(dedup_key(name), actor=actor)

    async def views(self) -> list[HeartbeatView]:
        async with self._db.read() as session:
            rows = (await session.scalars(select(Heartbeat).order_by(Heartbeat.name))).all()
            return [HeartbeatView.of(row) for row in rows]

    def now(self) -> datetime:
        return self._clock.now()

    # -- pings -----------------------------------------------------------------------------

    async def ping(self, name: str) -> PingResult:
        """Record a ping; if it ends a miss, resolve the miss's incident."""
        now = self._clock.now()
        async with self._db.write() as session:
            row = await session.get(Heartbeat, name)
            if row is None:
                raise NotFound(
                    f"no heartbeat named {name!r}; add it with "
                    f"`sunflow-ops heartbeat add {name} --every 1h --grace 10m`",
                    detail={"name": name},
                )
            row.last_ping_at = now
            was_down = row.down_since
            view = HeartbeatView.of(row)
        if was_down is None:
            return PingResult(view, None)
        # Resolve first, then clear the mark: a crash in between leaves the mark, and the
        # next ping resolves again (nothing is open by then, which is fine).
        resolved = await self._incidents.resolve_by_dedup_key(dedup_key(name), actor=SOURCE)
        async with self._db.write() as session:
            await session.execute(
                update(Heartbeat)
                .where(Heartbeat.name == name, Heartbeat.down_since == was_down)
                .values(down_since=None)
            )
        log.info("heartbeat %s is back (missed since %s)", name, was_down.isoformat())
        return PingResult(replace(view, down_since=None), resolved)

    # -- the leader's check --------------------------------------------------------------

    async def check(self) -> list[str]:
        """Open an incident for each heartbeat that just went overdue; their names."""
        now = self._clock.now()
        raised = []
        for view in await self.views():
            if view.down_since is not None or view.state(now) is not HeartbeatState.DOWN:
                continue
            await self._incidents.trigger(self._alert(view, now), actor=SOURCE)
            seen = (
                Heartbeat.last_ping_at.is_(None)
                if view.last_ping_at is None
                else Heartbeat.last_ping_at == view.last_ping_at
            )
            async with self._db.write() as session:
                marked = await session.execute(
                    update(Heartbeat)
                    .where(Heartbeat.name == view.name, Heartbeat.down_since.is_(None), seen)
                    .values(down_since=now)
                )
            if not marked.rowcount:  # type: ignore[attr-defined]
                # Pinged (or removed) while the incident was being opened: it is not missed.
                await self._incidents.resolve_by_dedup_key(dedup_key(view.name), actor=SOURCE)
                continue
            log.warning("heartbeat %s missed: no ping since %s", view.name, view.last_ping_at)
            raised.append(view.name)
        return raised

    def _alert(self, view: HeartbeatView, now: datetime) -> AlertIn:
        last = view.last_ping_at.isoformat(timespec="seconds") if view.last_ping_at else None
        every, grace = format_duration(view.every), format_duration(view.grace)
        since = f"no ping since {last}" if last else "never pinged since it was added"
        return AlertIn(
            severity=view.severity,
            title=f"Heartbeat {view.name} missed: {since}"[:500],
            dedup_key=dedup_key(view.name),
            source=SOURCE,
            description=(
                f"The heartbeat {view.name} expects a ping every {every} (grace {grace}); "
                f"it was due at {view.due_at:%Y-%m-%d %H:%M} UTC. Its next ping "
                f"resolves this incident: POST or GET /api/heartbeats/{view.name}/ping."
            ),
            labels={"heartbeat": view.name, "every": every, "grace": grace},
            wording=wording(
                "heartbeat",
                name=view.name,
                every=every,
                grace=grace,
                due=f"{view.due_at:%Y-%m-%d %H:%M} UTC",
            ),
        )

    async def health(self) -> ComponentHealth:
        """Degraded while a heartbeat is overdue (its incident is the alarm); one read."""
        now = self._clock.now()
        views = await self.views()
        late = [v.name for v in views if v.state(now) is HeartbeatState.DOWN]
        figures = {"heartbeats": len(views), "overdue": len(late)}
        if late:
            shown = ", ".join(late[:10])
            return ComponentHealth(
                "heartbeats",
                Status.DEGRADED,
                f"overdue: {shown}",
                figures,
                reason="heartbeats_overdue",
                params={"names": shown},
            )
        return ComponentHealth(
            "heartbeats",
            Status.HEALTHY,
            f"{len(views)} on time",
            figures,
            reason="heartbeats_on_time",
            params={"count": len(views)},
        )

    # -- the service's own periodic jobs -------------------------------------------------

    async def ensure(
        self, name: str, *, every: timedelta, grace: timedelta, severity: Severity
    ) -> None:
        """A built-in heartbeat: added if missing, kept in step with the settings while it
        is still the built-in one (a heartbeat someone re-added by hand is left alone)."""
        async with self._db.read() as session:
            row = await session.get(Heartbeat, name)
            if row is not None and row.set_by != BUILTIN:
                return
        await self.add(name, every=every, grace=grace, severity=severity, actor=BUILTIN)

    def watch_jobs(self, scheduler: BaseScheduler, jobs: Mapping[str, str]) -> None:
        """Ping heartbeat `jobs[job_id]` each time that scheduled job has run (once only)."""
        if self._watching:
            return
        from apscheduler.events import EVENT_JOB_EXECUTED

        loop = asyncio.get_running_loop()

        def ran(event: JobExecutionEvent) -> None:
            name = jobs.get(event.job_id)
            if name is not None:
                loop.call_soon_threadsafe(self._beat_soon, name)

        scheduler.add_listener(ran, EVENT_JOB_EXECUTED)
        self._watching = True

    def _beat_soon(self, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._beat(name))
        self._beats.add(task)
        task.add_done_callback(self._beats.discard)

    async def stop(self) -> None:
        """Let the pings of jobs that have run finish; called once the scheduler has stopped
        (a ping left pending at exit is lost, and its task holds a database connection)."""
        await asyncio.sleep(0)  # a job that has just ended: its ping is scheduled, not yet begun
        while self._beats:
            await asyncio.gather(*self._beats, return_exceptions=True)

    async def _beat(self, name: str) -> None:
        try:
            await self.ping(name)
        except NotFound:
            log.warning("heartbeat %s was removed; its job runs on", name)
        except Exception:
            log.exception("could not ping heartbeat %s", name)


def own_heartbeats(stats_interval: timedelta) -> dict[str, tuple[str, timedelta, timedelta]]:
    """The service's own periodic jobs: job id -> (heartbeat, every, grace)."""
    return {
        "token-check": ("sunflow-token-check", timedelta(days=1), timedelta(hours=2)),
        "stats-collector": (
            "sunflow-stats-collection",
            stats_interval,
            max(timedelta(minutes=10), stats_interval / 2),
        ),
    }


async def watch_own_jobs(
    heartbeats: HeartbeatService, scheduler: BaseScheduler, stats_interval: timedelta
) -> None:
    """Add the built-in heartbeats and have their jobs ping them (called on leadership)."""
    own = own_heartbeats(stats_interval)
    for name, every, grace in own.values():
        await heartbeats.ensure(name, every=every, grace=grace, severity=Severity.P2)
    heartbeats.watch_jobs(scheduler, {job: name for job, (name, _, _) in own.items()})
