"""The playbook's six scenarios, step by step as written, on the injected clock.

Each test injects the fault in a fake, meets it the way the service meets it (a publish, a
scheduled collection, the health watch), and checks what the playbook promises: the incident
at the playbook's severity from the first failure, its card in the team chat (the real outbox
sender and renderer against the fake Bot API) with the retry plan, the retries at 5, 15 and
30 minutes, the log lines the diagnosis greps for, the recovery, and the number of posts on the
fake Instagram. Every recovery step is run twice, as a tired person at 3 a.m. would.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from services.errors import InvalidTransition
from services.health import Status
from services.incident_types import IncidentView
from services.incidents import IncidentService
from services.logs import file_handlers, formatter
from services.models import IncidentState, JobState
from services.publications import PublishRefused, Refusal
from services.severity import Severity
from services.tokens import TokenState
from tests.botkit import TEAM, running_fake
from tests.fakes.fal import PNG
from tests.fakes.telegram import FakeTelegram, Posted
from tests.fakes.world import START, World, pipeline_world, reopened
from tests.test_bot_pipeline import chat_overrides
from tests.test_notify import webhook_receiver

NEW_TOKEN = "IGQVJ-renewed-instagram-token-0002"
BADGE = {Severity.P0: "🔴 <b>P0</b>", Severity.P1: "🟠 <b>P1</b>", Severity.P2: "🟡 <b>P2</b>"}


async def open_incident(incidents: IncidentService, dedup_key: str) -> IncidentView | None:
    for view in await incidents.list(states=[IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED]):
        if view.dedup_key == dedup_key:
            return view
    return None


async def open_keys(incidents: IncidentService) -> list[str]:
    views = await incidents.list(states=[IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED])
    return sorted(v.dedup_key for v in views)


@contextmanager
def log_files(directory: Path) -> Iterator[Path]:
    """LOG_DIR's two files, as `serve` writes them, for the length of a test."""
    root = logging.getLogger()
    handlers = file_handlers(directory, "INFO", rotate=True)
    for handler in handlers:
        handler.setFormatter(formatter())
        root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield directory
    finally:
        root.setLevel(level)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


def grep(directory: Path, pattern: str, glob: str = "*.log") -> list[str]:
    """`grep PATTERN LOG_DIR/GLOB`, as the playbook writes it."""
    found = []
    for path in sorted(directory.glob(glob)):
        found += [line for line in path.read_text("utf-8").splitlines() if pattern in line]
    return found


@dataclass
class Scene:
    world: World
    chat: FakeTelegram

    async def card(self, incident_id: int, *needles: str) -> Posted:
        """The incident's card in the team chat, once it says all of `needles`."""

        def find() -> list[Posted]:
            return [
                p
                for p in self.chat.in_chat(TEAM)
                if f"<b>#{incident_id} " in p.text
                and p.reply_markup is not None
                and all(n in p.text for n in needles)
            ]

        found: list[Posted] = await self.chat.wait_for(find)
        return found[0]

    async def reply(self, needle: str) -> Posted:
        found: list[Posted] = await self.chat.wait_for(
            lambda: [p for p in self.chat.in_chat(TEAM) if p.reply_to and needle in p.text]
        )
        return found[0]


@asynccontextmanager
async def scene(url: str, root: Path, **overrides: object) -> AsyncIterator[Scene]:
    """The pipeline world with the team chat on the fake Bot API and LOG_DIR's files."""
    async with (
        running_fake() as chat,
        pipeline_world(url, root, **{**chat_overrides(chat), **overrides}) as world,
    ):
        # The outbox sender the composition root built for the fake Bot API, draining.
        sender = world.services.notify.sender
        assert sender is not None
        sender.start()
        # Running, as under `serve` (their health components say so); no periodic jobs are
        # added: the test runs retries, collections and the watch at the moments it means.
        world.services.scheduler.start()
        await world.services.sse.start()
        assert world.settings.log_dir is not None
        try:
            with log_files(world.settings.log_dir):
                yield Scene(world, chat)
        finally:
            await world.services.sse.stop()
            world.services.scheduler.shutdown()
            await sender.stop()


