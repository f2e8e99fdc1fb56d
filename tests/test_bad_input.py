"""Bad input found by the fuzzers: each gets its clear 400, never a 500 (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.config import Settings
from services.container import Services
from services.web.app import create_app
from tests.conftest import ADMIN, INTAKE, Client, admin_headers, intake_headers

# Unicode digits pass str.isdigit() but int() refuses "²"; ids past PostgreSQL's int4 and
# numbers longer than int() reads used to reach the database or int() and answer 500.
BAD_NUMBERS = ["%C2%B2", "%D9%A3", "2147483648", "99999999999999999999", "1" * 5000]


@pytest.mark.parametrize("number", BAD_NUMBERS)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/incidents/{n}"),
        ("GET", "/api/incidents/{n}/postmortem"),
        ("POST", "/api/incidents/{n}/ack"),
        ("GET", "/api/incidents?limit={n}"),
        ("GET", "/api/traces?limit={n}"),
        ("POST", "/api/jobs/{n}/retry"),
    ],
)
async def test_numbers_that_are_not_ids_are_400(
    client: Client, method: str, path: str, number: str
) -> None:
    response = await client.request(method, path.format(n=number), headers=admin_headers())
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["error"] == "invalid_input" and body["detail"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ('{"severity": "P1", "title": "a\\u0000b"}', "NUL"),
        ('{"severity": "P1", "title": "x", "labels": {"k\\u0000": "v"}}', "NUL"),
        ('{"severity": "P1", "title": "\\ud800"}', "surrogate"),
    ],
)
async def test_text_no_database_can_store_is_400(client: Client, raw: str, problem: str) -> None:
    for path in ("/api/alerts",):
        response = await client.post(
            path, data=raw, headers={**intake_headers(), "Content-Type": "application/json"}
        )
        assert response.status == 400
        body = await response.json()
        assert body["error"] == "invalid_json" and problem in body["detail"]["message"]
    # A real surrogate pair (an emoji) and an escaped backslash before u0000 are fine.
    fine = '{"severity": "P3", "title": "\\ud83d\\ude00 \\\\u0000"}'
    response = await client.post(
        "/api/alerts", data=fine, headers={**intake_headers(), "Content-Type": "application/json"}
    )
    assert response.status in {200, 201, 202}, await response.text()


async def test_alertmanager_nul_is_400(client: Client) -> None:
    raw = '{"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "\\u0000x"}}]}'
    response = await client.post(
        "/api/alerts/alertmanager",
        data=raw,
        headers={**intake_headers(), "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert "NUL" in (await response.json())["detail"]["message"]


async def test_a_malformed_query_id_is_refused_even_when_the_header_wins(client: Client) -> None:
    response = await client.get(
        "/api/generation/jobs/job-1/events?last_event_id=x",
        headers={"Last-Event-ID": "3", "Accept": "text/event-stream"},
    )
    assert response.status == 400
    assert (await response.json())["detail"]["field"] == "Last-Event-ID"


# -- every JSON body reader: any parse failure is 400 invalid_json with the reason ---------

# (name, raw body, words the reason holds). Each used to escape as a 500 with a traceback:
# orjson stops at 1,024 levels and the standard library then raised RecursionError; int()
# refuses more than 4,300 digits with a ValueError.
HOSTILE: list[tuple[str, bytes, str]] = [
    ("past MAX_DEPTH", b"[" * 513 + b"]" * 513, "nested more than 512"),
    ("deep list", b"[" * 1025 + b"]" * 1025, "nested"),
    ("very deep list", b"[" * 200_000 + b"]" * 200_000, "nested"),
    ("deep object", b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested"),
    ("deep with a long number", b"[" * 3000 + b"12345678901234567890" + b"]" * 3000, "nested"),
    ("huge integer", b'{"title": "x", "labels": {"n": ' + b"7" * 4301 + b"}}", "digits"),
    ("huge negative", b'{"data": -' + b"9" * 50_000 + b"}", "digits"),
    ("not UTF-8", b'{"title": "caf\xe9"}', "UTF-8"),
    ("half of UTF-16", '{"title": "x"}'.encode("utf-16-le")[:-1], "UTF-8"),
    ("a NUL byte", b'{"title": "a\x00b"}', "line 1"),
    ("truncated", b'{"title": "x", "labels": {', "line 1"),
]

JSON_ROUTES = [
    ("/api/alerts", INTAKE),
    ("/api/alerts/alertmanager", INTAKE),
    ("/api/generation/jobs/job-1/events", INTAKE),
    ("/api/admin/token/expiry", ADMIN),
    ("/api/incidents/1/ack", ADMIN),
    ("/api/incidents/1/resolve", ADMIN),
]


@pytest.mark.parametrize(("name", "raw", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_every_json_route_answers_any_malformed_body_with_400(
    client: Client, name: str, raw: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    for path, token in JSON_ROUTES:
        response = await client.post(
            path,
            data=raw,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert response.status == 400, (path, name, await response.text())
        body = await response.json()
        assert body["error"] == "invalid_json", (path, name)
        assert reason in body["detail"]["message"], (path, name, body)
    # PagerDuty's route answers in PagerDuty's shape, with the same reason.
    response = await client.post("/v2/enqueue", data=raw)
    assert response.status == 400
    body = await response.json()
    assert body["status"] == "invalid event" and reason in body["errors"][0], body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_telegram_webhook_answers_malformed_updates_with_400(
    settings: Settings, services: Services
) -> None:
    settings = settings.model_copy(
        update={"telegram_webhook_url": "https://ops.example.test/telegram/hook"}
    )
    fed: list[dict[str, object]] = []

    async def feed(update: dict[str, object]) -> None:
        fed.append(update)

    services.webhook.open(feed, "s3cret-Token_1")
    secret = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1"}
    async with TestClient(TestServer(create_app(settings, services))) as client:
        for _name, raw, reason in HOSTILE:
            response = await client.post("/telegram/hook", data=raw, headers=secret)
            assert response.status == 400, (_name, await response.text())
            body = await response.json()
            assert body["error"] == "invalid_json" and reason in body["detail"]["message"]
        for update_id in (10**30, -1, 2**63, "7", True, None):
            response = await client.post(
                "/telegram/hook", json={"update_id": update_id}, headers=secret
            )
            assert response.status == 400, update_id
            assert "update_id" in (await response.json())["detail"]
        response = await client.post(
            "/telegram/hook", json={"update_id": 2**63 - 1}, headers=secret
        )
        assert response.status == 200
    assert [u["update_id"] for u in fed] == [2**63 - 1]


async def test_bodies_the_parser_still_reads(client: Client) -> None:
    """Within the limits, deep nesting and long numbers are read as before, and what is read
    is sent on again (the 1,000-level event that used to be read, then failed as a 500)."""
    depth = 511  # the event object is the 512th level
    raw = b'{"type": "progress", "data": ' + b"[" * depth + b'"leaf"' + b"]" * depth + b"}"
    response = await client.post(
        "/api/generation/jobs/job-deep/events",
        data=raw,
        headers={"Authorization": f"Bearer {INTAKE}", "Content-Type": "application/json"},
    )
    assert response.status == 202, await response.text()
    replay = await client.get(
        "/api/generation/jobs/job-deep/events?last_event_id=0",
        headers={"Accept": "text/event-stream"},
    )
    assert replay.status == 200
    seen = b""
    while seen.count(b"[") < depth:  # the stream stays open: read the replayed event only
        seen += await asyncio.wait_for(replay.content.readany(), 5)
    replay.close()
    big = b'{"severity": "P3", "title": "digits", "labels": {"n": ' + b"7" * 4300 + b"}}"
    response = await client.post(
        "/api/alerts",
        data=big,
        headers={"Authorization": f"Bearer {INTAKE}", "Content-Type": "application/json"},
    )
    assert response.status == 202, await response.text()
