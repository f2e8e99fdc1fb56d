"""PagerDuty Events API v2 intake: events any PagerDuty sender posts, as incident changes."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from services.db import Database
from services.errors import InvalidTransition
from services.incident_types import MAX_DEDUP_KEY, MAX_DESCRIPTION, MAX_TITLE, AlertIn
from services.incidents import IncidentService
from services.intake import (
    MAX_LABEL_VALUE,
    IntakeBatch,
    IntakeResult,
    IntakeService,
    refused,
    shorten,
)
from services.models import Incident, IncidentState
from services.severity import Severity

ACTIONS = ("trigger", "acknowledge", "resolve")

# PagerDuty's four severities onto the playbook's.
SEVERITIES: dict[str, Severity] = {
    "critical": Severity.P0,
    "error": Severity.P1,
    "warning": Severity.P2,
    "info": Severity.P3,
}

SOURCE = "pagerduty"
ACTOR = "pagerduty"


class InvalidEvent(Exception):
    """The event is not a valid Events API v2 event; `errors` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class PagerDutyEvent:
    action: str
    dedup_key: str
    routing_key: str
    # For a trigger: the alert it raises.
    alert: AlertIn | None = None


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _string(
    obj: dict[str, Any], name: str, where: str, errors: list[str], *, required: bool = False
) -> str:
    value = obj.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors.append(f"'{where}{name}' is missing or blank")
        return ""
    if not isinstance(value, str):
        errors.append(f"'{where}{name}' must be a string")
        return ""
    return value


def _context(value: object, name: str, url_field: str, errors: list[str]) -> list[dict[str, str]]:
    """`links` or `images`: a list of objects; items without their URL are skipped."""
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(f"'{name}' must be a list of objects")
        return []
    items = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            errors.append(f"'{name}[{index}]' must be an object")
            continue
        fields = {k: v for k, v in item.items() if isinstance(k, str) and isinstance(v, str)}
        if fields.get(url_field, "").strip():
            items.append(fields)
    return items


def _description(
    payload: dict[str, Any], links: list[dict[str, str]], images: list[dict[str, str]]
) -> str:
    lines = []
    details = payload.get("custom_details")
    if isinstance(details, dict):
        lines += [f"{k}: {_text(v)}" for k, v in details.items()]
    elif details is not None:
        lines.append(_text(details))
    lines += [f"Link: {link.get('text') or link['href']} <{link['href']}>" for link in links]
    lines += [f"Image: {image.get('alt') or image['src']} <{image['src']}>" for image in images]
    if isinstance(payload.get("timestamp"), str):
        lines.append(f"Detected at: {payload['timestamp']}")
    return shorten("\n".join(lines), MAX_DESCRIPTION)


def parse_event(body: object, *, new_key: Callable[[], str] | None = None) -> PagerDutyEvent:
    """An Events API v2 alert event; InvalidEvent lists everything wrong with it, as
    PagerDuty's 400 answer does. `new_key` makes the dedup key of a trigger sent without
    one (PagerDuty's: a random UUID, returned in the answer)."""
    if not isinstance(body, dict):
        raise InvalidEvent(["the event must be a JSON object"])
    errors: list[str] = []
    routing_key = _string(body, "routing_key", "", errors, required=True)
    action = _string(body, "event_action", "", errors, required=True)
    if action and action not in ACTIONS:
        errors.append("'event_action' must be one of trigger, acknowledge, resolve")
    dedup_key = _string(
        body, "dedup_key", "", errors, required=action in {"acknowledge", "resolve"}
    )
    if len(dedup_key) > MAX_DEDUP_KEY:
        errors.append(f"'dedup_key' is longer than {MAX_DEDUP_KEY} characters")
    if action != "trigger":
        if errors:
            raise InvalidEvent(errors)
        return PagerDutyEvent(action, dedup_key, routing_key)
    payload = body.get("payload")
    if not isinstance(payload, dict):
        errors.append("'payload' is missing or not an object")
        raise InvalidEvent(errors)
    summary = _string(payload, "summary", "payload.", errors, required=True)
    source = _string(payload, "source", "payload.", errors, required=True)
    raw_severity = _string(payload, "severity", "payload.", errors, required=True)
    if raw_severity and raw_severity not in SEVERITIES:
        errors.append("'payload.severity' must be one of critical, error, warning, info")
    labels = {"source": source, "pd_severity": raw_severity}
    for name in ("component", "group", "class"):
        value = _string(payload, name, "payload.", errors)
        if value:
            labels[name] = value
    for name in ("client", "client_url"):
        value = _string(body, name, "", errors)
        if value:
            labels[name] = value
    if "timestamp" in payload:
        _string(payload, "timestamp", "payload.", errors)
    links = _context(body.get("links"), "links", "href", errors)
    images = _context(body.get("images"), "images", "src", errors)
    if errors:
        raise InvalidEvent(errors)
    dedup_key = dedup_key or (new_key or _uuid_key)()
    alert = AlertIn(
        severity=SEVERITIES[raw_severity],
        title=shorten(summary.strip(), MAX_TITLE),
        dedup_key=dedup_key,
        source=SOURCE,
        description=_description(payload, links, images),
        labels={k: shorten(v, MAX_LABEL_VALUE) for k, v in labels.items()},
    )
    return PagerDutyEvent(action, dedup_key, routing_key, alert)


def _uuid_key() -> str:
    return uuid.uuid4().hex


class PagerDutyService:
    """Applies Events API v2 events: a trigger opens or repeats, acknowledge and resolve act
    on the open incident with the dedup key, and are dropped (as PagerDuty drops them) when
    there is none."""

    def __init__(self, db: Database, intake: IntakeService, incidents: IncidentService) -> None:
        self._db = db
        self._intake = intake
        self._incidents = incidents

    async def apply(self, event: PagerDutyEvent) -> IntakeResult | None:
        """The intake result of a trigger or resolve (None for an acknowledge); Unavailable
        (503: PagerDuty senders retry 5xx) when the database refuses."""
        if event.action == "trigger":
            assert event.alert is not None
            return await self._intake.submit(IntakeBatch(firing=[event.alert], source=SOURCE))
        try:
            return await self._resolve_or_acknowledge(event)
        except DBAPIError as exc:
            raise refused(exc) from None

    async def _resolve_or_acknowledge(self, event: PagerDutyEvent) -> IntakeResult | None:
        if event.action == "resolve":
            view = await self._incidents.resolve_by_dedup_key(event.dedup_key, actor=ACTOR)
            return IntakeResult(
                created=[],
                deduplicated=[],
                resolved=[view] if view else [],
                resolved_unknown=[] if view else [event.dedup_key],
            )
        incident_id = await self._open_incident(event.dedup_key)
        if incident_id is not None:
            # Already acknowledged, or resolved meanwhile: PagerDuty drops it too.
            with contextlib.suppress(InvalidTransition):
                await self._incidents.acknowledge(incident_id, actor=ACTOR)
        return None

    async def _open_incident(self, dedup_key: str) -> int | None:
        query = select(Incident.id).where(
            Incident.dedup_key == dedup_key, Incident.state != IncidentState.RESOLVED.value
        )
        async with self._db.read() as session:
            found: int | None = await session.scalar(query)
            return found
