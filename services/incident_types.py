"""The incident's types: an alert coming in, the view of an incident and its timeline, the
change a write records, and the hook every write tells."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from services.alert_groups import AlertGroupIn
from services.errors import InvalidInput
from services.models import Incident, IncidentState
from services.severity import Severity

MAX_TITLE = 500
MAX_DEDUP_KEY = 255
MAX_SOURCE = 100
MAX_DESCRIPTION = 20_000


@dataclass(frozen=True)
class AlertIn:
    """One alert as it arrives from any intake: validated, not yet stored."""

    severity: Severity
    title: str
    dedup_key: str
    source: str = "api"
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # An Alertmanager notification: the group's alerts, merged into the incident's list.
    group: AlertGroupIn | None = None
    # Set by our own services: what the description says, as `{"reason": ..., "params":
    # {...}}`, which the chat and the fallback e-mail word in their language
    # (bot/render.py `description`). The description stays the English text for the API
    # and logs.
    wording: dict[str, Any] | None = None

    @staticmethod
    def default_dedup_key(source: str, title: str) -> str:
        digest = hashlib.sha256(f"{source}\x00{title}".encode()).hexdigest()[:16]
        return f"{source}:{digest}"


def wording(reason: str, **params: Any) -> dict[str, Any]:
    """What a description our services write says, for `AlertIn.wording`: its reason (the
    chat's message `desc.<reason>`) and values (JSON)."""
    return {"reason": reason, "params": params}


class ChangeKind(enum.StrEnum):
    TRIGGERED = "triggered"
    DEDUPLICATED = "deduplicated"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    ANNOTATED = "annotated"
    SNOOZED = "snoozed"
    # An acknowledgement given for a while ran out; escalation resumes.
    UNACKNOWLEDGED = "unacknowledged"
    # Written by other services through `IncidentService.record` in their own transaction.
    ESCALATED = "escalated"
    DEADLINE_MISSED = "deadline_missed"
    # A checklist item ticked or unticked; a post-mortem field filled in.
    CHECKLIST = "checklist"
    POSTMORTEM = "postmortem"


@dataclass(frozen=True)
class IncidentView:
    """An immutable snapshot of an incident, safe to hand outside the transaction."""

    id: int
    dedup_key: str
    severity: Severity
    title: str
    description: str
    source: str
    labels: dict[str, Any]
    state: IncidentState
    occurrence_count: int
    first_seen_at: datetime
    last_seen_at: datetime
    response_deadline: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    ack_expires_at: datetime | None = None
    snoozed_until: datetime | None = None
    # An Alertmanager group's alerts (services/alert_groups.py); None for other incidents.
    alert_group: dict[str, Any] | None = None
    wording: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> IncidentView:
        """From a Core row mapping of the incidents table."""
        return cls(
            id=row["id"],
            dedup_key=row["dedup_key"],
            severity=Severity(row["severity"]),
            title=row["title"],
            description=row["description"],
            source=row["source"],
            labels=dict(row["labels"] or {}),
            state=IncidentState(row["state"]),
            occurrence_count=row["occurrence_count"],
            first_seen_at=row["first_seen_at"],
            last_seen_at=row["last_seen_at"],
            response_deadline=row["response_deadline"],
            acknowledged_at=row["acknowledged_at"],
            acknowledged_by=row["acknowledged_by"],
            resolved_at=row["resolved_at"],
            resolved_by=row["resolved_by"],
            ack_expires_at=row["ack_expires_at"],
            snoozed_until=row["snoozed_until"],
            alert_group=row["alert_group"],
            wording=row["wording"],
        )

    @classmethod
    def of(cls, row: Incident) -> IncidentView:
        return cls(
            id=row.id,
            dedup_key=row.dedup_key,
            severity=Severity(row.severity),
            title=row.title,
            description=row.description,
            source=row.source,
            labels=dict(row.labels or {}),
            state=IncidentState(row.state),
            occurrence_count=row.occurrence_count,
            first_seen_at=row.first_seen_at,
            last_seen_at=row.last_seen_at,
            response_deadline=row.response_deadline,
            acknowledged_at=row.acknowledged_at,
            acknowledged_by=row.acknowledged_by,
            resolved_at=row.resolved_at,
            resolved_by=row.resolved_by,
            ack_expires_at=row.ack_expires_at,
            snoozed_until=row.snoozed_until,
            alert_group=row.alert_group,
            wording=row.wording,
        )

    @property
    def is_open(self) -> bool:
        return self.state is not IncidentState.RESOLVED

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "dedup_key": self.dedup_key,
            "severity": self.severity.value,
            "title": self.title,
            "description": self.description,
            "source": self.source,
            "labels": self.labels,
            "state": self.state.value,
            "occurrence_count": self.occurrence_count,
            "first_seen_at": iso(self.first_seen_at),
            "last_seen_at": iso(self.last_seen_at),
            "response_deadline": iso(self.response_deadline),
            "acknowledged_at": iso(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": iso(self.resolved_at),
            "resolved_by": self.resolved_by,
            "ack_expires_at": iso(self.ack_expires_at),
            "snoozed_until": iso(self.snoozed_until),
            "alert_group": self.alert_group,
            "wording": self.wording,
        }


@dataclass(frozen=True)
class TimelineEntry:
    id: int
    at: datetime
    kind: str
    actor: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "actor": self.actor,
            "details": self.details,
        }


@dataclass(frozen=True)
class IncidentDetail:
    incident: IncidentView
    timeline: list[TimelineEntry]

    def to_json(self) -> dict[str, Any]:
        return {**self.incident.to_json(), "timeline": [e.to_json() for e in self.timeline]}


@dataclass(frozen=True)
class IncidentChange:
    """What happened to an incident, as seen by hooks inside and after the transaction."""

    kind: ChangeKind
    incident: IncidentView
    actor: str
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)


class IncidentHook(Protocol):
    """Another service's part of every incident write (escalation ladders, outbox rows,
    the board, waking the leader).

    `apply` runs inside the write transaction, with the changes just recorded (an intake
    group's, or one transition's), so what it writes commits with them or not at all; it
    is set-based and synchronous, a few statements per call. `committed` runs after the
    commit and only wakes things up."""

    def apply(self, session: Session, changes: Sequence[IncidentChange]) -> None: ...

    def committed(self, changes: Sequence[IncidentChange]) -> None: ...


@dataclass(frozen=True)
class TriggerResult:
    incident: IncidentView
    created: bool


@dataclass
class BatchOutcome:
    triggered: list[TriggerResult] = field(default_factory=list)
    resolved: list[IncidentView] = field(default_factory=list)
    resolved_unknown: list[str] = field(default_factory=list)


def validate_alert(alert: AlertIn) -> None:
    if not alert.title.strip():
        raise InvalidInput("title must not be empty", detail={"field": "title"})
    limits = (
        ("title", alert.title, MAX_TITLE),
        ("dedup_key", alert.dedup_key, MAX_DEDUP_KEY),
        ("source", alert.source, MAX_SOURCE),
        ("description", alert.description, MAX_DESCRIPTION),
    )
    for name, value, limit in limits:
        if len(value) > limit:
            raise InvalidInput(f"{name} is longer than {limit} characters", detail={"field": name})
    if not alert.dedup_key.strip():
        raise InvalidInput("dedup_key must not be empty", detail={"field": "dedup_key"})
