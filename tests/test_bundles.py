import tarfile
from pathlib import Path

from services.bundles import recent_error_lines, redact
from tests.fakes.world import TOKEN, pipeline_world


def test_recent_error_lines(tmp_path: Path) -> None:
    (tmp_path / "publish_stderr.log").write_text("line 1\nline 2\n")
    (tmp_path / "app.log").write_text("INFO fine\nERROR boom\nWARNING 429 Too Many Requests\n")
    lines = recent_error_lines(sorted(tmp_path.glob("*.log")), limit=3)
    assert lines == [
        "app.log: WARNING 429 Too Many Requests",
        "publish_stderr.log: line 1",
        "publish_stderr.log: line 2",
    ]
    assert redact("token=abcd1234 x", ["abcd1234", "ab"]) == "token=*** x"


async def test_collect_logs_for_an_incident(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops = world.services.ops
        world.add_topic("sunflower")
        await ops.tokens.set_expiry(60, actor="test")
        world.cloudinary.fault = "500"
        result = await ops.pipeline.publish("sunflower")
        logs = world.settings.log_dir
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "publish_stderr.log").write_text(f"ERROR upload failed token={TOKEN}\n")
        [incident] = await world.services.incidents.list()
        bundle = await ops.bundles.collect(incident.id)
        assert bundle.traces == [result.trace_id]
        with tarfile.open(bundle.path) as archive:
            names = archive.getnames()
            prefix = f"incident-{incident.id}"
            assert f"{prefix}/incident.json" in names
            assert f"{prefix}/errors.log" in names
            assert f"{prefix}/traces/{result.trace_id}.json" in names
            member = archive.extractfile(f"{prefix}/errors.log")
            assert member is not None
            errors = member.read().decode()
        assert "ERROR upload failed token=***" in errors
        assert TOKEN not in errors
