from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ladder import (
    LadderState,
    Openings,
    ack_lapsed,
    deadline_due,
    due_steps,
    fired_map,
    next_step,
    next_wakeup,
    snooze_shift,
)
from services.models import IncidentState
from services.policy import Policy, default_policy, parse_policy
from services.severity import Severity

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)
POLICY = default_policy()
REPEATING = parse_policy(
    '[[ladder.default]]\nname = "team"\nafter = "0s"\ntarget = "team"\n\n'
    '[[ladder.default]]\nname = "pd"\nafter = "2s"\ntarget = "pd"\nrepeat = "5s"\n'
)


def ladder(  # noqa: PLR0917
    state: IncidentState = IncidentState.TRIGGERED,
    fired: dict[int, int] | None = None,
    shift: timedelta = timedelta(0),
    snoozed_until: datetime | None = None,
    deadline: datetime | None = T0 + H,
    deadline_missed: bool = False,
    ack_expires_at: datetime | None = None,
) -> LadderState:
    return LadderState(
        Severity.P1,
        state,
        T0,
        shift,
        snoozed_until,
        fired or {},
        deadline,
        deadline_missed,
        ack_expires_at,
    )


ALL_FOUR = {0: 0, 1: 0, 2: 0, 3: 0}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (ladder(), ("team", T0)),
        (ladder(fired={0: 0}), ("retries_done", T0 + 30 * M)),
        (ladder(fired={0: 0, 1: 0}), ("pd", T0 + H)),
        (ladder(fired={0: 0, 1: 0, 2: 0}), ("manual", T0 + 4 * H)),
        (ladder(fired=ALL_FOUR), None),
        (ladder(IncidentState.ACKNOWLEDGED), None),
        (ladder(IncidentState.RESOLVED), None),
        (ladder(fired={0: 0}, shift=10 * M), ("retries_done", T0 + 40 * M)),
        (ladder(fired={0: 0}, snoozed_until=T0 + 45 * M), ("retries_done", T0 + 45 * M)),
    ],
)
def test_next_step(state: LadderState, expected: tuple[str, datetime] | None) -> None:
    step = next_step(state, POLICY)
    assert (None if step is None else (step.step.name, step.due_at)) == expected


@pytest.mark.parametrize(
    ("state", "now", "expected"),
    [
        (ladder(), T0, ["team"]),
        (ladder(fired={0: 0}), T0 + 29 * M, []),
        (ladder(fired={0: 0}), T0 + 30 * M, ["retries_done"]),
        # Down for two hours: each missed step fires once, in order.
        (ladder(), T0 + 2 * H, ["team", "retries_done", "pd"]),
        (ladder(fired=ALL_FOUR), T0 + 10 * H, []),
        (ladder(IncidentState.ACKNOWLEDGED), T0 + 2 * H, []),
        (ladder(fired={0: 0}, snoozed_until=T0 + H), T0 + 50 * M, []),
        (ladder(fired={0: 0}, snoozed_until=T0 + H), T0 + H, ["retries_done", "pd"]),
    ],
)
def test_due_steps(state: LadderState, now: datetime, expected: list[str]) -> None:
    assert [d.step.name for d in due_steps(state, POLICY, now)] == expected


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # The next step or the deadline, whichever comes first.
        (ladder(), T0),
        (ladder(fired={0: 0}), T0 + 30 * M),
        (ladder(fired={0: 0, 1: 0}), T0 + H),
        (ladder(fired={0: 0, 1: 0}, deadline=T0 + 45 * M), T0 + 45 * M),
        (ladder(fired={0: 0, 1: 0}, deadline=T0 + 45 * M, deadline_missed=True), T0 + H),
        (ladder(fired=ALL_FOUR, deadline_missed=True), None),
        (ladder(fired=ALL_FOUR), T0 + H),
        # A snooze holds both the steps and the deadline.
        (ladder(fired={0: 0}, snoozed_until=T0 + 2 * H), T0 + 2 * H),
        # Acknowledged: only the end of a timed acknowledgement wakes it.
        (ladder(IncidentState.ACKNOWLEDGED, ack_expires_at=T0 + 20 * M), T0 + 20 * M),
        (ladder(IncidentState.ACKNOWLEDGED), None),
        (ladder(IncidentState.RESOLVED, ack_expires_at=T0 + 20 * M), None),
    ],
)
def test_next_wakeup(state: LadderState, expected: datetime | None) -> None:
    assert next_wakeup(state, POLICY) == expected


