"""Alert intake: turns generic JSON alerts and Alertmanager webhooks into incident changes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.exc import DBAPIError

from services.alert_groups import FIRING, RESOLVED, AlertGroupIn
from services.errors import InvalidInput, Unavailable
from services.incident_types import (
    MAX_DEDUP_KEY,
    MAX_DESCRIPTION,
    MAX_TITLE,
    AlertIn,
    BatchOutcome,
    IncidentView,
)
from services.incidents import IncidentService, Resolving
from services.severity import DEFAULT_SEVERITY, Severity, parse_severity

log = logging.getLogger(__name__)

# Labels an incident keeps: a generic alert with more is refused (its sender is told);
# an Alertmanager alert with more is kept shortened (see `truncate_labels`).
MAX_LABELS = 64
MAX_LABEL_KEY = 200
MAX_LABEL_VALUE = 1000
TRUNCATED_LABEL = "truncated_labels"


@dataclass(frozen=True)
class IntakeBatch:
    """Alerts to open or absorb, and what to resolve (dedup keys, or a resolved Alertmanager
    group), applied in one transaction."""

    firing: list[AlertIn] = field(default_factory=list)
    resolved: list[Resolving] = field(default_factory=list)
    # Alerts the sender left out of this notification (Alertmanager's `truncatedAlerts`).
    truncated_alerts: int = 0
    group_key: str = ""
    source: str = "api"


@dataclass(frozen=True)
class IntakeResult:
    created: list[IncidentView]
    deduplicated: list[IncidentView]
    resolved: list[IncidentView]
    resolved_unknown: list[str]
    truncated_alerts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "created": [i.id for i in self.created],
            "deduplicated": [i.id for i in self.deduplicated],
            "resolved": [i.id for i in self.resolved],
            "resolved_unknown": self.resolved_unknown,
            "truncated_alerts": self.truncated_alerts,
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


def _optional_str(alert: dict[str, Any], name: str, where: str) -> str:
    value = alert.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _field_error(f"{where}.{name}", "must be a string")
    return value


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# Kept first when an alert has more labels than an incident keeps: what routes, titles and
# deduplicates it, then what says where it comes from.
_FIRST_LABELS = ("alertname", "severity", "dedup_key", "job", "instance", "service", "namespace")


def truncate_labels(labels: dict[str, str], *, limit: int = MAX_LABELS) -> dict[str, str]:
    """At most `limit` labels, none of them longer than the incident keeps.

    Alertmanager puts no limit on labels and never retries a refusal, so an alert with more
    is taken in this shortened form: the first labels by `_FIRST_LABELS` then by name, and
    the rest folded into one `truncated_labels` entry ("N more: k=v, ...", itself cut short).
    """
    if len(labels) <= limit and all(
        len(k) <= MAX_LABEL_KEY and len(v) <= MAX_LABEL_VALUE for k, v in labels.items()
    ):
        return labels
    first = [k for k in _FIRST_LABELS if k in labels]
    ordered = first + sorted(k for k in labels if k not in _FIRST_LABELS)
    keep = ordered if len(ordered) <= limit else ordered[: limit - 1]
    kept = {shorten(k, MAX_LABEL_KEY): shorten(labels[k], MAX_LABEL_VALUE) for k in keep}
    rest = ordered[len(keep) :]
    if rest:
        listed = ", ".join(f"{k}={labels[k]}" for k in rest)
        kept[TRUNCATED_LABEL] = shorten(f"{len(rest)} more: {listed}", MAX_LABEL_VALUE)
    return kept


# Labels that say little about what is wrong: not used to make up a missing title.
_NOT_TITLES = frozenset({"severity", "dedup_key", "alertname"})


def alertmanager_title(
    annotations: dict[str, str], labels: dict[str, str], fingerprint: str
) -> str:
    """`summary`, else `alertname`, else up to three other labels, else the fingerprint.

    Alertmanager delivers alerts without an `alertname` (any client may post them), so a
    missing one is no reason to lose the alert.
    """
    for candidate in (annotations.get("summary", ""), labels.get("alertname", "")):
        if candidate.strip():
            return shorten(candidate.strip(), MAX_TITLE)
    described = [f"{k}={v}" for k, v in sorted(labels.items()) if k not in _NOT_TITLES and v]
    if described:
        more = f" (+{len(described) - 3} more labels)" if len(described) > 3 else ""
        return shorten("Alert " + " ".join(described[:3]) + more, MAX_TITLE)
    if fingerprint.strip():
        return f"Alertmanager alert {fingerprint.strip()}"[:MAX_TITLE]
    return "Alertmanager alert without labels"


def _grafana_lines(alert: dict[str, Any], where: str) -> list[str]:
    """What Grafana's webhook contact point adds to each alert, as description lines."""
    lines = []
    values = alert.get("values")
    if isinstance(values, dict) and values:
        shown = ", ".join(f"{k}={v}" for k, v in list(values.items())[:20])
        lines.append(f"Values: {shown}")
    for name, label in (
        ("dashboardURL", "Dashboard"),
        ("panelURL", "Panel"),
        ("silenceURL", "Silence"),
        ("imageURL", "Image"),
    ):
        url = _optional_str(alert, name, where)
        if url:
            lines.append(f"{label}: {url}")
    return lines


