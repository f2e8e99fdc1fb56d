import io
import json
import logging

import pytest

from services.alert_groups import MAX_GROUP_ALERTS
from tests.conftest import ADMIN, Client, intake_headers


async def incident_count(client: Client) -> int:
    resp = await client.get("/api/incidents?state=open,resolved")
    return int((await resp.json())["count"])


async def test_generic_alert_is_committed_and_deduplicated(client: Client) -> None:
    body = {
        "severity": "P1",
        "title": "FLUX.2 generation failing",
        "dedup_key": "fal",
        "source": "fal",
    }
    first = await client.post("/api/alerts", json=body, headers=intake_headers())
    assert first.status == 202
    data = await first.json()
    assert len(data["created"]) == 1
    second = await client.post("/api/alerts", json=body, headers=intake_headers())
    assert (await second.json())["deduplicated"] == data["created"]
    listing = await (await client.get("/api/incidents")).json()
    assert listing["count"] == 1
    assert listing["incidents"][0]["occurrence_count"] == 2


async def test_alertmanager_firing_then_resolved(client: Client) -> None:
    alert = {
        "status": "firing",
        "labels": {"alertname": "SSENoActiveConnections", "severity": "critical"},
        "annotations": {"description": "No active SSE connections but requests are coming in"},
        "fingerprint": "f1",
    }
    payload = {"version": "4", "status": "firing", "receiver": "sunflow", "alerts": [alert]}
    resp = await client.post("/api/alerts/alertmanager", json=payload, headers=intake_headers())
    assert resp.status == 202
    [incident_id] = (await resp.json())["created"]
    again = await client.post("/api/alerts/alertmanager", json=payload, headers=intake_headers())
    assert (await again.json())["deduplicated"] == [incident_id]
    detail = await (await client.get(f"/api/incidents/{incident_id}")).json()
    assert detail["severity"] == "P0"
    assert detail["occurrence_count"] == 2
    assert detail["title"] == "SSENoActiveConnections"
    resolved = {**payload, "status": "resolved", "alerts": [{**alert, "status": "resolved"}]}
    resp = await client.post("/api/alerts/alertmanager", json=resolved, headers=intake_headers())
    assert (await resp.json())["resolved"] == [incident_id]
    detail = await (await client.get(f"/api/incidents/{incident_id}")).json()
    assert detail["state"] == "resolved"
    kinds = [e["kind"] for e in detail["timeline"] if e["kind"] != "escalated"]
    assert kinds == ["triggered", "deduplicated", "resolved"]


async def test_missing_field_is_400_naming_it(client: Client) -> None:
    resp = await client.post("/api/alerts", json={"title": "x"}, headers=intake_headers())
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_input"
    assert body["detail"]["field"] == "severity"
    assert await incident_count(client) == 0


async def test_bad_json_is_400(client: Client) -> None:
    for raw in (b"{not json", b"", "\udcff".encode("utf-8", "surrogatepass")):
        resp = await client.post(
            "/api/alerts",
            data=raw,
            headers={**intake_headers(), "Content-Type": "application/json"},
        )
        assert resp.status == 400, raw
        body = await resp.json()
        assert body["error"] == "invalid_json"
        assert body["detail"]["field"] == "body"


