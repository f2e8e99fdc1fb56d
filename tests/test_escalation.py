import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from services.clock import FrozenClock
from services.container import Services
from services.incident_types import AlertIn
from services.main import open_services
from services.models import EscalationFiring, EscalationLadder, IncidentState
from services.severity import Severity
from services.timers import EscalationTimer
from tests.conftest import make_settings
from tests.waiting import until

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)


# -- the service, with an injected clock -------------------------------------------------


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
async def svc(migrated_url: str, clock: FrozenClock) -> AsyncIterator[Services]:
    settings = make_settings(migrated_url, telegram_pd_user_ids="900,901")
    async with open_services(settings, clock=clock) as services:
        yield services


async def escalations(services: Services, incident_id: int) -> list[tuple[str, bool]]:
    detail = await services.incidents.get(incident_id)
    return [
        (e.details["step"], e.details["late"]) for e in detail.timeline if e.kind == "escalated"
    ]


async def stored_wake(services: Services, incident_id: int) -> datetime | None:
    async with services.db.read() as session:
        return await session.scalar(
            select(EscalationLadder.next_wake_at).where(
                EscalationLadder.incident_id == incident_id
            )
        )


async def trigger(services: Services, key: str = "k", severity: Severity = Severity.P1) -> int:
    result = await services.incidents.trigger(AlertIn(severity, "fal.ai down", key, "test"))
    return result.incident.id


async def test_steps_fire_once_each(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc)
    await svc.escalation.fire_due(svc.incidents)
    await svc.escalation.fire_due(svc.incidents)
    assert await escalations(svc, incident_id) == []  # the alert itself is the 0 s step
    clock.set(T0 + 30 * M)
    await svc.escalation.fire_due(svc.incidents)
    clock.set(T0 + H)
    changes = await svc.escalation.fire_due(svc.incidents)
    await svc.escalation.fire_due(svc.incidents)
    assert await escalations(svc, incident_id) == [("retries_done", False), ("pd", False)]
    [pd] = [c for c in changes if c.kind.value == "escalated"]
    assert pd.details["user_ids"] == [900, 901]
    assert pd.details["target"] == "pd"
    info = await svc.escalation.next_step_for(incident_id)
    assert info is not None
    assert (info.name, info.due_at) == ("manual", T0 + 4 * H)


async def test_ack_stops_and_resolve_stops(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc)
    await svc.escalation.fire_due(svc.incidents)
    await svc.incidents.acknowledge(incident_id, actor="alice")
    clock.set(T0 + 5 * H)
    await svc.escalation.fire_due(svc.incidents)
    assert await escalations(svc, incident_id) == []
    assert await svc.escalation.next_step_for(incident_id) is None
    assert await stored_wake(svc, incident_id) is None
    other = await trigger(svc, "other")
    await svc.incidents.resolve(other, actor="bob")
    await svc.escalation.fire_due(svc.incidents)
    assert await escalations(svc, other) == []


async def test_reopen_starts_the_ladder_again(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc)
    clock.set(T0 + 31 * M)
    await svc.escalation.fire_due(svc.incidents)
    await svc.incidents.resolve(incident_id, actor="a")
    clock.set(T0 + 2 * H)
    await svc.incidents.reopen(incident_id, actor="a")
    await svc.escalation.fire_due(svc.incidents)
    steps = await escalations(svc, incident_id)
    assert [s for s, _ in steps] == ["retries_done"]
    info = await svc.escalation.next_step_for(incident_id)
    assert info is not None
    assert info.due_at == T0 + 2 * H + 30 * M


async def test_snooze_moves_the_next_step(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc)
    await svc.escalation.fire_due(svc.incidents)
    clock.set(T0 + 20 * M)
    await svc.incidents.snooze(incident_id, actor="bob", duration=H)
    info = await svc.escalation.next_step_for(incident_id)
    assert info is not None
    assert (info.name, info.due_at) == ("retries_done", T0 + 80 * M)
    clock.set(T0 + 79 * M)
    await svc.escalation.fire_due(svc.incidents)
    assert [s for s, _ in await escalations(svc, incident_id)] == []
    clock.set(T0 + 80 * M)
    await svc.escalation.fire_due(svc.incidents)
    assert [s for s, _ in await escalations(svc, incident_id)] == ["retries_done"]
    info = await svc.escalation.next_step_for(incident_id)
    assert info is not None
    assert (info.name, info.due_at) == ("pd", T0 + H + 50 * M)


