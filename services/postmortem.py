"""Post-mortems: the runbooks' sections, filled from an incident's data and its people."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.checklists import ChecklistService, label
from services.clock import Clock
from services.db import Database
from services.durations import format_duration
from services.errors import InvalidInput
from services.incident_types import ChangeKind, IncidentDetail, TimelineEntry
from services.incidents import IncidentService
from services.models import Incident, PostmortemField

# What only people know; everything else comes from the data.
FIELDS = ("summary", "impact", "cause", "prevention")
MAX_FIELD = 4000

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Post-mortem: incident #{id} — {title}",
        "severity": "Severity",
        "source": "Source",
        "state": "State",
        "summary": "Summary",
        "time": "1. Incident time",
        "started": "Started (first alert)",
        "acknowledged": "Acknowledged",
        "resolved": "Resolved",
        "tta": "Time to acknowledge",
        "ttr": "Time to resolve",
        "deadline": "Response deadline",
        "deadline_missed": "missed",
        "deadline_met": "met",
        "impact": "2. Impact",
        "occurrences": "Alert occurrences",
        "jobs": "Affected jobs",
        "traces": "Traces",
        "impact_people": "Users and work affected",
        "cause": "3. Root cause",
        "recovery": "4. Recovery steps",
        "prevention": "5. Prevention",
        "checklists": "Checklists",
        "unticked": "not done",
        "missing": "_(to be filled in: reply `/postmortem {id} {field} TEXT`)_",
        "none": "none recorded",
        "not_yet": "not yet",
        "meaning.P0": "service down",
        "meaning.P1": "major feature failure",
        "meaning.P2": "partial failure",
        "meaning.P3": "minor",
        "state.triggered": "triggered",
        "state.acknowledged": "acknowledged",
        "state.resolved": "resolved",
        "kind.triggered": "triggered",
        "kind.deduplicated": "seen again",
        "kind.acknowledged": "acknowledged",
        "kind.resolved": "resolved",
        "kind.reopened": "reopened",
        "kind.annotated": "note",
        "kind.snoozed": "snoozed",
        "kind.unacknowledged": "acknowledgement ran out",
        "kind.escalated": "escalated",
        "kind.deadline_missed": "deadline missed",
        "kind.checklist": "checklist",
        "kind.postmortem": "post-mortem",
        "late_by": " (late by {seconds} s)",
        "repeated": "seen again (count {count})",
    },
    "ko": {
        "title": "사후 분석: 장애 #{id} — {title}",
        "severity": "등급",
        "source": "출처",
        "state": "상태",
        "summary": "요약",
        "time": "1. 장애 시간",
        "started": "시작 (첫 알림)",
        "acknowledged": "확인",
        "resolved": "복구 완료",
        "tta": "확인까지 걸린 시간",
        "ttr": "복구까지 걸린 시간",
        "deadline": "대응 기한",
        "deadline_missed": "초과",
        "deadline_met": "준수",
        "impact": "2. 영향 범위",
        "occurrences": "알림 발생 횟수",
        "jobs": "영향받은 작업",
        "traces": "트레이스",
        "impact_people": "영향받은 사용자와 작업",
        "cause": "3. 근본 원인",
        "recovery": "4. 복구 조치",
        "prevention": "5. 재발 방지",
        "checklists": "체크리스트",
        "unticked": "미완료",
        "missing": "_(작성 필요: `/postmortem {id} {field} 내용` 으로 답장)_",
        "none": "기록 없음",
        "not_yet": "아직",
        "meaning.P0": "서비스 중단",
        "meaning.P1": "주요 기능 장애",
        "meaning.P2": "부분 장애",
        "meaning.P3": "경미",
        "state.triggered": "발생",
        "state.acknowledged": "확인됨",
        "state.resolved": "해결됨",
        "kind.triggered": "발생",
        "kind.deduplicated": "재발생",
        "kind.acknowledged": "확인",
        "kind.resolved": "해결",
        "kind.reopened": "재개",
        "kind.annotated": "메모",
        "kind.snoozed": "보류",
        "kind.unacknowledged": "확인 기간 만료",
        "kind.escalated": "에스컬레이션",
        "kind.deadline_missed": "응답 기한 초과",
        "kind.checklist": "체크리스트",
        "kind.postmortem": "사후 분석",
        "late_by": " ({seconds}초 지연)",
        "repeated": "재발생 ({count}회)",
    },
}

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


def _step_line(entry: TimelineEntry, text: dict[str, str], language: str) -> str:
    details = entry.details
    what = text.get(f"kind.{entry.kind}", entry.kind)
    extra = ""
    if entry.kind == ChangeKind.ESCALATED:
        what = f"{what}: {details.get('step')} → {details.get('target')}"
        if details.get("late"):
            extra = text["late_by"].format(seconds=details.get("late_by_seconds"))
    elif entry.kind == ChangeKind.CHECKLIST:
        mark = "✓" if details.get("done") else "✗"
        what = f"{what} {mark} {label(str(details.get('item')), language)}"
    elif entry.kind == ChangeKind.DEDUPLICATED:
        what = text["repeated"].format(count=details.get("count"))
    elif details.get("note"):
        extra = f": {details['note']}"
    elif details.get("text"):
        extra = f": {details['text']}"
    return f"- {_when(entry.at, '')} — {what}{extra} — _{entry.actor}_"


def render(
    detail: IncidentDetail,
    fields: dict[str, str],
    checklist_lines: list[str],
    *,
    language: str,
    title: Callable[[str], str] = str,
) -> Postmortem:
    """The Markdown document; pure, so it can be tested as a table of inputs. `title`: the
    incident's title in the document's language (the chat's catalogue: the titles our
    services write)."""
    text = TEXT.get(language, TEXT["en"])
    incident = detail.incident
    missing = [f for f in FIELDS if not fields.get(f)]

    def human(field: str) -> str:
        return fields.get(field) or text["missing"].format(id=incident.id, field=field)

    jobs, traces = related_ids(detail)
    repeats = max(1, incident.occurrence_count)
    missed_deadline = any(e.kind == ChangeKind.DEADLINE_MISSED for e in detail.timeline)
    ack = incident.acknowledged_at or next(
        (e.at for e in detail.timeline if e.kind == ChangeKind.ACKNOWLEDGED), None
    )
    lines = [
        "# " + text["title"].format(id=incident.id, title=title(incident.title)),
        "",
        f"- **{text['severity']}**: {incident.severity.value} "
        f"({text[f'meaning.{incident.severity.value}']})",
        f"- **{text['source']}**: {incident.source} · `{incident.dedup_key}`",
        f"- **{text['state']}**: {text[f'state.{incident.state.value}']}",
        "",
        f"**{text['summary']}**: {human('summary')}",
        "",
        f"## {text['time']}",
        "",
        f"- {text['started']}: {_when(incident.first_seen_at, text['not_yet'])}",
        f"- {text['acknowledged']}: {_when(ack, text['not_yet'])}"
        + (f" — {incident.acknowledged_by}" if incident.acknowledged_by else ""),
        f"- {text['resolved']}: {_when(incident.resolved_at, text['not_yet'])}"
        + (f" — {incident.resolved_by}" if incident.resolved_by else ""),
        f"- {text['tta']}: {_span(incident.first_seen_at, ack, text['not_yet'])}",
        f"- {text['ttr']}: {_span(incident.first_seen_at, incident.resolved_at, text['not_yet'])}",
        f"- {text['deadline']}: {_when(incident.response_deadline, '')} "
        f"({text['deadline_missed'] if missed_deadline else text['deadline_met']})",
        "",
        f"## {text['impact']}",
        "",
        f"- {text['occurrences']}: {repeats}",
        f"- {text['jobs']}: {', '.join(f'`{j}`' for j in jobs) or text['none']}",
        f"- {text['traces']}: {', '.join(f'`{t}`' for t in traces) or text['none']}",
        f"- {text['impact_people']}: {human('impact')}",
        "",
        f"## {text['cause']}",
        "",
        human("cause"),
        "",
        f"## {text['recovery']}",
        "",
        *[_step_line(e, text, language) for e in detail.timeline],
        "",
        f"## {text['prevention']}",
        "",
        human("prevention"),
        "",
        f"## {text['checklists']}",
        "",
        *checklist_lines,
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
        text = TEXT.get(language, TEXT["en"])
        checklist_lines = [
            f"- [{'x' if i.done else ' '}] {label(i.checklist, language)}: "
            f"{label(i.item, language)}"
            + (f" — {i.actor}" if i.done and i.actor else "")
            + ("" if i.done else f" ({text['unticked']})")
            for i in state.items
        ]
        return render(
            detail, await self.fields(incident_id), checklist_lines, language=language, title=title
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