def _truncated_alerts(payload: dict[str, Any]) -> int:
    value = payload.get("truncatedAlerts", 0)
    if value is None:
        return 0
    # JSON has no integer type of its own: 3.0 is a whole number too.
    if isinstance(value, float) and value.is_integer() and value < 2**63:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _field_error("truncatedAlerts", "must be a whole number of alerts, 0 or more")
    return int(value)


def _notification_status(payload: dict[str, Any], alerts: list[dict[str, Any]]) -> str:
    """Alertmanager's own: "resolved" only when every alert of the group is (a hand-made
    notification without one gets it from its alerts)."""
    status = payload.get("status")
    if status is None:
        return FIRING if any(a["status"] == FIRING for a in alerts) else RESOLVED
    if status not in (FIRING, RESOLVED):
        raise _field_error("status", "must be 'firing' or 'resolved'")
    return str(status)


def _common(items: list[dict[str, str]]) -> dict[str, str]:
    """What all of `items` have in common (Alertmanager's commonLabels/commonAnnotations)."""
    if not items:
        return {}
    first, *rest = items
    return {k: v for k, v in first.items() if all(other.get(k) == v for other in rest)}


def alertmanager_group_key(receiver: str, group_key: str, common: dict[str, str]) -> str:
    """The incident's dedup key for an Alertmanager group: the group's own `dedup_key` label
    when all its alerts carry the same one, else from the receiver and the groupKey
    (without a groupKey: from the labels the alerts share, standing in for it)."""
    if common.get("dedup_key"):
        return common["dedup_key"][:MAX_DEDUP_KEY]
    if not group_key:
        group_key = "\x00".join(f"{k}={v}" for k, v in sorted(common.items()))
    digest = hashlib.sha256(f"{receiver}\x00{group_key}".encode()).hexdigest()[:32]
    return f"am:{digest}"


def group_title(
    group_labels: dict[str, str], common_labels: dict[str, str], common_annotations: dict[str, str]
) -> str:
    """A group's title: the summary its alerts share, else its alertname with the labels
    it is grouped by ("DiskFull (env=prod, team=ops)"), else from the shared labels."""
    summary = common_annotations.get("summary", "").strip()
    name = common_labels.get("alertname", "").strip()
    if summary or not name:
        return alertmanager_title(common_annotations, common_labels, "")
    others = [f"{k}={v}" for k, v in sorted(group_labels.items()) if k != "alertname" and v]
    return shorten(f"{name} ({', '.join(others)})" if others else name, MAX_TITLE)


# Labels an alert of a group keeps in the group's list (beyond those it is grouped by).
MAX_MEMBER_LABELS = 16
MAX_MEMBER_TITLE = 200


def _member_title(
    labels: dict[str, str],
    annotations: dict[str, str],
    common_labels: dict[str, str],
    common_annotations: dict[str, str],
    key: str,
) -> str:
    """One line for an alert in its group's list: its own summary, else the labels that set
    it apart from the rest of the group ("instance=web-3 pod=api-7"; its severity shows as
    the line's badge)."""
    summary = annotations.get("summary", "").strip()
    if summary and summary != common_annotations.get("summary", "").strip():
        return shorten(summary, MAX_MEMBER_TITLE)
    own = [
        f"{k}={v}"
        for k, v in sorted(labels.items())
        if common_labels.get(k) != v and v and k not in _NOT_TITLES
    ]
    if own:
        return shorten(" ".join(own[:4]), MAX_MEMBER_TITLE)
    return shorten(summary or labels.get("alertname", "") or key, MAX_MEMBER_TITLE)


