import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.clock import FrozenClock
from services.escalation import LadderState, _bucket, due_steps, next_step, snooze_shift
from services.incidents import AlertIn
from services.main import Services, open_services
from services.models import IncidentState
from services.policy import default_policy, parse_policy
from services.severity import Severity
from tests.conftest import make_settings

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
M = timedelta(minutes=1)
H = timedelta(hours=1)
POLICY = default_policy()


def ladder(
    state: IncidentState = IncidentState.TRIGGERED,
    fired: frozenset[tuple[int, int]] = frozenset(),
    shift: timedelta = timedelta(0),
    snoozed_until: datetime | None = None,
) -> LadderState:
    return LadderState(Severity.P1, state, T0, shift, snoozed_until, fired)


ALL_FOUR = frozenset({(0, 0), (1, 0), (2, 0), (3, 0)})


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (ladder(), ("team", T0)),
        (ladder(fired=frozenset({(0, 0)})), ("retries_done", T0 + 30 * M)),
        (ladder(fired=frozenset({(0, 0), (1, 0)})), ("pd", T0 + H)),
        (ladder(fired=frozenset({(0, 0), (1, 0), (2, 0)})), ("manual", T0 + 4 * H)),
        (ladder(fired=ALL_FOUR), None),
        (ladder(IncidentState.ACKNOWLEDGED), None),
        (ladder(IncidentState.RESOLVED), None),
        (ladder(fired=frozenset({(0, 0)}), shift=10 * M), ("retries_done", T0 + 40 * M)),
        (
            ladder(fired=frozenset({(0, 0)}), snoozed_until=T0 + 45 * M),
            ("retries_done", T0 + 45 * M),
        ),
    ],
)
def test_next_step(state: LadderState, expected: tuple[str, datetime] | None) -> None:
    step = next_step(state, POLICY)
    assert (None if step is None else (step.step.name, step.due_at)) == expected


@pytest.mark.parametrize(
    ("state", "now", "expected"),
    [
        (ladder(), T0, ["team"]),
        (ladder(fired=frozenset({(0, 0)})), T0 + 29 * M, []),
        (ladder(fired=frozenset({(0, 0)})), T0 + 30 * M, ["retries_done"]),
        # Down for two hours: each missed step fires once, in order.
        (ladder(), T0 + 2 * H, ["team", "retries_done", "pd"]),
        (ladder(fired=ALL_FOUR), T0 + 10 * H, []),
        (ladder(IncidentState.ACKNOWLEDGED), T0 + 2 * H, []),
        (ladder(fired=frozenset({(0, 0)}), snoozed_until=T0 + H), T0 + 50 * M, []),
    ],
)
def test_due_steps(state: LadderState, now: datetime, expected: list[str]) -> None:
    assert [d.step.name for d in due_steps(state, POLICY, now)] == expected


def test_repeats_collapse_when_missed() -> None:
    policy = parse_policy(
        '[[ladder.default]]\nname = "pd"\nafter = "1m"\ntarget = "pd"\nrepeat = "1m"\n'
    )
    state = LadderState(Severity.P0, IncidentState.TRIGGERED, T0, timedelta(0), None, frozenset())
    [due] = due_steps(state, policy, T0 + 5 * M + timedelta(seconds=30))
    assert (due.seq, due.due_at) == (4, T0 + 5 * M)
    after = LadderState(
        Severity.P0, IncidentState.TRIGGERED, T0, timedelta(0), None, frozenset({(0, 4)})
    )
    upcoming = next_step(after, policy)
    assert upcoming is not None
    assert upcoming.seq == 0  # earlier repeats were never fired: it would be 'due now'


def test_snooze_shift() -> None:
    state = ladder(fired=frozenset({(0, 0)}))
    assert snooze_shift(state, POLICY, T0 + 45 * M) == 15 * M
    assert snooze_shift(state, POLICY, T0 + 10 * M) == timedelta(0)


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


async def trigger(services: Services, key: str = "k", severity: Severity = Severity.P1) -> int:
    result = await services.incidents.trigger(AlertIn(severity, "fal.ai down", key, "test"))
    return result.incident.id