async def test_scenario_1_instagram_token_expired(migrated_url: str, tmp_path: Path) -> None:
    async with scene(migrated_url, tmp_path) as sc:
        world = sc.world
        ops, incidents = world.services.ops, world.services.incidents
        world.add_topic("sunflower")
        await ops.tokens.set_expiry(60, actor="test")
        world.instagram.valid_tokens.clear()  # the token expired: every call answers 401

        # Symptom: publishing fails with 401; the P0 is heard at once, its card shows the plan.
        result = await ops.pipeline.publish("sunflower")
        assert not result.ok and result.job is not None
        incident = await open_incident(incidents, "instagram:unauthorized")
        assert incident is not None and incident.severity is Severity.P0
        assert result.job.incident_id == incident.id
        card = await sc.card(incident.id, "Retry 1/3 of job #1 (publish sunflower) at 09:05 UTC")
        assert card.text.startswith(BADGE[Severity.P0])
        assert world.instagram.published == []

        # Diagnosis: `token status` says expired, and why.
        status = await ops.tokens.status()
        assert status.state is TokenState.EXPIRED and status.unauthorized_incident == incident.id
        assert (await world.services.health.run()).status is Status.DOWN

        # 1. the guide; 2. a new token; 3. .env edited under the running service.
        assert "set-expiry 60" in ops.tokens.guide("en")
        world.instagram.valid_tokens.add(NEW_TOKEN)
        world.settings.env_file_path.write_text(f'INSTAGRAM_ACCESS_TOKEN="{NEW_TOKEN}"\n')
        status = await ops.tokens.status()
        assert status.restart_needed and "restart needed" in status.text()
        component = {c.name: c for c in (await world.services.health.run()).components}
        assert component["instagram_token"].status is Status.DOWN
        assert "restart needed" in component["instagram_token"].detail

        # The restart reads .env; 4. set-expiry 60 and 5. publish --retry, each twice.
        async with reopened(
            world, instagram_access_token=NEW_TOKEN, **chat_overrides(sc.chat)
        ) as services:
            for _ in range(2):
                status = await services.ops.tokens.set_expiry(60, actor="test")
                assert status.state is TokenState.OK and status.days_left == 60
                assert not status.restart_needed
            retried = await services.ops.pipeline.publish("sunflower", retry=True)
            assert retried.ok, retried.detail
            assert retried.job is not None and retried.job.id == result.job.id
            assert retried.job.state is JobState.SUCCEEDED
            with pytest.raises(PublishRefused, match="nothing to retry: sunflower is already"):
                await services.ops.pipeline.publish("sunflower", retry=True)
            assert len(world.instagram.published) == 1
            assert await open_incident(services.incidents, "instagram:unauthorized") is None
            # The retry armed at 09:05 never posts again.
            world.clock.advance(minutes=5)
            assert await services.ops.runner.run_due() == []
            assert len(world.instagram.published) == 1
            # Verification: health and the dry run of the playbook's test topic.
            assert (await services.ops.pipeline.dry_run("test_topic")).ok
            states = {c.name: c.status for c in (await services.health.run()).components}
            for name in ("instagram_token", "instagram", "cloudinary", "fal", "database"):
                assert states[name] is Status.HEALTHY, name
        await sc.card(incident.id, "resolved by")


async def test_scenario_2_cloudinary_upload_failure(migrated_url: str, tmp_path: Path) -> None:
    async with scene(migrated_url, tmp_path) as sc:
        world = sc.world
        ops, incidents = world.services.ops, world.services.incidents
        watch = world.services.health_watch
        folder = world.add_topic("sunflower")
        await ops.tokens.set_expiry(60, actor="test")
        world.cloudinary.fault = "500"

        result = await ops.pipeline.publish("sunflower")
        assert not result.ok and result.job is not None
        incident = await open_incident(incidents, "cloudinary:upload")
        assert incident is not None and incident.severity is Severity.P0
        await sc.card(incident.id, "Retry 1/3 of job #1", "Runbook")
        # Diagnosis: health says down (a P0 component), and the watch adds no second P0.
        report = await watch.run()
        assert report.status is Status.DOWN and report.to_json()["status"] == "down"
        assert {c.name: c.status for c in report.components}["cloudinary"] is Status.DOWN
        assert await open_keys(incidents) == ["cloudinary:upload"]
        # 1. the key is set; 3. the local file is kept under content/images/<topic>/.
        assert world.settings.cloudinary_url is not None
        image = folder / "sunflower-1.png"
        assert image.read_bytes() == PNG

        # 4. the manual upload, twice, once Cloudinary is back.
        world.cloudinary.fault = None
        for _ in range(2):
            uploaded = await ops.pipeline.upload(image)
            assert uploaded.ok, uploaded.detail
        assert await open_incident(incidents, "cloudinary:upload") is None
        assert (await watch.run()).status is not Status.DOWN
        # The waiting publish job posts at its retry, once; nothing else posts.
        assert world.instagram.published == []
        world.clock.advance(minutes=5)
        [job] = await ops.runner.run_due()
        assert job.state is JobState.SUCCEEDED
        world.clock.advance(minutes=30)
        assert await ops.runner.run_due() == []
        with pytest.raises(PublishRefused) as refused:
            await ops.pipeline.publish("sunflower")
        assert refused.value.reason is Refusal.POSTED
        assert len(world.instagram.published) == 1
        assert (await ops.pipeline.dry_run("test_topic")).ok
        await sc.card(incident.id, "resolved by")


