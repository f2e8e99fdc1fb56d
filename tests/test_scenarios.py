"""The playbook's six scenarios end to end: fault in a fake, incident, recovery, resolved."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from services.health import Status
from services.incidents import IncidentService, IncidentView
from services.models import IncidentState, JobState
from services.severity import Severity
from services.tokens import TokenState
from tests.fakes.fal import PNG
from tests.fakes.world import START, pipeline_world, reopened

NEW_TOKEN = "IGQVJ-renewed-instagram-token-0002"


async def open_incident(incidents: IncidentService, dedup_key: str) -> IncidentView | None:
    for view in await incidents.list(states=[IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED]):
        if view.dedup_key == dedup_key:
            return view
    return None


async def test_scenario_1_instagram_token_expired(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, incidents = world.services.ops, world.services.incidents
        world.add_topic("sunflower")
        await ops.tokens.set_expiry(60, actor="test")
        world.instagram.valid_tokens.clear()  # the token expired: every call answers 401

        result = await ops.pipeline.publish("sunflower")
        assert not result.ok
        assert result.job is not None and result.job.state is JobState.FAILED
        incident = await open_incident(incidents, "instagram:unauthorized")
        assert incident is not None
        assert incident.severity is Severity.P0
        assert incident.labels["trace_id"] == result.trace_id
        # Diagnosis: status (the live check says invalid), guide, health.
        status = await ops.tokens.status()
        assert status.state is TokenState.EXPIRED
        assert status.live is not None and not status.live.valid
        assert "set-expiry 60" in ops.tokens.guide("en")
        report = await world.services.health.run()
        assert report.status is Status.DOWN
        assert {c.name: c.status for c in report.components}["instagram_token"] is Status.DOWN
        assert world.instagram.published == []

        # Recovery: a new token in .env (a restart reads it), set-expiry 60, publish --retry.
        world.instagram.valid_tokens.add(NEW_TOKEN)
        async with reopened(world, instagram_access_token=NEW_TOKEN) as services:
            status = await services.ops.tokens.set_expiry(None, actor="test")
            assert status.state is TokenState.OK
            assert status.days_left == 60
            retried = await services.ops.pipeline.publish("sunflower", retry=True)
            assert retried.ok, retried.detail
            assert retried.job is not None and retried.job.id == result.job.id
            assert retried.job.state is JobState.SUCCEEDED
            assert len(world.instagram.published) == 1
            assert await open_incident(services.incidents, "instagram:unauthorized") is None
            # Verification: health and the dry run pass.
            assert (await services.ops.pipeline.dry_run("sunflower")).ok
            report = await services.health.run()
            states = {c.name: c.status for c in report.components}
            for name in ("instagram_token", "cloudinary", "fal", "telegram", "database"):
                assert states[name] is Status.HEALTHY, report.to_json()


async def test_scenario_2_cloudinary_upload_failure(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, incidents = world.services.ops, world.services.incidents
        folder = world.add_topic("sunflower")
        await ops.tokens.set_expiry(60, actor="test")
        world.cloudinary.fault = "500"

        result = await ops.pipeline.publish("sunflower")
        assert not result.ok
        incident = await open_incident(incidents, "cloudinary:upload")
        assert incident is not None and incident.severity is Severity.P0
        assert incident.labels["trace_id"] == result.trace_id
        # Diagnosis: health shows cloudinary down, and the scheduled run raises its incident.
        report = await ops.watch.run()
        assert {c.name: c.status for c in report.components}["cloudinary"] is Status.DOWN
        health_incident = await open_incident(incidents, "health:cloudinary")
        assert health_incident is not None and health_incident.severity is Severity.P0
        # The local file is kept under content/images/<topic>/.
        image = folder / "sunflower-1.png"
        assert image.read_bytes() == PNG

        # Recovery: Cloudinary is back; the manual upload works and resolves the incident.
        world.cloudinary.fault = None
        uploaded = await ops.pipeline.upload(image)
        assert uploaded.ok, uploaded.detail
        assert world.cloudinary.uploads["sunflow/sunflower/sunflower-1"] == PNG
        assert await open_incident(incidents, "cloudinary:upload") is None
        await ops.watch.run()
        assert await open_incident(incidents, "health:cloudinary") is None
        assert (await ops.pipeline.publish("sunflower", retry=True)).ok
        assert (await ops.pipeline.dry_run("sunflower")).ok


async def test_scenario_3_image_generation_failure(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, incidents, clock = world.services.ops, world.services.incidents, world.clock
        world.add_topic("sunflower", images=0)
        archive = world.content / "images" / "sunflower" / "archive"
        archive.mkdir(parents=True)
        (archive / "old-sunflower.png").write_bytes(PNG)
        await ops.tokens.set_expiry(60, actor="test")
        world.fal.fault = "500"

        first = await ops.pipeline.publish("sunflower")
        assert first.job is not None
        assert first.job.next_retry_at == START + timedelta(minutes=5)
        # The automatic retries: 5 min -> 15 min -> 30 min.
        clock.advance(minutes=5)
        [one] = await ops.retry.run_due()
        assert one.attempts == 1 and one.state is JobState.FAILED
        assert one.next_retry_at == clock.now() + timedelta(minutes=15)
        clock.advance(minutes=15)
        [two] = await ops.retry.run_due()
        assert two.next_retry_at == clock.now() + timedelta(minutes=30)
        clock.advance(minutes=30)
        # The last retry falls back to the archive, says so in the trace, and raises P1.
        [three] = await ops.retry.run_due()
        assert three.state is JobState.SUCCEEDED
        trace = await ops.traces.get(str(three.trace_id))
        assert "fallback_archive" in [s.name for s in trace.steps]
        assert len(world.instagram.published) == 1
        incident = await open_incident(incidents, "fal:generate")
        assert incident is not None and incident.severity is Severity.P1
        # Diagnosis: the trace list shows the failed runs.
        statuses = [t.status for t in await ops.traces.list(limit=10)]
        assert statuses.count("error") == 3

        # Recovery: fal.ai is back; generate --retry makes new images and resolves it.
        world.fal.fault = None
        generated = await ops.pipeline.generate_images("sunflower", retry=True)
        assert generated.ok, generated.detail
        assert await open_incident(incidents, "fal:generate") is None


async def test_scenario_4_instagram_rate_limit(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, incidents, clock = world.services.ops, world.services.incidents, world.clock
        world.add_topic("sunflower")
        await ops.tokens.set_expiry(60, actor="test")
        world.instagram.fault = "429"
        world.instagram.retry_after = 3600

        result = await ops.pipeline.publish("sunflower")
        incident = await open_incident(incidents, "instagram:rate-limit")
        assert incident is not None and incident.severity is Severity.P1
        # Retry-After (1 h) is longer than the first step (5 min), so it wins.
        assert result.job is not None
        assert result.job.next_retry_at == START + timedelta(hours=1)
        # The ladder's 30-minute step finds the job behind the incident, still retrying.
        summary = await ops.retry.status_for_incident(incident.id)
        assert [j.id for j in summary.jobs] == [result.job.id] and not summary.done
        clock.advance(minutes=59)
        assert await ops.retry.run_due() == []

        world.instagram.fault = None
        clock.advance(minutes=1)
        [done] = await ops.retry.run_due()
        assert done.state is JobState.SUCCEEDED
        assert (await ops.retry.status_for_incident(incident.id)).done
        assert await open_incident(incidents, "instagram:rate-limit") is None
        assert len(world.instagram.published) == 1


async def test_scenario_5_stats_collection_failure(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, incidents, clock = world.services.ops, world.services.incidents, world.clock
        await ops.tokens.set_expiry(60, actor="test")
        assert (await ops.stats.collect()).collected
        clock.advance(hours=27)
        world.instagram.fault = "500"

        assert not (await ops.stats.collect()).collected
        incident = await open_incident(incidents, "stats:collector")
        assert incident is not None and incident.severity is Severity.P2
        # Diagnosis: instagram_stats.json's last_updated is old; health says stale.
        data = json.loads(world.settings.stats_file.read_text("utf-8"))
        assert data["last_updated"] == START.isoformat()
        stale = await ops.stats.health()
        assert stale.status is Status.DOWN and "stale" in stale.detail

        # Recovery: collect --force, then the daemon restart re-arms the job.
        world.instagram.fault = None
        assert (await ops.stats.collect(force=True)).collected
        assert await open_incident(incidents, "stats:collector") is None
        data = json.loads(world.settings.stats_file.read_text("utf-8"))
        assert data["last_updated"] == clock.now().isoformat()
        assert (await ops.stats.health()).status is Status.HEALTHY
        world.services.scheduler.start()
        try:
            assert await ops.stats.restart() is not None
            assert world.services.scheduler.scheduler.get_job("stats-collector") is not None
        finally:
            world.services.scheduler.shutdown()


async def test_scenario_6_telegram_health(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, incidents = world.services.ops, world.services.incidents
        world.telegram.fault = True
        report = await ops.watch.run()
        telegram = {c.name: c for c in report.components}["telegram"]
        assert telegram.status is Status.DOWN
        incident = await open_incident(incidents, "health:telegram")
        assert incident is not None and incident.severity is Severity.P2
        # The bot token never shows in what the check says.
        assert "fake-telegram-bot-token" not in json.dumps(report.to_json())

        world.telegram.fault = False
        report = await ops.watch.run()
        assert {c.name: c.status for c in report.components}["telegram"] is Status.HEALTHY
        assert await open_incident(incidents, "health:telegram") is None
