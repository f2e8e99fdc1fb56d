"""The playbook's scenarios 1, 2, 3, 5 and 6 played by the team in Telegram.

Each test runs the whole service (HTTP app, outbox, scheduler, escalation and the real bot over
long polling) against the fake Bot API and the pipeline fakes: the fault is injected in a fake,
the run that meets it is started as the service starts it (a publish, or the scheduled job's
own function: retries, stats collection, the health watch), the incident card must reach the
team chat with the playbook's severity badge, and the recovery is sent from the chat by a user
with the right role, until the incident resolves and its card is edited to say so. Scenario 4 is
played the same way in tests/test_bot_pipeline.py; tests/test_scenarios.py plays all six at the
service level.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from apscheduler.jobstores.base import JobLookupError

from services.container import Services
from services.main import background_contexts
from services.models import IncidentState, JobState
from services.severity import Severity
from services.web.app import create_app
from tests.botkit import ADMIN_USER, RESPONDER, TEAM, VIEWER, running_fake
from tests.fakes.fal import PNG
from tests.fakes.telegram import FakeTelegram, Posted
from tests.fakes.world import pipeline_world, reopened
from tests.test_bot_pipeline import chat_overrides
from tests.test_scenarios import NEW_TOKEN, open_incident

# The periodic jobs the tests run themselves, at the moments the scheduler would: left to the
# scheduler they would fire at wall-clock moments and race the steps being asserted.
DRIVEN_BY_THE_TEST = ("retry-due", "health-watch", "token-check", "stats-collector")
BADGE = {Severity.P0: "🔴 <b>P0</b>", Severity.P1: "🟠 <b>P1</b>", Severity.P2: "🟡 <b>P2</b>"}


def polls(fake: FakeTelegram) -> int:
    return len([c for c in fake.calls if c.method == "getUpdates"])


@asynccontextmanager
async def served(fake: FakeTelegram, services: Services) -> AsyncIterator[Services]:
    """`sunflow-ops serve` in-process: the routes, the background work and the bot."""
    app = create_app(services.settings, services)
    app.cleanup_ctx.extend(background_contexts(services))
    before = polls(fake)
    async with TestClient(TestServer(app, host="127.0.0.1")):
        for job_id in DRIVEN_BY_THE_TEST:
            with contextlib.suppress(JobLookupError):
                services.scheduler.scheduler.remove_job(job_id)
        # The bot is up (its getMe done) once it has polled for updates.
        await fake.wait_for(lambda: polls(fake) > before)
        yield services


async def say(fake: FakeTelegram, user_id: int, text: str, needle: str) -> Posted:
    """`user_id` writes `text` in the team chat; the bot's next message containing `needle`."""
    seen = {p.message_id for p in fake.in_chat(TEAM)}
    await fake.send_text(user_id, TEAM, text)
    found = await fake.wait_for(
        lambda: [p for p in fake.in_chat(TEAM) if p.message_id not in seen and needle in p.text]
    )
    posted: Posted = found[0]
    return posted


async def alert_card(fake: FakeTelegram, incident_id: int, severity: Severity) -> Posted:
    """The incident's card in the team chat (it arrives through the outbox), with its badge."""
    found = await fake.wait_for(
        lambda: [
            p
            for p in fake.in_chat(TEAM)
            if p.reply_markup is not None and f"<b>#{incident_id} " in p.text
        ]
    )
    card: Posted = found[0]
    assert card.text.startswith(BADGE[severity]), card.text
    return card


async def resolved(fake: FakeTelegram, services: Services, card: Posted, incident_id: int) -> None:
    """The incident is resolved in the service, and its card in the chat is edited to say so."""
    view = (await services.incidents.get(incident_id)).incident
    assert view.state is IncidentState.RESOLVED
    await fake.wait_for(lambda: "resolved by" in card.text)
    assert card.edits >= 1


