"""The scheduler's stop: jobs in flight finish or end quietly, never as a logged job error."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.scheduler import SchedulerService
from tests.waiting import until


async def test_stop_lets_a_short_job_finish_and_cancels_a_stuck_one_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = SchedulerService()
    started: list[str] = []
    finished: list[str] = []
    release = asyncio.Event()

    async def short() -> None:
        started.append("short")
        await release.wait()
        finished.append("short")

    async def stuck() -> None:
        started.append("stuck")
        await asyncio.Event().wait()
        finished.append("stuck")

    scheduler.add_job(short, "date")
    scheduler.add_job(stuck, "date")
    scheduler.start()
    await until(lambda: len(started) == 2, what="both jobs running")
    caplog.set_level(logging.INFO)
    # The short job's work ends inside the grace, after the stop began.
    asyncio.get_running_loop().call_later(0.05, release.set)
    await scheduler.stop(grace=0.5)

    assert finished == ["short"]
    assert not scheduler.running
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert any("stopped at shutdown" in r.getMessage() for r in caplog.records)


async def test_a_job_cancelled_while_the_scheduler_runs_still_propagates() -> None:
    scheduler = SchedulerService()

    async def stuck() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(scheduler._gated(stuck))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
