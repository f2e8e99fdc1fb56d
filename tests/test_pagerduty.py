"""PagerDuty Events API v2: events parsed as PagerDuty does, answered as PagerDuty answers."""

from __future__ import annotations

from typing import Any

import pytest

from services.pagerduty import InvalidEvent, parse_event
from services.severity import Severity
from tests.conftest import INTAKE, Client

TRIGGER: dict[str, Any] = {
    "routing_key": INTAKE,
    "event_action": "trigger",
    "dedup_key": "disk-db-1",
    "payload": {
        "summary": "Disk 95% full on db-1",
        "source": "db-1.internal",
        "severity": "error",
        "timestamp": "2026-11-21T03:00:00.000+0000",
        "component": "postgres",
        "group": "prod-datapipe",
        "class": "disk",
        "custom_details": {"free": "5%", "mount": "/var/lib/postgresql"},
    },
    "client": "Sample Monitoring Service",
    "client_url": "https://monitoring.example.com",
    "links": [{"href": "https://example.com/runbook", "text": "Runbook"}, {"text": "no href"}],
    "images": [{"src": "https://example.com/graph.png", "alt": "Disk graph"}],
}


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("critical", Severity.P0),
        ("error", Severity.P1),
        ("warning", Severity.P2),
        ("info", Severity.P3),
    ],
)
def test_severities(severity: str, expected: Severity) -> None:
    event = parse_event({**TRIGGER, "payload": {**TRIGGER["payload"], "severity": severity}})
    assert event.alert is not None and event.alert.severity is expected


def test_a_trigger_in_full() -> None:
    event = parse_event(TRIGGER)
    alert = event.alert
    assert alert is not None
    assert (event.action, event.dedup_key, event.routing_key) == ("trigger", "disk-db-1", INTAKE)
    assert alert.title == "Disk 95% full on db-1" and alert.source == "pagerduty"
    assert alert.labels == {
        "source": "db-1.internal",
        "pd_severity": "error",
        "component": "postgres",
        "group": "prod-datapipe",
        "class": "disk",
        "client": "Sample Monitoring Service",
        "client_url": "https://monitoring.example.com",
    }
    assert alert.description.splitlines() == [
        "free: 5%",
        "mount: /var/lib/postgresql",
        "Link: Runbook <https://example.com/runbook>",
        "Image: Disk graph <https://example.com/graph.png>",
        "Detected at: 2026-11-21T03:00:00.000+0000",
    ]


def test_a_trigger_without_a_dedup_key_gets_one() -> None:
    body = {k: v for k, v in TRIGGER.items() if k != "dedup_key"}
    assert parse_event(body, new_key=lambda: "made-up").dedup_key == "made-up"
    first, second = parse_event(body), parse_event(body)
    assert len(first.dedup_key) == 32 and first.dedup_key != second.dedup_key


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ("text", ["the event must be a JSON object"]),
        ({}, ["'routing_key' is missing or blank", "'event_action' is missing or blank"]),
        (
            {"routing_key": "k", "event_action": "explode"},
            ["'event_action' must be one of trigger, acknowledge, resolve"],
        ),
        (
            {"routing_key": "k", "event_action": "resolve"},
            ["'dedup_key' is missing or blank"],
        ),
        (
            {"routing_key": "k", "event_action": "acknowledge", "dedup_key": "x" * 256},
            ["'dedup_key' is longer than 255 characters"],
        ),
        (
            {"routing_key": "k", "event_action": "trigger"},
            ["'payload' is missing or not an object"],
        ),
        (
            {"routing_key": "k", "event_action": "trigger", "payload": {"severity": "high"}},
            [
                "'payload.summary' is missing or blank",
                "'payload.source' is missing or blank",
                "'payload.severity' must be one of critical, error, warning, info",
            ],
        ),
        (
            {**TRIGGER, "links": {"href": "x"}, "images": ["x"], "client": 5},
            [
                "'client' must be a string",
                "'links' must be a list of objects",
                "'images[0]' must be an object",
            ],
        ),
    ],
)
def test_invalid_events_list_every_error(body: object, errors: list[str]) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(body)
    assert info.value.errors == errors


def test_a_long_summary_is_shortened_not_refused() -> None:
    event = parse_event({**TRIGGER, "payload": {**TRIGGER["payload"], "summary": "s" * 1024}})
    assert event.alert is not None and event.alert.title == "s" * 499 + "\u2026"


@pytest.mark.parametrize("path", ["/v2/enqueue", "/api/integrations/pagerduty/v2/enqueue"])
async def test_trigger_acknowledge_resolve(client: Client, path: str) -> None:
    response = await client.post(path, json=TRIGGER)
    assert response.status == 202
    assert await response.json() == {
        "status": "success",
        "message": "Event processed",
        "dedup_key": "disk-db-1",
    }
    [incident] = (await (await client.get("/api/incidents")).json())["incidents"]
    assert (incident["severity"], incident["source"]) == ("P1", "pagerduty")
    again = await client.post(path, json=TRIGGER)
    assert again.status == 202
    ack = {"routing_key": INTAKE, "event_action": "acknowledge", "dedup_key": "disk-db-1"}
    for _ in range(2):  # acknowledging twice is fine, as it is at PagerDuty
        response = await client.post(path, json=ack)
        assert response.status == 202
    detail = await (await client.get(f"/api/incidents/{incident['id']}")).json()
    assert (detail["state"], detail["acknowledged_by"]) == ("acknowledged", "pagerduty")
    assert detail["occurrence_count"] == 2
    resolve = {**ack, "event_action": "resolve"}
    response = await client.post(path, json=resolve)
    assert (response.status, (await response.json())["dedup_key"]) == (202, "disk-db-1")
    detail = await (await client.get(f"/api/incidents/{incident['id']}")).json()
    assert (detail["state"], detail["resolved_by"]) == ("resolved", "pagerduty")
    # Acknowledge or resolve a key with nothing open: dropped, as PagerDuty drops it.
    for action in ("acknowledge", "resolve"):
        response = await client.post(path, json={**ack, "event_action": action})
        assert response.status == 202
    metrics = await (await client.get("/metrics")).text()
    assert 'sunflow_alerts_received_total{outcome="created",source="pagerduty"} 1.0' in metrics


async def test_a_trigger_without_a_key_answers_the_key_it_made(client: Client) -> None:
    body = {k: v for k, v in TRIGGER.items() if k != "dedup_key"}
    response = await client.post("/v2/enqueue", json=body)
    key = (await response.json())["dedup_key"]
    [incident] = (await (await client.get("/api/incidents")).json())["incidents"]
    assert incident["dedup_key"] == key


async def test_errors_are_answered_as_pagerduty_does(client: Client) -> None:
    response = await client.post("/v2/enqueue", json={**TRIGGER, "routing_key": "wrong"})
    assert response.status == 400
    assert await response.json() == {
        "status": "invalid event",
        "message": "Event object is invalid",
        "errors": ["Invalid routing key"],
    }
    response = await client.post("/v2/enqueue", json={"event_action": "trigger"})
    assert response.status == 400
    body = await response.json()
    assert body["status"] == "invalid event" and body["message"] == "Event object is invalid"
    assert "'routing_key' is missing or blank" in body["errors"]
    # The routing key alone is the credential; an Authorization header is not one.
    response = await client.post(
        "/v2/enqueue",
        json={**TRIGGER, "routing_key": ""},
        headers={"Authorization": f"Bearer {INTAKE}"},
    )
    assert response.status == 400
    assert (await (await client.get("/api/incidents")).json())["count"] == 0
