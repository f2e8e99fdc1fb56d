"""Post-mortems: the runbooks' sections, filled from an incident's data and its people."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.checklists import ChecklistService, ItemState, label
from services.clock import Clock
from services.db import Database
from services.durations import format_duration
from services.errors import InvalidInput
from services.incident_types import ChangeKind, IncidentDetail, TimelineEntry
from services.incidents import IncidentService
from services.locales import Texts
from services.models import Incident, PostmortemField

# What only people know; everything else comes from the data.
FIELDS = ("summary", "impact", "cause", "prevention")
MAX_FIELD = 4000

_TRACE = re.compile(r"\bSF-\d{8}-\d{6}-[0-9a-z]{4}\b")


@dataclass(frozen=True)
class Postmortem:
    incident_id: int
    markdown: str
    missing_fields: list[str]

    @property
    def filename(self) -> str:
        return f"postmortem-incident-{self.incident_id}.md"


def _when(value: datetime | None, fallback: str) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else fallback


def _span(start: datetime, end: datetime | None, fallback: str) -> str:
    return format_duration(end - start) if end else fallback


def related_ids(detail: IncidentDetail) -> tuple[list[str], list[str]]:
    """Job ids and trace ids named in the incident's labels and timeline details."""
    jobs: list[str] = []
    traces: list[str] = []
    sources: list[dict[str, Any]] = [detail.incident.labels, *(e.details for e in detail.timeline)]
    for data in sources:
        for key, value in data.items():
            text = str(value)
            if key in {"job_id", "job"} and text not in jobs:
                jobs.append(text)
            if key in {"trace_id", "trace"} and text not in traces:
                traces.append(text)
            for found in _TRACE.findall(text):
                if found not in traces:
                    traces.append(found)
    return jobs, traces


def _step_line(entry: TimelineEntry, text: Texts) -> str:
    details = entry.details
    what = text.kind(entry.kind)
    extra = ""
    if entry.kind == ChangeKind.ESCALATED:
        what = f"{what}: {details.get('step')} → {details.get('target')}"
        if details.get("late"):
            extra = text.t("postmortem.late_by", seconds=details.get("late_by_seconds"))
    elif entry.kind == ChangeKind.CHECKLIST:
        mark = "✓" if details.get("done") else "✗"
        what = f"{what} {mark} {label(str(details.get('item')), text.language)}"
    elif entry.kind == ChangeKind.DEDUPLICATED:
        what = text.t("postmortem.repeated", count=details.get("count"))
    elif details.get("note"):
        extra = f": {details['note']}"
    elif details.get("text"):
        extra = f": {details['text']}"
    return f"- {_when(entry.at, '')} — {what}{extra} — _{text.actor(entry.actor)}_"


def _tick_line(item: ItemState, text: Texts) -> str:
    done = item.done
    return (
        f"- [{'x' if done else ' '}] {label(item.checklist, text.language)}: "
        f"{label(item.item, text.language)}"
        + (f" — {text.actor(item.actor)}" if done and item.actor else "")
        + ("" if done else f" ({text.t('postmortem.unticked')})")
    )


