import asyncio
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from services.clock import FrozenClock
from services.db import Database
from services.errors import InvalidInput, InvalidTransition, NotFound
from services.incident_types import AlertIn, ChangeKind, IncidentChange
from services.incidents import IncidentService, lapse_acknowledgements
from services.models import IncidentState
from services.policy import DEFAULT_DEADLINE_AFTER
from services.severity import Severity
from tests.conftest import statements_seen

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def alert(
    key: str = "k1", severity: Severity = Severity.P1, title: str = "fal.ai failing"
) -> AlertIn:
    return AlertIn(severity=severity, title=title, dedup_key=key, source="test")


@pytest.fixture
async def db(migrated_url: str):  # type: ignore[no-untyped-def]
    database = Database(migrated_url)
    yield database
    await database.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def incidents(db: Database, clock: FrozenClock) -> IncidentService:
    return IncidentService(db, clock)


async def test_trigger_creates_incident_with_deadline(incidents: IncidentService) -> None:
    result = await incidents.trigger(alert(severity=Severity.P2))
    assert result.created
    view = result.incident
    assert view.state is IncidentState.TRIGGERED
    assert view.occurrence_count == 1
    assert view.first_seen_at == T0
    assert view.response_deadline == T0 + timedelta(hours=4)
    detail = await incidents.get(view.id)
    assert [e.kind for e in detail.timeline] == ["triggered"]


async def test_same_dedup_key_absorbs(incidents: IncidentService, clock: FrozenClock) -> None:
    first = await incidents.trigger(alert())
    clock.advance(minutes=5)
    second = await incidents.trigger(alert())
    assert not second.created
    assert second.incident.id == first.incident.id
    assert second.incident.occurrence_count == 2
    assert second.incident.last_seen_at == T0 + timedelta(minutes=5)
    assert second.incident.first_seen_at == T0
    detail = await incidents.get(first.incident.id)
    assert [e.kind for e in detail.timeline] == ["triggered", "deduplicated"]
    assert detail.timeline[1].details["count"] == 2


async def test_the_deadline_comes_from_the_policys_deadlines(
    db: Database, clock: FrozenClock
) -> None:
    incidents = IncidentService(
        db, clock, deadlines={**DEFAULT_DEADLINE_AFTER, Severity.P1: 8 * S}
    )
    view = (await incidents.trigger(alert(severity=Severity.P1))).incident
    assert view.response_deadline == T0 + 8 * S
    await incidents.resolve(view.id, actor="a")
    clock.advance(minutes=1)
    reopened = await incidents.reopen(view.id, actor="a")
    assert reopened.response_deadline == T0 + timedelta(minutes=1) + 8 * S


async def test_more_urgent_repeat_raises_severity(incidents: IncidentService) -> None:
    await incidents.trigger(alert(severity=Severity.P2))
    raised = await incidents.trigger(alert(severity=Severity.P0))
    assert raised.incident.severity is Severity.P0
    # P0's deadline is "immediately"; the built-in policy counts it as missed after 5 min.
    assert raised.incident.response_deadline == T0 + timedelta(minutes=5)
    milder = await incidents.trigger(alert(severity=Severity.P3))
    assert milder.incident.severity is Severity.P0


async def test_resolved_incident_does_not_absorb(incidents: IncidentService) -> None:
    first = await incidents.trigger(alert())
    await incidents.resolve(first.incident.id, actor="alice")
    again = await incidents.trigger(alert())
    assert again.created
    assert again.incident.id != first.incident.id


def incident_inserts() -> AbstractContextManager[list[str]]:
    """The INSERT statements into incidents any engine runs while the block runs."""
    return statements_seen(lambda sql: sql.lstrip().upper().startswith("INSERT INTO INCIDENTS"))


async def test_a_group_opens_its_incidents_in_one_statement(incidents: IncidentService) -> None:
    """A group's new incidents are one multi-row INSERT, each id matched back to its own
    alert (by dedup key: the rows may come back in any order)."""
    batches: list[tuple[list[AlertIn], list[str]]] = [
        ([alert(f"k{i}", title=f"t{i}")], []) for i in range(40)
    ]
    with incident_inserts() as inserts:
        outcomes = await incidents.apply_batches(batches, actor="test")
    assert len(inserts) == 1
    views = [outcome.triggered[0].incident for outcome in outcomes]
    assert len({view.id for view in views}) == 40
    for i, view in enumerate(views):
        stored = (await incidents.get(view.id)).incident
        assert (stored.dedup_key, stored.title, view.title) == (f"k{i}", f"t{i}", f"t{i}")