async def test_steps_fire_once_each(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc)
    await svc.escalation.tick(incident_id)
    await svc.escalation.tick(incident_id)
    assert await escalations(svc, incident_id) == [("team", False)]
    clock.set(T0 + 30 * M)
    await svc.escalation.tick(incident_id)
    clock.set(T0 + H)
    changes = await svc.escalation.tick(incident_id)
    await svc.escalation.tick(incident_id)
    assert await escalations(svc, incident_id) == [
        ("team", False),
        ("retries_done", False),
        ("pd", False),
    ]
    [pd] = [c for c in changes if c.kind.value == "escalated"]
    assert pd.details["user_ids"] == [900, 901]
    assert pd.details["target"] == "pd"
    info = await svc.escalation.next_step_for(incident_id)
    assert info is not None
    assert (info.name, info.due_at) == ("manual", T0 + 4 * H)


async def test_ack_stops_and_resolve_stops(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc)
    await svc.escalation.tick(incident_id)
    await svc.incidents.acknowledge(incident_id, actor="alice")
    clock.set(T0 + 5 * H)
    await svc.escalation.tick(incident_id)
    assert await escalations(svc, incident_id) == [("team", False)]
    assert await svc.escalation.next_step_for(incident_id) is None
    assert await svc.escalation.next_wakeup(incident_id) is None
    other = await trigger(svc, "other")
    await svc.incidents.resolve(other, actor="bob")
    await svc.escalation.tick(other)
    assert await escalations(svc, other) == []


async def test_reopen_starts_the_ladder_again(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc)
    clock.set(T0 + 31 * M)
    await svc.escalation.tick(incident_id)
    await svc.incidents.resolve(incident_id, actor="a")
    clock.set(T0 + 2 * H)
    await svc.incidents.reopen(incident_id, actor="a")
    await svc.escalation.tick(incident_id)
    steps = await escalations(svc, incident_id)
    assert [s for s, _ in steps] == ["team", "retries_done", "team"]
    info = await svc.escalation.next_step_for(incident_id)
    assert info is not None
    assert info.due_at == T0 + 2 * H + 30 * M


async def test_snooze_moves_the_next_step(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc)
    await svc.escalation.tick(incident_id)
    clock.set(T0 + 20 * M)
    await svc.incidents.snooze(incident_id, actor="bob", duration=H)
    info = await svc.escalation.next_step_for(incident_id)
    assert info is not None
    assert (info.name, info.due_at) == ("retries_done", T0 + 80 * M)
    clock.set(T0 + 79 * M)
    await svc.escalation.tick(incident_id)
    assert [s for s, _ in await escalations(svc, incident_id)] == ["team"]
    clock.set(T0 + 80 * M)
    await svc.escalation.tick(incident_id)
    assert [s for s, _ in await escalations(svc, incident_id)] == ["team", "retries_done"]
    info = await svc.escalation.next_step_for(incident_id)
    assert info is not None
    assert (info.name, info.due_at) == ("pd", T0 + H + 50 * M)


async def test_expiring_ack_resumes_where_it_stopped(svc: Services, clock: FrozenClock) -> None:
    incident_id = await trigger(svc)
    await svc.escalation.tick(incident_id)
    clock.set(T0 + 20 * M)
    await svc.incidents.acknowledge(incident_id, actor="alice", duration=30 * M)
    assert await svc.escalation.next_wakeup(incident_id) == T0 + 50 * M
    clock.set(T0 + 50 * M)
    await svc.escalation.tick(incident_id)  # the ack lapses; nothing is due yet
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
    await svc.escalation.tick(incident_id)
    clock.set(T0 + 2 * H)
    await svc.escalation.tick(incident_id)
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
    await svc.escalation.tick(incident_id)
    detail = await svc.incidents.get(incident_id)
    assert not [e for e in detail.timeline if e.kind == "deadline_missed"]


async def test_oncall_override(svc: Services, clock: FrozenClock) -> None:
    info = await svc.escalation.oncall()
    assert info.person is None
    assert info.pd_user_ids == [900, 901]
    info = await svc.escalation.set_oncall(user_id=77, name="Park", duration=8 * H, actor="admin")
    assert info.person is not None
    assert info.person.user_id == 77
    assert info.overridden_until == T0 + 8 * H
    incident_id = await trigger(svc)
    clock.set(T0 + H)
    changes = await svc.escalation.tick(incident_id)
    pd = [c for c in changes if c.details.get("step") == "pd"]
    assert pd[0].details["user_ids"] == [77, 900, 901]
    clock.set(T0 + 9 * H)
    assert (await svc.escalation.oncall()).person is None


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
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        steps = [s for s, _ in await escalations(services, incident_id)]
        if len(steps) >= count:
            return steps
        await asyncio.sleep(0.05)
    return [s for s, _ in await escalations(services, incident_id)]


