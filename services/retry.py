"""Failed pipeline jobs and their retries (5 min -> 15 min -> 30 min), each heard at once."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.clock import Clock
from services.db import Database
from services.durations import format_duration
from services.errors import InvalidInput, InvalidTransition, NotFound
from services.incident_types import AlertIn, ChangeKind, IncidentChange, IncidentView
from services.incidents import IncidentService, IncidentWrite
from services.models import Incident, JobState, PipelineJob
from services.providers import CallFailure, ProviderCalls
from services.severity import Severity

log = logging.getLogger(__name__)

PLAYBOOK_DELAYS = (timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=30))
KINDS = ("publish", "generate_images", "upload", "collect_stats")


class JobFailed(Exception):
    """A pipeline run failed; raised by runners so the retry ladder can move on.

    `alert` is the playbook's incident for this failure (image generation P1, Cloudinary P0,
    ...), opened or counted into at once; `call` names the provider call that failed, for the
    log line and the health report; `defer_until` reschedules without spending a retry (the
    daily post limit is reached: not a failure of the work).
    """

    def __init__(
        self,
        error: str,
        *,
        trace_id: str | None = None,
        retry_after: timedelta | None = None,
        retryable: bool = True,
        alert: AlertIn | None = None,
        call: CallFailure | None = None,
        defer_until: datetime | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.trace_id = trace_id
        self.retry_after = retry_after
        self.retryable = retryable
        self.alert = alert
        self.call = call
        self.defer_until = defer_until


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
    # Set for one run by `retry_now(..., force=True)`: the runner may override its guards
    # (the publish guards: already posted, the daily limit). Never stored.
    forced: bool = False

    @property
    def dedup_key(self) -> str:
        """The incident key of a failure whose runner named no incident of its own."""
        return f"job:{self.id}"

    @property
    def left(self) -> int:
        """Automatic retries still to come."""
        if self.state is not JobState.FAILED or self.next_retry_at is None:
            return 0
        return max(0, self.max_attempts - self.attempts)

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
            "left": self.left,
            "last_error": self.last_error,
            "trace_id": self.trace_id,
            "next_retry_at": self.next_retry_at.isoformat() if self.next_retry_at else None,
            "incident_id": self.incident_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @property
    def work(self) -> str:
        return f"{self.kind} {self.topic}".strip()

    def line(self, now: datetime) -> str:
        """One line for a list: `#7 publish sunflower failed 1/3 next in 14m ...`; a job that
        succeeded shows no error (the old one is history, not the outcome)."""
        when = ""
        if self.state is JobState.FAILED and self.next_retry_at is not None:
            when = f" next in {format_duration(self.next_retry_at - now)}"
        trace = f" {self.trace_id}" if self.trace_id else ""
        head = (
            f"#{self.id} {self.kind} {self.topic or '-'} {self.state.value} "
            f"{self.attempts}/{self.max_attempts}{when}{trace}"
        )
        if self.state is JobState.SUCCEEDED:
            return head
        return f"{head}: {self.last_error[:120]}"

    def plan(self) -> str:
        """Where its automatic retries stand, in words (the card and the 30-minute step)."""
        done = f"{self.attempts}/{self.max_attempts}"
        if self.state is JobState.SUCCEEDED:
            return f"job #{self.id} {self.work}: succeeded at {self.updated_at:%H:%M} UTC"
        if self.state is JobState.RUNNING:
            return f"job #{self.id} {self.work}: retry {self.attempts + 1} running"
        if self.state is JobState.FAILED and self.next_retry_at is not None:
            return (
                f"job #{self.id} {self.work}: automatic retries {done} done, next at "
                f"{self.next_retry_at:%H:%M} UTC ({self.left} left)"
            )
        if self.attempts == 0:
            return (
                f"job #{self.id} {self.work}: not retried automatically "
                f"({self.last_error[:120]}); fix it, then /retry {self.id}"
            )
        return (
            f"job #{self.id} {self.work}: the automatic retries are done, {done} failed; "
            f"retry by hand: /retry {self.id}"
        )


@dataclass(frozen=True)
class RetrySummary:
    """The retry state of the jobs behind an incident."""

    jobs: list[JobView]

    @property
    def done(self) -> bool:
        """No automatic retry is still to come (each succeeded, was exhausted or refused)."""
        return all(j.left == 0 and j.state is not JobState.RUNNING for j in self.jobs)

    def text(self) -> str:
        if not self.jobs:
            return "no automatic retries belong to this incident"
        return "; ".join(job.plan() for job in self.jobs)

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "text": self.text(), "jobs": [j.to_json() for j in self.jobs]}


# The built-in ladders' text for the step (services/policy.py), replaced when it fires.
DEFAULT_STEP_MESSAGE = "30 min: status of the automatic retries"


def retry_step_message(summary: RetrySummary) -> str:
    """The ladder's 30-minute step as it is posted: what the retries have done by now.

    The playbook writes "30 min: the three automatic retries are done", but with 5, 15 and
    30 minutes between them the third comes at about 50 minutes: the text says where they
    stand instead of claiming it. An incident with no retries behind it never hears of them.
    """
    if not summary.jobs:
        return "30 min: still open and not acknowledged"
    return f"30 min: {summary.text()}"


# A runner returns the trace id of its run, or raises JobFailed.
Runner = Callable[[JobView], Awaitable[str | None]]
# The runner of each kind of job (publish, generate_images ...), from the service that owns it.
Runners = Mapping[str, Runner]


def default_alert(job: JobView, error: str) -> AlertIn:
    """The incident of a failure whose runner named none: the job's own, P1."""
    return AlertIn(
        severity=Severity.P1,
        title=f"{job.work} failing",
        dedup_key=job.dedup_key,
        source="retry",
        description=error[:2000],
    )