async def test_scenario_3_image_generation_failure(migrated_url: str, tmp_path: Path) -> None:
    async with scene(migrated_url, tmp_path) as sc:
        world = sc.world
        ops, incidents, clock = world.services.ops, world.services.incidents, world.clock
        folder = world.add_topic("lily", images=0)
        archive = folder / "archive"
        archive.mkdir(parents=True)
        (archive / "old-lily.png").write_bytes(PNG)
        await ops.tokens.set_expiry(60, actor="test")
        world.fal.fault = "500"

        # The first failure is heard at once: P1, not after the retries.
        first = await ops.pipeline.publish("lily")
        assert first.job is not None and first.job.next_retry_at == START + timedelta(minutes=5)
        incident = await open_incident(incidents, "fal:generate")
        assert incident is not None and incident.severity is Severity.P1
        card = await sc.card(incident.id, "Retry 1/3 of job #1 (publish lily) at 09:05 UTC")
        assert card.text.startswith(BADGE[Severity.P1])
        assert "The job retries 5m -&gt; 15m -&gt; 30m" in card.text  # RETRY_DELAYS
        # health and the dry run say fal.ai is failing, though its probe answers.
        fal = {c.name: c for c in (await world.services.health.run()).components}["fal"]
        assert fal.status is Status.DOWN and "HTTP 500" in fal.detail
        dry = await ops.pipeline.dry_run("lily")
        assert not {c.name: c for c in dry.checks}["images"].ok
        # Diagnosis: the traces, and the error log's tail.
        assert [t.status for t in await ops.traces.list(limit=5)].count("error") >= 1
        assert world.settings.log_dir is not None
        tail = grep(world.settings.log_dir, "provider=fal", "*_stderr.log")
        assert f"incident=#{incident.id} job=#1 retry 1/3 at 09:05 UTC" in tail[-1]
        assert "status=500" in tail[-1] and f"trace={first.trace_id}" in tail[-1]

        # 2. the automatic retries: 5 min -> 15 min -> 30 min; the card follows them.
        await world.services.escalation.fire_due(world.services.incidents)
        clock.advance(minutes=5)
        [one] = await ops.runner.run_due()
        assert one.attempts == 1 and one.next_retry_at == clock.now() + timedelta(minutes=15)
        await sc.card(incident.id, "Retry 2/3 of job #1 (publish lily) at 09:20 UTC")
        clock.advance(minutes=15)
        [two] = await ops.runner.run_due()
        assert two.next_retry_at == clock.now() + timedelta(minutes=30)
        # The ladder's 30-minute step says where the retries stand, not that they are done.
        clock.advance(minutes=10)
        await world.services.escalation.fire_due(world.services.incidents)
        step = await sc.reply("retries_done")
        assert "Retry 3/3 of job #1 (publish lily) at 09:50 UTC, in 20m · 1 left" in step.text
        clock.advance(minutes=20)
        # 3. the last retry posts an archive image, for this post only.
        [three] = await ops.runner.run_due()
        assert three.state is JobState.SUCCEEDED
        trace = await ops.traces.get(str(three.trace_id))
        assert "fallback_archive" in [s.name for s in trace.steps]
        upload = next(s for s in trace.steps if s.name == "upload")
        assert upload.details["files"] == [str(archive / "old-lily.png")]
        [post] = world.instagram.published
        assert post["image_url"].endswith("/old-lily.jpg")
        assert sorted(p.name for p in folder.iterdir()) == ["archive"]  # no residue
        # fal.ai itself still fails: its incident stays open.
        assert await open_incident(incidents, "fal:generate") is not None

        # Recovery: fal.ai is back; generate --retry (twice: the second has nothing to do).
        world.fal.fault = None
        generated = await ops.pipeline.generate_images("lily", retry=True)
        assert generated.ok, generated.detail
        with pytest.raises(InvalidTransition, match="nothing to retry"):
            await ops.pipeline.generate_images("lily", retry=True)
        assert await open_incident(incidents, "fal:generate") is None
        fal = {c.name: c for c in (await world.services.health.run()).components}["fal"]
        assert fal.status is Status.HEALTHY
        assert sorted(p.name for p in archive.iterdir()) == ["old-lily.png"]

        # After recovery: the topic is posted, so a new post of it needs --force; it carries
        # the new image alone, never the archive's.
        with pytest.raises(PublishRefused, match="already posted"):
            await ops.pipeline.publish("lily")
        again = await ops.pipeline.publish("lily", force=True)
        assert again.ok, again.detail
        assert len(world.instagram.published) == 2
        latest = world.instagram.published[-1]
        assert "children" not in latest and latest["image_url"].endswith("/lily-1.jpg")
        with pytest.raises(PublishRefused):
            await ops.pipeline.publish("lily", retry=True)
        assert len(world.instagram.published) == 2
        await sc.card(incident.id, "resolved by")


