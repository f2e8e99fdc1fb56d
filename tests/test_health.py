from services.config import Settings
from services.health import ComponentHealth, HealthReport, HealthWatch, Status, health_card
from services.main import open_services
from services.models import IncidentState
from services.severity import Severity


def test_health_card_one_line_per_component() -> None:
    report = HealthReport(
        Status.DEGRADED,
        [
            ComponentHealth("database", Status.HEALTHY, "reachable"),
            ComponentHealth("stats", Status.DOWN, "stale: 30.0 h old"),
            ComponentHealth("fal", Status.DEGRADED, "slow"),
        ],
    )
    assert health_card(report) == (
        "Health: degraded\nOK   database: reachable\nDOWN stats: stale: 30.0 h old\nWARN fal: slow"
    )


async def test_watch_raises_per_component_and_resolves(settings: Settings) -> None:
    async with open_services(settings) as services:
        state = {"status": Status.DOWN}

        async def flaky() -> ComponentHealth:
            return ComponentHealth("cloudinary", state["status"], "ping failed")

        services.health.register("cloudinary", flaky)
        watch = HealthWatch(services.health, services.incidents)
        services.scheduler.start()  # otherwise the scheduler check is down too
        await services.sse.start()  # and the SSE hub's
        await watch.run()
        await watch.run()  # a repeat absorbs into the same incident
        [incident] = await services.incidents.list(states=[IncidentState.TRIGGERED])
        assert incident.dedup_key == "health:cloudinary"
        assert incident.severity is Severity.P0
        assert incident.occurrence_count == 2
        state["status"] = Status.DEGRADED  # degraded neither raises nor resolves
        await watch.run()
        assert len(await services.incidents.list(states=[IncidentState.TRIGGERED])) == 1
        state["status"] = Status.HEALTHY
        await watch.run()
        assert await services.incidents.list(states=[IncidentState.TRIGGERED]) == []
        await services.sse.stop()
        services.scheduler.shutdown()