def render(
    detail: IncidentDetail,
    fields: dict[str, str],
    checklist: Sequence[ItemState],
    *,
    language: str,
    title: Callable[[str], str] = str,
) -> Postmortem:
    """The Markdown document; pure, so it can be tested as a table of inputs. `title`: the
    incident's title in the document's language (the chat's catalogue: the titles our
    services write)."""
    text = Texts(language)

    def w(key: str, **values: object) -> str:
        return text.t(f"postmortem.{key}", **values)

    not_yet = w("not_yet")
    incident = detail.incident
    missing = [f for f in FIELDS if not fields.get(f)]

    def human(field: str) -> str:
        return fields.get(field) or w("missing", id=incident.id, field=field)

    jobs, traces = related_ids(detail)
    repeats = max(1, incident.occurrence_count)
    missed_deadline = any(e.kind == ChangeKind.DEADLINE_MISSED for e in detail.timeline)
    ack = incident.acknowledged_at or next(
        (e.at for e in detail.timeline if e.kind == ChangeKind.ACKNOWLEDGED), None
    )
    lines = [
        "# " + w("title", id=incident.id, title=title(incident.title)),
        "",
        f"- **{w('severity')}**: {incident.severity.value} "
        f"({text.t(f'severity.meaning.{incident.severity.value}')})",
        f"- **{w('source')}**: {incident.source} · `{incident.dedup_key}`",
        f"- **{w('state')}**: {w(f'state.{incident.state.value}')}",
        "",
        f"**{w('summary')}**: {human('summary')}",
        "",
        f"## {w('time')}",
        "",
        f"- {w('started')}: {_when(incident.first_seen_at, not_yet)}",
        f"- {w('acknowledged')}: {_when(ack, not_yet)}"
        + (f" — {text.actor(incident.acknowledged_by)}" if incident.acknowledged_by else ""),
        f"- {w('resolved')}: {_when(incident.resolved_at, not_yet)}"
        + (f" — {text.actor(incident.resolved_by)}" if incident.resolved_by else ""),
        f"- {w('tta')}: {_span(incident.first_seen_at, ack, not_yet)}",
        f"- {w('ttr')}: {_span(incident.first_seen_at, incident.resolved_at, not_yet)}",
        f"- {w('deadline')}: {_when(incident.response_deadline, '')} "
        f"({w('deadline_missed') if missed_deadline else w('deadline_met')})",
        "",
        f"## {w('impact')}",
        "",
        f"- {w('occurrences')}: {repeats}",
        f"- {w('jobs')}: {', '.join(f'`{j}`' for j in jobs) or w('none')}",
        f"- {w('traces')}: {', '.join(f'`{t}`' for t in traces) or w('none')}",
        f"- {w('impact_people')}: {human('impact')}",
        "",
        f"## {w('cause')}",
        "",
        human("cause"),
        "",
        f"## {w('recovery')}",
        "",
        *[_step_line(e, text) for e in detail.timeline],
        "",
        f"## {w('prevention')}",
        "",
        human("prevention"),
        "",
        f"## {w('checklists')}",
        "",
        *[_tick_line(i, text) for i in checklist],
        "",
    ]
    return Postmortem(incident.id, "\n".join(lines), missing)


class PostmortemService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        incidents: IncidentService,
        checklists: ChecklistService,
        *,
        language: str,
    ) -> None:
        self._db = db
        self._clock = clock
        self._incidents = incidents
        self._checklists = checklists
        self.language = language

    async def fields(self, incident_id: int) -> dict[str, str]:
        async with self._db.read() as session:
            rows = (
                await session.scalars(
                    select(PostmortemField).where(PostmortemField.incident_id == incident_id)
                )
            ).all()
        return {r.field: r.text for r in rows}

    async def build(
        self, incident_id: int, *, language: str | None = None, title: Callable[[str], str] = str
    ) -> Postmortem:
        language = language or self.language
        detail = await self._incidents.get(incident_id)
        state = await self._checklists.state(incident_id)
        return render(
            detail, await self.fields(incident_id), state.items, language=language, title=title
        )

    async def set_field(self, incident_id: int, field: str, text: str, *, actor: str) -> None:
        if field not in FIELDS:
            raise InvalidInput(
                f"unknown post-mortem field {field!r}; use {', '.join(FIELDS)}",
                detail={"field": "field"},
            )
        text = text.strip()
        if not text:
            raise InvalidInput("the text is empty; write what to record", detail={"field": "text"})
        if len(text) > MAX_FIELD:
            raise InvalidInput(
                f"the text is longer than {MAX_FIELD} characters", detail={"field": "text"}
            )

        def fill(session: Session, incident: Incident, now: datetime) -> dict[str, Any]:
            row = session.get(PostmortemField, (incident_id, field))
            if row is None:
                row = PostmortemField(incident_id=incident_id, field=field, text=text)
                session.add(row)
            row.text, row.at, row.actor = text, now, actor
            return {"field": field, "text": text[:500]}

        await self._incidents.transition(incident_id, ChangeKind.POSTMORTEM, actor, fill)
