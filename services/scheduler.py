"""The alarm clock: APScheduler, in memory; the database stays the source of truth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any, Protocol

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.health import ComponentHealth, Status

log = logging.getLogger(__name__)


class Gate(Protocol):
    """Who may run scheduled work now, and the fence its writes pass (services/leader.py's
    `Leadership`)."""

    @property
    def running(self) -> bool:
        """Competing for the lease (`serve`); a gate never started (a bare service in tests,
        the CLI) holds nothing back."""
        ...

    @property
    def is_leader(self) -> bool: ...

    async def check(self, session: AsyncSession) -> None: ...

    def check_sync(self, session: Session) -> None: ...

    def fenced(self) -> contextlib.AbstractContextManager[None]: ...


class SchedulerService:
    """Owns the one AsyncIOScheduler of the process; jobs are re-armed from the database.

    With a running `gate` (several instances), a job runs only while this instance leads,
    and its writes are fenced by the lease; otherwise (a bare service in tests), jobs just run.
    """

    def __init__(self, *, gate: Gate | None = None) -> None:
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._gate = gate
        self._running: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> None:
        if not self.scheduler.running:
            self._stopping = False
            self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def stop(self, grace: float = 5.0) -> None:
        """Fire nothing more; let the jobs in flight finish for up to `grace` seconds, then
        cancel the rest. A job cancelled here ends quietly: the database holds what it had
        committed, and the next start re-arms from it."""
        if self.scheduler.running:
            self.scheduler.pause()
        running = set(self._running)
        if running:
            await asyncio.wait(running, timeout=grace)
        # APScheduler's shutdown cancels the jobs still running (its asyncio executor does).
        self._stopping = True
        self.shutdown()
        late = {task for task in running if not task.done()}
        if late:
            await asyncio.wait(late, timeout=grace)

    def add_job(
        self,
        func: Callable[..., Awaitable[object]],
        trigger: str,
        *,
        args: list[Any] | tuple[Any, ...] = (),
        **options: Any,
    ) -> Job:
        """`AsyncIOScheduler.add_job` for a coroutine, run through the gate."""
        options.setdefault("name", getattr(func, "__qualname__", None) or repr(func))
        job: Job = self.scheduler.add_job(self._gated, trigger, args=[func, *args], **options)
        return job

    async def _gated(self, func: Callable[..., Awaitable[object]], *args: Any) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - APScheduler runs coroutine jobs as tasks
            await self._run(func, *args)
            return
        self._running.add(task)
        try:
            await self._run(func, *args)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            log.info("%s stopped at shutdown", getattr(func, "__qualname__", func))
        finally:
            self._running.discard(task)

    async def _run(self, func: Callable[..., Awaitable[object]], *args: Any) -> None:
        gate = self._gate
        if gate is None or not gate.running:
            await func(*args)
            return
        if not gate.is_leader:
            log.debug("skipping %s: this instance does not lead", getattr(func, "__name__", func))
            return
        with gate.fenced():
            await func(*args)

    async def check(self) -> ComponentHealth:
        if not self.running:
            return ComponentHealth(
                "scheduler", Status.DOWN, "not running", reason="scheduler_down"
            )
        jobs = self.scheduler.get_jobs()
        return ComponentHealth(
            "scheduler",
            Status.HEALTHY,
            f"{len(jobs)} jobs",
            {"jobs": len(jobs)},
            reason="scheduler_jobs",
            params={"count": len(jobs)},
        )