async def test_expiring_ack_resumes_where_it_stopped(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc)
    await svc.escalation.fire_due(svc.incidents)
    clock.set(T0 + 20 * M)
    await svc.incidents.acknowledge(incident_id, actor="alice", duration=30 * M)
    assert await stored_wake(svc, incident_id) == T0 + 50 * M
    clock.set(T0 + 50 * M)
    await svc.escalation.fire_due(svc.incidents)  # the ack lapses; nothing is due yet
    detail = await svc.incidents.get(incident_id)
    assert detail.incident.state is IncidentState.TRIGGERED
    assert [e.kind for e in detail.timeline][-1] == "unacknowledged"
    info = await svc.escalation.next_step_for(incident_id)
    assert info is not None
    # 10 minutes were left before 'retries_done' when the ack came; 10 minutes are left now.
    assert (info.name, info.due_at) == ("retries_done", T0 + 60 * M)


async def test_deadline_missed_once(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc, severity=Severity.P1)
    clock.set(T0 + H)
    await svc.escalation.fire_due(svc.incidents)
    clock.set(T0 + 2 * H)
    await svc.escalation.fire_due(svc.incidents)
    detail = await svc.incidents.get(incident_id)
    missed = [e for e in detail.timeline if e.kind == "deadline_missed"]
    assert len(missed) == 1
    assert missed[0].details["severity"] == "P1"
    text = svc.metrics.render().decode()
    assert 'sunflow_response_deadlines_missed_total{severity="P1"} 1.0' in text
    assert 'sunflow_escalation_steps_fired_total{severity="P1",step="pd"} 1.0' in text


async def test_acknowledged_in_time_is_no_miss(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc, severity=Severity.P1)
    clock.set(T0 + 59 * M)
    await svc.incidents.acknowledge(incident_id, actor="alice")
    clock.set(T0 + 2 * H)
    await svc.escalation.fire_due(svc.incidents)
    detail = await svc.incidents.get(incident_id)
    assert not [e for e in detail.timeline if e.kind == "deadline_missed"]


async def test_oncall_override(svc: Services, clock: FrozenClock) -> None:
    info = await svc.oncall.oncall()
    assert info.person is None
    assert info.pd_user_ids == [900, 901]
    info = await svc.oncall.set_oncall(user_id=77, name="Park", duration=8 * H, actor="admin")
    assert info.person is not None
    assert info.person.user_id == 77
    assert info.overridden_until == T0 + 8 * H
    await trigger(svc)
    clock.set(T0 + H)
    changes = await svc.escalation.fire_due(svc.incidents)
    pd = [c for c in changes if c.details.get("step") == "pd"]
    assert pd[0].details["user_ids"] == [77, 900, 901]
    clock.set(T0 + 9 * H)
    assert (await svc.oncall.oncall()).person is None


# -- real time and restarts -----------------------------------------------------------------

SECONDS_POLICY = """
[[ladder.default]]
name = "team"
after = "0s"
target = "team"

[[ladder.default]]
name = "retries_done"
after = "1s"
target = "team"

[[ladder.default]]
name = "pd"
after = "2s"
target = "pd"
"""


async def wait_for_steps(services: Services, incident_id: int, count: int) -> list[str]:
    async def steps() -> list[str] | None:
        fired = [s for s, _ in await escalations(services, incident_id)]
        return fired if len(fired) >= count else None

    result: list[str] = await until(steps, 10, f"{count} steps of #{incident_id}")
    return result


@asynccontextmanager
async def timer_running(services: Services) -> AsyncIterator[None]:
    """The escalation timer as `serve` runs it (a lone instance: no lease to compete for)."""
    timer = EscalationTimer(
        services.escalation, services.incidents, services.alarm, services.clock, sweep_seconds=0.2
    )
    timer.start()
    try:
        yield
    finally:
        await timer.stop()