def test_missed_repeats_collapse_into_one_and_the_next_repeat_follows_its_period() -> None:
    state = replace(ladder(deadline=None), severity=Severity.P0, fired={0: 0})
    # Down from 2.8 s to 15 s: repeats 0 (2 s) and 1 (7 s) and 2 (12 s) were missed.
    [due] = due_steps(state, REPEATING, T0 + 15 * S)
    assert (due.step.name, due.seq, due.due_at) == ("pd", 2, T0 + 12 * S)
    after = replace(state, fired={0: 0, 1: 2})
    # The catch-up stands for the missed ones: the next is repeat 3, on the period.
    upcoming = next_step(after, REPEATING)
    assert upcoming is not None
    assert (upcoming.seq, upcoming.due_at) == (3, T0 + 17 * S)
    assert next_wakeup(after, REPEATING) == T0 + 17 * S
    assert due_steps(after, REPEATING, T0 + 16 * S) == []


def test_snooze_shift() -> None:
    state = ladder(fired={0: 0})
    assert snooze_shift(state, POLICY, T0 + 45 * M) == 15 * M
    assert snooze_shift(state, POLICY, T0 + 10 * M) == timedelta(0)


def test_deadline_due_and_ack_lapsed() -> None:
    assert not deadline_due(ladder(), T0 + 59 * M)
    assert deadline_due(ladder(), T0 + H)
    assert not deadline_due(ladder(deadline_missed=True), T0 + 2 * H)
    assert not deadline_due(ladder(snoozed_until=T0 + 2 * H), T0 + H)
    assert not deadline_due(ladder(IncidentState.ACKNOWLEDGED), T0 + 2 * H)
    acked = ladder(IncidentState.ACKNOWLEDGED, ack_expires_at=T0 + H)
    assert not ack_lapsed(acked, T0 + 59 * M)
    assert ack_lapsed(acked, T0 + H)


def test_fired_map_keeps_the_highest_repeat() -> None:
    assert fired_map([(0, 0), (1, 3), (1, 1), (2, 0)]) == {0: 0, 1: 3, 2: 0}


@settings(max_examples=400, deadline=None)
@given(
    state=st.sampled_from(list(IncidentState)),
    fired=st.dictionaries(st.integers(0, 1), st.integers(0, 5), max_size=2),
    shift=st.integers(0, 600),
    snooze=st.one_of(st.none(), st.integers(-60, 600)),
    deadline=st.one_of(st.none(), st.integers(0, 600)),
    missed=st.booleans(),
    ack=st.one_of(st.none(), st.integers(0, 600)),
)
def test_at_each_wakeup_something_is_due(  # noqa: PLR0917
    state: IncidentState,
    fired: dict[int, int],
    shift: int,
    snooze: int | None,
    deadline: int | None,
    missed: bool,
    ack: int | None,
) -> None:
    """The timer never spins and never sleeps through work: at the time `next_wakeup` names
    there is always something to do, and never before it."""
    ladder_state = LadderState(
        Severity.P0,
        state,
        T0,
        shift * S,
        None if snooze is None else T0 + snooze * S,
        fired,
        None if deadline is None else T0 + deadline * S,
        missed,
        None if ack is None else T0 + ack * S,
    )
    wake = next_wakeup(ladder_state, REPEATING)
    if wake is None:
        for later in (T0, T0 + H, T0 + 100 * H):
            assert not due_steps(ladder_state, REPEATING, later)
            assert not deadline_due(ladder_state, later)
            assert not ack_lapsed(ladder_state, later)
        return
    at_wake = (
        due_steps(ladder_state, REPEATING, wake)
        or deadline_due(ladder_state, wake)
        or ack_lapsed(ladder_state, wake)
    )
    assert at_wake
    before = wake - timedelta(microseconds=1)
    assert not due_steps(ladder_state, REPEATING, before)
    assert not deadline_due(ladder_state, before)
    assert not ack_lapsed(ladder_state, before)


@settings(max_examples=300, deadline=None)
@given(
    policy=st.sampled_from([POLICY, REPEATING]),
    severity=st.sampled_from(list(Severity)),
    starts=st.lists(st.integers(0, 10**7), min_size=1, max_size=5),
    deadlines=st.lists(st.one_of(st.none(), st.integers(-600, 7200)), min_size=5, max_size=5),
)
def test_an_opening_is_the_started_run_and_its_wakeup_at_any_start(
    policy: Policy, severity: Severity, starts: list[int], deadlines: list[int | None]
) -> None:
    """Kept per severity and deadline distance, the first wake-up is what `next_wakeup`
    says of each run started, whenever it starts."""
    openings = Openings(policy)
    for start, deadline in zip(starts, deadlines, strict=False):
        at = T0 + start * S
        due = None if deadline is None else at + deadline * S
        started = openings.started(severity, at, due)
        assert started.fired == {
            i: 0
            for i, s in enumerate(policy.ladder(severity))
            if s.after == timedelta(0) and s.target == "team"
        }
        assert started.state is IncidentState.TRIGGERED and started.started_at == at
        assert openings.first_wakeup(severity, at, due) == next_wakeup(started, policy)
