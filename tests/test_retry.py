import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.clock import FrozenClock
from services.config import Settings
from services.errors import InvalidTransition, NotFound
from services.incident_types import AlertIn
from services.main import open_services
from services.models import IncidentState, JobState
from services.retry import (
    PLAYBOOK_DELAYS,
    JobFailed,
    JobRunner,
    JobView,
    RetrySummary,
    describe_retries,
    next_retry_at,
    retry_step_message,
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


async def test_a_failure_is_heard_at_once_and_exhaustion_escalates(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        retry = services.ops.retry
        runs: list[int] = []

        async def failing(job: JobView) -> str | None:
            runs.append(job.id)
            raise JobFailed("Graph API answered 500", trace_id="SF-20260130-090000-abcd")

        runners = {"publish": failing}
        job = await retry.record_failure("publish", "sunflower", error="first failure")
        assert job.state is JobState.FAILED and job.next_retry_at == T0 + 5 * M
        # The incident is there from the first failure (a runner naming none: the job's own).
        assert job.incident_id is not None
        first = (await services.incidents.get(job.incident_id)).incident
        assert first.dedup_key == f"job:{job.id}" and first.severity is Severity.P1
        assert first.state is IncidentState.TRIGGERED
        for minutes in (5, 15, 30):
            clock.advance(minutes=minutes)
            [ran] = await retry.run_due(runners)
            assert ran.incident_id == job.incident_id  # each failure counts into it
        assert runs == [job.id] * 3
        done = await retry.get(job.id)
        assert done.state is JobState.EXHAUSTED and done.attempts == 3
        detail = await services.incidents.get(job.incident_id)
        assert detail.incident.occurrence_count == 4
        assert detail.incident.labels["job_id"] == str(job.id)
        # The last failed retry escalates: a step in the thread saying the retries are done.
        [escalated] = [e for e in detail.timeline if e.details.get("step") == "retries_exhausted"]
        assert escalated.kind == "escalated" and escalated.at == clock.now()
        assert "automatic retries done: 3/3 failed" in escalated.details["message"]
        assert f"/retry {job.id}" in escalated.details["message"]
        # Nothing more runs by itself.
        clock.advance(hours=5)
        assert await retry.run_due(runners) == []
        summary = await retry.status_for_incident(job.incident_id)
        assert summary.done
        async with services.db.read() as session:
            extra = await session.run_sync(
                describe_retries, job.incident_id, {"message": "30 min"}
            )
        assert "the automatic retries are done, 3/3 failed" in extra["message"]
        assert extra["retries"]["done"] is True

        # A person retries it once the cause is fixed: the incident resolves.
        async def passing(job: JobView) -> str | None:
            return "SF-20260130-120000-beef"

        fixed = await retry.retry_now(job.id, {"publish": passing}, actor="test")
        assert fixed.state is JobState.SUCCEEDED
        assert fixed.trace_id == "SF-20260130-120000-beef"
        assert fixed.line(clock.now()).endswith("SF-20260130-120000-beef")  # no old error
        detail = await services.incidents.get(job.incident_id)
        assert detail.incident.state is IncidentState.RESOLVED
        with pytest.raises(InvalidTransition, match="already succeeded"):
            await retry.retry_now(job.id, {"publish": passing}, actor="test")


async def test_a_failing_manual_retry_of_an_exhausted_job_does_not_escalate_again(
    settings: Settings,
) -> None:
    async with open_services(settings, clock=FrozenClock(T0)) as services:
        retry = services.ops.retry

        async def failing(job: JobView) -> str | None:
            raise JobFailed("still broken")

        job = await retry.record_failure("publish", "p", error="x", retryable=False)
        again = await retry.retry_now(job.id, {"publish": failing}, actor="test")
        assert again.state is JobState.EXHAUSTED and again.next_retry_at is None
        assert job.incident_id is not None
        timeline = (await services.incidents.get(job.incident_id)).timeline
        assert [e for e in timeline if e.kind == "escalated"] == []


async def test_the_same_work_failing_again_counts_into_its_job(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        retry = services.ops.retry
        alert = AlertIn(Severity.P2, "stats failing", "stats:collector", "t", "", {})
        one = await retry.record_failure("collect_stats", "", error="500", alert=alert)
        clock.advance(minutes=1)
        two = await retry.record_failure("collect_stats", "", error="502", alert=alert)
        assert two.id == one.id and two.last_error == "502"
        assert two.next_retry_at == one.next_retry_at  # its schedule is kept
        assert one.incident_id is not None
        incident = (await services.incidents.get(one.incident_id)).incident
        assert incident.occurrence_count == 2 and incident.severity is Severity.P2


async def test_settle_succeeds_the_work_done_another_way(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        retry = services.ops.retry
        runs: list[int] = []

        async def runner(job: JobView) -> str | None:
            runs.append(job.id)
            return None

        job = await retry.record_failure("upload", "sunflower/a.png", error="500")
        other = await retry.record_failure("upload", "sunflower/b.png", error="500")
        [settled] = await retry.settle("upload", "sunflower/a.png", actor="upload (manual)")
        assert settled.id == job.id and settled.state is JobState.SUCCEEDED
        assert job.incident_id is not None
        incident = (await services.incidents.get(job.incident_id)).incident
        assert incident.dedup_key == f"job:{job.id}" and incident.state is IncidentState.RESOLVED
        clock.advance(minutes=5)
        # The armed retry of the settled job never runs; the other one does.
        assert [j.id for j in await retry.run_due({"upload": runner})] == [other.id]
        assert runs == [other.id]


async def test_a_deferred_run_spends_no_retry(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        retry = services.ops.retry
        tomorrow = T0 + timedelta(hours=15)

        async def waiting(job: JobView) -> str | None:
            raise JobFailed("daily limit reached", defer_until=tomorrow)

        job = await retry.record_failure("publish", "sunflower", error="429")
        clock.advance(minutes=5)
        [deferred] = await retry.run_due({"publish": waiting})
        assert deferred.state is JobState.FAILED and deferred.attempts == 0
        assert deferred.next_retry_at == tomorrow
        assert job.incident_id is not None
        assert (await services.incidents.get(job.incident_id)).incident.occurrence_count == 1


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        ([], "30 min: still open and not acknowledged"),
        (
            [("failed", 2, T0 + 50 * M)],
            "30 min: job #1 publish lily: automatic retries 2/3 done, next at 09:50 UTC (1 left)",
        ),
        (
            [("exhausted", 3, None)],
            "30 min: job #1 publish lily: the automatic retries are done, 3/3 failed; "
            "retry by hand: /retry 1",
        ),
        ([("succeeded", 2, None)], "30 min: job #1 publish lily: succeeded at 09:20 UTC"),
    ],
)
def test_the_30_minute_message_says_where_the_retries_stand(
    jobs: list[tuple[str, int, datetime | None]], expected: str
) -> None:
    views = [
        JobView(
            id=1,
            kind="publish",
            topic="lily",
            state=JobState(state),
            attempts=attempts,
            max_attempts=3,
            last_error="fal.ai answered 500",
            trace_id=None,
            next_retry_at=due,
            incident_id=4,
            created_at=T0,
            updated_at=T0 + 20 * M,
        )
        for state, attempts, due in jobs
    ]
    message = retry_step_message(RetrySummary(views))
    assert message == expected
    assert "are done" not in message or views[0].state is JobState.EXHAUSTED


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

        runners = {"publish": slow}
        job = await retry.record_failure("publish", "sunflower", error="boom")
        first = asyncio.create_task(retry.retry_now(job.id, runners, actor="alice"))
        await started.wait()
        assert (await retry.get(job.id)).state is JobState.RUNNING
        with pytest.raises(InvalidTransition, match="already running"):
            await retry.retry_now(job.id, runners, actor="bob")
        release.set()
        assert (await first).state is JobState.SUCCEEDED
        assert runs == 1


async def test_unknown_job_and_interrupted_runs(settings: Settings) -> None:
    async with open_services(settings, clock=FrozenClock(T0)) as services:
        retry = services.ops.retry
        with pytest.raises(NotFound, match="no job #99"):
            await services.ops.runner.retry_now(99, actor="test")
        job = await retry.record_failure("collect_stats", "", error="boom")
        assert await retry._claim(job.id, only_due=False)
        assert await retry.recover_interrupted() == 1
        again = await retry.get(job.id)
        assert again.state is JobState.FAILED and again.next_retry_at == T0
        listed = await retry.list()
        assert [j.id for j in listed] == [job.id]
        assert "collect_stats" in listed[0].line(T0)


async def test_a_kind_without_a_runner_fails_its_run_and_unknown_kinds_are_refused(
    settings: Settings,
) -> None:
    async with open_services(settings, clock=FrozenClock(T0)) as services:
        retry = services.ops.retry
        job = await retry.record_failure("upload", "sunflower/a.png", error="500")
        ran = await retry.retry_now(job.id, {}, actor="test")
        assert ran.state is JobState.FAILED and ran.attempts == 1
        assert ran.last_error == "no runner for 'upload' jobs in this process"

        async def runner(job: JobView) -> str | None:
            return None

        with pytest.raises(ValueError, match="unknown job kinds"):
            JobRunner(retry, {"publish": runner, "tweet": runner})


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
        await services.escalation.fire_due(services.incidents)
        clock.advance(minutes=30)
        await services.escalation.fire_due(services.incidents)
        detail = await services.incidents.get(job.incident_id)
        [step] = [
            e
            for e in detail.timeline
            if e.kind == "escalated" and e.details["step"] == "retries_done"
        ]
        assert step.details["message"] == (
            f"30 min: job #{job.id} publish sunflower: not retried automatically "
            f"(caption too long); fix it, then /retry {job.id}"
        )
        assert step.details["retries"]["done"] is True


async def test_an_incident_without_retries_never_hears_of_them(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        opened = await services.incidents.trigger(AlertIn(Severity.P1, "SSE down", "sse", "t"))
        incident_id = opened.incident.id
        await services.escalation.fire_due(services.incidents)
        clock.advance(minutes=30)
        await services.escalation.fire_due(services.incidents)
        detail = await services.incidents.get(incident_id)
        [step] = [e for e in detail.timeline if e.details.get("step") == "retries_done"]
        assert step.details["message"] == "30 min: still open and not acknowledged"
        assert "retr" not in step.details["message"]


async def test_a_policy_files_own_words_come_first(settings: Settings) -> None:
    from services.policy import PLAYBOOK_LADDERS
    from services.retry import DEFAULT_STEP_MESSAGE

    for steps in PLAYBOOK_LADDERS.values():
        assert all(s.message == DEFAULT_STEP_MESSAGE for s in steps if s.name == "retries_done")
    async with open_services(settings, clock=FrozenClock(T0)) as services:
        retry = services.ops.retry
        job = await retry.record_failure("publish", "lily", error="500")
        assert job.incident_id is not None
        async with services.db.read() as session:
            custom = await session.run_sync(
                describe_retries, job.incident_id, {"message": "(rehearsal) 30 min"}
            )
        assert custom["message"] == (
            f"(rehearsal) 30 min: job #{job.id} publish lily: automatic retries 0/3 done, "
            "next at 09:05 UTC (3 left)"
        )
        opened = await services.incidents.trigger(AlertIn(Severity.P2, "SSE slow", "sse", "t"))
        async with services.db.read() as session:
            other = await session.run_sync(
                describe_retries, opened.incident.id, {"message": "halfway"}
            )
        assert other["message"] == "halfway: still open and not acknowledged"