async def test_scenario_4_instagram_rate_limit(migrated_url: str, tmp_path: Path) -> None:
    async with scene(migrated_url, tmp_path) as sc:
        world = sc.world
        ops, incidents, clock = world.services.ops, world.services.incidents, world.clock
        world.add_topic("sunflower")
        world.add_topic("rose")
        await ops.tokens.set_expiry(60, actor="test")
        world.instagram.fault = "429"
        world.instagram.retry_after = 3600

        result = await ops.pipeline.publish("sunflower")
        assert result.job is not None
        incident = await open_incident(incidents, "instagram:rate-limit")
        assert incident is not None and incident.severity is Severity.P1
        # Retry-After (1 h) is longer than the first step (5 min), so it wins.
        assert result.job.next_retry_at == START + timedelta(hours=1)
        await sc.card(incident.id, "Retry 1/3 of job #1 (publish sunflower) at 10:00 UTC")
        # Diagnosis: grep "429" LOG_DIR/*.log finds the failure, with trace and incident.
        assert world.settings.log_dir is not None
        [line] = grep(world.settings.log_dir, "429", "sunflow-ops.log")
        assert " WARNING services.retry: publish sunflower failed: provider=instagram" in line
        assert f"status=429 trace={result.trace_id} incident=#{incident.id} job=#1" in line
        # collect-logs bundles those lines.
        bundle = await ops.bundles.collect(incident.id)
        with tarfile.open(bundle.path) as archive:
            member = archive.extractfile(f"incident-{incident.id}/matching.log")
            assert member is not None
            assert "status=429" in member.read().decode()
        clock.advance(minutes=59)
        assert await ops.runner.run_due() == []

        # 2. wait an hour, then publish, twice; the armed retry posts nothing more.
        world.instagram.fault = None
        clock.advance(minutes=1)
        first = await ops.pipeline.publish("sunflower")
        assert first.ok, first.detail
        assert (await ops.retry.get(result.job.id)).state is JobState.SUCCEEDED
        with pytest.raises(PublishRefused) as refused:
            await ops.pipeline.publish("sunflower")
        assert refused.value.reason is Refusal.POSTED
        assert await ops.runner.run_due() == []
        assert len(world.instagram.published) == 1
        assert await open_incident(incidents, "instagram:rate-limit") is None
        # 3. fewer posts a day: the daily limit (1) refuses a second topic, and says so.
        dry = await ops.pipeline.dry_run("rose")
        assert "daily limit is reached: 1 of PUBLISH_DAILY_LIMIT=1" in dry.text()
        for _ in range(2):
            with pytest.raises(PublishRefused) as refused:
                await ops.pipeline.publish("rose")
            assert refused.value.reason is Refusal.DAILY_LIMIT
        assert len(world.instagram.published) == 1
        await sc.card(incident.id, "resolved by")


