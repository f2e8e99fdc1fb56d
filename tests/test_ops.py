from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.clock import FrozenClock
from services.health import ComponentHealth, Status
from services.main import open_services, process_title
from services.ops import TOKEN_WEEKLY_CRON, add_jobs, with_last_call
from services.providers import ProviderState
from tests.fakes.world import pipeline_world

T0 = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize("started", [T0, T0 + timedelta(days=2, hours=5), T0 + timedelta(days=3)])
async def test_the_weekly_token_status_keeps_its_weekday_and_hour(
    migrated_url: str, tmp_path: Path, started: datetime
) -> None:
    """Whenever the service (re)starts, the next status is Monday 09:00 UTC."""
    async with pipeline_world(migrated_url, tmp_path) as world:
        world.clock.set(started)
        services = world.services
        add_jobs(
            services.ops,
            services.scheduler,
            services.health_watch,
            now=started,
            health_interval=60.0,
        )
        job = world.services.scheduler.scheduler.get_job("token-weekly")
        assert job is not None
        first = job.trigger.get_next_fire_time(None, started)
        following = job.trigger.get_next_fire_time(first, first + timedelta(seconds=1))
        assert (first.weekday(), first.hour, first.minute) == (0, 9, 0)
        assert first >= started and following - first == timedelta(days=7)
        assert TOKEN_WEEKLY_CRON == {"day_of_week": "mon", "hour": 9, "minute": 0}


def test_a_probe_that_answers_does_not_hide_failing_work() -> None:
    probe = ComponentHealth("fal", Status.HEALTHY, "fal-ai/flux-2-pro reachable")
    ok = ProviderState("fal", T0, None, "generate", None, "", None, 0)
    assert with_last_call(probe, ok) is probe
    assert with_last_call(probe, None) is probe
    failing = ProviderState("fal", T0, T0, "generate", 500, "fal.ai answered 500", "SF-x", 2)
    down = with_last_call(probe, failing)
    assert down.status is Status.DOWN
    assert down.detail == (
        "last real call (generate at 09:00 UTC) failed, HTTP 500, 2 in a row: fal.ai answered "
        "500 (probe: fal-ai/flux-2-pro reachable)"
    )
    assert down.figures["last_call"]["trace_id"] == "SF-x"


def test_the_process_title_names_the_instance() -> None:
    title = process_title("ops-a:8003", "127.0.0.1", 8003)
    assert "generation-service" in title  # the SSE runbook's `pgrep -f generation-service`
    assert "generation-service ops-a:8003" in title  # one instance among several


async def test_health_down_with_an_open_p0(migrated_url: str) -> None:
    from services.incident_types import AlertIn
    from services.severity import Severity
    from tests.conftest import make_settings

    settings = make_settings(migrated_url)
    async with open_services(settings, clock=FrozenClock(T0)) as services:
        services.scheduler.start()
        await services.sse.start()
        try:
            assert (await services.health.run()).status is Status.HEALTHY
            await services.incidents.trigger(
                AlertIn(Severity.P0, "SSE down", "sse-x", "test", labels={"component": "sse"})
            )
            report = await services.health.run()
            sse = {c.name: c for c in report.components}["sse"]
            assert sse.status is Status.DOWN and "open P0 incident #1" in sse.detail
            assert report.status is Status.DOWN
        finally:
            await services.sse.stop()
            services.scheduler.shutdown()
