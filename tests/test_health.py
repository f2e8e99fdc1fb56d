import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from services.config import Settings
from services.health import ComponentHealth, HealthReport, HealthWatch, Status, health_card
from services.main import open_services
from services.models import IncidentState
from services.severity import Severity
from tests.conftest import statements_seen


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


WRITING = re.compile(
    r"^\s*(INSERT|UPDATE|DELETE|BEGIN IMMEDIATE)\b|\bFOR (NO KEY UPDATE|UPDATE|KEY SHARE|SHARE)\b"
)


def writes_seen() -> AbstractContextManager[list[str]]:
    """The statements of any engine that write or open a write transaction (SQLite's BEGIN
    IMMEDIATE, PostgreSQL's row locks), while the block runs; the database check's own write
    to `health_probes` (and the transaction around it) is the probe, not incident work."""
    return _without_probe(statements_seen(lambda sql: bool(WRITING.search(sql.upper()))))


@contextmanager
def _without_probe(seen: AbstractContextManager[list[str]]) -> Iterator[list[str]]:
    with seen as statements:
        kept: list[str] = []
        yield kept
    for sql in statements:
        if "health_probes" in sql:
            if kept and kept[-1].upper().startswith("BEGIN"):
                kept.pop()  # the probe's own transaction
            continue
        kept.append(sql)


async def test_watch_writes_only_when_there_is_something_to_resolve(settings: Settings) -> None:
    async with open_services(settings) as services:
        state = {"status": Status.DOWN}

        async def flaky() -> ComponentHealth:
            return ComponentHealth("cloudinary", state["status"], "ping failed")

        services.health.register("cloudinary", flaky)
        services.scheduler.start()
        await services.sse.start()
        await HealthWatch(services.health, services.incidents).run()
        state["status"] = Status.HEALTHY
        # A new watch (a restart, another instance) still resolves what is open ...
        watch = HealthWatch(services.health, services.incidents)
        with writes_seen() as writes:
            await watch.run()
        assert writes
        assert await services.incidents.list(states=[IncidentState.TRIGGERED]) == []
        # ... and with nothing open, a healthy run only reads.
        with writes_seen() as writes:
            report = await watch.run()
            await watch.run()
        assert {c.name: c.status for c in report.components}["cloudinary"] is Status.HEALTHY
        assert writes == []
        await services.sse.stop()
        services.scheduler.shutdown()