def _member_key(fingerprint: str, labels: dict[str, str]) -> str:
    if fingerprint.strip():
        return fingerprint.strip()[:64]
    canonical = "\x00".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Alert:
    """One alert of a notification, checked."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    generator: str
    starts_at: str
    ends_at: str
    extra: list[str]


def _parse_alert(alert: object, where: str, *, grafana: bool) -> _Alert:
    if not isinstance(alert, dict):
        raise _field_error(where, "must be an object")
    if "labels" not in alert:
        raise _field_error(f"{where}.labels", "is required")
    labels = _labels(alert.get("labels"), f"{where}.labels", strings_only=True, limit=None)
    annotations = _labels(
        alert.get("annotations"), f"{where}.annotations", strings_only=True, limit=None
    )
    status = alert.get("status")
    if not isinstance(status, str) or status not in {FIRING, RESOLVED}:
        raise _field_error(f"{where}.status", "must be 'firing' or 'resolved'")
    return _Alert(
        status=status,
        labels=labels,
        annotations=annotations,
        fingerprint=_optional_str(alert, "fingerprint", where),
        generator=_optional_str(alert, "generatorURL", where),
        starts_at=_optional_str(alert, "startsAt", where),
        ends_at=_optional_str(alert, "endsAt", where),
        extra=_grafana_lines(alert, where) if grafana else [],
    )


def _group_labels(payload: dict[str, Any]) -> dict[str, str]:
    """Only a title's words: what is not an object of strings is ignored, not refused (a 4xx
    would lose the notification; Alertmanager never retries one)."""
    value = payload.get("groupLabels")
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def parse_alertmanager(payload: object) -> IntakeBatch:
    """`POST /api/alerts/alertmanager`: the Alertmanager webhook (payload version 4), and
    Grafana alerting's webhook contact point (the same shape, version "1" with `orgId`).

    A notification is one Alertmanager group (receiver + groupKey), so it is one incident:
    opened by the group's first notification, its alert list and counts kept up to date by
    each one after (Alertmanager re-sends the whole group on every change and at
    repeat_interval), resolved by the notification whose status is "resolved". Its severity
    is the highest among the firing alerts; its title what they share.

    Every well-formed notification is taken: Alertmanager never retries a 4xx, so a refusal
    loses the alerts. Labels beyond MAX_LABELS are kept shortened, a missing `alertname`
    gets a title from the other fields, `truncatedAlerts` is recorded. Strict only where
    Alertmanager is always strict (the shape, status, label and annotation strings): a body
    that is not such a notification is refused (400) rather than half understood.
    """
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object", detail={"field": "body"})
    grafana = "orgId" in payload
    version = payload.get("version", "4")
    if version != "4" and not (grafana and version == "1"):
        raise _field_error(
            "version",
            f'payload version {version!r} is not supported (use "4"; Grafana sends "1" '
            "with orgId)",
        )
    raw_alerts = payload.get("alerts")
    if not isinstance(raw_alerts, list):
        raise _field_error("alerts", "is required and must be a list")
    truncated = _truncated_alerts(payload)
    group_key = payload.get("groupKey")
    group_key = group_key if isinstance(group_key, str) else ""
    receiver = payload.get("receiver")
    receiver = receiver if isinstance(receiver, str) else ""
    source = "grafana" if grafana else "alertmanager"
    batch = IntakeBatch(truncated_alerts=truncated, group_key=group_key, source=source)
    alerts = [
        _parse_alert(alert, f"alerts[{index}]", grafana=grafana)
        for index, alert in enumerate(raw_alerts)
    ]
    group_labels = _group_labels(payload)
    status = _notification_status(payload, [{"status": a.status} for a in alerts])
    if not alerts:
        return batch
    common_labels = _common([a.labels for a in alerts])
    common_annotations = _common([a.annotations for a in alerts])
    dedup_key = alertmanager_group_key(receiver, group_key, common_labels)
    members = tuple(
        {
            "key": (key := _member_key(a.fingerprint, a.labels)),
            "status": a.status,
            "severity": alertmanager_severity(a.labels).value,
            "title": _member_title(
                a.labels, a.annotations, common_labels, common_annotations, key
            ),
            "labels": truncate_labels(
                {k: v for k, v in a.labels.items() if k not in group_labels},
                limit=MAX_MEMBER_LABELS,
            ),
            "starts_at": a.starts_at[:40],
            "ends_at": a.ends_at[:40],
        }
        for a in alerts
    )
    group = AlertGroupIn(
        group_key=shorten(group_key, MAX_LABEL_VALUE),
        receiver=shorten(receiver, MAX_LABEL_KEY),
        status=status,
        alerts=members,
        truncated_alerts=truncated,
    )
    alert = _group_alert(
        alerts, group_labels, common_labels, common_annotations, source=source, truncated=truncated
    )
    alert = replace(alert, dedup_key=dedup_key, group=group)
    if status == RESOLVED:
        batch.resolved.append(alert)
    else:
        batch.firing.append(alert)
    return batch


def _group_alert(
    alerts: list[_Alert],
    group_labels: dict[str, str],
    common_labels: dict[str, str],
    common_annotations: dict[str, str],
    *,
    source: str,
    truncated: int,
) -> AlertIn:
    """The incident a group stands for (without its key and alert list): a group of one
    alert reads as that alert (title, description, links), a larger one as what its alerts
    share."""
    firing = [a for a in alerts if a.status == FIRING]
    severity = min(
        (alertmanager_severity(a.labels) for a in firing),
        key=lambda s: s.rank,
        default=alertmanager_severity(common_labels),
    )
    if len(alerts) == 1:
        [one] = alerts
        title = alertmanager_title(one.annotations, one.labels, one.fingerprint)
        description = "\n".join([one.annotations.get("description", ""), *one.extra]).strip()
    else:
        title = group_title(group_labels, common_labels, common_annotations)
        description = common_annotations.get("description", "").strip()
    kept = truncate_labels(common_labels)
    generators = {a.generator for a in alerts if a.generator}
    if len(generators) == 1:
        kept = {**kept, "generator_url": shorten(generators.pop(), MAX_LABEL_VALUE)}
    # The rule's runbook link becomes a button on the card (services/runbooks.py).
    for name in ("runbook_url", "runbook"):
        if common_annotations.get(name, "").strip():
            kept = {**kept, name: shorten(common_annotations[name].strip(), MAX_LABEL_VALUE)}
    if truncated:
        kept = {**kept, "truncated_alerts": str(truncated)}
        description += (
            f"\n\n{source.capitalize()} left {truncated} more alert(s) of this group out of "
            "the notification (max_alerts); the whole group is in its own UI."
        )
    return AlertIn(
        severity=severity,
        title=title,
        dedup_key="",
        source=source,
        description=shorten(description.strip(), MAX_DESCRIPTION),
        labels=kept,
    )


def refused(exc: DBAPIError) -> Unavailable:
    """A write the database refused, as the 503 senders retry (logged in one line)."""
    text = str(exc.orig or exc).strip()
    reason = f"{type(exc.orig or exc).__name__}: {text.splitlines()[0] if text else ''}"[:200]
    log.warning("intake: the database refused the commit: %s", reason)
    return Unavailable(
        "the database did not take the write, so nothing was committed; retry later",
        detail={"reason": reason},
    )


def _result(outcome: BatchOutcome, batch: IntakeBatch) -> IntakeResult:
    return IntakeResult(
        created=[r.incident for r in outcome.triggered if r.created],
        deduplicated=[r.incident for r in outcome.triggered if not r.created],
        resolved=outcome.resolved,
        resolved_unknown=outcome.resolved_unknown,
        truncated_alerts=batch.truncated_alerts,
    )


_Pending = tuple[IntakeBatch, "asyncio.Future[IntakeResult]"]

TRUNCATION_LOG_GROUPS = 1024


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
        # Groups whose truncation was logged: Alertmanager re-sends a group every
        # group_interval, and one line per group says it all.
        self._truncated_groups: OrderedDict[tuple[str, str], int] = OrderedDict()

    def _note_truncation(self, batch: IntakeBatch) -> None:
        key = (batch.source, batch.group_key)
        if key in self._truncated_groups:
            self._truncated_groups.move_to_end(key)
            return
        self._truncated_groups[key] = batch.truncated_alerts
        if len(self._truncated_groups) > TRUNCATION_LOG_GROUPS:
            self._truncated_groups.popitem(last=False)
        log.warning(
            "%s left %d alert(s) out of a notification (max_alerts; group %s); %d taken in",
            batch.source,
            batch.truncated_alerts,
            batch.group_key or "-",
            sum(
                len(a.group.alerts) if isinstance(a, AlertIn) and a.group else 1
                for a in [*batch.firing, *batch.resolved]
            ),
        )

    async def submit(self, batch: IntakeBatch) -> IntakeResult:
        """Commit `batch`; Unavailable (503: senders retry) when the database refuses."""
        if batch.truncated_alerts:
            self._note_truncation(batch)
        try:
            if self._queue is None:
                return _result((await self._apply([batch]))[0], batch)
            future: asyncio.Future[IntakeResult] = asyncio.get_running_loop().create_future()
            self._queue.put_nowait((batch, future))
            return await future
        except DBAPIError as exc:
            raise refused(exc) from None

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
        for (batch, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                future.set_result(_result(outcome, batch))

    async def _apply(self, batches: list[IntakeBatch]) -> list[BatchOutcome]:
        return await self._incidents.apply_batches(
            [(b.firing, b.resolved) for b in batches], actor="intake"
        )
