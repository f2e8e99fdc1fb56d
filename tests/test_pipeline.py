from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.errors import InvalidInput, InvalidTransition, NotFound
from services.models import IncidentState, JobState
from services.pipeline import caption_problems, check_topic
from services.publications import PublishRefused
from tests.fakes.fal import PNG
from tests.fakes.world import pipeline_world


@pytest.mark.parametrize(
    ("caption", "problems"),
    [
        ("Sunflowers #garden", []),
        ("", ["the caption is empty"]),
        ("x" * 2200, []),
        ("x" * 2201, ["2201 characters, Instagram takes 2200"]),
        (" ".join(f"#t{i}" for i in range(30)), []),
        (" ".join(f"#t{i}" for i in range(31)), ["31 hashtags, Instagram takes 30"]),
        (" ".join(f"@u{i}" for i in range(21)), ["21 mentions, Instagram takes 20"]),
        ("mail me at a@b.c, issue#4", []),
    ],
)
def test_caption_problems(caption: str, problems: list[str]) -> None:
    assert caption_problems(caption) == problems


@pytest.mark.parametrize("topic", ["", "../etc", "Sun Flower", "a/b", "x" * 65])
def test_check_topic_refuses(topic: str) -> None:
    with pytest.raises(InvalidInput, match="not a topic"):
        check_topic(topic)


