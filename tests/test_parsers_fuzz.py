"""Hypothesis on every parser: any input is either understood or refused with a clear error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from aiogram.filters import CommandObject
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.errors import Usage
from bot.filters import COMMAND_ROLES, Role, button_role, command_name, required_role
from bot.routers.incidents import parse_args, parse_id
from services.durations import MAX_DURATION, format_duration, parse_duration
from services.errors import InvalidInput
from services.heartbeats import HeartbeatState, state_at
from services.incident_types import AlertIn
from services.intake import (
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_MEMBER_LABELS,
    parse_alertmanager,
    parse_generic,
)
from services.pagerduty import InvalidEvent, parse_event
from services.policy import PolicyError, parse_policy
from services.severity import Severity, parse_severity
from services.sse import check_job_id, parse_last_event_id
from services.web.auth import header_text, secret_matches, token_matches
from services.web.body import parse_json
from services.web.errors import JSONError
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
    # One notification is one group: one incident, whatever its alerts' states.
    assert len(batch.resolved) == 0 and len(batch.firing) == (1 if alerts else 0)
    assert all(len(a.dedup_key) <= 255 and len(a.title) <= 500 for a in batch.firing)
    assert all(a.group is not None and len(a.group.alerts) == len(alerts) for a in batch.firing)


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


# -- request bodies and headers: malformed is a 400 with a reason, never a 5xx --

_DEPTH = st.integers(min_value=1, max_value=3000)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """What the fuzzers never made: deep nesting (past orjson's 1,024 and the recursion
    limit), integers past int()'s 4,300 digits, bytes in other encodings, and mixes."""
    kind = draw(st.sampled_from(["deep", "digits", "encoding", "bytes", "mixed"]))
    if kind == "deep":
        depth = draw(_DEPTH)
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        leaf = draw(st.sampled_from([b"1", b'"x"', b"1" * 25, b"[]", b"{}"]))
        return opener * depth + leaf + closer * depth
    if kind == "digits":
        digits = draw(st.integers(min_value=1, max_value=6000))
        sign = draw(st.sampled_from([b"", b"-"]))
        return b'{"title": "x", "labels": {"n": ' + sign + b"7" * digits + b"}}"
    if kind == "encoding":
        text = json.dumps(draw(json_values), ensure_ascii=False)
        codec = draw(st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32", "latin-1"]))
        raw = text.encode(codec, errors="replace")
        cut = draw(st.integers(min_value=0, max_value=3))
        return raw[: len(raw) - cut] if cut else raw
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    inner = draw(json_values)
    depth = draw(st.integers(min_value=500, max_value=1100))
    return b"[" * depth + json.dumps(inner).encode() + b"]" * depth


@FUZZ
@given(hostile_bodies())
@example(b"[" * 1025 + b"]" * 1025)
@example(b"[" * 100_000 + b"]" * 100_000)
@example(b'{"update_id": ' + b"1" * 4301 + b"}")
@example(b"\xff\xfe\x00")
def test_any_body_is_json_or_a_400_with_a_reason(raw: bytes) -> None:
    try:
        value = parse_json(raw)
    except JSONError as exc:
        assert exc.status == 400 and exc.error == "invalid_json"
        assert isinstance(exc.detail, dict)
        clear(exc.detail["message"])
        return
    # What is taken can be written again by the encoders downstream.
    json.dumps(value)


@FUZZ
@given(st.binary(max_size=60).map(lambda b: b.decode("utf-8", "surrogateescape")), st.text())
def test_any_header_value_is_compared_or_refused(given_value: str, secret: str) -> None:
    """aiohttp hands undecodable header bytes over as lone surrogates; they never match."""
    matched = secret_matches(given_value, secret)
    assert isinstance(matched, bool)
    if header_text(given_value) is None:
        assert matched is False
    assert token_matches(given_value, SecretStr(secret)) is matched


many_labels = st.dictionaries(
    st.text(min_size=1, max_size=30), st.text(max_size=60), min_size=0, max_size=120
)


@FUZZ
@given(
    st.lists(
        st.fixed_dictionaries(
            {"status": st.sampled_from(["firing", "resolved"]), "labels": many_labels},
            optional={
                "annotations": st.dictionaries(label_keys, st.text(max_size=60), max_size=4),
                "fingerprint": st.text(max_size=20),
            },
        ),
        max_size=5,
    ),
    st.integers(min_value=0, max_value=10**6),
)
def test_well_formed_notifications_are_taken_whatever_their_labels(
    alerts: list[dict[str, Any]], truncated: int
) -> None:
    """Any number of labels, an alertname or none, truncatedAlerts: all taken."""
    batch = parse_alertmanager({"version": "4", "truncatedAlerts": truncated, "alerts": alerts})
    taken = [*batch.firing, *batch.resolved]
    assert len(taken) == (1 if alerts else 0)
    assert batch.truncated_alerts == truncated
    for alert in taken:
        assert isinstance(alert, AlertIn) and alert.group is not None
        assert len(alert.group.alerts) == len(alerts)
        assert alert.title.strip() and len(alert.title) <= 500
        assert len(alert.labels) <= MAX_LABELS + 2  # + generator_url, truncated_alerts
        assert all(len(v) <= MAX_LABEL_VALUE for v in alert.labels.values())
        for member in alert.group.alerts:
            assert len(member["labels"]) <= MAX_MEMBER_LABELS and len(member["title"]) <= 200


@FUZZ
@given(
    json_values
    | st.fixed_dictionaries(
        {
            "routing_key": st.text(max_size=10) | json_values,
            "event_action": st.sampled_from(["trigger", "acknowledge", "resolve", "x"])
            | json_values,
        },
        optional={
            "dedup_key": st.text(max_size=300) | json_values,
            "payload": st.fixed_dictionaries(
                {},
                optional={
                    "summary": st.text(max_size=40) | json_values,
                    "source": st.text(max_size=40) | json_values,
                    "severity": st.sampled_from(["critical", "error", "warning", "info", "P1"])
                    | json_values,
                    "custom_details": json_values,
                },
            )
            | json_values,
            "links": json_values,
            "images": json_values,
        },
    )
)
def test_pagerduty_events_parse_or_list_their_errors(body: Any) -> None:
    try:
        event = parse_event(body)
    except InvalidEvent as exc:
        assert exc.errors
        for error in exc.errors:
            clear(error)
        return
    assert event.action in {"trigger", "acknowledge", "resolve"}
    assert event.dedup_key and len(event.dedup_key) <= 255
    if event.action == "trigger":
        assert event.alert is not None and event.alert.title.strip()


@FUZZ
@given(
    st.integers(min_value=60, max_value=10**6),
    st.integers(min_value=0, max_value=7 * 86400),
    st.none() | st.integers(min_value=0, max_value=10**6),
    st.lists(st.integers(min_value=0, max_value=3 * 10**6), min_size=2, max_size=8),
)
def test_a_heartbeat_only_moves_on_towards_down(
    every: int, grace: int, ping_after: int | None, offsets: list[int]
) -> None:
    """Without a new ping, time only moves a heartbeat from waiting/up to late to down."""
    start = datetime(2026, 11, 21, tzinfo=UTC)
    last = start + timedelta(seconds=ping_after) if ping_after is not None else None
    order = {HeartbeatState.WAITING: 0, HeartbeatState.UP: 0, HeartbeatState.LATE: 1}
    order[HeartbeatState.DOWN] = 2
    seen = [
        state_at(
            created_at=start,
            last_ping_at=last,
            every=timedelta(seconds=every),
            grace=timedelta(seconds=grace),
            now=(last or start) + timedelta(seconds=offset),
        )
        for offset in sorted(offsets)
    ]
    assert [order[s] for s in seen] == sorted(order[s] for s in seen)
