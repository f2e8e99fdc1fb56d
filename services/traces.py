"""Traces: every pipeline run gets an id `SF-YYYYMMDD-HHMMSS-xxxx`, its steps and their errors."""

from __future__ import annotations

import builtins
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from services.clock import Clock
from services.db import Database
from services.errors import InvalidInput, NotFound
from services.models import Trace, TraceStep

TRACE_ID = re.compile(r"^SF-\d{8}-\d{6}-[0-9a-f]{4}$")


def new_trace_id(*, now: datetime, suffix: str) -> str:
    """`SF-20260130-091500-a1b2`: the run's start time in UTC and four hex digits."""
    if now.tzinfo is None:
        raise ValueError("trace ids are made from aware UTC datetimes")
    if not re.fullmatch(r"[0-9a-f]{4}", suffix):
        raise ValueError("the suffix is four lower-case hex digits")
    return f"SF-{now.strftime('%Y%m%d-%H%M%S')}-{suffix}"


def check_trace_id(value: str) -> str:
    text = value.strip()
    if not TRACE_ID.fullmatch(text):
        raise InvalidInput(
            f"{value!r} is not a trace id (like SF-20260130-091500-a1b2)",
            detail={"reason": "not_trace_id", "value": value},
        )
    return text


@dataclass(frozen=True)
class StepView:
    name: str
    status: str
    started_at: datetime
    duration_ms: int
    error: str | None
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.duration_ms,
            "error": self.error,
            "details": self.details,
        }


@dataclass(frozen=True)
class TraceView:
    id: str
    kind: str
    topic: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    job_id: int | None
    steps: list[StepView] = field(default_factory=list)

    @property
    def duration_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.started_at).total_seconds() * 1000)

    def to_json(self) -> dict[str, Any]:
        """The export format, as in `config/logs/traces/SF-*.json`."""
        return {
            "trace_id": self.id,
            "kind": self.kind,
            "topic": self.topic,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "job_id": self.job_id,
            "steps": [s.to_json() for s in self.steps],
        }

    def line(self) -> str:
        """One line for a list (the bot's /traces, `trace list`)."""
        took = f"{self.duration_ms} ms" if self.duration_ms is not None else "running"
        error = f"  {self.error[:100]}" if self.error else ""
        return f"{self.id}  {self.kind:<16} {self.topic:<20} {self.status:<7} {took}{error}"

    @classmethod
    def of(cls, row: Trace, steps: list[TraceStep] | None = None) -> TraceView:
        return cls(
            id=row.id,
            kind=row.kind,
            topic=row.topic,
            status=row.status,
            started_at=row.started_at,
            finished_at=row.finished_at,
            error=row.error,
            job_id=row.job_id,
            steps=[
                StepView(s.name, s.status, s.started_at, s.duration_ms, s.error, dict(s.details))
                for s in (steps or [])
            ],
        )


class StepRecord:
    """Handed to the body of `TraceRun.step`; whatever it puts in `details` is kept."""

    def __init__(self) -> None:
        self.details: dict[str, Any] = {}
        self.status = "ok"


class TraceRun:
    """One running trace; steps are written as they finish so a crash leaves them behind."""

    def __init__(self, service: TraceService, trace_id: str, kind: str, topic: str) -> None:
        self._service = service
        self.id = trace_id
        self.kind = kind
        self.topic = topic
        self.failed_step: str | None = None

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[StepRecord]:
        record = StepRecord()
        started_at = self._service.clock.now()
        started = time.perf_counter()
        try:
            yield record
        except BaseException as exc:
            self.failed_step = name
            await self._service.add_step(
                self.id,
                name=name,
                status="error",
                started_at=started_at,
                duration_ms=int((time.perf_counter() - started) * 1000),
                error=describe(exc),
                details=record.details,
            )
            raise
        await self._service.add_step(
            self.id,
            name=name,
            status=record.status,
            started_at=started_at,
            duration_ms=int((time.perf_counter() - started) * 1000),
            error=None,
            details=record.details,
        )

    async def note(self, name: str, *, status: str = "ok", **details: Any) -> None:
        """A step with no duration: a decision the run took (e.g. an archive fallback)."""
        await self._service.add_step(
            self.id,
            name=name,
            status=status,
            started_at=self._service.clock.now(),
            duration_ms=0,
            error=None,
            details=details,
        )

    async def finish(self, *, error: BaseException | str | None = None) -> TraceView:
        text = error if isinstance(error, str) or error is None else describe(error)
        return await self._service.finish(self.id, error=text)


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (text or type(exc).__name__)[:1000]


