import os
import tarfile
from pathlib import Path

from services.bundles import matching_lines, needles_for, recent_error_lines, redact
from tests.fakes.world import TOKEN, pipeline_world
from tests.test_scenarios import log_files


def test_recent_error_lines() -> None:
    sources = [
        ("app.log", ["INFO fine", "ERROR boom", "WARNING 429 Too Many Requests"]),
        ("publish_stderr.log", ["line 1", "line 2"]),
    ]
    lines = recent_error_lines(sources, limit=3)
    assert lines == [
        "app.log: WARNING 429 Too Many Requests",
        "publish_stderr.log: line 1",
        "publish_stderr.log: line 2",
    ]
    assert redact("token=abcd1234 x", ["abcd1234", "ab"]) == "token=*** x"


def test_matching_lines_name_the_incident_its_jobs_and_traces() -> None:
    needles = needles_for(7, [3], ["SF-20260130-090000-abcd"])
    sources = [
        (
            "sunflow-ops.log",
            [
                "WARNING x: status=429 trace=SF-20260130-090000-abcd incident=#7 job=#3 ...",
                "ERROR x: failed: incident=#70 job=#30 other",
                "INFO x: job #3 publish a settled by publish",
                "INFO x: trace SF-20260130-090000-abcd exported",
            ],
        ),
        ("sunflow-ops_stderr.log", ["ERROR x: incident=#7 job=#3 (also in sunflow-ops.log)"]),
    ]
    assert [line.split(": ", 1)[1] for line in matching_lines(sources, needles)] == [
        "WARNING x: status=429 trace=SF-20260130-090000-abcd incident=#7 job=#3 ...",
        "INFO x: job #3 publish a settled by publish",
        "INFO x: trace SF-20260130-090000-abcd exported",
    ]


async def test_collect_logs_holds_the_429_lines_of_a_real_failing_run(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops = world.services.ops
        world.add_topic("sunflower")
        await ops.tokens.set_expiry(60, actor="test")
        world.instagram.fault = "429"
        world.instagram.retry_after = 60
        logs = world.settings.log_dir
        assert logs is not None
        with log_files(logs):
            result = await ops.pipeline.publish("sunflower")
            world.clock.advance(minutes=5)
            await ops.runner.run_due()
        (logs / "older_stderr.log").write_text(f"ERROR upload failed token={TOKEN}\n")
        assert result.job is not None and result.job.incident_id is not None
        incident_id = result.job.incident_id
        # Where the service runs under systemd, journald has the lines too.
        journalctl = tmp_path / "journalctl"
        journalctl.write_text(
            "#!/bin/sh\n"
            'echo "2026-01-30T09:05:00+0000 host sunflow-ops[1]: WARNING services.retry: '
            f'publish sunflower failed: status=429 incident=#{incident_id} job=#1 (journal)"\n'
        )
        journalctl.chmod(0o755)
        ops.bundles.journalctl = str(journalctl)
        bundle = await ops.bundles.collect(incident_id)
        assert bundle.traces and result.trace_id in bundle.traces
        assert bundle.sources == [
            "older_stderr.log",
            "sunflow-ops.log",
            "sunflow-ops_stderr.log",
            "journal",
        ]
        with tarfile.open(bundle.path) as archive:
            prefix = f"incident-{incident_id}"
            names = archive.getnames()
            assert f"{prefix}/jobs.json" in names
            assert f"{prefix}/traces/{result.trace_id}.json" in names

            def read(name: str) -> str:
                member = archive.extractfile(f"{prefix}/{name}")
                assert member is not None
                return member.read().decode()

            matching, errors = read("matching.log"), read("errors.log")
        failures = [line for line in matching.splitlines() if "status=429" in line]
        # The first run and the retry at 09:05, from the file; and journald's copy.
        assert len(failures) == 3, matching
        assert failures[0].startswith("sunflow-ops.log: ")
        assert f"trace={result.trace_id} incident=#{incident_id} job=#1" in failures[0]
        assert failures[-1].startswith("journal: ") and failures[-1].endswith("(journal)")
        assert "ERROR upload failed token=***" in errors
        assert TOKEN not in errors + matching
        assert os.access(bundle.path, os.R_OK)


async def test_no_journal_and_no_log_dir_still_bundle(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path, log_dir="") as world:
        ops = world.services.ops
        # journalctl answering "No journal files were found" (no systemd here): exit 1.
        ops.bundles.journalctl = str(tmp_path / "false")
        (tmp_path / "false").write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / "false").chmod(0o755)
        world.add_topic("sunflower")
        world.cloudinary.fault = "500"
        result = await ops.pipeline.publish("sunflower")
        assert result.job is not None and result.job.incident_id is not None
        bundle = await ops.bundles.collect(result.job.incident_id)
        assert bundle.sources == [] and bundle.matching_lines == 0