async def test_a_group_that_reopens_a_key_gives_each_incident_its_id(
    incidents: IncidentService,
) -> None:
    """Opened, resolved and opened again in one group: two rows with one dedup key, so
    the ids come back in order instead of by key."""
    outcomes = await incidents.apply_batches(
        [([alert("k", title="first")], []), ([], ["k"]), ([alert("k", title="again")], [])],
        actor="test",
    )
    first, again = outcomes[0].triggered[0].incident, outcomes[2].triggered[0].incident
    assert outcomes[1].resolved[0].id == first.id != again.id
    assert (await incidents.get(first.id)).incident.state is IncidentState.RESOLVED
    assert (await incidents.get(again.id)).incident.title == "again"
    assert (await incidents.get(again.id)).incident.state is IncidentState.TRIGGERED


async def test_lifecycle(incidents: IncidentService, clock: FrozenClock) -> None:
    view = (await incidents.trigger(alert())).incident
    clock.advance(minutes=3)
    acked = await incidents.acknowledge(view.id, actor="alice", note="looking")
    assert acked.state is IncidentState.ACKNOWLEDGED
    assert acked.acknowledged_by == "alice"
    assert acked.acknowledged_at == T0 + timedelta(minutes=3)
    await incidents.annotate(view.id, actor="bob", text="fal.ai status page is red")
    clock.advance(minutes=10)
    resolved = await incidents.resolve(view.id, actor="bob")
    assert resolved.state is IncidentState.RESOLVED
    assert resolved.resolved_at == T0 + timedelta(minutes=13)
    reopened = await incidents.reopen(view.id, actor="carol", note="back again")
    assert reopened.state is IncidentState.TRIGGERED
    assert reopened.acknowledged_by is None
    detail = await incidents.get(view.id)
    assert [(e.kind, e.actor) for e in detail.timeline] == [
        ("triggered", "intake"),
        ("acknowledged", "alice"),
        ("annotated", "bob"),
        ("resolved", "bob"),
        ("reopened", "carol"),
    ]
    assert detail.timeline[1].details == {"note": "looking"}


@pytest.mark.parametrize(
    ("prepare", "action", "message"),
    [
        ("resolve", "resolve", "already resolved by alice"),
        ("ack", "ack", "already acknowledged by alice"),
        ("resolve", "ack", "is resolved; reopen it first"),
        ("none", "reopen", "is not resolved"),
    ],
)
async def test_invalid_transitions(
    incidents: IncidentService, prepare: str, action: str, message: str
) -> None:
    view = (await incidents.trigger(alert())).incident
    if prepare == "resolve":
        await incidents.resolve(view.id, actor="alice")
    elif prepare == "ack":
        await incidents.acknowledge(view.id, actor="alice")
    before = await incidents.get(view.id)
    with pytest.raises(InvalidTransition, match=message):
        if action == "resolve":
            await incidents.resolve(view.id, actor="bob")
        elif action == "ack":
            await incidents.acknowledge(view.id, actor="bob")
        else:
            await incidents.reopen(view.id, actor="bob")
    after = await incidents.get(view.id)
    assert after == before  # nothing half-written


async def test_unknown_incident(incidents: IncidentService) -> None:
    with pytest.raises(NotFound, match="no incident #999"):
        await incidents.acknowledge(999, actor="alice")
    with pytest.raises(NotFound):
        await incidents.get(999)


async def test_reopen_refused_when_key_reopened_elsewhere(incidents: IncidentService) -> None:
    old = (await incidents.trigger(alert())).incident
    await incidents.resolve(old.id, actor="a")
    await incidents.trigger(alert())
    with pytest.raises(InvalidTransition, match="another open incident"):
        await incidents.reopen(old.id, actor="a")


async def test_empty_title_and_long_fields_rejected(incidents: IncidentService) -> None:
    with pytest.raises(InvalidInput, match="title"):
        await incidents.trigger(alert(title="  "))
    with pytest.raises(InvalidInput, match="dedup_key is longer"):
        await incidents.trigger(alert(key="x" * 300))
    assert await incidents.list() == []


async def test_hundred_concurrent_triggers_make_one_incident(incidents: IncidentService) -> None:
    results = await asyncio.gather(*(incidents.trigger(alert("storm")) for _ in range(100)))
    assert sum(r.created for r in results) == 1
    views = await incidents.list()
    assert len(views) == 1
    assert views[0].occurrence_count == 100
    detail = await incidents.get(views[0].id)
    assert len(detail.timeline) == 100


