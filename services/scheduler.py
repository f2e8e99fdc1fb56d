"""The alarm clock: APScheduler, in memory; the database stays the source of truth."""

from __future__ import annotations

from datetime import UTC

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from services.health import ComponentHealth, Status


class SchedulerService:
    """Owns the one AsyncIOScheduler of the process; jobs are re-armed from the database."""

    def __init__(self) -> None:
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> None:
        if not self.scheduler.running:
            self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def check(self) -> ComponentHealth:
        if not self.running:
            return ComponentHealth("scheduler", Status.DOWN, "not running")
        jobs = self.scheduler.get_jobs()
        return ComponentHealth(
            "scheduler", Status.HEALTHY, f"{len(jobs)} jobs", {"jobs": len(jobs)}
        )