async def test_scenario_1_token_expired_recovered_from_the_chat(
    migrated_url: str, tmp_path: Path
) -> None:
    async with (
        running_fake() as fake,
        pipeline_world(migrated_url, tmp_path, **chat_overrides(fake)) as world,
    ):
        world.add_topic("sunflower")
        async with served(fake, world.services) as services:
            ops = services.ops
            await ops.tokens.set_expiry(60, actor="test")
            # The fault: the token expired, every Graph API call answers 401.
            world.instagram.valid_tokens.clear()
            result = await ops.pipeline.publish("sunflower")
            assert not result.ok and result.job is not None
            job_id = result.job.id

            incident = await open_incident(services.incidents, "instagram:unauthorized")
            assert incident is not None and incident.severity is Severity.P0
            incident_id = incident.id
            card = await alert_card(fake, incident_id, Severity.P0)

            # Diagnosis from the chat: /token says expired, /token guide has the steps.
            status = await say(fake, VIEWER, "/token", "Instagram token")
            assert "expired" in status.text
            guide = await say(fake, VIEWER, "/token guide", "Meta developer console")
            assert "/token set_expiry 60" in guide.text

        # Outside the chat, as a person does it: a new token from the Meta developer console
        # goes into .env and the service restarts to read it (the chat cannot hold secrets).
        world.instagram.valid_tokens.add(NEW_TOKEN)
        async with (
            reopened(world, instagram_access_token=NEW_TOKEN, **chat_overrides(fake)) as restarted,
            served(fake, restarted) as services,
        ):
            # From the chat: an admin registers the expiry, a responder retries the job.
            set_reply = await say(fake, ADMIN_USER, "/token set_expiry 60", "Token expiry")
            assert "60 days left" in set_reply.text
            retried = await say(fake, RESPONDER, f"/retry {job_id}", f"Job #{job_id} retried")
            assert "succeeded" in retried.text
            assert (await services.ops.retry.get(job_id)).state is JobState.SUCCEEDED
            assert len(world.instagram.published) == 1
            await resolved(fake, services, card, incident_id)
            assert await open_incident(services.incidents, "instagram:unauthorized") is None

            # Verification from the chat.
            health = await say(fake, VIEWER, "/health", "<pre>Health:")
            assert "OK   instagram_token: 60 days left" in health.text


async def test_scenario_2_cloudinary_failure_recovered_from_the_chat(
    migrated_url: str, tmp_path: Path
) -> None:
    async with (
        running_fake() as fake,
        pipeline_world(migrated_url, tmp_path, **chat_overrides(fake)) as world,
    ):
        folder = world.add_topic("sunflower")
        async with served(fake, world.services) as services:
            ops = services.ops
            await ops.tokens.set_expiry(60, actor="test")
            # The fault: Cloudinary answers 500.
            world.cloudinary.fault = "500"
            result = await ops.pipeline.publish("sunflower")
            assert not result.ok and result.job is not None
            job_id = result.job.id

            incident = await open_incident(services.incidents, "cloudinary:upload")
            assert incident is not None and incident.severity is Severity.P0
            incident_id = incident.id
            card = await alert_card(fake, incident_id, Severity.P0)
            # The local file is kept for the upload.
            assert (folder / "sunflower-1.png").read_bytes() == PNG

            # Diagnosis from the chat: /health shows Cloudinary down.
            health = await say(fake, VIEWER, "/health", "<pre>Health:")
            assert "DOWN cloudinary:" in health.text

            # Recovery: Cloudinary is back; a responder retries the job from the chat.
            world.cloudinary.fault = None
            retried = await say(fake, RESPONDER, f"/retry {job_id}", f"Job #{job_id} retried")
            assert "succeeded" in retried.text
            assert (await ops.retry.get(job_id)).state is JobState.SUCCEEDED
            assert world.cloudinary.uploads["sunflow/sunflower/sunflower-1"] == PNG
            assert len(world.instagram.published) == 1
            await resolved(fake, services, card, incident_id)

            health = await say(fake, VIEWER, "/health", "<pre>Health:")
            assert "OK   cloudinary: reachable" in health.text


async def test_scenario_3_image_generation_failure_recovered_from_the_chat(
    migrated_url: str, tmp_path: Path
) -> None:
    async with (
        running_fake() as fake,
        pipeline_world(migrated_url, tmp_path, **chat_overrides(fake)) as world,
    ):
        # No images and no archive: nothing to fall back to; image generation pages (P1).
        world.add_topic("sunflower", images=0)
        async with served(fake, world.services) as services:
            ops, clock = services.ops, world.clock
            await ops.tokens.set_expiry(60, actor="test")
            # The fault: fal.ai answers 500.
            world.fal.fault = "500"
            result = await ops.pipeline.publish("sunflower")
            assert not result.ok and result.job is not None
            job_id = result.job.id
            # The automatic retries (5 min -> 15 min -> 30 min), run as the scheduler's tick.
            for minutes in (5, 15, 30):
                clock.advance(minutes=minutes)
                [job] = await ops.runner.run_due()
                assert job.id == job_id
            job = await ops.retry.get(job_id)
            assert job.state is JobState.EXHAUSTED and job.incident_id is not None
            incident_id = job.incident_id

            incident = (await services.incidents.get(incident_id)).incident
            # Heard from the first failure under image generation's own P1; the card says
            # the retries are spent and how to retry by hand.
            assert incident.severity is Severity.P1 and incident.dedup_key == "fal:generate"
            card = await alert_card(fake, incident_id, Severity.P1)
            assert "Image generation failing (FLUX.2 on fal.ai)" in card.text
            await fake.wait_for(lambda: "automatic retries done, 3/3 failed" in card.text)

            # Diagnosis from the chat: the failed runs in /traces, the job in /retry.
            traces = await say(fake, VIEWER, "/traces", "publish")
            assert "sunflower" in traces.text
            listing = await say(fake, RESPONDER, "/retry", f"#{job_id} publish")
            assert "sunflower" in listing.text

            # Recovery: fal.ai is back; a responder retries the job from the chat.
            world.fal.fault = None
            retried = await say(fake, RESPONDER, f"/retry {job_id}", f"Job #{job_id} retried")
            assert "succeeded" in retried.text
            assert (await ops.retry.get(job_id)).state is JobState.SUCCEEDED
            assert len(world.instagram.published) == 1
            assert (world.content / "images" / "sunflower" / "sunflower-1.png").exists()
            await resolved(fake, services, card, incident_id)


