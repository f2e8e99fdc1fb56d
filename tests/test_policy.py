from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.policy import (
    PLAYBOOK_LADDER,
    PLAYBOOK_LADDERS,
    Override,
    Person,
    PolicyError,
    Rotation,
    default_policy,
    load_policy,
    next_handover,
    oncall_at,
    parse_policy,
)
from services.severity import Severity

GOOD = """
[oncall]
period = "1d"
start = 2026-11-02T09:00:00+09:00
people = [{ id = 111, name = "Kim" }, { id = 222, name = "Lee" }, 333]

[deadlines]
P0 = "2m"

[[ladder.default]]
name = "team"
after = "0s"
target = "team"
message = "posted"

[[ladder.default]]
name = "pd"
after = "10m"
target = "pd"
message = "paging"
repeat = "5m"

[[ladder.P3]]
name = "team"
after = "0s"
target = "team"
"""


def test_default_policy_is_the_playbook_ladder_per_severity() -> None:
    policy = default_policy()
    playbook = [
        ("team", timedelta(0), "team"),
        ("retries_done", timedelta(minutes=30), "team"),
        ("pd", timedelta(hours=1), "pd"),
        ("manual", timedelta(hours=4), "team"),
    ]
    expected = {
        Severity.P0: playbook,
        Severity.P1: playbook,
        Severity.P2: [
            ("team", timedelta(0), "team"),
            ("retries_done", timedelta(minutes=30), "team"),
            ("pd", timedelta(hours=4), "pd"),
            ("manual", timedelta(hours=8), "team"),
        ],
        Severity.P3: [("team", timedelta(0), "team"), ("pd", timedelta(hours=24), "pd")],
    }
    for severity, steps in expected.items():
        assert [(s.name, s.after, s.target) for s in policy.ladder(severity)] == steps
    assert policy.deadline_after[Severity.P1] == timedelta(hours=1)
    assert policy.deadline_after[Severity.P0] == timedelta(minutes=5)
    assert load_policy(None) == policy


@pytest.mark.parametrize("severity", list(Severity))
def test_no_built_in_ladder_pages_the_pd_before_the_response_time(severity: Severity) -> None:
    for step in default_policy().ladder(severity):
        if step.target == "pd":
            assert step.after >= severity.response_time, (severity, step)


def test_the_built_in_retry_step_claims_nothing_it_cannot_know() -> None:
    # The step's text is filled in when it fires; its default must not say "done".
    for steps in PLAYBOOK_LADDERS.values():
        for step in steps:
            assert "done" not in step.message


def test_parse_full_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    policy = load_policy(path)
    assert [s.name for s in policy.ladder(Severity.P0)] == ["team", "pd"]
    assert policy.ladder(Severity.P0)[1].repeat == timedelta(minutes=5)
    assert [s.name for s in policy.ladder(Severity.P3)] == ["team"]
    assert policy.deadline_after[Severity.P0] == timedelta(minutes=2)
    assert policy.rotation is not None
    assert [p.user_id for p in policy.rotation.people] == [111, 222, 333]
    assert policy.rotation.start == datetime(2026, 11, 2, 0, 0, tzinfo=UTC)


def test_missing_severity_falls_back_to_the_playbook() -> None:
    policy = parse_policy('[[ladder.P0]]\nname = "x"\nafter = "1m"\ntarget = "pd"\n')
    assert policy.ladder(Severity.P1) == PLAYBOOK_LADDER
    assert policy.ladder(Severity.P2) == PLAYBOOK_LADDERS[Severity.P2]
    assert policy.ladder(Severity.P0)[0].name == "x"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[ladder", "p.toml: not valid TOML"),
        ("[escalate]\nx = 1", "p.toml: unknown key 'escalate'"),
        (
            '[[ladder.P1]]\nname = "pd"\nafter = "1h"\ntarget = "boss"\n',
            "p.toml: ladder P1 step 1 ('pd'): unknown target 'boss'; use team, pd or oncall",
        ),
        (
            '[[ladder.P1]]\nname = "a"\nafter = "1h"\ntarget = "team"\n'
            '[[ladder.P1]]\nname = "b"\nafter = "5m"\ntarget = "team"\n',
            "p.toml: ladder P1 step 2 ('b'): steps must be in order",
        ),
        (
            '[[ladder.P2]]\nname = "a"\nafter = "soon"\ntarget = "team"\n',
            "p.toml: ladder P2 step 1 ('a'): after: 'soon' is not a duration",
        ),
        (
            '[[ladder.P2]]\nname = "a"\ntarget = "team"\n',
            "ladder P2 step 1 ('a'): after is missing",
        ),
        (
            '[[ladder.P2]]\nname = "a"\nafter = "1m"\ntarget = "team"\nrepeat = "1s"\n',
            "repeat must be at least 5s",
        ),
        (
            '[[ladder.P2]]\nname = "a"\nafter = "1m"\ntarget = "team"\nwhen = 1\n',
            "ladder P2 step 1 ('a'): unknown key 'when'",
        ),
        ("[[ladder.P9]]\nname = 'a'", "[ladder]: unknown key 'P9'"),
        ('[oncall]\npeople = [1]\nstart = "2026-11-02T09:00:00"\n', "start needs a time zone"),
        ("[oncall]\npeople = []\n", "people must be a non-empty list"),
        ('[deadlines]\nP1 = "never"\n', "[deadlines] P1: the deadline"),
    ],
)
def test_errors_name_file_step_and_problem(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.toml")
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read it"):
        load_policy(tmp_path / "missing.toml")


START = datetime(2026, 11, 2, tzinfo=UTC)
ROTA = Rotation((Person(1, "Kim"), Person(2, "Lee")), timedelta(days=7), START)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (START, 1),
        (START + timedelta(days=6, hours=23), 1),
        (START + timedelta(days=7), 2),
        (START + timedelta(days=14), 1),
        (START - timedelta(days=1), 2),
    ],
)
def test_rotation(now: datetime, expected: int) -> None:
    person = oncall_at(ROTA, now)
    assert person is not None
    assert person.user_id == expected


def test_override_wins_while_it_lasts() -> None:
    override = Override(Person(9, "Park"), START, START + timedelta(hours=8))
    at = oncall_at(ROTA, START + timedelta(hours=1), [override])
    assert at == Person(9, "Park")
    after = oncall_at(ROTA, START + timedelta(hours=8), [override])
    assert after == Person(1, "Kim")
    assert oncall_at(None, START) is None
    assert next_handover(ROTA, START + timedelta(days=1)) == START + timedelta(days=7)


def test_the_shipped_example_policy_loads() -> None:
    example = Path(__file__).parent.parent / "deploy" / "escalation.example.toml"
    policy = load_policy(example)
    assert policy.ladder(Severity.P0)[1].repeat == timedelta(minutes=15)
    assert policy.ladder(Severity.P2) == policy.ladder(Severity.P1)
