import asyncio
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial

import pytest

from services.config import Settings
from services.health import (
    SHARED_KEYS,
    ComponentHealth,
    HealthCheck,
    HealthReport,
    HealthService,
    HealthWatch,
    Status,
    health_card,
    overall,
    with_open_incidents,
)
from services.incidents import IncidentService
from services.main import open_services
from services.models import IncidentState
from services.ops import open_incidents_by_component
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


def flaky_health(
    incidents: IncidentService, state: dict[str, Status]
) -> tuple[HealthService, HealthWatch]:
    """A health service of one component whose status is `state["status"]`, and its watch."""

    async def flaky() -> ComponentHealth:
        return ComponentHealth("cloudinary", state["status"], "ping failed")

    health = HealthService(
        [HealthCheck("cloudinary", flaky)],
        open_incidents=partial(open_incidents_by_component, incidents),
    )
    return health, HealthWatch(health, incidents)


async def test_watch_raises_per_component_and_resolves(settings: Settings) -> None:
    async with open_services(settings) as services:
        state = {"status": Status.DOWN}
        _health, watch = flaky_health(services.incidents, state)
        await watch.run()
        await watch.run()  # still down: the open incident is left alone (no card edit)
        [incident] = await services.incidents.list(states=[IncidentState.TRIGGERED])
        # The pipeline's key: a failed upload and the probe page as one incident.
        assert incident.dedup_key == "cloudinary:upload"
        assert incident.severity is Severity.P0
        assert incident.occurrence_count == 1
        state["status"] = Status.DEGRADED  # degraded neither raises nor resolves
        await watch.run()
        assert len(await services.incidents.list(states=[IncidentState.TRIGGERED])) == 1
        state["status"] = Status.HEALTHY
        await watch.run()
        assert await services.incidents.list(states=[IncidentState.TRIGGERED]) == []


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
        health, first = flaky_health(services.incidents, state)
        await first.run()
        state["status"] = Status.HEALTHY
        # A new watch (a restart, another instance) still resolves what is open ...
        watch = HealthWatch(health, services.incidents)
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


H, D, X = Status.HEALTHY, Status.DEGRADED, Status.DOWN


@pytest.mark.parametrize(
    ("components", "critical", "expected"),
    [
        ([("database", H), ("fal", H)], set(), H),
        ([("database", H), ("fal", X)], set(), D),  # fal down is P1: degraded
        ([("database", H), ("cloudinary", X)], set(), X),  # Cloudinary is P0: down
        ([("instagram_token", X)], {"instagram_token"}, X),
        ([("sse", D)], set(), D),
        ([("stats", X)], set(), D),
    ],
)
def test_overall(
    components: list[tuple[str, Status]], critical: set[str], expected: Status
) -> None:
    assert overall([ComponentHealth(n, s) for n, s in components], critical) is expected


def test_an_open_p0_makes_its_component_and_the_whole_down() -> None:
    components = [
        ComponentHealth("stats", Status.HEALTHY, "5 min old"),
        ComponentHealth("fal", Status.HEALTHY, "reachable"),
        ComponentHealth("sse", Status.HEALTHY, "ok"),
    ]
    adjusted = with_open_incidents(components, {"stats": ("P0", 7), "fal": ("P1", 8)})
    by_name = {c.name: c for c in adjusted}
    assert by_name["stats"].status is Status.DOWN
    assert by_name["stats"].detail == "5 min old; open P0 incident #7"
    assert by_name["fal"].status is Status.HEALTHY  # P1-P3 leave the probe's verdict
    assert by_name["sse"].status is Status.HEALTHY
    assert overall(adjusted, set()) is Status.DOWN


async def test_the_checks_given_run_each_within_its_timeout_and_critical_ones_decide() -> None:
    async def ok() -> ComponentHealth:
        return ComponentHealth("ignored", Status.HEALTHY, "fine")

    async def broken() -> ComponentHealth:
        raise OSError("connection refused")

    async def silent() -> ComponentHealth:
        await asyncio.Event().wait()
        raise AssertionError("never answers")

    checks = [
        HealthCheck("queue", ok),
        HealthCheck("widget", broken),
        HealthCheck("gadget", silent, timeout=0.01),
    ]
    report = await HealthService(checks).run()
    by_name = {c.name: c for c in report.components}
    assert list(by_name) == ["queue", "widget", "gadget"]  # named as given, in that order
    assert by_name["queue"].status is Status.HEALTHY
    assert (by_name["widget"].status, by_name["widget"].reason) == (Status.DOWN, "error")
    assert by_name["widget"].detail == "OSError: connection refused"
    assert (by_name["gadget"].status, by_name["gadget"].reason) == (Status.DOWN, "timeout")
    assert report.status is Status.DEGRADED  # neither is one the service cannot do without
    critical = [HealthCheck("widget", broken, critical=True), HealthCheck("queue", ok)]
    assert (await HealthService(critical).run()).status is Status.DOWN


def test_shared_keys_are_the_pipelines() -> None:
    from services.pipeline import CLOUDINARY_KEY, FAL_KEY
    from services.stats import STATS_KEY

    assert SHARED_KEYS == {"cloudinary": CLOUDINARY_KEY, "fal": FAL_KEY, "stats": STATS_KEY}