async def test_scenario_5_stats_collection_failure_recovered_from_the_chat(
    migrated_url: str, tmp_path: Path
) -> None:
    async with (
        running_fake() as fake,
        pipeline_world(migrated_url, tmp_path, **chat_overrides(fake)) as world,
        served(fake, world.services) as services,
    ):
        ops, clock = services.ops, world.clock
        await ops.tokens.set_expiry(60, actor="test")
        # Forced: the collector's first scheduled run may have collected at start already.
        assert (await ops.stats.collect(force=True)).collected
        clock.advance(hours=27)
        # The fault: Instagram's insights answer 500; the scheduled collection fails.
        world.instagram.fault = "500"
        assert not (await ops.stats.collect()).collected

        incident = await open_incident(services.incidents, "stats:collector")
        assert incident is not None and incident.severity is Severity.P2
        incident_id = incident.id
        card = await alert_card(fake, incident_id, Severity.P2)

        # Diagnosis from the chat: /stats says the data is stale.
        status = await say(fake, VIEWER, "/stats", "Stats collector")
        assert "stale" in status.text

        # Recovery: Instagram answers again; a responder restarts the collector.
        world.instagram.fault = None
        restarted = await say(fake, RESPONDER, "/stats restart", "Stats collector restarted")
        assert "UTC" in restarted.text
        assert services.scheduler.scheduler.get_job("stats-collector") is not None
        await resolved(fake, services, card, incident_id)
        data = json.loads(world.settings.stats_file.read_text("utf-8"))
        assert data["last_updated"] == clock.now().isoformat()

        status = await say(fake, VIEWER, "/stats status", "Stats collector")
        assert "healthy" in status.text


async def test_scenario_6_telegram_failure_recovered_from_the_chat(
    migrated_url: str, tmp_path: Path
) -> None:
    async with (
        running_fake() as fake,
        pipeline_world(migrated_url, tmp_path, **chat_overrides(fake)) as world,
        served(fake, world.services) as services,
    ):
        # The fault: the Bot API refuses getMe (a revoked token, as the health check sees
        # it); sending still works, so the card can reach the chat.
        fake.fail("getMe", status=401, description="Unauthorized", times=1000)
        report = await services.health_watch.run()  # the scheduled health run
        assert {c.name: c.status.value for c in report.components}["telegram"] == "down"

        incident = await open_incident(services.incidents, "health:telegram")
        assert incident is not None and incident.severity is Severity.P2
        incident_id = incident.id
        card = await alert_card(fake, incident_id, Severity.P2)

        # Diagnosis from the chat: /health shows the telegram component down.
        health = await say(fake, VIEWER, "/health", "<pre>Health:")
        assert "DOWN telegram: getMe failed" in health.text
        assert "TEST-token" not in health.text  # the bot token never reaches the chat

        # Outside the chat: the token is fixed (checked in .env / BotFather), so the Bot API
        # accepts getMe again. Then, from the chat, the playbook's test message and /health.
        fake.faults.clear()
        sent = await say(fake, ADMIN_USER, "/notify_test", "Test message sent")
        assert "✅ telegram" in sent.text
        health = await say(fake, VIEWER, "/health", "<pre>Health:")
        assert "OK   telegram: @sunflow_bot" in health.text

        # /health only reads; the next scheduled health run sees telegram healthy and
        # resolves the incident.
        await services.health_watch.run()
        await resolved(fake, services, card, incident_id)