class RetryService:
    """Stores failed jobs; runs their retries when due or when a person asks, never twice at once.

    A run is given the runners of the kinds it may meet: the service that owns a kind passes
    its own (`publish --retry`), and `JobRunner` holds every kind's for the rest.

    Every failure is heard at once: the failure's incident (the playbook's severity for the
    step that failed) is opened or counted into the moment a run fails, the job is linked to
    it, and the card shows the job's retry plan; the last failed retry escalates it.

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
        providers: ProviderCalls | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._incidents = incidents
        self._providers = providers
        self.delays = list(delays)

    @property
    def schedule(self) -> str:
        """The retry delays as the texts say them: `5m -> 15m -> 30m`."""
        return " -> ".join(format_duration(d) for d in self.delays)

    async def record_failure(
        self,
        kind: str,
        topic: str,
        *,
        error: str,
        trace_id: str | None = None,
        retry_after: timedelta | None = None,
        retryable: bool = True,
        alert: AlertIn | None = None,
        call: CallFailure | None = None,
    ) -> JobView:
        """A run outside the retries failed: store its job with the first retry armed (unless
        not retryable) and open its incident now. The same work failing again while its job
        is open counts into that job and its incident instead of arming a second job."""
        return await self.failed(
            kind,
            topic,
            JobFailed(
                error,
                trace_id=trace_id,
                retry_after=retry_after,
                retryable=retryable,
                alert=alert,
                call=call,
            ),
        )

    async def failed(self, kind: str, topic: str, failure: JobFailed) -> JobView:
        """`record_failure` for a `JobFailed` as a runner raised it."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        now = self._clock.now()
        async with self._db.write() as session:
            row = await session.scalar(
                select(PipelineJob)
                .where(
                    PipelineJob.kind == kind,
                    PipelineJob.topic == topic,
                    PipelineJob.state.in_([JobState.FAILED.value, JobState.EXHAUSTED.value]),
                )
                .order_by(PipelineJob.id.desc())
                .limit(1)
            )
            if row is not None:
                # Its retries keep their schedule: a manual run failing is one more failure.
                row.last_error = failure.error[:2000]
                row.trace_id = failure.trace_id or row.trace_id
                row.updated_at = now
            else:
                row = PipelineJob(
                    kind=kind,
                    topic=topic,
                    state=JobState.FAILED.value,
                    attempts=0,
                    max_attempts=len(self.delays),
                    last_error=failure.error[:2000],
                    trace_id=failure.trace_id,
                    next_retry_at=None,
                    created_at=now,
                    updated_at=now,
                )
                if failure.retryable:
                    row.next_retry_at = next_retry_at(
                        failed_at=now,
                        attempts=0,
                        delays=self.delays,
                        retry_after=failure.retry_after,
                    )
                else:
                    row.state = JobState.EXHAUSTED.value
                session.add(row)
            await session.flush()
            view = JobView.of(row)
        return await self._heard(view, failure, exhausted_now=False)

    async def get(self, job_id: int) -> JobView:
        async with self._db.read() as session:
            row = await session.get(PipelineJob, job_id)
            if row is None:
                raise NotFound(f"no job #{job_id}", detail={"reason": "no_job", "id": job_id})
            return JobView.of(row)

    async def list(
        self, *, states: Sequence[JobState] | None = None, limit: int = 50
    ) -> builtins.list[JobView]:
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

    async def settle(self, kind: str, topic: str, *, actor: str) -> builtins.list[JobView]:
        """The work of these jobs was done another way (a manual upload, `stats collect
        --force`, a publish): they succeed without running, so no armed retry repeats it."""
        now = self._clock.now()
        async with self._db.write() as session:
            rows = list(
                await session.scalars(
                    select(PipelineJob).where(
                        PipelineJob.kind == kind,
                        PipelineJob.topic == topic,
                        PipelineJob.state.in_([JobState.FAILED.value, JobState.EXHAUSTED.value]),
                    )
                )
            )
            for row in rows:
                row.state = JobState.SUCCEEDED.value
                row.next_retry_at = None
                row.updated_at = now
            views = [JobView.of(r) for r in rows]
        for view in views:
            log.info(
                "job #%s %s settled by %s: the work was done another way",
                view.id,
                view.work,
                actor,
            )
            await self._incidents.resolve_by_dedup_key(view.dedup_key, actor=actor)
        return views

    async def retry_now(
        self, job_id: int, runners: Runners, *, actor: str, force: bool = False
    ) -> JobView:
        """Run the job now with the runner of its kind; refused if it is running."""
        if job_id < 1:
            raise InvalidInput(
                f"{job_id} is not a job number", detail={"reason": "not_job", "value": job_id}
            )
        await self.get(job_id)  # NotFound first, for a clear message
        if not await self._claim(job_id, only_due=False):
            current = await self.get(job_id)
            if current.state is JobState.RUNNING:
                raise InvalidTransition(
                    f"job #{job_id} is already running; not started twice",
                    detail={"reason": "job_running", "id": job_id},
                )
            raise InvalidTransition(
                f"job #{job_id} has already succeeded",
                detail={"reason": "job_succeeded", "id": job_id},
            )
        log.info("job #%s retried now by %s", job_id, actor)
        return await self._run(job_id, runners, manual=True, force=force)

    async def run_due(self, runners: Runners) -> builtins.list[JobView]:
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
                results.append(await self._run(job_id, runners, manual=False, force=False))
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

    async def _run(self, job_id: int, runners: Runners, *, manual: bool, force: bool) -> JobView:
        job = replace(await self.get(job_id), forced=force)
        runner = runners.get(job.kind)
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
            armed = row.next_retry_at is not None
            row.updated_at = now
            if failure is None:
                row.attempts += 1
                row.state = JobState.SUCCEEDED.value
                row.next_retry_at = None
                row.trace_id = trace_id or row.trace_id
            elif failure.defer_until is not None:
                # Not a failure of the work: the same retry runs later, none is spent.
                row.state = JobState.FAILED.value
                row.next_retry_at = failure.defer_until
                row.last_error = failure.error[:2000]
            else:
                row.attempts += 1
                row.last_error = failure.error[:2000]
                row.trace_id = failure.trace_id or row.trace_id
                when = None
                if failure.retryable and (not manual or row.next_retry_at is not None):
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
            # Each step's success resolves its own incident (the flows do it); a job whose
            # runner named no incident had the job's own.
            await self._incidents.resolve_by_dedup_key(view.dedup_key, actor="retry")
            await self._tell(view, f"job #{view.id} ({view.work}) succeeded")
            return view
        if failure.defer_until is not None:
            log.info(
                "job #%s %s deferred to %s: %s",
                view.id,
                view.work,
                failure.defer_until.isoformat(),
                failure.error,
            )
            await self._tell(
                view,
                f"job #{view.id} ({view.work}) waits until "
                f"{failure.defer_until:%Y-%m-%d %H:%M} UTC: {failure.error}",
            )
            return view
        exhausted_now = armed and view.state is JobState.EXHAUSTED
        return await self._heard(view, failure, exhausted_now=exhausted_now)

    async def _tell(self, view: JobView, text: str) -> None:
        """A job's run ended without failing while its incident stays open (fal.ai still
        down after an archive fallback, a deferral): a note on the incident, so its card
        shows the job's new state instead of the retry it was running."""
        if view.incident_id is None:
            return
        if not (await self._incidents.get(view.incident_id)).incident.is_open:
            return
        await self._incidents.annotate(view.incident_id, actor="retry", text=text)

    async def _heard(self, view: JobView, failure: JobFailed, *, exhausted_now: bool) -> JobView:
        """A failure of the job's work: its incident now, the log line, the provider's state;
        the last automatic retry failing escalates the incident."""
        alert = failure.alert or default_alert(view, failure.error)
        labels = {**alert.labels, "job_id": str(view.id), "kind": view.kind}
        if view.topic:
            labels["topic"] = view.topic
        if failure.trace_id or view.trace_id:
            labels["trace_id"] = str(failure.trace_id or view.trace_id)
        result = await self._incidents.trigger(replace(alert, labels=labels), actor="pipeline")
        incident = result.incident
        async with self._db.write() as session:
            row = await session.get(PipelineJob, view.id)
            assert row is not None
            row.incident_id = incident.id
            view = JobView.of(row)
        if failure.call is not None and self._providers is not None:
            await self._providers.failed(failure.call, trace_id=failure.trace_id)
        log_failure(view, failure, incident.id)
        if exhausted_now:
            await self._escalate(view, incident.id, retryable=failure.retryable)
        return view

    async def _escalate(self, view: JobView, incident_id: int, *, retryable: bool) -> None:
        """The automatic retries are spent: a step on the incident's ladder, posted in its
        thread at once (the retry status the playbook's 30-minute step promises)."""
        by_hand = f"Retry by hand: /retry {view.id} or `sunflow-ops retry {view.id}`"
        if retryable:
            message = (
                f"automatic retries done: {view.attempts}/{view.max_attempts} failed for job "
                f"#{view.id} ({view.work}); last error: {view.last_error[:300]}. {by_hand}"
            )
        else:
            message = (
                f"job #{view.id} ({view.work}) cannot succeed by retrying: "
                f"{view.last_error[:300]}. Fix it, then: {by_hand}"
            )
        details = {
            "step": "retries_exhausted",
            "target": "team",
            "message": message,
            "user_ids": [],
            "job_id": view.id,
        }

        def record(write: IncidentWrite) -> None:
            row = write.session.get(Incident, incident_id)
            if row is None or not row.is_open:
                return
            change = IncidentChange(
                ChangeKind.ESCALATED, IncidentView.of(row), "retry", write.now, details
            )
            write.record([change])

        await self._incidents.write(record)

    async def jobs_for_incident(self, incident_id: int) -> builtins.list[JobView]:
        """The jobs whose failures count into this incident, oldest first."""
        async with self._db.read() as session:
            return await session.run_sync(jobs_for_incident, incident_id)

    async def status_for_incident(self, incident_id: int) -> RetrySummary:
        """The retry state of the jobs behind an incident (for the ladder's 30-minute step)."""
        return RetrySummary(await self.jobs_for_incident(incident_id))


