import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from services.web.app import create_app
from tests.conftest import Client, admin_headers
from tests.fakes.world import World, pipeline_world
from tests.waiting import until


@asynccontextmanager
async def serving(migrated_url: str, root: Path) -> AsyncIterator[tuple[World, Client]]:
    async with pipeline_world(migrated_url, root) as world:
        app = create_app(world.settings, world.services)
        async with TestClient(TestServer(app)) as client:
            yield world, client


async def test_health_lists_the_pipeline_components(migrated_url: str, tmp_path: Path) -> None:
    async with serving(migrated_url, tmp_path) as (world, client):
        world.cloudinary.fault = "500"
        resp = await client.get("/api/health")
        body = await resp.json()
        components = body["components"]
        assert {"instagram_token", "cloudinary", "fal", "telegram", "stats"} <= set(components)
        assert components["cloudinary"]["status"] == "down"
        assert components["telegram"]["status"] == "healthy"
        assert "fake-cloudinary-secret" not in await resp.text()


async def test_token_and_expiry(migrated_url: str, tmp_path: Path) -> None:
    async with serving(migrated_url, tmp_path) as (_world, client):
        resp = await client.post("/api/admin/token/expiry", json={"days": 30})
        assert resp.status == 401
        resp = await client.post(
            "/api/admin/token/expiry", json={"days": "many"}, headers=admin_headers()
        )
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_input"
        resp = await client.post(
            "/api/admin/token/expiry", json={"days": 400}, headers=admin_headers()
        )
        assert resp.status == 400
        assert "1 to 365" in (await resp.json())["detail"]["message"]
        resp = await client.post(
            "/api/admin/token/expiry", json={"days": 30}, headers=admin_headers()
        )
        assert resp.status == 200
        assert (await resp.json())["days_left"] == 30
        body = await (await client.get("/api/token")).json()
        assert body["state"] == "ok" and body["days_left"] == 30


async def test_jobs_retry_refuses_a_running_job(migrated_url: str, tmp_path: Path) -> None:
    async with serving(migrated_url, tmp_path) as (world, client):
        world.add_topic("sunflower")
        job = await world.services.ops.retry.record_failure("publish", "sunflower", error="boom")
        body = await (await client.get("/api/jobs")).json()
        assert [j["id"] for j in body["jobs"]] == [job.id]
        # The retry publishes for real and is held at its upload.
        release = world.cloudinary.hold()
        first = asyncio.create_task(
            client.post(f"/api/jobs/{job.id}/retry", headers=admin_headers())
        )
        await until(lambda: world.cloudinary.held, what="the retry's upload")
        second = await client.post(f"/api/jobs/{job.id}/retry", headers=admin_headers())
        assert second.status == 409
        assert "already running" in (await second.json())["detail"]["message"]
        release.set()
        resp = await first
        assert resp.status == 200 and (await resp.json())["state"] == "succeeded"
        assert world.cloudinary.held == 1 and len(world.instagram.published) == 1
        assert (await client.post("/api/jobs/999/retry", headers=admin_headers())).status == 404
        assert (await client.post("/api/jobs/x/retry", headers=admin_headers())).status == 400


async def test_traces_backups_and_stats(migrated_url: str, tmp_path: Path) -> None:
    async with serving(migrated_url, tmp_path) as (world, client):
        world.add_topic("sunflower")
        result = await world.services.ops.pipeline.publish("sunflower")
        body = await (await client.get("/api/traces")).json()
        assert [t["trace_id"] for t in body["traces"]] == [result.trace_id]
        one = await (await client.get(f"/api/traces/{result.trace_id}")).json()
        assert [s["name"] for s in one["steps"]] == ["images", "caption", "upload", "instagram"]
        assert (await client.get("/api/traces/nope")).status == 400
        assert (await client.get("/api/traces?limit=x")).status == 400

        assert (await client.post("/api/admin/backups")).status == 401
        made = await client.post("/api/admin/backups", headers=admin_headers())
        assert made.status == 201
        listed = await (await client.get("/api/admin/backups", headers=admin_headers())).json()
        assert [b["id"] for b in listed["backups"]] == [(await made.json())["id"]]

        collected = await client.post("/api/admin/stats/collect", headers=admin_headers())
        assert (await collected.json())["collected"] is True
        world.services.scheduler.start()
        try:
            restarted = await client.post("/api/admin/stats/restart", headers=admin_headers())
            assert restarted.status == 200
            assert (await restarted.json())["next_run_time"] is not None
        finally:
            world.services.scheduler.shutdown()
