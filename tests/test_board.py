import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from services.board import BOARD_JOB
from services.container import Services
from services.errors import InvalidInput
from services.incident_types import AlertIn
from services.logs import secret_values
from services.main import background_contexts, open_services
from services.severity import Severity
from services.web.app import create_app
from services.web.board import COOKIE, session_value
from tests.conftest import Client, admin_headers, intake_headers, make_settings
from tests.waiting import until

NASTY = "<b>x</b> & <script>alert(1)</script>"
BOARD_TOKEN = "board-test-token-8910"
STREAM = f"/api/generation/jobs/{BOARD_JOB}/events"


async def alert(client: Client, severity: str, title: str, **extra: Any) -> int:
    body = {"severity": severity, "title": title, **extra}
    resp = await client.post("/api/alerts", json=body, headers=intake_headers())
    assert resp.status == 202, await resp.text()
    return int((await resp.json())["incidents"][0]["id"])


async def ack(client: Client, incident_id: int, actor: str) -> None:
    resp = await client.post(
        f"/api/incidents/{incident_id}/ack", json={"actor": actor}, headers=admin_headers()
    )
    assert resp.status == 200, await resp.text()


async def test_board_lists_open_incidents_by_severity_escaped(
    client: Client, services: Services
) -> None:
    p2 = await alert(client, "P2", "Stats collector stale", source="stats")
    p0 = await alert(client, "P0", NASTY, source="<src>")
    done = await alert(client, "P1", "Already fixed")
    resp = await client.post(f"/api/incidents/{done}/resolve", headers=admin_headers())
    assert resp.status == 200
    await ack(client, p2, "<i>alice</i>")

    resp = await client.get("/")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    # No inline script or style runs: only the board's own files.
    assert "script-src 'self'; style-src 'self'" in resp.headers["Content-Security-Policy"]
    html = await resp.text()
    assert '<script src="static/board.js"></script>' in html
    for name, kind in [("board.js", "text/javascript"), ("board.css", "text/css")]:
        asset = await client.get(f"/static/{name}")
        assert asset.status == 200 and asset.content_type == kind
        assert len(await asset.read()) > 1000
    missing = await client.get("/static/other.js")
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"
    # Alert content stays data: nothing of it becomes markup, and it decodes exactly.
    assert "<script>alert(1)" not in html and "<b>x" not in html and "<src>" not in html
    data = page_data(html)
    assert data["stream"] == f"api/generation/jobs/{BOARD_JOB}/events"
    assert data["meanings"]["P0"] == "service down"
    shown = data["snapshot"]["incidents"]
    # Most urgent first, each with its state; resolved ones are not on the board.
    assert [(i["id"], i["state"]) for i in shown] == [(p0, "triggered"), (p2, "acknowledged")]
    assert shown[0]["title"] == NASTY and shown[0]["source"] == "<src>"
    assert shown[1]["acknowledged_by"] == "api:<i>alice</i>"
    assert "Already fixed" not in html
    # The next escalation step of the unacknowledged incident, and none for the acked one.
    step = await services.escalation.next_step_for(p0)
    assert step is not None
    assert shown[0]["next_step"]["message"] == step.message
    assert shown[1]["next_step"] is None
    # Component health and the SSE figure.
    components = data["snapshot"]["health"]["components"]
    assert "database" in [c["name"] for c in components]
    assert "board_viewers" in data["snapshot"]["sse"]


def page_data(html: str) -> dict[str, Any]:
    """The board page's first snapshot: the one JSON block board.js renders."""
    match = re.search(r'<script id="board-data" type="application/json">(.*?)</script>', html)
    assert match is not None, html
    return dict(json.loads(match.group(1)))


async def test_empty_board(client: Client) -> None:
    html = await (await client.get("/")).text()
    assert page_data(html)["snapshot"]["incidents"] == []


async def test_snapshot_json_and_permanent_job(services: Services) -> None:
    board = services.board
    alert_in = AlertIn(severity=Severity.P1, title=NASTY, dedup_key="k1")
    view = (await services.incidents.trigger(alert_in)).incident
    published = await board.publish()
    assert published is not None
    job = services.sse.jobs[BOARD_JOB]
    data = json.loads(job.history[-1].data)
    assert data["seq"] == published.seq
    assert data["incidents"][0]["title"] == NASTY
    assert data["incidents"][0]["id"] == view.id
    assert data["incidents"][0]["next_step"]["due_at"]
    assert data["open_counts"]["P1"] == 1
    assert {"connections", "max_connections", "board_viewers"} <= set(data["sse"])
    # Unchanged content is not published again by the periodic round.
    assert await board.publish(only_if_changed=True) is None
    # Always known, never final, never forgotten.
    with pytest.raises(InvalidInput):
        services.sse.publish(BOARD_JOB, "board", {}, final=True)
    services.sse.expire(time.monotonic() + 10 * services.sse.config.history_seconds)
    assert BOARD_JOB in services.sse.jobs
    later = await board.snapshot()
    assert later.seq > published.seq


