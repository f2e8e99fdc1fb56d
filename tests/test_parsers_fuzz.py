"""Hypothesis on every parser: any input is either understood or refused with a clear error."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aiogram.filters import CommandObject
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.filters import COMMAND_ROLES, Role, button_role, command_name, required_role
from bot.routers.incidents import Usage, parse_args, parse_id
from services.durations import MAX_DURATION, format_duration, parse_duration
from services.errors import InvalidInput
from services.intake import parse_alertmanager, parse_generic
from services.policy import PolicyError, parse_policy
from services.severity import Severity, parse_severity
from services.sse import check_job_id, parse_last_event_id
from tests.test_bot import Harness, harness  # noqa: F401 (the fixture)

FUZZ = settings(max_examples=300, deadline=None)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
label_keys = st.text(min_size=1, max_size=20)


def clear(message: str) -> None:
    """A refusal people can act on: one line, not empty, no Python repr of an exception."""
    assert message.strip(), "empty error message"
    assert "Traceback" not in message and "object at 0x" not in message


# -- alert intake ----------------------------------------------------------------------------


@FUZZ
@given(json_values | st.dictionaries(st.sampled_from(["severity", "title", "dedup_key",
       "source", "description", "labels", "status"]), json_values))  # fmt: skip
def test_generic_alerts_parse_or_name_the_field(payload: Any) -> None:
    try:
        batch = parse_generic(payload)
    except InvalidInput as exc:
        clear(exc.message)
        return
    assert len(batch.firing) + len(batch.resolved) >= 1
    for alert in batch.firing:
        assert alert.title.strip() and alert.severity in Severity


generic_alerts = st.fixed_dictionaries(
    {
        "severity": st.sampled_from(["P0", "P1", "p2", "P3", "critical", "high", "warning"]),
        "title": st.text(min_size=1, max_size=200).filter(str.strip),
    },
    optional={
        "dedup_key": st.text(max_size=100),
        "source": st.text(max_size=50),
        "description": st.text(max_size=200),
        "labels": st.dictionaries(label_keys, st.text(max_size=30) | st.integers(), max_size=10),
    },
)


@FUZZ
@given(st.lists(generic_alerts, min_size=1, max_size=5))
def test_well_formed_generic_alerts_are_all_taken(alerts: list[dict[str, Any]]) -> None:
    batch = parse_generic(json.loads(json.dumps(alerts)))
    assert len(batch.firing) == len(alerts)
    assert [a.title for a in batch.firing] == [a["title"].strip() for a in alerts]


am_alert = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]),
        "labels": st.fixed_dictionaries(
            {"alertname": st.text(min_size=1, max_size=40).filter(str.strip)},
            optional={"severity": st.text(max_size=10), "job": st.text(max_size=20)},
        ),
    },
    optional={
        "annotations": st.dictionaries(label_keys, st.text(max_size=60), max_size=4),
        "fingerprint": st.text(max_size=20),
        "startsAt": st.text(max_size=30),
        "generatorURL": st.text(max_size=30),
    },
)


@FUZZ
@given(st.lists(am_alert, max_size=6))
def test_alertmanager_payloads_are_all_taken(alerts: list[dict[str, Any]]) -> None:
    batch = parse_alertmanager({"version": "4", "status": "firing", "alerts": alerts})
    assert len(batch.firing) + len(batch.resolved) == len(alerts)
    assert all(len(a.dedup_key) <= 255 and len(a.title) <= 500 for a in batch.firing)


@FUZZ
@given(
    json_values
    | st.fixed_dictionaries({"version": json_values, "alerts": json_values})
    | st.fixed_dictionaries({"alerts": st.lists(json_values | am_alert, max_size=3)})
)
def test_malformed_alertmanager_payloads_name_the_field(payload: Any) -> None:
    try:
        parse_alertmanager(payload)
    except InvalidInput as exc:
        clear(exc.message)


# -- durations, severities, SSE ids --------------------------------------------------------


@FUZZ
@given(st.text(max_size=20) | st.from_regex(r"\A(\d{1,14}\s?[smhdwSMHDW]){1,3}\Z"))
@example("99999999999d")
@example("9" * 5000 + "s")
def test_durations_parse_or_say_how_to_write_them(text: str) -> None:
    try:
        duration = parse_duration(text)
    except ValueError as exc:
        clear(str(exc))
        return
    assert timedelta(0) < duration <= MAX_DURATION
    if duration.total_seconds() % 60 == 0 or duration < timedelta(minutes=1):
        assert parse_duration(format_duration(duration)) == duration


@FUZZ
@given(st.integers(min_value=1, max_value=int(MAX_DURATION.total_seconds()) // 60))
def test_formatted_durations_read_back(minutes: int) -> None:
    delta = timedelta(minutes=minutes)
    assert parse_duration(format_duration(delta)) == delta


@FUZZ
@given(st.text(max_size=12))
def test_severities(text: str) -> None:
    try:
        assert parse_severity(text) in Severity
    except ValueError as exc:
        clear(str(exc))


@FUZZ
@given(st.none() | st.text(max_size=25) | st.integers(min_value=0).map(str))
@example("²")
@example("٣")
def test_last_event_id(value: str | None) -> None:
    try:
        parsed = parse_last_event_id(value)
    except InvalidInput as exc:
        clear(exc.message)
        return
    assert value is not None or parsed is None
    assert parsed is None or parsed == int(value.strip())  # type: ignore[union-attr]


@FUZZ
@given(st.text(max_size=140))
def test_job_ids(value: str) -> None:
    try:
        assert check_job_id(value) == value
    except InvalidInput as exc:
        clear(exc.message)


# -- TOML policies -----------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
        )
    return str(value)


durations = st.sampled_from(["0", "0m", "5s", "30m", "1h", "4h", "1d", "-1m", "soon", ""])
steps = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=45) | st.integers(),
        "after": durations | st.integers(),
        "target": st.sampled_from(["team", "pd", "oncall", "boss"]) | st.lists(st.integers()),
        "message": st.text(max_size=20) | st.integers(),
        "repeat": durations,
        "extra": st.booleans(),
    },
)
rotation = st.fixed_dictionaries(
    {},
    optional={
        "people": st.lists(
            st.integers(-5, 10**12)
            | st.fixed_dictionaries({"id": st.integers() | st.text(max_size=3)}),
            max_size=3,
        )
        | st.text(max_size=3),
        "period": durations,
        "start": st.sampled_from(
            ["2026-11-02T09:00:00+09:00", "2026-11-02", "0001-01-01T00:00:00+09:00",
             "9999-12-31T23:59:59-09:00", "2026-11-02T09:00:00", "yesterday"]
        ),
    },
)  # fmt: skip


@st.composite
def policies(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for severity in draw(st.lists(st.sampled_from(["default", "P0", "P1", "P9"]), unique=True)):
        for step in draw(st.lists(steps, max_size=4)):
            lines.append(f"[[ladder.{severity}]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in step.items()]
    if draw(st.booleans()):
        lines.append("[deadlines]")
        for key in draw(st.lists(st.sampled_from(["P0", "P3", "P7"]), unique=True)):
            lines.append(f"{key} = {toml_value(draw(durations | st.integers()))}")
    if draw(st.booleans()):
        table = draw(rotation)
        lines.append("[oncall]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines)


@settings(max_examples=500, deadline=None)
@given(policies() | st.text(max_size=80))
@example('[[ladder.default]]\nname = "x"\nafter = "0"\ntarget = ["team"]')
@example('[oncall]\npeople = [1]\nstart = "0001-01-01T00:00:00+09:00"')
def test_policies_load_or_name_the_problem(text: str) -> None:
    try:
        policy = parse_policy(text, "p.toml")
    except PolicyError as exc:
        message = str(exc)
        clear(message)
        assert message.startswith("p.toml"), message
        assert "\n" not in message.split(": not valid TOML", maxsplit=1)[0]
        return
    for severity in Severity:
        ladder = policy.ladder(severity)
        assert ladder and [s.after for s in ladder] == sorted(s.after for s in ladder)


# -- bot commands ------------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=30))
@example("²")
@example("#99999999999999999999999")
def test_incident_ids(text: str) -> None:
    try:
        assert parse_id(text, "ack") >= 1
    except Usage as exc:
        assert exc.command == "ack"


@FUZZ
@given(st.none() | st.text(max_size=40), st.sampled_from(["no", "optional", "required"]))
def test_incident_command_arguments(args: str | None, duration: str) -> None:
    command = CommandObject(prefix="/", command="ack", args=args)
    try:
        incident_id, delta, note = parse_args(command, "ack", duration=duration)
    except Usage as exc:
        assert exc.command == "ack"
        return
    assert incident_id >= 1
    assert delta is None or delta > timedelta(0)
    if duration != "no":
        assert note is None


@FUZZ
@given(st.text(max_size=60), st.none() | st.text(max_size=10))
def test_command_names_and_roles(text: str, bot_username: str | None) -> None:
    name = command_name(text, bot_username)
    if name is not None:
        assert text.startswith("/")
        assert required_role(name, text) in Role


@FUZZ
@given(st.text(max_size=64) | st.from_regex(r"\A[a-z]{1,3}:[a-z0-9:]{0,20}\Z"))
def test_button_data(data: str) -> None:
    found = button_role(data)
    assert found is None or (found[0] in Role and found[1].startswith("button:"))


COMMANDS = sorted(COMMAND_ROLES)


@settings(
    max_examples=150,
    deadline=None,
    # The harness (fake Bot API, services, dispatcher) is shared by every example on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.sampled_from(COMMANDS),
    st.text(st.characters(codec="utf-8"), max_size=40)
    | st.sampled_from(["²", "#0", "-1", "1 ²m", "1 99999999999d", "set ² x", "restore ../x"]),
    st.sampled_from(list(Role)),
)
async def test_every_command_answers_any_arguments(
    harness: Harness,  # noqa: F811
    command: str,
    args: str,
    role: Role,
) -> None:
    """No argument makes a handler fail: the user always gets an answer."""
    if command in {"backup"} and args.split()[:1] == ["restore"] and role is Role.ADMIN:
        args = "restore 999999"  # restoring a real backup would rewrite the test's .env
    reply = await harness.say(role, f"/{command} {args}")
    assert reply.strip(), f"/{command} {args!r} as {role.name}: no answer"
    assert "Traceback" not in reply