async def test_concurrent_triggers_from_two_engines(migrated_url: str) -> None:
    """Two processes' worth of engines on one SQLite file still dedup into one incident."""
    db_a, db_b = Database(migrated_url), Database(migrated_url)
    clock = FrozenClock(T0)
    a, b = IncidentService(db_a, clock), IncidentService(db_b, clock)
    try:
        await asyncio.gather(*(svc.trigger(alert("shared")) for svc in [a, b] * 25))
        views = await a.list()
        assert [v.occurrence_count for v in views] == [50]
    finally:
        await db_a.dispose()
        await db_b.dispose()


class RecordingHook:
    def __init__(self, fail_on: ChangeKind | None = None) -> None:
        self.seen: list[tuple[str, ChangeKind]] = []
        self.done: list[ChangeKind] = []
        self.fail_on = fail_on

    def apply(self, session: Session, changes: Sequence[IncidentChange]) -> None:
        for change in changes:
            self.seen.append(("tx", change.kind))
            if change.kind is self.fail_on:
                raise RuntimeError("hook failed")

    def committed(self, changes: Sequence[IncidentChange]) -> None:
        self.done.extend(change.kind for change in changes)


async def test_hooks_run_inside_and_after_the_transaction(
    db: Database, clock: FrozenClock
) -> None:
    hook = RecordingHook()
    incidents = IncidentService(db, clock, hooks=[hook])
    view = (await incidents.trigger(alert())).incident
    await incidents.acknowledge(view.id, actor="a")
    assert hook.seen == [("tx", ChangeKind.TRIGGERED), ("tx", ChangeKind.ACKNOWLEDGED)]
    assert hook.done == [ChangeKind.TRIGGERED, ChangeKind.ACKNOWLEDGED]


async def test_failing_hook_rolls_back_the_change(db: Database, clock: FrozenClock) -> None:
    hook = RecordingHook(fail_on=ChangeKind.ACKNOWLEDGED)
    incidents = IncidentService(db, clock, hooks=[hook])
    view = (await incidents.trigger(alert())).incident
    with pytest.raises(RuntimeError):
        await incidents.acknowledge(view.id, actor="a")
    detail = await incidents.get(view.id)
    assert detail.incident.state is IncidentState.TRIGGERED
    assert [e.kind for e in detail.timeline] == ["triggered"]
    assert hook.done == [ChangeKind.TRIGGERED]


async def test_list_filters(incidents: IncidentService) -> None:
    p0 = (await incidents.trigger(alert("a", Severity.P0))).incident
    p2 = (await incidents.trigger(alert("b", Severity.P2))).incident
    await incidents.trigger(alert("c", Severity.P3))
    await incidents.resolve(p2.id, actor="x")
    open_ = await incidents.list(states=[IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED])
    assert [v.dedup_key for v in open_] == ["a", "c"]
    only_p0 = await incidents.list(severities=[Severity.P0])
    assert [v.id for v in only_p0] == [p0.id]
    counts = await incidents.count_open()
    assert counts == {"P0": 1, "P1": 0, "P2": 0, "P3": 1}


async def test_timed_ack_expires(incidents: IncidentService, clock: FrozenClock) -> None:
    view = (await incidents.trigger(alert())).incident
    acked = await incidents.acknowledge(view.id, actor="alice", duration=timedelta(minutes=30))
    assert acked.ack_expires_at == T0 + timedelta(minutes=30)
    clock.advance(minutes=29)
    await incidents.write(lambda w: lapse_acknowledgements(w, [view.id]))
    assert (await incidents.get(view.id)).incident.state is IncidentState.ACKNOWLEDGED
    clock.advance(minutes=1)
    await incidents.write(lambda w: lapse_acknowledgements(w, [view.id]))
    detail = await incidents.get(view.id)
    assert detail.incident.state is IncidentState.TRIGGERED
    assert detail.incident.acknowledged_by is None
    assert detail.timeline[-1].kind == "unacknowledged"
    assert detail.timeline[-1].details == {"acknowledged_by": "alice"}
    assert detail.timeline[1].details["until"] == (T0 + timedelta(minutes=30)).isoformat()


async def test_snooze(incidents: IncidentService) -> None:
    view = (await incidents.trigger(alert())).incident
    snoozed = await incidents.snooze(view.id, actor="bob", duration=timedelta(hours=1))
    assert snoozed.snoozed_until == T0 + timedelta(hours=1)
    assert snoozed.state is IncidentState.TRIGGERED
    with pytest.raises(InvalidInput, match="between 1 minute and 7 days"):
        await incidents.snooze(view.id, actor="bob", duration=timedelta(days=8))
    resolved = await incidents.resolve(view.id, actor="bob")
    assert resolved.snoozed_until is None
    with pytest.raises(InvalidTransition, match="nothing to snooze"):
        await incidents.snooze(view.id, actor="bob", duration=timedelta(hours=1))
