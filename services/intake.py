"""Alert intake: turns generic JSON alerts and Alertmanager webhooks into incident changes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from dataclasses import dataclass, field
from typing import Any

from services.errors import InvalidInput
from services.incidents import AlertIn, BatchOutcome, IncidentService, IncidentView
from services.severity import DEFAULT_SEVERITY, Severity, parse_severity

MAX_LABELS = 64


@dataclass(frozen=True)
class IntakeBatch:
    """Alerts to open or absorb, and dedup keys to resolve, applied in one transaction."""

    firing: list[AlertIn] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class IntakeResult:
    created: list[IncidentView]
    deduplicated: list[IncidentView]
    resolved: list[IncidentView]
    resolved_unknown: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "created": [i.id for i in self.created],
            "deduplicated": [i.id for i in self.deduplicated],
            "resolved": [i.id for i in self.resolved],
            "resolved_unknown": self.resolved_unknown,
            "incidents": [
                {"id": i.id, "state": i.state.value, "occurrence_count": i.occurrence_count}
                for i in [*self.created, *self.deduplicated, *self.resolved]
            ],
        }


def _field_error(name: str, problem: str) -> InvalidInput:
    return InvalidInput(f"field '{name}': {problem}", detail={"field": name})


def _string(payload: dict[str, Any], name: str, *, required: bool, default: str = "") -> str:
    value = payload.get(name)
    if value is None:
        if required:
            raise _field_error(name, "is required")
        return default
    if not isinstance(value, str):
        raise _field_error(name, f"must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise _field_error(name, "must not be empty")
    return value


def _labels(
    value: object, name: str, *, strings_only: bool = False, limit: int | None = MAX_LABELS
) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _field_error(name, "must be an object of string values")
    if limit is not None and len(value) > limit:
        raise _field_error(name, f"has more than {limit} entries")
    labels: dict[str, str] = {}
    for key, item in value.items():
        if strings_only and not isinstance(item, str):
            raise _field_error(f"{name}.{key}", "must be a string")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise _field_error(f"{name}.{key}", "must be a string or a number")
        labels[str(key)] = str(item)
    return labels


def parse_generic(payload: object) -> IntakeBatch:
    """`POST /api/alerts`: one alert object (or a list of them).

    Fields: severity (P0-P3 or critical/high/warning/info), title, dedup_key, source,
    description, labels, and status ("firing", the default, or "resolved").
    """
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise InvalidInput("the list of alerts is empty", detail={"field": "body"})
    batch = IntakeBatch()
    for item in items:
        if not isinstance(item, dict):
            raise InvalidInput("the body must be a JSON object", detail={"field": "body"})
        title = _string(item, "title", required=True).strip()
        source = _string(item, "source", required=False, default="api").strip() or "api"
        dedup_key = _string(item, "dedup_key", required=False).strip()
        dedup_key = dedup_key or AlertIn.default_dedup_key(source, title)
        status = _string(item, "status", required=False, default="firing")
        if status not in {"firing", "resolved"}:
            raise _field_error("status", "must be 'firing' or 'resolved'")
        if status == "resolved":
            batch.resolved.append(dedup_key)
            continue
        raw_severity = item.get("severity")
        if raw_severity is None:
            raise _field_error("severity", "is required (P0, P1, P2 or P3)")
        if not isinstance(raw_severity, str):
            raise _field_error("severity", "must be a string such as 'P1'")
        try:
            severity = parse_severity(raw_severity)
        except ValueError as exc:
            raise _field_error("severity", str(exc)) from None
        batch.firing.append(
            AlertIn(
                severity=severity,
                title=title,
                dedup_key=dedup_key,
                source=source,
                description=_string(item, "description", required=False),
                labels=_labels(item.get("labels"), "labels"),
            )
        )
    return batch


def alertmanager_severity(labels: dict[str, str]) -> Severity:
    """The `severity` label, mapped; a missing or unknown value is P2 (documented)."""
    raw = labels.get("severity")
    if not raw:
        return DEFAULT_SEVERITY
    try:
        return parse_severity(raw)
    except ValueError:
        return DEFAULT_SEVERITY


def alertmanager_dedup_key(alert: dict[str, Any], labels: dict[str, str]) -> str:
    if labels.get("dedup_key"):
        return labels["dedup_key"]
    fingerprint = alert.get("fingerprint")
    if isinstance(fingerprint, str) and fingerprint.strip():
        return f"am:{fingerprint.strip()}"
    canonical = "\x00".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return "am:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _optional_str(alert: dict[str, Any], name: str, where: str) -> str:
    value = alert.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _field_error(f"{where}.{name}", "must be a string")
    return value


def parse_alertmanager(payload: object) -> IntakeBatch:
    """`POST /api/alerts/alertmanager`: the Alertmanager webhook, payload version 4.

    Strict where Alertmanager is always strict (status, label and annotation strings, an
    `alertname` label), so a malformed sender is told rather than half understood.
    """
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object", detail={"field": "body"})
    version = payload.get("version", "4")
    if version != "4":
        raise _field_error("version", f'payload version {version!r} is not supported (use "4")')
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise _field_error("alerts", "is required and must be a list")
    batch = IntakeBatch()
    for index, alert in enumerate(alerts):
        where = f"alerts[{index}]"
        if not isinstance(alert, dict):
            raise _field_error(where, "must be an object")
        labels = _labels(alert.get("labels"), f"{where}.labels", strings_only=True)
        if "labels" not in alert:
            raise _field_error(f"{where}.labels", "is required")
        annotations = _labels(
            alert.get("annotations"), f"{where}.annotations", strings_only=True, limit=None
        )
        status = alert.get("status")
        if not isinstance(status, str) or status not in {"firing", "resolved"}:
            raise _field_error(f"{where}.status", "must be 'firing' or 'resolved'")
        alertname = labels.get("alertname", "").strip()
        if not alertname:
            raise _field_error(f"{where}.labels.alertname", "is required")
        fingerprint = _optional_str(alert, "fingerprint", where)
        generator = _optional_str(alert, "generatorURL", where)
        for name in ("startsAt", "endsAt"):
            _optional_str(alert, name, where)
        dedup_key = alertmanager_dedup_key({"fingerprint": fingerprint}, labels)
        if status == "resolved":
            batch.resolved.append(dedup_key[:255])
            continue
        title = (annotations.get("summary") or "").strip() or alertname
        if generator:
            labels = {**labels, "generator_url": generator}
        # The rule's runbook link becomes a button on the card (services/runbooks.py).
        for name in ("runbook_url", "runbook"):
            if annotations.get(name, "").strip():
                labels = {**labels, name: annotations[name].strip()[:500]}
        batch.firing.append(
            AlertIn(
                severity=alertmanager_severity(labels),
                title=title[:500],
                dedup_key=dedup_key[:255],
                source="alertmanager",
                description=annotations.get("description", "")[:20_000],
                labels=labels,
            )
        )
    return batch


def _result(outcome: BatchOutcome) -> IntakeResult:
    return IntakeResult(
        created=[r.incident for r in outcome.triggered if r.created],
        deduplicated=[r.incident for r in outcome.triggered if not r.created],
        resolved=outcome.resolved,
        resolved_unknown=outcome.resolved_unknown,
    )


_Pending = tuple[IntakeBatch, "asyncio.Future[IntakeResult]"]


class IntakeService:
    """Commits alert batches; while running, concurrent submissions share one commit.

    Group commit, written by hand: a commit (an fsync) per alert caps intake at the disk's
    fsync rate, and no library does this for SQLAlchemy. Every caller still gets its answer
    only after its own alerts are committed.
    """

    def __init__(
        self, incidents: IncidentService, *, max_group: int = 256, linger_turns: int = 4
    ) -> None:
        self._incidents = incidents
        self._max_group = max_group
        self._linger_turns = linger_turns
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, batch: IntakeBatch) -> IntakeResult:
        if self._queue is None:
            return _result((await self._apply([batch]))[0])
        future: asyncio.Future[IntakeResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((batch, future))
        return await future

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(self._queue), name="intake-group-commit")

    async def stop(self) -> None:
        """Commit everything already accepted, then go back to direct commits."""
        queue, worker = self._queue, self._worker
        self._queue, self._worker = None, None
        if queue is None or worker is None:
            return
        await queue.join()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            group = [await queue.get()]
            # Let requests whose bytes are already here reach the queue before committing:
            # a few loop turns cost microseconds and make the group (and the fsync) shared.
            for _ in range(self._linger_turns):
                size = queue.qsize()
                await asyncio.sleep(0)
                if queue.qsize() == size:
                    break
            while len(group) < self._max_group and not queue.empty():
                group.append(queue.get_nowait())
            try:
                await self._commit_group(group)
            finally:
                for _ in group:
                    queue.task_done()

    async def _commit_group(self, group: list[_Pending]) -> None:
        try:
            outcomes = await self._apply([batch for batch, _ in group])
        except Exception:
            if len(group) == 1:
                _, future = group[0]
                if not future.done():
                    future.set_exception(sys.exc_info()[1] or RuntimeError("commit failed"))
                return
            # One bad batch must not fail its neighbours: retry each on its own.
            for item in group:
                await self._commit_group([item])
            return
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                future.set_result(_result(outcome))

    async def _apply(self, batches: list[IntakeBatch]) -> list[BatchOutcome]:
        return await self._incidents.apply_batches(
            [(b.firing, b.resolved) for b in batches], actor="intake"
        )
