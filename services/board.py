"""The live incident board: a snapshot of open incidents, health and SSE streams, published
on the hub's `board` job whenever it changes (see docs/api.md, "The live board")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from services.aio import wait_event
from services.clock import Clock
from services.escalation import EscalationService, NextStepInfo
from services.health import HealthService
from services.incident_types import ChangeKind, IncidentChange, IncidentView
from services.incidents import IncidentService
from services.models import IncidentState
from services.sse import Job, SSEHub

log = logging.getLogger(__name__)

# The hub job the board publishes on. It is created permanent (like SSE_PROBE_JOBS): it is
# always known, never finishes and is never forgotten; nobody may publish to it over HTTP.
BOARD_JOB = "board"
BOARD_EVENT = "board"
# Every event is a whole snapshot, so a reconnecting board only needs the latest one.
BOARD_HISTORY = 1
OPEN_STATES = (IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED)
# Changes that do not alter what the board shows.
_IGNORED = frozenset({ChangeKind.ANNOTATED, ChangeKind.CHECKLIST, ChangeKind.POSTMORTEM})
# While changes keep coming, wait this many times the last snapshot's cost before the next.
_QUIET_SHARE = 9


def as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


@dataclass(frozen=True)
class BoardIncident:
    incident: IncidentView
    next_step: NextStepInfo | None

    def to_json(self) -> dict[str, Any]:
        i = self.incident
        step = self.next_step
        return {
            "id": i.id,
            "severity": i.severity.value,
            "title": i.title,
            "source": i.source,
            "state": i.state.value,
            "occurrence_count": i.occurrence_count,
            "first_seen_at": _iso(i.first_seen_at),
            "last_seen_at": _iso(i.last_seen_at),
            "response_deadline": _iso(i.response_deadline),
            "acknowledged_at": _iso(i.acknowledged_at),
            "acknowledged_by": i.acknowledged_by,
            "snoozed_until": _iso(i.snoozed_until),
            "next_step": None
            if step is None
            else {
                "name": step.name,
                "target": step.target,
                "message": step.message,
                "due_at": _iso(step.due_at),
            },
        }


@dataclass(frozen=True)
class BoardSnapshot:
    """What the board shows at one moment; `seq` orders snapshots of this process."""

    seq: int
    now: datetime
    incidents: list[BoardIncident]
    open_counts: dict[str, int]
    health: dict[str, Any]
    sse: dict[str, int]

    def content(self) -> dict[str, Any]:
        """Everything but the sequence number and time: what a change is judged by."""
        return {
            "incidents": [b.to_json() for b in self.incidents],
            "open_counts": self.open_counts,
            "health": self.health,
            "sse": self.sse,
        }

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "now": self.now.isoformat(), **self.content()}


class BoardChanges:
    """The incidents' hook for the board: a committed change it shows marks the board to be
    published again. Built before the incidents (which the board reads), it is one of the
    hooks the composition root gives them."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def apply(self, session: Session, changes: Sequence[IncidentChange]) -> None:
        return None

    def committed(self, changes: Sequence[IncidentChange]) -> None:
        if any(change.kind not in _IGNORED for change in changes):
            self.event.set()