class TraceService:
    """Stores traces in the database and exports each finished one as JSON."""

    def __init__(self, db: Database, clock: Clock, *, export_dir: Path | None = None) -> None:
        self._db = db
        self.clock = clock
        self.export_dir = export_dir

    async def start(self, kind: str, topic: str = "", *, job_id: int | None = None) -> TraceRun:
        now = self.clock.now()
        trace_id = new_trace_id(now=now, suffix=secrets.token_hex(2))
        async with self._db.write() as session:
            session.add(
                Trace(
                    id=trace_id,
                    kind=kind,
                    topic=topic,
                    status="running",
                    started_at=now,
                    job_id=job_id,
                )
            )
        return TraceRun(self, trace_id, kind, topic)

    async def add_step(
        self,
        trace_id: str,
        *,
        name: str,
        status: str,
        started_at: datetime,
        duration_ms: int,
        error: str | None,
        details: dict[str, Any],
    ) -> None:
        async with self._db.write() as session:
            session.add(
                TraceStep(
                    trace_id=trace_id,
                    name=name,
                    status=status,
                    started_at=started_at,
                    duration_ms=duration_ms,
                    error=error,
                    details=json.loads(json.dumps(details, default=str)),
                )
            )

    async def finish(self, trace_id: str, *, error: str | None = None) -> TraceView:
        async with self._db.write() as session:
            row = await session.get(Trace, trace_id)
            if row is None:
                raise NotFound(
                    f"no trace {trace_id}", detail={"reason": "no_trace", "value": trace_id}
                )
            row.status = "error" if error else "ok"
            row.error = error
            row.finished_at = self.clock.now()
        view = await self.get(trace_id)
        if self.export_dir is not None:
            self.export(view, self.export_dir)
        return view

    @staticmethod
    def export(view: TraceView, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{view.id}.json"
        path.write_text(json.dumps(view.to_json(), ensure_ascii=False, indent=2), "utf-8")
        return path

    async def get(self, trace_id: str) -> TraceView:
        trace_id = check_trace_id(trace_id)
        async with self._db.read() as session:
            row = await session.scalar(
                select(Trace).where(Trace.id == trace_id).options(selectinload(Trace.steps))
            )
            if row is None:
                raise NotFound(
                    f"no trace {trace_id}", detail={"reason": "no_trace", "value": trace_id}
                )
            return TraceView.of(row, list(row.steps))

    async def list(
        self, *, limit: int = 20, status: str | None = None, topic: str | None = None
    ) -> list[TraceView]:
        """Newest first, without their steps."""
        if not 1 <= limit <= 500:
            raise InvalidInput("limit is between 1 and 500")
        query = select(Trace).order_by(Trace.started_at.desc(), Trace.id.desc()).limit(limit)
        if status:
            query = query.where(Trace.status == status)
        if topic:
            query = query.where(Trace.topic == topic)
        async with self._db.read() as session:
            return [TraceView.of(row) for row in await session.scalars(query)]

    async def many(self, trace_ids: builtins.list[str]) -> builtins.list[TraceView]:
        found: builtins.list[TraceView] = []
        for trace_id in dict.fromkeys(trace_ids):
            try:
                found.append(await self.get(trace_id))
            except (NotFound, InvalidInput):
                continue
        return found
