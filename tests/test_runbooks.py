"""services.runbooks, and how a card shows it: the alert's runbook as a button, our own
runbook and the chat commands that act on it (SSE: /sse_reset)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.locales import Catalogue
from bot.render import TelegramRenderer
from services.incident_types import IncidentView
from services.intake import parse_alertmanager
from services.main import open_services
from services.models import IncidentState
from services.notify.outbox import Op
from services.runbooks import SSE_SECTION, Runbook, runbook_for
from services.severity import Severity
from tests.conftest import make_settings
from tests.fakes.telegram import check_html

NOW = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
BASE = "https://git.example/sunflow-ops/blob/main/"


@pytest.mark.parametrize(
    ("labels", "key", "base", "expected"),
    [
        ({}, "api:x", None, None),
        (
            {"runbook_url": "https://wiki.example/sse"},
            "am:1",
            None,
            Runbook(url="https://wiki.example/sse"),
        ),
        ({"runbook": "docs/sse.md"}, "am:1", None, Runbook(path="docs/sse.md")),
        (
            {"runbook": "docs/sse.md"},
            "am:1",
            BASE,
            Runbook(url=BASE + "docs/sse.md", path="docs/sse.md"),
        ),
        (
            {"alertname": "SSEConnectionDropRate"},
            "am:2",
            None,
            Runbook(path=SSE_SECTION, commands=["/sse_reset"]),
        ),
        (
            {"alertname": "SSENoActiveConnections", "runbook": "docs/sse.md"},
            "am:3",
            None,
            Runbook(path="docs/sse.md", commands=["/sse_reset"]),
        ),
        (
            {"component": "sse"},
            "health:sse",
            None,
            Runbook(path=SSE_SECTION, commands=["/sse_reset"]),
        ),
        (
            {"component": "fal"},
            "fal:generate",
            None,
            Runbook(
                path="docs/operations.md#scenario-3-image-generation-failure-flux2",
                commands=["/retry", "/traces"],
            ),
        ),
    ],
)
def test_runbook_for(
    labels: dict[str, Any], key: str, base: str | None, expected: Runbook | None
) -> None:
    assert runbook_for(labels=labels, dedup_key=key, base_url=base) == expected


def test_alertmanagers_runbook_annotation_is_kept() -> None:
    batch = parse_alertmanager(
        {
            "version": "4",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "SSEConnectionDropRate", "severity": "warning"},
                    "annotations": {
                        "summary": "SSE reconnects",
                        "runbook_url": "https://wiki.example/sse#reset",
                    },
                }
            ],
        }
    )
    [alert] = batch.firing
    assert alert.labels["runbook_url"] == "https://wiki.example/sse#reset"


def incident(**overrides: Any) -> IncidentView:
    values: dict[str, Any] = {
        "id": 3,
        "dedup_key": "am:1",
        "severity": Severity.P1,
        "title": "SSE reconnects",
        "description": "",
        "source": "alertmanager",
        "labels": {"alertname": "SSEConnectionDropRate", "runbook_url": "https://wiki.example/s"},
        "state": IncidentState.TRIGGERED,
        "occurrence_count": 1,
        "first_seen_at": NOW,
        "last_seen_at": NOW,
        "response_deadline": NOW + timedelta(hours=1),
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
    }
    values.update(overrides)
    return IncidentView(**values)


@pytest.mark.parametrize("language", ["en", "ko"])
def test_an_sse_card_has_the_runbook_button_and_sse_reset(language: str) -> None:
    view = incident()
    runbook = runbook_for(labels=view.labels, dedup_key=view.dedup_key)
    assert runbook is not None
    payload: dict[str, Any] = {"last": None, "runbook": runbook.to_json(), "retries": []}
    rendered = TelegramRenderer(Catalogue(language)).render(Op.CARD, payload, view, NOW)
    assert check_html(rendered.html) is None
    assert "🛠 /sse_reset" in rendered.html
    assert rendered.reply_markup is not None
    urls = [b.get("url") for row in rendered.reply_markup["inline_keyboard"] for b in row]
    assert "https://wiki.example/s" in urls


def job(state: str, attempts: int, due: datetime | None) -> dict[str, Any]:
    return {
        "id": 4,
        "kind": "publish",
        "topic": "lily",
        "state": state,
        "attempts": attempts,
        "max_attempts": 3,
        "left": 3 - attempts if due else 0,
        "next_retry_at": due.isoformat() if due else None,
        "updated_at": (NOW + timedelta(minutes=20)).isoformat(),
    }


@pytest.mark.parametrize(
    ("retry", "english", "korean"),
    [
        (
            job("failed", 1, NOW + timedelta(minutes=20)),
            "🔁 Retry 2/3 of job #4 (publish lily) at 09:20 UTC, in 20m · 2 left",
            "🔁 작업 #4 (publish lily) 재시도 2/3: 09:20 UTC (20m 후) · 2회 남음",
        ),
        (job("running", 2, None), "🔁 Job #4 (publish lily): retry 3/3 running", "실행 중"),
        (
            job("exhausted", 3, None),
            "⛔ Job #4 (publish lily): automatic retries done, 3/3 failed — /retry 4",
            "자동 재시도 완료, 3/3 실패",
        ),
        (
            job("exhausted", 0, None),
            "⛔ Job #4 (publish lily): not retried automatically — fix it, then /retry 4",
            "자동 재시도 안 함",
        ),
        (job("succeeded", 2, None), "✅ Job #4 (publish lily) succeeded at 09:20 UTC", "성공"),
    ],
)
def test_the_card_shows_the_retry_plan(retry: dict[str, Any], english: str, korean: str) -> None:
    view = incident(labels={}, dedup_key="fal:generate")
    for language, needle in (("en", english), ("ko", korean)):
        renderer = TelegramRenderer(Catalogue(language))
        text = renderer.render(Op.CARD, {"retries": [retry]}, view, NOW).html
        assert needle in text
        assert check_html(text) is None


async def test_card_facts_carry_the_jobs_and_the_runbook(
    migrated_url: str, tmp_path: Path
) -> None:
    settings = make_settings(migrated_url, runbook_base_url=BASE)
    async with open_services(settings) as services:
        job = await services.ops.retry.record_failure("publish", "lily", error="500")
        assert job.incident_id is not None
        facts = await services.card_facts(job.incident_id)
        [shown] = facts["retries"]
        assert shown["id"] == job.id and shown["left"] == 3
        assert shown["plan"].startswith(f"job #{job.id} publish lily: automatic retries 0/3")
        assert facts["runbook"] is None  # a job's own incident: no runbook of ours
