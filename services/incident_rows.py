"""The incidents' row SQL: Core statements and row helpers for the batch intake and the
lifecycle (IncidentService's storage; no other module writes these tables)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select
from sqlalchemy import insert as sa_insert
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Session

from services import alert_groups
from services.db import plain_sqlite, sqlite_rows
from services.incident_types import AlertIn
from services.models import Incident, IncidentState, TimelineEvent
from services.severity import Severity

INCIDENTS: Table = Incident.__table__  # type: ignore[assignment]
TIMELINE: Table = TimelineEvent.__table__  # type: ignore[assignment]
MUTABLE = (
    "severity",
    "title",
    "occurrence_count",
    "last_seen_at",
    "response_deadline",
    "state",
    "resolved_at",
    "resolved_by",
    "ack_expires_at",
    "snoozed_until",
    "description",
    "labels",
    "alert_group",
)
INSERT_INCIDENTS = sa_insert(INCIDENTS).returning(INCIDENTS.c.dedup_key, INCIDENTS.c.id)
INSERT_INCIDENTS_ORDERED = sa_insert(INCIDENTS).returning(
    INCIDENTS.c.id, sort_by_parameter_order=True
)
INSERT_TIMELINE = sa_insert(TIMELINE)
UPDATE_INCIDENT = (
    sa_update(INCIDENTS)
    .where(INCIDENTS.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in MUTABLE})
)


def update_params(row: dict[str, Any]) -> dict[str, Any]:
    params = {f"b_{name}": row[name] for name in MUTABLE}
    params["b_id"] = row["id"]
    return params


def new_row(alert: AlertIn, now: datetime, deadline_after: timedelta) -> dict[str, Any]:
    return {
        "id": None,
        "dedup_key": alert.dedup_key,
        "severity": alert.severity.value,
        "title": alert.title,
        "description": alert.description,
        "source": alert.source,
        "labels": dict(alert.labels),
        "state": IncidentState.TRIGGERED.value,
        "occurrence_count": 1,
        "first_seen_at": now,
        "last_seen_at": now,
        "response_deadline": now + deadline_after,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "ack_expires_at": None,
        "snoozed_until": None,
        "alert_group": alert_groups.merge(None, alert.group)[0] if alert.group else None,
        "wording": alert.wording,
    }


def absorb(
    row: dict[str, Any], alert: AlertIn, now: datetime, deadline_after: timedelta
) -> dict[str, Any]:
    """A repeat of an open incident: count it; a more urgent repeat raises the severity and
    may bring its response deadline forward (never back)."""
    row["occurrence_count"] += 1
    row["last_seen_at"] = now
    details: dict[str, Any] = {"count": row["occurrence_count"]}
    if alert.severity.rank < Severity(row["severity"]).rank:
        details["severity_raised"] = {"from": row["severity"], "to": alert.severity.value}
        row["severity"] = alert.severity.value
        row["response_deadline"] = min(row["response_deadline"], now + deadline_after)
        if alert.title != row["title"]:
            # The title said what the first, milder alert saw ("warning: 10 days left").
            details["title"] = {"from": row["title"], "to": alert.title}
            row["title"] = alert.title
    if alert.group is not None:
        _absorb_group(row, alert, details)
    elif alert.description and alert.description != row["description"]:
        details["description"] = alert.description[:500]
    return details


def _absorb_group(row: dict[str, Any], alert: AlertIn, details: dict[str, Any]) -> None:
    """An Alertmanager group re-sent: its alerts merged in; the title, labels and
    description follow the group as it is now (what its alerts have in common)."""
    assert alert.group is not None
    stored, change = alert_groups.merge(row["alert_group"], alert.group)
    row["alert_group"] = stored
    if change:
        details["alerts"] = alert_groups.change_summary(stored, change)
    if alert.title != row["title"] and "title" not in details:
        details["title"] = {"from": row["title"], "to": alert.title}
    row["title"] = alert.title
    row["labels"] = dict(alert.labels)
    if alert.description != row["description"]:
        details["description"] = alert.description[:500]
        row["description"] = alert.description


def merge_group(row: dict[str, Any], alert: AlertIn) -> None:
    """The last notification of a group (all its alerts resolved), before it closes."""
    if alert.group is not None:
        row["alert_group"] = alert_groups.merge(row["alert_group"], alert.group)[0]


def close_row(row: dict[str, Any], actor: str, now: datetime) -> None:
    row.update(
        state=IncidentState.RESOLVED.value,
        resolved_at=now,
        resolved_by=actor,
        ack_expires_at=None,
        snoozed_until=None,
    )


# FOR NO KEY UPDATE (PostgreSQL): it serialises writers of an incident but, unlike FOR
# UPDATE, lets other transactions insert rows that reference it (outbox, timeline) meanwhile.
def open_rows_by_key(conn: Connection, keys: set[str]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        if plain_sqlite(conn):
            where = f"dedup_key IN ({', '.join('?' * len(chunk))}) AND state != ?"
            found = sqlite_rows(conn, INCIDENTS, where, [*chunk, IncidentState.RESOLVED.value])
        else:
            found = [dict(r) for r in conn.execute(OPEN_BY_KEYS, {"keys": chunk}).mappings()]
        for row in found:
            rows[row["dedup_key"]] = row
    return rows


# Built once: building the IN clause per group cost more than running it.
OPEN_BY_KEYS = (
    select(INCIDENTS)
    .where(
        INCIDENTS.c.dedup_key.in_(bindparam("keys", expanding=True)),
        INCIDENTS.c.state != IncidentState.RESOLVED.value,
    )
    .with_for_update(key_share=True)
)


def close(row: Incident, actor: str, now: datetime) -> None:
    row.state = IncidentState.RESOLVED.value
    row.resolved_at = now
    row.resolved_by = actor
    row.ack_expires_at = None
    row.snoozed_until = None


def open_by_dedup_key(session: Session, dedup_key: str) -> Incident | None:
    query = (
        select(Incident)
        .where(Incident.dedup_key == dedup_key, Incident.state != IncidentState.RESOLVED.value)
        .with_for_update(key_share=True)
    )
    return session.scalar(query)
