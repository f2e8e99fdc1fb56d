"""Failed pipeline jobs and their retries: 5 min -> 15 min -> 30 min, then a P1 incident."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.clock import Clock
from services.db import Database
from services.durations import format_duration
from services.errors import InvalidInput, InvalidTransition, NotFound
from services.incidents import AlertIn, IncidentService
from services.models import Incident, JobState, PipelineJob
from services.severity import Severity

log = logging.getLogger(__name__)

PLAYBOOK_DELAYS = (timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=30))
KINDS = ("publish", "generate_images", "upload", "collect_stats")


class JobFailed(Exception):
    """A pipeline run failed; raised by runners so the retry ladder can move on."""

    def __init__(
        self,
        error: str,
        *,
        trace_id: str | None = None,
        retry_after: timedelta | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.trace_id = trace_id
        self.retry_after = retry_after
        self.retryable = retryable


def next_retry_at(
    *,
    failed_at: datetime,
    attempts: int,
    delays: Sequence[timedelta],
    retry_after: timedelta | None = None,
) -> datetime | None:
    """When retry number `attempts + 1` runs, or None when the automatic retries are spent.

    The server's `Retry-After` wins when it asks for a longer wait than the ladder's step.
    """
    if failed_at.tzinfo is None:
        raise ValueError("failed_at must be aware UTC")
    if attempts >= len(delays):
        return None
    delay = delays[attempts]
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return failed_at + delay


@dataclass(frozen=True)
class JobView:
    id: int
    kind: str
    topic: str
    state: JobState
    attempts: int
    max_attempts: int
    last_error: str
    trace_id: str | None
    next_retry_at: datetime | None
    incident_id: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def dedup_key(self) -> str:
        return f"job:{self.id}"

    @classmethod
    def of(cls, row: PipelineJob) -> JobView:
        return cls(
            id=row.id,
            kind=row.kind,
            topic=row.topic,
            state=JobState(row.state),
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            last_error=row.last_error,
            trace_id=row.trace_id,
            next_retry_at=row.next_retry_at,
            incident_id=row.incident_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "topic": self.topic,
            "state": self.state.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "last_error": self.last_error,
            "trace_id": self.trace_id,
            "next_retry_at": self.next_retry_at.isoformat() if self.next_retry_at else None,
            "incident_id": self.incident_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    def line(self, now: datetime) -> str:
        """One line for a list: `#7 publish sunflower failed 1/3 next in 14m ...`."""
        when = ""
        if self.state is JobState.FAILED and self.next_retry_at is not None:
            when = f" next in {format_duration(self.next_retry_at - now)}"
        trace = f" {self.trace_id}" if self.trace_id else ""
        return (
            f"#{self.id} {self.kind} {self.topic or '-'} {self.state.value} "
            f"{self.attempts}/{self.max_attempts}{when}{trace}: {self.last_error[:120]}"
        )


@dataclass(frozen=True)
class RetrySummary:
    """What the escalation ladder's 30-minute step says about an incident's retries."""

    jobs: list[JobView]

    @property
    def done(self) -> bool:
        return all(j.state is not JobState.FAILED for j in self.jobs)

    def text(self) -> str:
        if not self.jobs:
            return "no automatic retries belong to this incident"
        parts = []
        for job in self.jobs:
            parts.append(
                f"job #{job.id} {job.kind} {job.topic}: {job.attempts}/{job.max_attempts} "
                f"retries, {job.state.value}"
            )
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "text": self.text(), "jobs": [j.to_json() for j in self.jobs]}


# A runner returns the trace id of its run, or raises JobFailed.
Runner = Callable[[JobView], Awaitable[str | None]]


class RetryService:
    """Stores failed jobs; runs their retries when due or when a person asks, never twice at once.

    A run is claimed by an UPDATE that only matches a job that is not running, so a manual
    retry racing the scheduler (or a second `/retry`) finds the claim taken and is refused.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        incidents: IncidentService,
        *,
        delays: Sequence[timedelta] = PLAYBOOK_DELAYS,
    ) -> None:
        self._db = db
        self._clock = clock
        self._incidents = incidents
        self.delays = list(delays)
        self._runners: dict[str, Runner] = {}

    def register(self, kind: str, runner: Runner) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        self._runners[kind] = runner

    async def record_failure(
        self,
        kind: str,
        topic: str,
        *,
        error: str,
        trace_id: str | None = None,
        retry_after: timedelta | None = None,
        retryable: bool = True,
    ) -> JobView:
        """A first run failed: store the job with its first retry armed (unless not retryable)."""
        now = self._clock.now()
        async with self._db.write() as session:
            row = PipelineJob(
                kind=kind,
                topic=topic,
                state=JobState.FAILED.value,
                attempts=0,
                max_attempts=len(self.delays),
                last_error=error[:2000],
                trace_id=trace_id,
                next_retry_at=None,
                created_at=now,
                updated_at=now,
            )
            if retryable:
                row.next_retry_at = next_retry_at(
                    failed_at=now, attempts=0, delays=self.delays, retry_after=retry_after
                )
            else:
                row.state = JobState.EXHAUSTED.value
            session.add(row)
            await session.flush()
            view = JobView.of(row)
        if not retryable:
            view = await self._raise_incident(view)
        return view

    async def get(self, job_id: int) -> JobView:
        async with self._db.read() as session:
            row = await session.get(PipelineJob, job_id)
            if row is None:
                raise NotFound(f"no job #{job_id}")
            return JobView.of(row)

    async def list(
        self, *, states: Sequence[JobState] | None = None, limit: int = 50
    ) -> list[JobView]:
        """Failed, running and exhausted jobs by default, newest first."""
        wanted = states or (JobState.FAILED, JobState.RUNNING, JobState.EXHAUSTED)
        query = (
            select(PipelineJob)
            .where(PipelineJob.state.in_([s.value for s in wanted]))
            .order_by(PipelineJob.id.desc())
            .limit(limit)
        )
        async with self._db.read() as session:
            return [JobView.of(r) for r in await session.scalars(query)]

    async def open_job_for(self, kind: str, topic: str) -> JobView | None:
        """The newest job of this kind and topic that has not succeeded yet."""
        query = (
            select(PipelineJob)
            .where(
                PipelineJob.kind == kind,
                PipelineJob.topic == topic,
                PipelineJob.state.in_([JobState.FAILED.value, JobState.EXHAUSTED.value]),
            )
            .order_by(PipelineJob.id.desc())
            .limit(1)
        )
        async with self._db.read() as session:
            row = await session.scalar(query)
            return JobView.of(row) if row else None

    async def retry_now(self, job_id: int, *, actor: str) -> JobView:
        """Run the job now (`/retry 7`, `sunflow-ops retry 7`); refused if it is running."""
        if job_id < 1:
            raise InvalidInput(f"{job_id} is not a job number")
        await self.get(job_id)  # NotFound first, for a clear message
        if not await self._claim(job_id, only_due=False):
            current = await self.get(job_id)
            if current.state is JobState.RUNNING:
                raise InvalidTransition(f"job #{job_id} is already running; not started twice")
            raise InvalidTransition(f"job #{job_id} has already succeeded")
        log.info("job #%s retried now by %s", job_id, actor)
        return await self._run(job_id)

    async def run_due(self) -> builtins.list[JobView]:
        """The scheduler's tick: run every job whose retry time has come."""
        now = self._clock.now()
        async with self._db.read() as session:
            due = list(
                await session.scalars(
                    select(PipelineJob.id).where(
                        PipelineJob.state == JobState.FAILED.value,
                        PipelineJob.next_retry_at.is_not(None),
                        PipelineJob.next_retry_at <= now,
                    )
                )
            )
        results = []
        for job_id in due:
            if await self._claim(job_id, only_due=True):
                results.append(await self._run(job_id))
        return results

    async def recover_interrupted(self) -> int:
        """At start: a job left running by a crash becomes due again at once."""
        now = self._clock.now()
        async with self._db.write() as session:
            result = await session.execute(
                update(PipelineJob)
                .where(PipelineJob.state == JobState.RUNNING.value)
                .values(state=JobState.FAILED.value, next_retry_at=now, updated_at=now)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def _claim(self, job_id: int, *, only_due: bool) -> bool:
        now = self._clock.now()
        allowed = [JobState.FAILED.value]
        if not only_due:
            allowed.append(JobState.EXHAUSTED.value)
        condition = [PipelineJob.id == job_id, PipelineJob.state.in_(allowed)]
        if only_due:
            condition.append(PipelineJob.next_retry_at <= now)
        async with self._db.write() as session:
            result = await session.execute(
                update(PipelineJob)
                .where(*condition)
                .values(state=JobState.RUNNING.value, updated_at=now)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _run(self, job_id: int) -> JobView:
        job = await self.get(job_id)
        runner = self._runners.get(job.kind)
        failure: JobFailed | None = None
        trace_id: str | None = None
        if runner is None:
            failure = JobFailed(f"no runner for {job.kind!r} jobs in this process")
        else:
            try:
                trace_id = await runner(job)
            except JobFailed as exc:
                failure = exc
            except Exception as exc:
                log.exception("job #%s %s crashed", job.id, job.kind)
                failure = JobFailed(f"{type(exc).__name__}: {exc}"[:500])
        now = self._clock.now()
        async with self._db.write() as session:
            row = await session.get(PipelineJob, job_id)
            assert row is not None
            row.attempts += 1
            row.updated_at = now
            if failure is None:
                row.state = JobState.SUCCEEDED.value
                row.next_retry_at = None
                row.trace_id = trace_id or row.trace_id
            else:
                row.last_error = failure.error[:2000]
                row.trace_id = failure.trace_id or row.trace_id
                when = None
                if failure.retryable:
                    when = next_retry_at(
                        failed_at=now,
                        attempts=row.attempts,
                        delays=self.delays,
                        retry_after=failure.retry_after,
                    )
                row.next_retry_at = when
                row.state = JobState.FAILED.value if when else JobState.EXHAUSTED.value
            view = JobView.of(row)
        if failure is None:
            await self._incidents.resolve_by_dedup_key(view.dedup_key, actor="retry")
        elif view.state is JobState.EXHAUSTED:
            view = await self._raise_incident(view)
        return view

    async def _raise_incident(self, view: JobView) -> JobView:
        labels = {"job_id": str(view.id), "kind": view.kind, "topic": view.topic}
        if view.trace_id:
            labels["trace_id"] = view.trace_id
        result = await self._incidents.trigger(
            AlertIn(
                severity=Severity.P1,
                title=f"{view.kind} {view.topic} failed after {view.attempts} retries".strip(),
                dedup_key=view.dedup_key,
                source="retry",
                description=(
                    f"The automatic retries are done. Last error: {view.last_error[:500]}. "
                    f"Retry by hand with /retry {view.id} or `sunflow-ops retry {view.id}`."
                ),
                labels=labels,
            ),
            actor="retry",
        )
        async with self._db.write() as session:
            row = await session.get(PipelineJob, view.id)
            assert row is not None
            row.incident_id = result.incident.id
            return JobView.of(row)

    async def status_for_incident(self, incident_id: int) -> RetrySummary:
        """The retry state of the jobs behind an incident (for the ladder's 30-minute step)."""
        async with self._db.read() as session:
            return await session.run_sync(retry_summary, incident_id)


def retry_summary(session: Session, incident_id: int) -> RetrySummary:
    """The jobs behind an incident, read with the caller's (sync) session: its `job:<id>`
    key, its `job_id` label, jobs that raised it, and a pipeline run's jobs of its kind and
    topic."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        return RetrySummary([])
    labels = dict(incident.labels or {})
    job_ids = set()
    if incident.dedup_key.startswith("job:"):
        job_ids.add(int(incident.dedup_key.split(":", 1)[1]))
    raw = labels.get("job_id")
    if isinstance(raw, str | int) and (str(raw).isascii() and str(raw).isdigit()):
        job_ids.add(int(raw))
    related = (PipelineJob.incident_id == incident_id) | PipelineJob.id.in_(job_ids or {0})
    kind, topic = labels.get("kind"), labels.get("topic")
    if isinstance(kind, str) and isinstance(topic, str):
        # A pipeline incident (429, Cloudinary...): the jobs of that run's kind and topic.
        related |= (
            (PipelineJob.kind == kind)
            & (PipelineJob.topic == topic)
            & (PipelineJob.created_at >= incident.first_seen_at - timedelta(minutes=1))
        )
    rows = session.scalars(select(PipelineJob).where(related).order_by(PipelineJob.id))
    return RetrySummary([JobView.of(r) for r in rows])


def describe_retries(
    session: Session, incident_id: int, details: dict[str, Any]
) -> dict[str, Any]:
    """For the escalation ladder's 30-minute step, in its firing's transaction: its message
    with the retry state appended."""
    summary = retry_summary(session, incident_id)
    message = str(details.get("message", ""))
    if summary.jobs:
        message = f"{message} ({summary.text()})" if message else summary.text()
    return {"message": message, "retries": summary.to_json()}
