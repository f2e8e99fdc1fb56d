"""Bad input found by the fuzzers: each gets its clear 400, never a 500 (docs/reliability.md)."""

from __future__ import annotations

import pytest

from tests.conftest import Client, admin_headers, intake_headers

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
