from tests.conftest import Client, admin_headers, intake_headers


async def raise_alert(client: Client, key: str, severity: str = "P1") -> int:
    resp = await client.post(
        "/api/alerts",
        json={"severity": severity, "title": f"alert {key}", "dedup_key": key},
        headers=intake_headers(),
    )
    assert resp.status == 202
    ids = (await resp.json())["created"]
    return int(ids[0])


async def test_ack_and_resolve_over_http(client: Client) -> None:
    incident_id = await raise_alert(client, "a")
    resp = await client.post(
        f"/api/incidents/{incident_id}/ack",
        json={"actor": "deploy-bot", "note": "on it"},
        headers=admin_headers(),
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["state"] == "acknowledged"
    assert body["acknowledged_by"] == "api:deploy-bot"
    resp = await client.post(f"/api/incidents/{incident_id}/resolve", headers=admin_headers())
    assert (await resp.json())["state"] == "resolved"
    again = await client.post(f"/api/incidents/{incident_id}/resolve", headers=admin_headers())
    assert again.status == 409
    err = await again.json()
    assert err["error"] == "invalid_transition"
    assert "already resolved" in err["detail"]["message"]


async def test_reopen_over_http(client: Client) -> None:
    incident_id = await raise_alert(client, "reopen-me", "P0")
    early = await client.post(f"/api/incidents/{incident_id}/reopen", headers=admin_headers())
    assert early.status == 409
    assert (await early.json())["error"] == "invalid_transition"
    await client.post(f"/api/incidents/{incident_id}/resolve", headers=admin_headers())
    refused = await client.post(f"/api/incidents/{incident_id}/reopen")
    assert refused.status == 401
    resp = await client.post(
        f"/api/incidents/{incident_id}/reopen",
        json={"actor": "deploy-bot", "note": "came back"},
        headers=admin_headers(),
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["state"] == "triggered"
    assert body["resolved_at"] is None
    detail = await (await client.get(f"/api/incidents/{incident_id}")).json()
    reopened = detail["timeline"][-1]
    assert (reopened["kind"], reopened["actor"]) == ("reopened", "api:deploy-bot")
    assert reopened["details"] == {"note": "came back"}
    missing = await client.post("/api/incidents/424242/reopen", headers=admin_headers())
    assert missing.status == 404
    document = await (await client.get("/api/openapi.json")).json()
    assert document["paths"]["/api/incidents/{id}/reopen"]["post"]["security"] == [
        {"adminToken": []}
    ]


async def test_lifecycle_needs_admin_token(client: Client) -> None:
    incident_id = await raise_alert(client, "b")
    for headers in ({}, intake_headers(), {"Authorization": "Bearer nope"}):
        resp = await client.post(f"/api/incidents/{incident_id}/ack", headers=headers)
        assert resp.status == 401
    detail = await (await client.get(f"/api/incidents/{incident_id}")).json()
    assert detail["state"] == "triggered"


async def test_unknown_and_malformed_ids(client: Client) -> None:
    resp = await client.get("/api/incidents/424242")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
    resp = await client.get("/api/incidents/abc")
    assert resp.status == 400
    assert (await resp.json())["detail"]["field"] == "id"
    resp = await client.post("/api/incidents/424242/ack", headers=admin_headers())
    assert resp.status == 404


async def test_filters(client: Client) -> None:
    p0 = await raise_alert(client, "p0", "P0")
    await raise_alert(client, "p3", "P3")
    resp = await client.get("/api/incidents?severity=P0")
    assert [i["id"] for i in (await resp.json())["incidents"]] == [p0]
    await client.post(f"/api/incidents/{p0}/resolve", headers=admin_headers())
    resp = await client.get("/api/incidents?state=open")
    assert [i["dedup_key"] for i in (await resp.json())["incidents"]] == ["p3"]
    resp = await client.get("/api/incidents?state=resolved")
    assert [i["id"] for i in (await resp.json())["incidents"]] == [p0]
    for query in ("state=gone", "severity=P7", "limit=0", "limit=x"):
        bad = await client.get(f"/api/incidents?{query}")
        assert bad.status == 400, query
        assert (await bad.json())["error"] == "invalid_input"


async def test_reads_from_behind_a_proxy_need_the_admin_token(client: Client) -> None:
    relayed = {"X-Forwarded-For": "203.0.113.9"}
    resp = await client.get("/api/incidents", headers=relayed)
    assert resp.status == 401
    resp = await client.get("/api/incidents", headers={**relayed, **admin_headers()})
    assert resp.status == 200


async def test_health_and_metrics(client: Client) -> None:
    resp = await client.get("/api/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "healthy"
    assert body["components"]["database"]["status"] == "healthy"
    assert body["components"]["scheduler"]["status"] == "healthy"
    await raise_alert(client, "m")
    text = await (await client.get("/metrics")).text()
    assert 'http_requests_total{endpoint="/api/health",method="GET",status="200"} 1.0' in text
    assert 'sunflow_alerts_received_total{outcome="created",source="api"} 1.0' in text
