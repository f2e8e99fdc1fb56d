import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.clock import FrozenClock
from services.container import Services
from services.errors import InvalidInput
from services.incident_types import AlertIn
from services.main import open_services
from services.severity import Severity
from tests.conftest import Client, make_settings
from tests.test_bot_language import HANGUL, leaks
from tests.test_locales import english

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


@pytest.fixture
async def story(migrated_url: str) -> int:
    """An incident lived through: repeats, ack, a missed deadline, ticks, resolve, notes."""
    clock = FrozenClock(T0)
    async with open_services(make_settings(migrated_url), clock=clock) as services:
        alert = AlertIn(
            Severity.P1,
            "FLUX.2 image generation failing",
            "fal:flux",
            "fal",
            labels={"job_id": "gen-42", "trace_id": "SF-20261121-030000-ab12"},
        )
        incident_id = (await services.incidents.trigger(alert)).incident.id
        clock.advance(minutes=5)
        await services.incidents.trigger(alert)
        clock.advance(minutes=70)
        await services.escalation.fire_due(services.incidents)
        await services.incidents.acknowledge(incident_id, actor="tg:1 (Kim)", note="on it")
        await services.checklists.set(
            incident_id, "during", "health_check", done=True, actor="tg:1 (Kim)"
        )
        clock.advance(minutes=20)
        await services.incidents.resolve(incident_id, actor="tg:2 (Lee)", note="fal.ai recovered")
        await services.postmortems.set_field(
            incident_id, "cause", "fal.ai outage (HTTP 503)", actor="tg:2 (Lee)"
        )
        return incident_id


async def test_postmortem_sections_from_the_timeline(migrated_url: str, story: int) -> None:
    async with open_services(make_settings(migrated_url)) as services:
        document = await services.postmortems.build(story, language="en")
    md = document.markdown
    for heading in (
        "1. Incident time",
        "2. Impact",
        "3. Root cause",
        "4. Recovery steps",
        "5. Prevention",
    ):
        assert f"## {heading}" in md
    assert "Started (first alert): 2026-11-21 03:00:00 UTC" in md
    assert "Acknowledged: 2026-11-21 04:15:00 UTC — tg:1 (Kim)" in md
    assert "Time to acknowledge: 1h15m" in md
    assert "Time to resolve: 1h35m" in md
    assert "(missed)" in md
    assert "Alert occurrences: 2" in md
    assert "`gen-42`" in md
    assert "`SF-20261121-030000-ab12`" in md
    assert "fal.ai outage (HTTP 503)" in md
    assert "acknowledged: on it — _tg:1 (Kim)_" in md
    assert "resolved: fal.ai recovered — _tg:2 (Lee)_" in md
    assert "escalated: pd → pd" in md
    assert "- [x] During the incident: Run the health check — tg:1 (Kim)" in md
    assert "- [ ] On recovery: Documented (not done)" in md
    assert document.missing_fields == ["summary", "impact", "prevention"]
    assert "/postmortem " in md  # how to fill in what is missing


async def test_korean(migrated_url: str, story: int) -> None:
    async with open_services(make_settings(migrated_url)) as services:
        document = await services.postmortems.build(story, language="ko")
        english_doc = await services.postmortems.build(story, language="en")
    assert "## 3. 근본 원인" in document.markdown
    assert "헬스체크 실행" in document.markdown
    # One language: the incident's own content and the people's words stay as written, every
    # other word is Korean (and the English document holds no Korean).
    content = ["FLUX.2 image generation failing", "fal:flux", "fal", "gen-42", "on it"]
    content += ["SF-20261121-030000-ab12", "tg:1 (Kim)", "tg:2 (Lee)", "fal.ai recovered"]
    content += ["fal.ai outage (HTTP 503)", "system", "escalation", "team", "pd", "manual"]
    content = sorted([*content, "retries_done"], key=len, reverse=True)
    assert leaks([document.markdown], content, english) == {}
    assert leaks([english_doc.markdown], content, lambda p: set(HANGUL.findall(p))) == {}


async def test_field_errors(services: Services) -> None:
    incident_id = (await services.incidents.trigger(AlertIn(Severity.P3, "t", "k"))).incident.id
    with pytest.raises(InvalidInput, match="unknown post-mortem field 'why'"):
        await services.postmortems.set_field(incident_id, "why", "x", actor="a")
    with pytest.raises(InvalidInput, match="empty"):
        await services.postmortems.set_field(incident_id, "cause", "  ", actor="a")


async def test_http_postmortem(client: Client, services: Services) -> None:
    incident_id = (
        await services.incidents.trigger(AlertIn(Severity.P2, "stats stale", "s"))
    ).incident.id
    resp = await client.get(f"/api/incidents/{incident_id}/postmortem?lang=en")
    assert resp.status == 200
    assert resp.content_type == "text/markdown"
    assert "# Post-mortem: incident #" in await resp.text()
    assert (await client.get("/api/incidents/999/postmortem")).status == 404
    assert (await client.get(f"/api/incidents/{incident_id}/postmortem?lang=fr")).status == 400


async def test_cli_postmortem(tmp_path: Path, migrated_url: str, story: int) -> None:
    env = {**os.environ, "DATABASE_URL": migrated_url}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "incident", "postmortem", str(story),
         "--lang", "en", "--set", "prevention", "Pre-generate images a day ahead"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Pre-generate images a day ahead" in proc.stdout
    assert timedelta(0) == timedelta(0)