async def test_real_scheduler_fires_a_policy_of_seconds(migrated_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(SECONDS_POLICY)
    settings = make_settings(migrated_url, escalation_policy_file=policy)
    async with open_services(settings) as services:
        services.scheduler.start()
        await services.escalation.start()
        try:
            incident_id = await trigger(services)
            steps = await wait_for_steps(services, incident_id, 3)
            await services.incidents.acknowledge(incident_id, actor="alice")
        finally:
            await services.escalation.stop()
            services.scheduler.shutdown()
    assert steps == ["team", "retries_done", "pd"]


async def test_restart_fires_a_missed_step_once_marked_late(migrated_url: str) -> None:
    clock = FrozenClock(T0)
    settings = make_settings(migrated_url)
    async with open_services(settings, clock=clock) as services:
        incident_id = await trigger(services)
        await services.escalation.tick(incident_id)
    # Down from before 30 min until 45 min: the 'retries_done' step came due meanwhile.
    clock.set(T0 + 45 * M)
    for _ in range(2):  # two restarts: the step fires at the first and never again
        async with open_services(settings, clock=clock) as services:
            services.scheduler.start()
            await services.escalation.start()
            try:
                steps = await wait_for_steps(services, incident_id, 2)
                # The timer and a second wake-up race for the same step: still one firing.
                await services.escalation.tick(incident_id)
                await asyncio.sleep(0.2)
            finally:
                await services.escalation.stop()
                services.scheduler.shutdown()
        assert steps == ["team", "retries_done"]
    async with open_services(settings, clock=clock) as services:
        assert await escalations(services, incident_id) == [
            ("team", False),
            ("retries_done", True),
        ]
        detail = await services.incidents.get(incident_id)
    late = [e for e in detail.timeline if e.details.get("step") == "retries_done"][0]
    assert late.details["late_by_seconds"] == 15 * 60


def test_timer_buckets_never_fire_early() -> None:
    on_edge = datetime(2026, 11, 21, 3, 0, 0, 200_000, tzinfo=UTC)
    assert _bucket(on_edge) == on_edge
    assert _bucket(on_edge + timedelta(microseconds=1)) == on_edge + timedelta(
        microseconds=100_000
    )
    assert _bucket(datetime(2026, 11, 21, 3, 0, 59, 950_000, tzinfo=UTC)) == datetime(
        2026, 11, 21, 3, 1, tzinfo=UTC
    )


async def test_an_opened_incident_fires_its_first_step_with_the_alert(migrated_url: str) -> None:
    """Where the timers run, the 0 s step commits in the intake's own transaction: it is on
    the timeline when the trigger returns, and a storm's incidents share one timer job."""
    # The real clock: the scheduler runs at once a job whose time has passed.
    async with open_services(make_settings(migrated_url)) as services:
        services.scheduler.start()
        await services.escalation.start()
        try:
            outcome = await services.incidents.apply_batch(
                [AlertIn(Severity.P1, f"shard {i} down", f"shard-{i}", "test") for i in range(20)],
                [],
                actor="intake",
            )
            ids = [t.incident.id for t in outcome.triggered]
            for incident_id in ids:  # no wait: already committed with the alert
                assert await escalations(services, incident_id) == [("team", False)]
            jobs = [
                j.id
                for j in services.scheduler.scheduler.get_jobs()
                if j.id.startswith("escalation:at:")
            ]
            assert len(jobs) == 1  # the next step (30 min) of all 20, one job
            opened = outcome.triggered[0].incident.first_seen_at
            assert await services.escalation.next_wakeup(ids[0]) == opened + 30 * M
            # A timer pass finds nothing more due and fires nothing twice.
            for incident_id in ids:
                assert await services.escalation.tick(incident_id) == []
        finally:
            await services.escalation.stop()
            services.scheduler.shutdown()