class JobRunner:
    """Runs any stored job with the runner of its kind: a person's retry (`/retry 7`,
    `sunflow-ops retry 7`, the API) and the scheduler's due retries. Built after the services
    that own the kinds, which store their failures in the `RetryService` below it."""

    def __init__(self, retry: RetryService, runners: Runners) -> None:
        unknown = set(runners) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown job kinds {sorted(unknown)}")
        self._retry = retry
        self._runners = dict(runners)

    async def retry_now(self, job_id: int, *, actor: str, force: bool = False) -> JobView:
        """Run the job now; refused if it is running or has succeeded."""
        return await self._retry.retry_now(job_id, self._runners, actor=actor, force=force)

    async def run_due(self) -> list[JobView]:
        """The scheduler's tick: run every job whose retry time has come."""
        return await self._retry.run_due(self._runners)


def log_failure(job: JobView, failure: JobFailed, incident_id: int) -> None:
    """One line per failure that the playbook's greps find: provider, operation, HTTP status,
    trace and incident; at ERROR (`*_stderr.log`), a 429 at WARNING (it is throttling)."""
    call = failure.call
    plan = (
        f"retry {job.attempts + 1}/{job.max_attempts} at {job.next_retry_at:%H:%M} UTC"
        if job.state is JobState.FAILED and job.next_retry_at is not None
        else f"no automatic retry left ({job.attempts}/{job.max_attempts})"
    )
    level = logging.WARNING if call is not None and call.status == 429 else logging.ERROR
    log.log(
        level,
        "%s failed: provider=%s operation=%s status=%s trace=%s incident=#%s job=#%s %s: %s",
        job.work,
        call.provider if call else "-",
        call.operation if call else "-",
        call.status_text if call else "-",
        failure.trace_id or job.trace_id or "-",
        incident_id,
        job.id,
        plan,
        failure.error[:500],
    )


