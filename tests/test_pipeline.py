from pathlib import Path

import pytest

from services.errors import InvalidInput, NotFound
from services.models import JobState
from services.pipeline import caption_problems, check_topic
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
        done = await ops.retry.retry_now(failed.job.id, actor="test")
        assert done.state is JobState.SUCCEEDED
        assert "sunflow/sunflower/sunflower-1" in world.cloudinary.uploads