async def test_scenario_5_stats_collection_failure(migrated_url: str, tmp_path: Path) -> None:
    async with scene(migrated_url, tmp_path) as sc:
        world = sc.world
        ops, incidents, clock = world.services.ops, world.services.incidents, world.clock
        await ops.tokens.set_expiry(60, actor="test")
        assert (await ops.stats.collect()).collected
        clock.advance(hours=27)
        world.instagram.fault = "500"

        assert not (await ops.stats.collect()).collected
        incident = await open_incident(incidents, "stats:collector")
        assert incident is not None and incident.severity is Severity.P2
        card = await sc.card(incident.id, "Retry 1/3 of job #1 (collect_stats)")
        assert card.text.startswith(BADGE[Severity.P2])
        # Diagnosis: instagram_stats.json's last_updated is old; health says stale.
        data = json.loads(world.settings.stats_file.read_text("utf-8"))
        assert data["last_updated"] == START.isoformat()
        stale = await ops.stats.health()
        assert stale.status is Status.DOWN and "stale" in stale.detail
        # P2 responds within 4 h: the ladder does not page the PD at 1 h.
        await world.services.escalation.fire_due(world.services.incidents)
        clock.advance(hours=1)
        await world.services.escalation.fire_due(world.services.incidents)
        timeline = (await incidents.get(incident.id)).timeline
        assert [e.details["step"] for e in timeline if e.kind == "escalated"] == ["retries_done"]

        # 1. collect --force and 2. the daemon restart, each twice, once Instagram is back.
        world.instagram.fault = None
        for _ in range(2):
            assert (await ops.stats.collect(force=True)).collected
        assert await open_incident(incidents, "stats:collector") is None
        assert await ops.retry.list() == []  # the failed job is settled, not retried later
        for _ in range(2):
            restarted = await ops.stats.restart()
            assert restarted.ok and restarted.next_run is not None
        assert world.services.scheduler.scheduler.get_job("stats-collector") is not None
        data = json.loads(world.settings.stats_file.read_text("utf-8"))
        assert data["last_updated"] == clock.now().isoformat()
        assert (await ops.stats.health()).status is Status.HEALTHY
        assert world.instagram.published == []
        await sc.card(incident.id, "resolved by")


async def test_scenario_6_telegram_notification_failure(migrated_url: str, tmp_path: Path) -> None:
    async with (
        webhook_receiver() as (hook, received),
        # The sender's backoff while Telegram fails tops out at 2 s here (30 s by default),
        # so its recovery is seen within the wait however long the outage took to stage.
        scene(
            migrated_url, tmp_path, fallback_webhook_url=hook, telegram_retry_max_seconds=2
        ) as sc,
    ):
        world = sc.world
        incidents, clock = world.services.incidents, world.clock
        watch, fallback = world.services.health_watch, world.services.notify.fallback
        # The fault: the Bot API answers nothing but 502s.
        sc.chat.down = True
        report = await watch.run()
        telegram = {c.name: c for c in report.components}["telegram"]
        assert telegram.status is Status.DOWN
        incident = await open_incident(incidents, "health:telegram")
        assert incident is not None and incident.severity is Severity.P2
        sender = world.services.notify.sender
        assert sender is not None
        await sc.chat.wait_for(lambda: sender.failing_since is not None)
        assert await fallback.step() == 0 and received == []
        # After TELEGRAM_FALLBACK_AFTER the fallback channel hears of it, once, though
        # only a P2 waits.
        clock.advance(minutes=5)
        assert await fallback.announce() == "down"
        await fallback.step()
        [down] = received
        assert down["event"] == "telegram_down" and down["pending"] >= 1
        assert "Telegram has not accepted a message since" in down["text"]

        # 1. the token is right; 2. the bot is back; 3. the test message, twice.
        sc.chat.down = False
        # A failed send is retried after a backoff on the service's clock, which this test
        # holds still: let a minute pass, as it would while the team checks the bot.
        clock.advance(minutes=1)
        world.services.notify.wake()
        await sc.card(incident.id, "Health check: telegram is down")
        # The sender marks the success once Telegram's answer is in (just after the fake
        # stored the message).
        await sc.chat.wait_for(lambda: sender.failing_since is None)
        assert await fallback.announce() == "up"
        assert await fallback.announce() is None
        assert [r["event"] for r in received] == ["telegram_down", "telegram_up"]
        for _ in range(2):
            results = await world.services.notify.send_test(actor="test")
            assert all(r.ok for r in results), results
        for _ in range(2):
            await watch.run()
        assert await open_incident(incidents, "health:telegram") is None
        await sc.card(incident.id, "resolved by")
        assert world.instagram.published == []