def jobs_for_incident(session: Session, incident_id: int) -> list[JobView]:
    """The jobs whose failures count into this incident, oldest first, read with the
    caller's (sync) session. The job that opened it is named by its `job_id` label too: the
    link on the job is written just after the incident commits, and its card may be
    rendered in between."""
    incident = session.get(Incident, incident_id)
    raw = incident.labels.get("job_id") if incident is not None else None
    opener = int(raw) if isinstance(raw, str) and raw.isascii() and raw.isdigit() else 0
    rows = session.scalars(
        select(PipelineJob)
        .where((PipelineJob.incident_id == incident_id) | (PipelineJob.id == opener))
        .order_by(PipelineJob.id)
    )
    return [JobView.of(r) for r in rows]


def describe_retries(
    session: Session, incident_id: int, details: dict[str, Any]
) -> dict[str, Any]:
    """For the escalation ladder's 30-minute step, in its firing's own transaction: its
    message, where the retries stand."""
    summary = RetrySummary(jobs_for_incident(session, incident_id))
    base = str(details.get("message") or "")
    if not base or base == DEFAULT_STEP_MESSAGE:
        message = retry_step_message(summary)
    else:
        # A policy file's own words for the step come first, then what is true now.
        status = summary.text() if summary.jobs else "still open and not acknowledged"
        message = f"{base}: {status}"
    # The step's own words beside the English sentence: a chat composes its own from them
    # and `retries`.
    return {"message": message, "step_message": base, "retries": summary.to_json()}
