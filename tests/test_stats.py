from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.health import Status
from services.models import IncidentState, JobState
from services.stats import is_stale
from tests.fakes.world import pipeline_world

T0 = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("last", "stale"),
    [
        (None, True),
        (T0, False),
        (T0 - 26 * H + timedelta(seconds=1), False),
        (T0 - 26 * H, True),  # at the freshness limit the data is stale
        (T0 - 27 * H, True),
    ],
)
def test_is_stale(last: datetime | None, stale: bool) -> None:
    assert is_stale(last_updated=last, now=T0, stale_after=26 * H) is stale


async def test_failed_collection_is_one_retried_job(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, clock = world.services.ops, world.clock
        world.instagram.fault = "500"
        assert not (await ops.stats.collect()).collected
        assert not (await ops.stats.collect(force=True)).collected
        [job] = await ops.retry.list()
        assert job.kind == "collect_stats" and job.state is JobState.FAILED
        assert not (await ops.stats.collect()).collected
        assert len(await ops.retry.list()) == 1  # one job, not one per failure
        world.instagram.fault = None
        clock.advance(minutes=5)
        [done] = await ops.runner.run_due()
        assert done.state is JobState.SUCCEEDED
        assert (await ops.stats.latest() or {})["account"]["username"] == "sunflow"
        # Fresh: a plain collect skips, --force collects.
        skipped = await ops.stats.collect()
        assert not skipped.collected and "--force" in skipped.detail
        assert (await ops.stats.collect(force=True)).collected


async def test_health_is_degraded_while_failing_and_down_past_the_limit(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, clock = world.services.ops, world.clock
        assert (await ops.stats.collect()).collected
        assert (await ops.stats.health()).status is Status.HEALTHY
        clock.advance(hours=2)
        world.instagram.fault = "500"
        assert not (await ops.stats.collect(force=True)).collected
        failing = await ops.stats.health()
        # Fresh data, but collection is failing: not healthy.
        assert failing.status is Status.DEGRADED
        assert "collection failing since" in failing.detail and "500" in failing.detail
        clock.advance(hours=24)
        stale = await ops.stats.health()
        assert stale.status is Status.DOWN
        assert stale.detail.startswith("stale: 26.0 h old (limit 26 h)")


async def test_a_manual_collection_settles_the_job_and_the_incident(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        ops, clock = world.services.ops, world.clock
        world.instagram.fault = "500"
        assert not (await ops.stats.collect()).collected
        [job] = await ops.retry.list()
        world.instagram.fault = None
        assert (await ops.stats.collect(force=True)).collected
        assert (await ops.retry.get(job.id)).state is JobState.SUCCEEDED
        assert await ops.retry.list() == []
        assert job.incident_id is not None
        incident = (await world.services.incidents.get(job.incident_id)).incident
        assert incident.state is IncidentState.RESOLVED
        clock.advance(minutes=5)
        assert await ops.runner.run_due() == []  # the armed retry does not collect again


async def test_restart_reports_whether_collection_works(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        stats = world.services.ops.stats
        world.instagram.fault = "500"
        failed = await stats.restart()
        assert not failed.ok and failed.next_run is not None
        assert failed.to_json()["ok"] is False and "500" in failed.to_json()["detail"]
        world.instagram.fault = None
        assert (await stats.restart()).ok