class BoardService:
    """Builds board snapshots and publishes them on the hub's `board` job.

    An incident change (through the incident hook) publishes within a fraction of a second;
    health and SSE figures are looked at every `interval` seconds while someone watches the
    board, and published when they changed. Component health is re-run at most every
    `health_ttl` seconds, since some checks call outside services.
    """

    def __init__(
        self,
        *,
        changes: BoardChanges,
        incidents: IncidentService,
        escalation: EscalationService,
        health: HealthService,
        hub: SSEHub,
        clock: Clock,
        interval: float = 3.0,
        health_ttl: float = 15.0,
        debounce: float = 0.1,
        limit: int = 200,
    ) -> None:
        self._incidents = incidents
        self._escalation = escalation
        self._health = health
        self._hub = hub
        self._clock = clock
        self.interval = interval
        self.health_ttl = health_ttl
        self.debounce = debounce
        self.limit = limit
        self._seq = 0
        self._dirty = changes.event
        self._health_cache: dict[str, Any] | None = None
        self._health_at = 0.0
        self._health_lock = asyncio.Lock()
        self._last_published: str | None = None
        self._publish_cost = 0.0
        self._task: asyncio.Task[None] | None = None
        self.ensure_job()

    # -- the hub job --------------------------------------------------------------------

    def ensure_job(self) -> Job:
        """The board's job on the hub: permanent, so always known and never final."""
        job = self._hub.jobs.get(BOARD_JOB)
        if job is None:
            job = Job(
                BOARD_JOB,
                history_size=BOARD_HISTORY,
                probe=True,
                now=time.monotonic(),
                counted=False,
            )
            self._hub.jobs[BOARD_JOB] = job
        return job

    def viewers(self) -> int:
        """Board streams open in this process."""
        job = self._hub.jobs.get(BOARD_JOB)
        return len(job.streams) if job is not None else 0

    # -- snapshots ------------------------------------------------------------------------

    async def health_summary(self, *, refresh: bool = False) -> dict[str, Any]:
        """Overall and per-component status and detail (timings and figures left out)."""
        async with self._health_lock:
            fresh = time.monotonic() - self._health_at < self.health_ttl
            if self._health_cache is None or refresh or not fresh:
                report = await self._health.run()
                self._health_cache = {
                    "status": report.status.value,
                    "components": [
                        {"name": c.name, "status": c.status.value, "detail": c.detail}
                        for c in report.components
                    ],
                }
                self._health_at = time.monotonic()
            return self._health_cache

    def sse_figures(self) -> dict[str, int]:
        """The figure of /api/generation/health; board streams are among the connections."""
        return {
            "connections": len(self._hub.connections),
            "max_connections": self._hub.config.max_connections,
            "board_viewers": self.viewers(),
        }

    def _next_seq(self) -> int:
        # Milliseconds since the epoch, kept increasing: a page rendered by a process that
        # has since restarted still takes the new process's snapshots as newer.
        self._seq = max(self._seq + 1, time.time_ns() // 1_000_000)
        return self._seq

    async def snapshot(self) -> BoardSnapshot:
        views = await self._incidents.list(states=OPEN_STATES, limit=self.limit)
        views.sort(key=lambda v: (v.severity.rank, as_utc(v.first_seen_at), v.id))
        steps = await self._escalation.next_steps_for([v.id for v in views])
        items = [BoardIncident(v, steps[v.id]) for v in views]
        counts = await self._incidents.count_open()
        health = await self.health_summary()
        return BoardSnapshot(
            seq=self._next_seq(),
            now=self._clock.now(),
            incidents=items,
            open_counts=counts,
            health=health,
            sse=self.sse_figures(),
        )

    async def publish(self, *, only_if_changed: bool = False) -> BoardSnapshot | None:
        """Build a snapshot and publish it on the board job; None when nothing changed."""
        snapshot = await self.snapshot()
        key = json.dumps(snapshot.content(), sort_keys=True)
        if only_if_changed and key == self._last_published:
            return None
        self.ensure_job()
        self._hub.publish(BOARD_JOB, BOARD_EVENT, snapshot.to_json())
        self._last_published = key
        return snapshot

    # -- the background loop ---------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="board-publisher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await wait_event(self._dirty, self.interval)
            try:
                if self._dirty.is_set():
                    # Let a burst of changes (a batch of alerts) settle into one snapshot; in
                    # a storm, wait long enough that snapshots take at most a tenth of the
                    # process (200 incidents cost milliseconds each time) and intake keeps up.
                    await asyncio.sleep(max(self.debounce, self._publish_cost * _QUIET_SHARE))
                    self._dirty.clear()
                    started = time.perf_counter()
                    await self.publish()
                    self._publish_cost = time.perf_counter() - started
                elif self.viewers():
                    await self.publish(only_if_changed=True)
            except Exception:  # the board must outlive one failed round (e.g. the database)
                log.exception("board snapshot failed")