async def test_body_over_a_mebibyte_is_413(client: Client) -> None:
    big = b'{"severity": "P1", "title": "' + b"x" * (1024 * 1024) + b'"}'
    resp = await client.post(
        "/api/alerts",
        data=io.BytesIO(big),
        headers={**intake_headers(), "Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert (await resp.json())["error"] == "body_too_large"
    assert await incident_count(client) == 0


async def test_token_required(client: Client) -> None:
    body = {"severity": "P1", "title": "x"}
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {ADMIN}"},
        {"Authorization": "Basic abc"},
    ):
        for path in ("/api/alerts", "/api/alerts/alertmanager"):
            resp = await client.post(path, json=body, headers=headers)
            assert resp.status == 401, (path, headers)
            data = await resp.json()
            assert data["error"] == "unauthorized"
            assert "INTAKE_TOKEN" in data["detail"]
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert await incident_count(client) == 0


async def test_alertmanager_batch_is_all_or_nothing(client: Client) -> None:
    """A body that is not an Alertmanager notification (a label that is not a string, which
    Alertmanager never sends) is refused whole: 400 naming the field, nothing written."""
    good = {"status": "firing", "labels": {"alertname": "A"}, "fingerprint": "1"}
    bad = {"status": "firing", "labels": {"alertname": 5}, "fingerprint": "2"}
    resp = await client.post(
        "/api/alerts/alertmanager",
        json={"version": "4", "alerts": [good, bad]},
        headers=intake_headers(),
    )
    assert resp.status == 400
    assert (await resp.json())["detail"]["field"] == "alerts[1].labels.alertname"
    assert await incident_count(client) == 0


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    resp = await client.get("/api/nope")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
    resp = await client.get("/api/alerts")
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"


async def test_bodies_only_the_standard_library_reads_are_read_as_before(client: Client) -> None:
    """The parser tries orjson first; what orjson refuses but the standard library reads
    (NaN, an int beyond 64 bits, UTF-16) is still accepted, and read the same way."""
    bodies = {
        "nan": b'{"severity": "P2", "title": "nan", "labels": {"x": NaN}}',
        "big": b'{"severity": "P2", "title": "big", "labels": {"x": 1180591620717411303424}}',
        "utf16": '{"severity": "P2", "title": "utf16", "labels": {"x": "한"}}'.encode("utf-16"),
        "huge": b'{"severity": "P2", "title": "huge", "labels": {"x": 1e400}}',
        "low": b'{"severity": "P2", "title": "low", "labels": {"x": -9223372036854775809}}',
    }
    for name, raw in bodies.items():
        resp = await client.post(
            "/api/alerts",
            data=raw,
            headers={**intake_headers(), "Content-Type": "application/json"},
        )
        assert resp.status == 202, (name, await resp.text())
        incident_id = (await resp.json())["created"][0]
        incident = await (await client.get(f"/api/incidents/{incident_id}")).json()
        assert incident["title"] == name
        expected = {"nan": "nan", "big": str(2**70), "utf16": "한", "huge": "inf"}
        expected["low"] = str(-(2**63) - 1)
        assert incident["labels"]["x"] == expected[name]


def sse_rule_alert(i: int, status: str = "firing") -> dict[str, object]:
    """One alert of the SSE rules' shape, as Alertmanager sends it (about 630 bytes)."""
    return {
        "status": status,
        "labels": {
            "alertname": "SSEConnectionDropRate",
            "severity": "warning",
            "job": "generation-service",
            "instance": f"gen-{i:04d}.internal:8002",
            "job_id": f"job-{i:06d}",
        },
        "annotations": {
            "summary": f"SSE reconnects too high on gen-{i:04d}",
            "description": "sse_reconnect_count rose faster than 10/min for 5 minutes; "
            "clients are dropping their streams. See the SSE runbook, step 1.",
        },
        "startsAt": "2026-11-21T03:00:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local:9090/graph?g0.expr=rate%28sse_reconnect_count"
        "%5B5m%5D%29+%3E+10&g0.tab=1",
        "fingerprint": f"{i:016x}",
    }


async def test_alertmanager_group_over_a_mebibyte_is_taken(client: Client) -> None:
    """2,000 alerts in one group (about 1.3 MB, past the 1 MiB that other bodies get) were
    answered 413 and lost for good; now the whole group is committed, as one incident."""
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "sunflow-ops",
        "groupKey": '{}:{alertname="SSEConnectionDropRate"}',
        "truncatedAlerts": 0,
        "alerts": [sse_rule_alert(i) for i in range(2000)],
    }
    raw = json.dumps(payload).encode()
    assert len(raw) > 1024 * 1024
    resp = await client.post(
        "/api/alerts/alertmanager",
        data=io.BytesIO(raw),
        headers={**intake_headers(), "Content-Type": "application/json"},
    )
    assert resp.status == 202, await resp.text()
    [created] = (await resp.json())["created"]
    incident = await (await client.get(f"/api/incidents/{created}")).json()
    # No summary they share: the alertname; each alert listed by its own summary.
    assert incident["title"] == "SSEConnectionDropRate"
    group = incident["alert_group"]
    assert (group["firing"], group["resolved"]) == (2000, 0)
    assert len(group["alerts"]) == MAX_GROUP_ALERTS and group["omitted"] == 1500
    assert group["alerts"][0]["title"] == "SSE reconnects too high on gen-0000"


