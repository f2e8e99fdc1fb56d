from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.models import JobState
from services.stats import is_stale
from tests.fakes.world import pipeline_world

T0 = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("last", "stale"),
    [(None, True), (T0, False), (T0 - 26 * H, False), (T0 - 26 * H - timedelta(seconds=1), True)],
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
        [done] = await ops.retry.run_due()
        assert done.state is JobState.SUCCEEDED
        assert (await ops.stats.latest() or {})["account"]["username"] == "sunflow"
        # Fresh: a plain collect skips, --force collects.
        skipped = await ops.stats.collect()
        assert not skipped.collected and "--force" in skipped.detail
        assert (await ops.stats.collect(force=True)).collected
