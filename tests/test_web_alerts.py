import io

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
    good = {"status": "firing", "labels": {"alertname": "A"}, "fingerprint": "1"}
    bad = {"status": "firing", "labels": {}, "fingerprint": "2"}
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