async def test_the_timer_fires_a_policy_of_seconds(migrated_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(SECONDS_POLICY)
    settings = make_settings(migrated_url, escalation_policy_file=policy)
    async with open_services(settings) as services, timer_running(services):
        incident_id = await trigger(services)
        steps = await wait_for_steps(services, incident_id, 2)
        await services.incidents.acknowledge(incident_id, actor="alice")
    assert steps == ["retries_done", "pd"]


async def test_restart_fires_a_missed_step_once_marked_late(migrated_url: str) -> None:
    clock = FrozenClock(T0)
    settings = make_settings(migrated_url)
    async with open_services(settings, clock=clock) as services:
        incident_id = await trigger(services)
        await services.escalation.fire_due(services.incidents)
    # Down from before 30 min until 45 min: the 'retries_done' step came due meanwhile.
    clock.set(T0 + 45 * M)
    for _ in range(2):  # two restarts: the step fires at the first and never again
        async with open_services(settings, clock=clock) as services, timer_running(services):
            steps = await wait_for_steps(services, incident_id, 1)
            # The timer and a second caller race for the same step: still one firing.
            await services.escalation.fire_due(services.incidents)
            await asyncio.sleep(0.3)
        assert steps == ["retries_done"]
    async with open_services(settings, clock=clock) as services:
        assert await escalations(services, incident_id) == [("retries_done", True)]
        detail = await services.incidents.get(incident_id)
    late = [e for e in detail.timeline if e.details.get("step") == "retries_done"][0]
    assert late.details["late_by_seconds"] == 15 * 60


async def test_an_opened_incident_records_its_first_step_with_the_alert(svc: Services) -> None:
    """The 0 s step to the team chat is the alert itself: it is claimed when the trigger
    returns (committed with the alert) with no timeline entry or message of its own, and
    the next wake-up is stored in the same transaction."""
    outcome = await svc.incidents.apply_batch(
        [AlertIn(Severity.P1, f"shard {i} down", f"shard-{i}", "test") for i in range(20)],
        [],
        actor="intake",
    )
    ids = [t.incident.id for t in outcome.triggered]
    async with svc.db.read() as session:
        claimed = (
            await session.execute(
                select(EscalationFiring.incident_id, EscalationFiring.step_name).order_by(
                    EscalationFiring.incident_id
                )
            )
        ).all()
    assert [tuple(row) for row in claimed] == [(i, "team") for i in ids]
    for incident_id in ids:  # no wait: already committed with the alert
        assert await escalations(svc, incident_id) == []
        assert await stored_wake(svc, incident_id) == T0 + 30 * M
    assert await svc.escalation.fire_due(svc.incidents) == []  # nothing more is due; nothing twice


async def test_the_stored_wakeup_follows_every_write(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc, severity=Severity.P1)
    assert await stored_wake(svc, incident_id) == T0 + 30 * M
    clock.set(T0 + 10 * M)
    await svc.incidents.acknowledge(incident_id, actor="alice", duration=15 * M)
    assert await stored_wake(svc, incident_id) == T0 + 25 * M
    clock.set(T0 + 25 * M)
    # lapses: 15 min acknowledged move the ladder on by 15
    await svc.escalation.fire_due(svc.incidents)
    assert await stored_wake(svc, incident_id) == T0 + 45 * M
    await svc.incidents.snooze(incident_id, actor="bob", duration=H)
    assert await stored_wake(svc, incident_id) == T0 + 85 * M
    await svc.incidents.resolve(incident_id, actor="bob")
    assert await stored_wake(svc, incident_id) is None
    await svc.incidents.reopen(incident_id, actor="bob")
    assert await stored_wake(svc, incident_id) == T0 + 55 * M


async def test_the_deadline_comes_from_the_policy_and_the_miss_says_who_is_next(
    migrated_url: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(SECONDS_POLICY + '\n[deadlines]\nP1 = "8s"\nP0 = "3s"\n')
    clock = FrozenClock(T0)
    settings = make_settings(
        migrated_url, escalation_policy_file=policy, telegram_pd_user_ids="900"
    )
    async with open_services(settings, clock=clock) as services:
        p1 = await trigger(services, "p1", Severity.P1)
        p0 = await trigger(services, "p0", Severity.P0)
        [view_p1] = [i for i in await services.incidents.list() if i.id == p1]
        assert view_p1.response_deadline == T0 + timedelta(seconds=8)
        assert (await services.incidents.get(p0)).incident.response_deadline == T0 + 3 * S
        clock.set(T0 + S)
        await services.escalation.fire_due(services.incidents)
        clock.set(T0 + 3 * S)
        await services.escalation.fire_due(services.incidents)
        detail = await services.incidents.get(p0)
    [missed] = [e for e in detail.timeline if e.kind == "deadline_missed"]
    assert missed.details["severity"] == "P0"
    assert missed.details["deadline"] == (T0 + 3 * S).isoformat()
    assert missed.details["response_seconds"] == 3
    assert missed.details["unacknowledged_seconds"] == 3
    # 'pd' (2 s) fired before the deadline (3 s) in this run: nothing is left to page.
    assert missed.details["next"] is None