async def test_incident_change_publishes_on_the_board_job(
    client: Client, services: Services
) -> None:
    job = services.sse.jobs[BOARD_JOB]
    before = job.last_id
    incident_id = await alert(client, "P1", "Publish me")

    def published() -> bool:
        if job.last_id <= before:
            return False
        data = json.loads(job.history[-1].data)
        return any(i["id"] == incident_id for i in data["incidents"])

    await until(published, what="a board event with the new incident")


async def test_nobody_may_publish_to_the_board_job_over_http(client: Client) -> None:
    resp = await client.post(
        STREAM, json={"type": "board", "data": {"incidents": []}}, headers=intake_headers()
    )
    assert resp.status == 403
    assert (await resp.json())["error"] == "reserved_job"


async def test_board_stream_open_without_board_token(client: Client) -> None:
    resp = await client.get(STREAM, headers={"Accept": "text/event-stream"})
    assert resp.status == 200
    resp.close()


async def test_an_open_board_does_not_hide_the_runbook_s_alert(
    client: Client, services: Services
) -> None:
    """SSENoActiveConnections reads sse_connections_open: the board's own streams have their
    own gauge, and every series the rules read exists at 0 before the first event."""

    def value(metrics: str, series: str) -> float:
        [line] = [m for m in metrics.splitlines() if m.startswith(series + " ")]
        return float(line.rsplit(" ", 1)[1])

    before = await (await client.get("/metrics")).text()
    assert value(before, 'sse_message_sent_total{kind="event"}') == 0
    assert value(before, "sse_reconnect_count") == 0
    board = await client.get(STREAM, headers={"Accept": "text/event-stream"})
    assert board.status == 200
    await until(lambda: len(services.sse.connections) == 1, 10, "the board's stream")
    metrics = await (await client.get("/metrics")).text()
    assert value(metrics, "sse_connections_open") == 0
    assert value(metrics, "sunflow_board_streams_open") == 1
    job = await client.get(
        "/api/generation/jobs/test-job-id/events", headers={"Accept": "text/event-stream"}
    )
    await until(lambda: len(services.sse.connections) == 2, 10, "the job's stream")
    metrics = await (await client.get("/metrics")).text()
    assert value(metrics, "sse_connections_open") == 1
    assert value(metrics, "sunflow_board_streams_open") == 1
    board.close()
    job.close()


@pytest.fixture
async def guarded(migrated_url: str) -> AsyncIterator[Client]:
    settings = make_settings(migrated_url, board_token=BOARD_TOKEN)
    async with open_services(settings) as services:
        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        async with TestClient(TestServer(app)) as test_client:
            yield test_client


async def test_board_token_refused(guarded: Client) -> None:
    await alert(guarded, "P0", "Secret outage")
    for url in ("/", "/?token=wrong"):
        resp = await guarded.get(url, allow_redirects=False)
        assert resp.status == 401
        html = await resp.text()
        assert 'name="token"' in html
        assert "Secret outage" not in html
        assert COOKIE not in resp.cookies
    resp = await guarded.post("/", data={"token": "wrong"}, allow_redirects=False)
    assert resp.status == 401
    resp = await guarded.get("/", headers={"Cookie": f"{COOKIE}=forged"})
    assert resp.status == 401
    resp = await guarded.get(STREAM, headers={"Accept": "text/event-stream"})
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"
    # Other jobs' streams are not affected by BOARD_TOKEN.
    assert (await guarded.get("/api/generation/jobs/test-job-id/events")).status == 200


@pytest.mark.parametrize("how", ["query", "form"])
async def test_board_token_accepted(guarded: Client, how: str) -> None:
    await alert(guarded, "P0", "Secret outage")
    if how == "query":
        resp = await guarded.get(f"/?token={BOARD_TOKEN}", allow_redirects=False)
    else:
        resp = await guarded.post("/", data={"token": BOARD_TOKEN}, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "./"
    cookie = resp.cookies[COOKIE]
    assert cookie.value == session_value(SecretStr(BOARD_TOKEN))
    assert BOARD_TOKEN not in cookie.value
    assert cookie["httponly"]
    headers = {"Cookie": f"{COOKIE}={cookie.value}"}
    resp = await guarded.get("/", headers=headers)
    assert resp.status == 200
    assert "Secret outage" in await resp.text()
    resp = await guarded.get(STREAM, headers={**headers, "Accept": "text/event-stream"})
    assert resp.status == 200
    resp.close()
    resp = await guarded.get(STREAM, headers={"Authorization": f"Bearer {BOARD_TOKEN}"})
    assert resp.status == 200
    resp.close()


def test_board_token_setting_is_secret_and_empty_is_unset() -> None:
    settings = make_settings("sqlite+aiosqlite://", board_token=BOARD_TOKEN)
    assert BOARD_TOKEN in secret_values(settings)
    assert BOARD_TOKEN not in repr(settings)
    assert make_settings("sqlite+aiosqlite://", board_token="  ").board_token is None
