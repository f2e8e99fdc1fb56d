import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.clock import FrozenClock
from services.config import Settings
from services.errors import InvalidTransition, NotFound
from services.main import open_services
from services.models import IncidentState, JobState
from services.retry import (
    PLAYBOOK_DELAYS,
    JobFailed,
    JobView,
    describe_retries,
    next_retry_at,
)
from services.severity import Severity

T0 = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("attempts", "retry_after", "expected"),
    [
        (0, None, T0 + 5 * M),
        (1, None, T0 + 15 * M),
        (2, None, T0 + 30 * M),
        (3, None, None),
        (0, timedelta(seconds=60), T0 + 5 * M),  # shorter Retry-After: the ladder wins
        (0, timedelta(hours=1), T0 + 60 * M),  # longer Retry-After wins
        (2, timedelta(minutes=45), T0 + 45 * M),
        (3, timedelta(hours=1), None),  # spent is spent
    ],
)
def test_next_retry_at(
    attempts: int, retry_after: timedelta | None, expected: datetime | None
) -> None:
    got = next_retry_at(
        failed_at=T0, attempts=attempts, delays=PLAYBOOK_DELAYS, retry_after=retry_after
    )
    assert got == expected


def test_next_retry_at_refuses_naive() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_retry_at(failed_at=datetime(2026, 1, 1), attempts=0, delays=PLAYBOOK_DELAYS)  # noqa: DTZ001


async def test_exhausted_job_raises_p1_and_the_30_minute_step_says_so(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        retry = services.ops.retry
        runs: list[int] = []

        async def failing(job: JobView) -> str | None:
            runs.append(job.id)
            raise JobFailed("Graph API answered 500", trace_id="SF-20260130-090000-abcd")

        retry.register("publish", failing)
        job = await retry.record_failure("publish", "sunflower", error="first failure")
        assert job.state is JobState.FAILED and job.next_retry_at == T0 + 5 * M
        for minutes in (5, 15, 30):
            clock.advance(minutes=minutes)
            await retry.run_due()
        assert runs == [job.id] * 3
        done = await retry.get(job.id)
        assert done.state is JobState.EXHAUSTED and done.attempts == 3
        assert done.incident_id is not None
        detail = await services.incidents.get(done.incident_id)
        assert detail.incident.severity is Severity.P1
        assert detail.incident.dedup_key == f"job:{job.id}"
        assert detail.incident.labels["trace_id"] == "SF-20260130-090000-abcd"
        # Nothing more runs by itself.
        clock.advance(hours=5)
        assert await retry.run_due() == []
        # The ladder's 30-minute step carries the retry state.
        summary = await retry.status_for_incident(done.incident_id)
        assert summary.done
        async with services.db.read() as session:
            extra = await session.run_sync(
                describe_retries, done.incident_id, {"message": "30 min"}
            )
        assert "3/3 retries, exhausted" in extra["message"]
        assert extra["retries"]["done"] is True

        # A person retries it once the cause is fixed: the incident resolves.
        async def passing(job: JobView) -> str | None:
            return "SF-20260130-120000-beef"

        retry.register("publish", passing)
        fixed = await retry.retry_now(job.id, actor="test")
        assert fixed.state is JobState.SUCCEEDED
        assert fixed.trace_id == "SF-20260130-120000-beef"
        detail = await services.incidents.get(done.incident_id)
        assert detail.incident.state is IncidentState.RESOLVED
        with pytest.raises(InvalidTransition, match="already succeeded"):
            await retry.retry_now(job.id, actor="test")


async def test_a_running_job_is_never_started_twice(settings: Settings) -> None:
    async with open_services(settings, clock=FrozenClock(T0)) as services:
        retry = services.ops.retry
        started = asyncio.Event()
        release = asyncio.Event()
        runs = 0

        async def slow(job: JobView) -> str | None:
            nonlocal runs
            runs += 1
            started.set()
            await release.wait()
            return None

        retry.register("publish", slow)
        job = await retry.record_failure("publish", "sunflower", error="boom")
        first = asyncio.create_task(retry.retry_now(job.id, actor="alice"))
        await started.wait()
        assert (await retry.get(job.id)).state is JobState.RUNNING
        with pytest.raises(InvalidTransition, match="already running"):
            await retry.retry_now(job.id, actor="bob")
        release.set()
        assert (await first).state is JobState.SUCCEEDED
        assert runs == 1


async def test_unknown_job_and_interrupted_runs(settings: Settings) -> None:
    async with open_services(settings, clock=FrozenClock(T0)) as services:
        retry = services.ops.retry
        with pytest.raises(NotFound, match="no job #99"):
            await retry.retry_now(99, actor="test")
        job = await retry.record_failure("collect_stats", "", error="boom")
        assert await retry._claim(job.id, only_due=False)
        assert await retry.recover_interrupted() == 1
        again = await retry.get(job.id)
        assert again.state is JobState.FAILED and again.next_retry_at == T0
        listed = await retry.list()
        assert [j.id for j in listed] == [job.id]
        assert "collect_stats" in listed[0].line(T0)


async def test_not_retryable_failure_is_exhausted_at_once(settings: Settings) -> None:
    async with open_services(settings, clock=FrozenClock(T0)) as services:
        job = await services.ops.retry.record_failure(
            "publish", "sunflower", error="caption too long", retryable=False
        )
        assert job.state is JobState.EXHAUSTED and job.next_retry_at is None
        assert job.incident_id is not None


async def test_the_ladder_30_minute_step_reports_the_retries(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        job = await services.ops.retry.record_failure(
            "publish", "sunflower", error="caption too long", retryable=False
        )
        assert job.incident_id is not None
        await services.escalation.fire_due()
        clock.advance(minutes=30)
        await services.escalation.fire_due()
        detail = await services.incidents.get(job.incident_id)
        [step] = [
            e
            for e in detail.timeline
            if e.kind == "escalated" and e.details["step"] == "retries_done"
        ]
        assert (
            f"job #{job.id} publish sunflower: 0/3 retries, exhausted" in step.details["message"]
        )
        assert step.details["retries"]["done"] is True