async def test_publish_carousel_under_one_trace(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops = world.services.ops
        world.add_topic("sunflower", images=3)
        result = await ops.pipeline.publish("sunflower")
        assert result.ok, result.detail
        [post] = world.instagram.published
        assert post["caption"].startswith("Sunflowers at dawn")
        assert len(post["children"].split(",")) == 3
        trace = await ops.traces.get(result.trace_id)
        assert [s.name for s in trace.steps] == ["images", "caption", "upload", "instagram"]
        assert trace.status == "ok"
        assert trace.steps[-1].details["media_id"] == post["id"]


async def test_publish_generates_images_when_none(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops = world.services.ops
        world.add_topic("sunflower", images=0)
        result = await ops.pipeline.publish("sunflower")
        assert result.ok, result.detail
        assert (world.content / "images" / "sunflower" / "sunflower-1.png").read_bytes() == PNG
        assert (
            world.fal.submitted[0]["prompt"] == "Sunflowers at dawn. #sunflower #garden @sunflow"
        )


async def test_generation_timeout_is_a_failed_job(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path, fal_timeout_seconds=0.2) as world:
        world.fal.fault = "stuck"
        result = await world.services.ops.pipeline.generate_images("sunflower")
        assert not result.ok
        assert "not done within 0.2 s" in result.detail
        assert result.job is not None and result.job.state is JobState.FAILED


async def test_bad_caption_is_not_retried(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        world.add_topic("sunflower", caption="#a " * 31)
        result = await world.services.ops.pipeline.publish("sunflower")
        assert not result.ok and "31 hashtags" in result.detail
        assert result.job is not None and result.job.state is JobState.EXHAUSTED
        assert world.cloudinary.uploads == {}


async def test_dry_run_reports_every_problem_and_posts_nothing(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path, fal_key=None) as world:
        ops = world.services.ops
        world.cloudinary.fault = "500"
        world.instagram.valid_tokens.clear()
        report = await ops.pipeline.dry_run("sunflower")
        assert not report.ok
        assert {c.name: c.ok for c in report.checks} == {
            "token": False,
            "guards": True,
            "images": False,
            "caption": False,
            "cloudinary": False,
        }
        assert "NOT READY" in report.text()
        assert world.instagram.published == [] and world.cloudinary.uploads == {}
        trace = await ops.traces.get(report.trace_id)
        assert trace.status == "error" and trace.error is not None
        assert "token" in trace.error


async def test_manual_upload_keeps_the_file_under_the_topic(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        outside = tmp_path / "download.png"
        outside.write_bytes(PNG)
        result = await world.services.ops.pipeline.upload(outside, topic="sunflower")
        assert result.ok
        assert (world.content / "images" / "sunflower" / "download.png").read_bytes() == PNG
        with pytest.raises(NotFound):
            await world.services.ops.pipeline.upload(tmp_path / "missing.png")
        (tmp_path / "notes.txt").write_text("x")
        with pytest.raises(InvalidInput, match="not an image"):
            await world.services.ops.pipeline.upload(tmp_path / "notes.txt")


async def test_failed_manual_upload_is_retried(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops = world.services.ops
        folder = world.add_topic("sunflower")
        world.cloudinary.fault = "500"
        failed = await ops.pipeline.upload(folder / "sunflower-1.png")
        assert not failed.ok and failed.job is not None
        assert failed.job.topic == "sunflower/sunflower-1.png"
        world.cloudinary.fault = None
        done = await ops.runner.retry_now(failed.job.id, actor="test")
        assert done.state is JobState.SUCCEEDED
        assert "sunflow/sunflower/sunflower-1" in world.cloudinary.uploads


async def test_a_topic_is_posted_once_unless_forced(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path, publish_daily_limit=5) as world:
        pipeline = world.services.ops.pipeline
        world.add_topic("daisy")
        assert (await pipeline.publish("daisy")).ok
        for _ in range(2):
            with pytest.raises(PublishRefused, match="nothing to retry: daisy is already posted"):
                await pipeline.publish("daisy", retry=True)
            with pytest.raises(PublishRefused, match="daisy is already posted"):
                await pipeline.publish("daisy")
        assert len(world.instagram.published) == 1
        forced = await pipeline.publish("daisy", force=True)
        assert forced.ok
        assert len(world.instagram.published) == 2
        world.add_topic("rose")
        with pytest.raises(InvalidTransition, match="nothing to retry: no failed publish of rose"):
            await pipeline.publish("rose", retry=True)
        assert len(world.instagram.published) == 2


async def test_the_daily_limit_holds_and_the_retry_waits_for_tomorrow(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, clock = world.services.ops, world.clock
        world.add_topic("daisy")
        world.add_topic("rose")
        world.instagram.fault = "429"
        failed = await ops.pipeline.publish("daisy")
        assert failed.job is not None
        world.instagram.fault = None
        assert (await ops.pipeline.publish("rose")).ok  # the day's one post
        clock.advance(minutes=5)
        [waiting] = await ops.runner.run_due()
        assert waiting.state is JobState.FAILED and waiting.attempts == 0
        assert waiting.next_retry_at == datetime(2026, 1, 31, tzinfo=UTC)
        assert waiting.last_error.startswith("the daily limit is reached: 1 of")
        # rose's post showed the rate limit is over: its incident is resolved already.
        assert waiting.incident_id is not None
        incident = (await world.services.incidents.get(waiting.incident_id)).incident
        assert incident.state is IncidentState.RESOLVED
        assert len(world.instagram.published) == 1
        clock.set(datetime(2026, 1, 31, 0, 0, 30, tzinfo=UTC))
        [posted] = await ops.runner.run_due()
        assert posted.state is JobState.SUCCEEDED
        assert [p["caption"][:7] for p in world.instagram.published] == ["Sunflow", "Sunflow"]
        assert len(world.instagram.published) == 2


async def test_a_manual_publish_settles_the_waiting_job(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, clock = world.services.ops, world.clock
        world.add_topic("daisy")
        world.cloudinary.fault = "500"
        failed = await ops.pipeline.publish("daisy")
        assert failed.job is not None and failed.job.incident_id is not None
        world.cloudinary.fault = None
        assert (await ops.pipeline.publish("daisy")).ok
        assert (await ops.retry.get(failed.job.id)).state is JobState.SUCCEEDED
        incident = (await world.services.incidents.get(failed.job.incident_id)).incident
        assert incident.state is IncidentState.RESOLVED
        for minutes in (5, 15, 30):
            clock.advance(minutes=minutes)
            assert await ops.runner.run_due() == []
        assert len(world.instagram.published) == 1


async def test_a_failure_records_the_provider_and_health_tells_it(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops = world.services.ops
        world.fal.fault = "500"
        failed = await ops.pipeline.generate_images("lily")
        assert not failed.ok and failed.job is not None
        state = await ops.providers.get("fal")
        assert state is not None and state.failing and state.status == 500
        assert state.operation == "generate" and state.trace_id == failed.trace_id
        # The probe still answers; the health report says what the real call said.
        fal = {c.name: c for c in (await world.services.health.run()).components}["fal"]
        assert fal.status.value == "down"
        assert fal.detail.startswith("last real call (generate at 09:00 UTC) failed, HTTP 500")
        world.fal.fault = None
        assert (await ops.pipeline.generate_images("lily", retry=True)).ok
        state = await ops.providers.get("fal")
        assert state is not None and not state.failing
        fal = {c.name: c for c in (await world.services.health.run()).components}["fal"]
        assert fal.status.value == "healthy"


async def test_the_playbooks_dry_run_works_on_a_fresh_install(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        await world.services.ops.tokens.set_expiry(60, actor="test")
        report = await world.services.ops.pipeline.dry_run("test_topic")
        assert report.ok, report.text()
        assert world.instagram.published == [] and world.cloudinary.uploads == {}
        # Any other topic without content is still not ready.
        assert not (await world.services.ops.pipeline.dry_run("other")).ok


async def test_a_lost_publish_answer_is_never_posted_twice(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path, integration_timeout_seconds=0.3) as world:
        ops, clock = world.services.ops, world.clock
        world.add_topic("daisy")
        world.instagram.fault = "lost"  # Instagram posts, the answer never arrives in time
        result = await ops.pipeline.publish("daisy")
        assert not result.ok and len(world.instagram.published) == 1
        [claim] = await ops.publications.of_topic("daisy")
        assert claim.state.value == "interrupted"
        world.instagram.fault = None
        clock.advance(minutes=5)
        [job] = await ops.runner.run_due()  # the retry does not post again ...
        assert job.state is JobState.EXHAUSTED
        assert "whether Instagram posted it is unknown" in job.last_error
        assert job.incident_id is not None  # ... and a person is asked to look
        incident = (await world.services.incidents.get(job.incident_id)).incident
        assert incident.dedup_key == "publish:daisy" and incident.severity.value == "P1"
        with pytest.raises(PublishRefused, match="interrupted"):
            await ops.pipeline.publish("daisy")
        assert len(world.instagram.published) == 1
        # Checked on the account: it was not there (say), so the person forces it.
        assert (await ops.pipeline.publish("daisy", force=True)).ok
        assert len(world.instagram.published) == 2


async def test_publishing_blocked_is_p0(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        world.add_topic("daisy")
        world.instagram.fault = "403"
        result = await world.services.ops.pipeline.publish("daisy")
        assert result.job is not None and result.job.incident_id is not None
        incident = (await world.services.incidents.get(result.job.incident_id)).incident
        assert incident.dedup_key == "instagram:blocked" and incident.severity.value == "P0"