async def test_truncated_alerts_in_answer_incident_log_and_metric(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    payload = {
        "version": "4",
        "groupKey": '{}:{alertname="SSEConnectionDropRate"}',
        "truncatedAlerts": 1998,
        "alerts": [sse_rule_alert(1), sse_rule_alert(2)],
    }
    with caplog.at_level(logging.WARNING, logger="services.intake"):
        for _ in range(2):  # Alertmanager re-sends the group every group_interval
            resp = await client.post(
                "/api/alerts/alertmanager", json=payload, headers=intake_headers()
            )
            assert resp.status == 202
            answer = await resp.json()
            assert answer["truncated_alerts"] == 1998
    lines = [r.getMessage() for r in caplog.records if "max_alerts" in r.getMessage()]
    assert len(lines) == 1, lines  # logged once per group, not per notification
    assert "1998" in lines[0] and "SSEConnectionDropRate" in lines[0]
    incident = await (await client.get(f"/api/incidents/{answer['deduplicated'][0]}")).json()
    assert incident["labels"]["truncated_alerts"] == "1998"
    assert "left 1998 more alert(s)" in incident["description"]
    metrics = await (await client.get("/metrics")).text()
    assert 'sunflow_alerts_truncated_total{source="alertmanager"} 3996.0' in metrics
    assert 'sunflow_alerts_truncated_total{source="grafana"} 0.0' in metrics


async def test_alertmanager_alert_with_75_labels_and_no_alertname_is_taken(
    client: Client,
) -> None:
    labels = {f"label_{i:02d}": f"value {i}" for i in range(75)}
    created = []
    for alert in (
        {"status": "firing", "labels": {**labels, "severity": "critical"}, "fingerprint": "a"},
        {"status": "firing", "labels": {"job": "cron"}, "fingerprint": "b"},
        {"status": "firing", "labels": {"alertname": "Plain"}, "fingerprint": "c"},
    ):
        resp = await client.post(
            "/api/alerts/alertmanager",
            json={"version": "4", "alerts": [alert]},
            headers=intake_headers(),
        )
        assert resp.status == 202, await resp.text()
        created += (await resp.json())["created"]
    first, second, third = created
    wide = await (await client.get(f"/api/incidents/{first}")).json()
    assert wide["severity"] == "P0"
    assert len(wide["labels"]) == 64
    # 76 labels: alertname-less, severity kept first, 62 more by name, 13 folded.
    assert wide["labels"]["severity"] == "critical"
    assert wide["labels"]["truncated_labels"].startswith("13 more: label_62=value 62")
    assert (await (await client.get(f"/api/incidents/{second}")).json())["title"] == (
        "Alert job=cron"
    )
    assert (await (await client.get(f"/api/incidents/{third}")).json())["title"] == "Plain"


async def test_grafana_webhook_opens_and_resolves(client: Client) -> None:
    from tests.test_intake import GRAFANA_PAYLOAD

    resp = await client.post(
        "/api/alerts/alertmanager", json=GRAFANA_PAYLOAD, headers=intake_headers()
    )
    assert resp.status == 202, await resp.text()
    [opened] = (await resp.json())["created"]
    incident = await (await client.get(f"/api/incidents/{opened}")).json()
    assert incident["source"] == "grafana"
    # Two alerts that share a label and a runbook: the group is titled by what they share.
    assert incident["title"] == "Alert team=blue"
    assert [a["status"] for a in incident["alert_group"]["alerts"]] == ["firing", "resolved"]
    resolved = {
        **GRAFANA_PAYLOAD,
        "status": "resolved",
        "state": "ok",
        "alerts": [{**GRAFANA_PAYLOAD["alerts"][0], "status": "resolved"}],  # type: ignore[index]
    }
    resp = await client.post("/api/alerts/alertmanager", json=resolved, headers=intake_headers())
    assert (await resp.json())["resolved"] == [opened]
    metrics = await (await client.get("/metrics")).text()
    assert 'sunflow_alerts_received_total{outcome="created",source="grafana"} 1.0' in metrics
