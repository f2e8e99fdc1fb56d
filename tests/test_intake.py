import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from services.clock import FrozenClock
from services.container import Services
from services.errors import InvalidInput
from services.intake import (
    MAX_LABEL_VALUE,
    MAX_LABELS,
    TRUNCATED_LABEL,
    IntakeBatch,
    alertmanager_group_key,
    alertmanager_severity,
    alertmanager_title,
    parse_alertmanager,
    parse_generic,
    truncate_labels,
)
from services.main import open_services
from services.models import EscalationLadder, Incident, OutboxMessage, TimelineEvent
from services.notify.outbox import Op
from services.severity import Severity
from tests.botkit import TEAM
from tests.conftest import make_settings


def am_alert(status: str = "firing", **labels: str) -> dict[str, object]:
    return {
        "status": status,
        "labels": {"alertname": "SSEConnectionDropRate", **labels},
        "annotations": {"summary": "SSE reconnects too high", "description": "rate 12/min"},
        "startsAt": "2026-11-21T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local/graph",
        "fingerprint": "c0ffee",
    }


def test_generic_minimal() -> None:
    batch = parse_generic({"severity": "P1", "title": "fal.ai 500s"})
    [item] = batch.firing
    assert item.severity is Severity.P1
    assert item.source == "api"
    assert item.dedup_key.startswith("api:")
    again = parse_generic({"severity": "P3", "title": "fal.ai 500s"})
    assert again.firing[0].dedup_key == item.dedup_key


def test_generic_full_and_resolved() -> None:
    batch = parse_generic(
        [
            {
                "severity": "critical",
                "title": "Token expired",
                "dedup_key": "ig-token",
                "source": "token-monitor",
                "description": "401 from Graph API",
                "labels": {"component": "instagram", "attempt": 3},
            },
            {"title": "Token expired", "dedup_key": "old", "status": "resolved"},
        ]
    )
    assert batch.firing[0].severity is Severity.P0
    assert batch.firing[0].labels == {"component": "instagram", "attempt": "3"}
    assert batch.resolved == ["old"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": "x"}, "severity"),
        ({"severity": "P1"}, "title"),
        ({"severity": "P1", "title": "   "}, "title"),
        ({"severity": "P9", "title": "x"}, "severity"),
        ({"severity": 1, "title": "x"}, "severity"),
        ({"severity": "P1", "title": 5}, "title"),
        ({"severity": "P1", "title": "x", "labels": []}, "labels"),
        ({"severity": "P1", "title": "x", "labels": {"a": {"b": 1}}}, "labels.a"),
        ({"severity": "P1", "title": "x", "status": "maybe"}, "status"),
        ([], "body"),
        ("text", "body"),
    ],
)
def test_generic_errors_name_the_field(payload: object, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_generic(payload)
    assert info.value.detail == {"field": field}


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, Severity.P2),
        ({"severity": "critical"}, Severity.P0),
        ({"severity": "high"}, Severity.P1),
        ({"severity": "warning"}, Severity.P2),
        ({"severity": "info"}, Severity.P3),
        ({"severity": "P0"}, Severity.P0),
        ({"severity": "page"}, Severity.P2),
    ],
)
def test_alertmanager_severity_mapping(labels: dict[str, str], expected: Severity) -> None:
    assert alertmanager_severity(labels) is expected


def test_alertmanager_group_key() -> None:
    key = alertmanager_group_key("sunflow-ops", '{}:{alertname="A"}', {"alertname": "A"})
    assert key.startswith("am:") and len(key) == 35
    # The group is receiver + groupKey: its alerts' labels do not move it.
    assert key == alertmanager_group_key("sunflow-ops", '{}:{alertname="A"}', {})
    assert key != alertmanager_group_key("pager", '{}:{alertname="A"}', {"alertname": "A"})
    assert key != alertmanager_group_key("sunflow-ops", '{}:{alertname="B"}', {})
    # A dedup_key label all its alerts share names the incident (runbooks key on it).
    assert alertmanager_group_key("r", "g", {"dedup_key": "mine"}) == "mine"
    # Without a groupKey (a hand-made notification) the shared labels stand in for it.
    by_labels = alertmanager_group_key("r", "", {"a": "1", "b": "2"})
    assert by_labels == alertmanager_group_key("r", "", {"b": "2", "a": "1"})
    assert by_labels != alertmanager_group_key("r", "", {"a": "1"})


def test_alertmanager_parse() -> None:
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "sunflow-ops",
        "groupKey": '{}:{alertname="SSEConnectionDropRate"}',
        "alerts": [am_alert(severity="critical"), {**am_alert("resolved"), "fingerprint": "dead"}],
    }
    batch = parse_alertmanager(payload)
    [firing] = batch.firing
    assert batch.resolved == []
    assert firing.title == "SSE reconnects too high"
    assert firing.severity is Severity.P0  # the firing alert's; the resolved one has none
    assert firing.dedup_key == alertmanager_group_key(
        "sunflow-ops", '{}:{alertname="SSEConnectionDropRate"}', {}
    )
    assert firing.source == "alertmanager"
    assert firing.labels["generator_url"] == "http://prometheus.local/graph"
    assert firing.group is not None
    assert [(a["key"], a["status"], a["severity"]) for a in firing.group.alerts] == [
        ("c0ffee", "firing", "P0"),
        ("dead", "resolved", "P2"),
    ]
    # Every alert resolved: the notification resolves the group's incident.
    payload["status"] = "resolved"
    payload["alerts"] = [am_alert("resolved")]
    [resolving] = parse_alertmanager(payload).resolved
    assert not isinstance(resolving, str) and resolving.dedup_key == firing.dedup_key


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"version": "4"}, "alerts"),
        ({"version": "3", "alerts": []}, "version"),
        ({"alerts": ["x"]}, "alerts[0]"),
        ({"alerts": [{"status": "odd", "labels": {"alertname": "a"}}]}, "alerts[0].status"),
        ({"alerts": [{"status": "firing", "labels": {"a": 1}}]}, "alerts[0].labels.a"),
        ({"alerts": [{"status": "firing"}]}, "alerts[0].labels"),
        ({"alerts": [], "truncatedAlerts": -1}, "truncatedAlerts"),
        ({"alerts": [], "truncatedAlerts": "3"}, "truncatedAlerts"),
        ({"alerts": [], "truncatedAlerts": 2.5}, "truncatedAlerts"),
        ({"version": "1", "alerts": []}, "version"),
    ],
)
def test_alertmanager_errors(payload: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_alertmanager(payload)
    assert info.value.detail == {"field": field}


async def test_group_commit_keeps_each_answer(services: Services) -> None:
    await services.intake.start()
    try:
        batches = [parse_generic({"severity": "P2", "title": f"t{i % 5}"}) for i in range(50)]
        results = await asyncio.gather(*(services.intake.submit(b) for b in batches))
    finally:
        await services.intake.stop()
    assert sum(len(r.created) for r in results) == 5
    assert sum(len(r.deduplicated) for r in results) == 45
    views = await services.incidents.list()
    assert sorted(v.occurrence_count for v in views) == [10] * 5


async def test_group_commit_isolates_a_failing_batch(services: Services) -> None:
    """A batch the database refuses fails alone; its neighbours in the group commit."""
    good = parse_generic({"severity": "P2", "title": "fine"})
    # Passes parsing but breaks the database's length limit check inside the service.
    bad = IntakeBatch(firing=[good.firing[0].__class__(Severity.P1, "x" * 600, "k")])
    await services.intake.start()
    try:
        outcomes = await asyncio.gather(
            services.intake.submit(good), services.intake.submit(bad), return_exceptions=True
        )
    finally:
        await services.intake.stop()
    assert not isinstance(outcomes[0], BaseException)
    assert isinstance(outcomes[1], InvalidInput)
    assert [v.title for v in await services.incidents.list()] == ["fine"]


ROWS_START = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
# Opens a and b, repeats both (b more urgently), resolves a and opens it again, and
# resolves a key nobody raised.
ROWS_LOAD: list[object] = [
    {"severity": "P1", "title": "A", "dedup_key": "a"},
    {"severity": "P3", "title": "B", "dedup_key": "b"},
    {"severity": "P2", "title": "A", "dedup_key": "a"},
    {"severity": "P0", "title": "B", "dedup_key": "b", "description": "worse"},
    [{"title": "A", "dedup_key": "a", "status": "resolved"}],
    {"severity": "P2", "title": "A", "dedup_key": "a"},
    {"title": "zz", "dedup_key": "nobody", "status": "resolved"},
]


@pytest.mark.parametrize("grouped", [True, False], ids=["group-commit", "one-by-one"])
async def test_intake_commits_incident_timeline_outbox_and_ladder(
    migrated_url: str, grouped: bool
) -> None:
    """Whatever the path (one group commit or a transaction per request), an answered alert
    has its incident, timeline entry, outbox card and escalation ladder committed."""
    settings = make_settings(migrated_url, telegram_team_chat_id=TEAM)
    async with open_services(settings, clock=FrozenClock(ROWS_START)) as services:
        batches = [parse_generic(item) for item in ROWS_LOAD]
        if grouped:
            await services.intake.start()
            try:
                results = await asyncio.gather(*(services.intake.submit(b) for b in batches))
            finally:
                await services.intake.stop()
        else:
            results = [await services.intake.submit(b) for b in batches]
        async with services.db.read() as session:
            incidents = (await session.scalars(select(Incident).order_by(Incident.id))).all()
            timeline = (
                await session.execute(
                    select(
                        TimelineEvent.incident_id, TimelineEvent.kind, TimelineEvent.details
                    ).order_by(TimelineEvent.id)
                )
            ).all()
            outbox = (
                await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
            ).all()
            ladders = (
                await session.scalars(
                    select(EscalationLadder).order_by(EscalationLadder.incident_id)
                )
            ).all()

    assert [r.to_json()["resolved_unknown"] for r in results][-1] == ["nobody"]
    a1, b, a2 = (i.id for i in incidents)
    assert [
        (i.dedup_key, i.severity, i.state, i.occurrence_count, i.description, i.resolved_by)
        for i in incidents
    ] == [
        ("a", "P1", "resolved", 2, "", "intake"),
        ("b", "P0", "triggered", 2, "", None),
        ("a", "P2", "triggered", 1, "", None),
    ]
    assert timeline == [
        (a1, "triggered", {"severity": "P1", "title": "A", "source": "api"}),
        (b, "triggered", {"severity": "P3", "title": "B", "source": "api"}),
        (a1, "deduplicated", {"count": 2}),
        (
            b,
            "deduplicated",
            {"count": 2, "severity_raised": {"from": "P3", "to": "P0"}, "description": "worse"},
        ),
        (a1, "resolved", {"source": "alert"}),
        (a2, "triggered", {"severity": "P2", "title": "A", "source": "api"}),
    ]
    at = ROWS_START.isoformat()
    assert [
        (
            m.idempotency_key,
            m.op,
            m.chat_id,
            m.incident_id,
            m.priority,
            m.wants_fallback,
            m.payload["merges"],
            m.payload["last"]["kind"],
        )
        for m in outbox
    ] == [
        (f"inc:{a1}:triggered:{at}:1:card", Op.CARD, TEAM, a1, 1, True, 2, "resolved"),
        (f"inc:{b}:triggered:{at}:1:card", Op.CARD, TEAM, b, 0, True, 1, "deduplicated"),
        (f"inc:{a2}:triggered:{at}:1:card", Op.CARD, TEAM, a2, 2, False, 0, "triggered"),
    ]
    assert [(r.incident_id, r.epoch, r.started_at, r.shift_seconds) for r in ladders] == [
        (a1, 1, ROWS_START, 0),
        (b, 1, ROWS_START, 0),
        (a2, 1, ROWS_START, 0),
    ]


# -- every well-formed Alertmanager notification is taken ---------------------------------


def test_truncate_labels_keeps_the_first_and_folds_the_rest() -> None:
    labels = {f"label_{i:02d}": f"v{i}" for i in range(75)}
    labels.update(alertname="DiskFull", severity="critical", instance="db-1")
    kept = truncate_labels(labels)
    assert len(kept) == MAX_LABELS
    assert list(kept)[:3] == ["alertname", "severity", "instance"]
    assert kept["alertname"] == "DiskFull" and kept["severity"] == "critical"
    folded = kept[TRUNCATED_LABEL]
    assert folded.startswith("15 more: label_60=v60, label_61=v61")
    # Nothing dropped silently: every label is either kept or named in the fold.
    for key, value in labels.items():
        assert kept.get(key) == value or f"{key}={value}" in folded


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"a": "1"}, {"a": "1"}),
        ({f"k{i}": "v" for i in range(64)}, {f"k{i}": "v" for i in range(64)}),
        ({"k": "x" * 1001}, {"k": "x" * 999 + "\u2026"}),
        ({"k" * 201: "v"}, {"k" * 199 + "\u2026": "v"}),
    ],
)
def test_truncate_labels_table(labels: dict[str, str], expected: dict[str, str]) -> None:
    assert truncate_labels(labels) == expected


def test_truncate_labels_bounds_the_fold() -> None:
    labels = {f"k{i:03d}": "x" * 500 for i in range(100)}
    kept = truncate_labels(labels)
    assert len(kept) == MAX_LABELS
    assert len(kept[TRUNCATED_LABEL]) <= MAX_LABEL_VALUE
    assert kept[TRUNCATED_LABEL].startswith("37 more: k063=")


@pytest.mark.parametrize(
    ("annotations", "labels", "fingerprint", "title"),
    [
        ({"summary": " Disk full "}, {"alertname": "DiskFull"}, "f", "Disk full"),
        ({}, {"alertname": "DiskFull"}, "f", "DiskFull"),
        ({"summary": "  "}, {"alertname": " "}, "f1", "Alert a=1 b=2 c=3 (+1 more labels)"),
        ({}, {"job": "api", "severity": "critical"}, "f", "Alert job=api"),
        ({}, {"severity": "critical"}, "c0ffee", "Alertmanager alert c0ffee"),
        ({}, {}, "", "Alertmanager alert without labels"),
        ({"summary": "x" * 600}, {}, "", "x" * 499 + "\u2026"),
    ],
)
def test_alertmanager_title(
    annotations: dict[str, str], labels: dict[str, str], fingerprint: str, title: str
) -> None:
    if labels.get("alertname") == " ":
        labels = {**labels, "a": "1", "b": "2", "c": "3", "d": "4"}
    assert alertmanager_title(annotations, labels, fingerprint) == title


def test_alertmanager_takes_75_labels_and_no_alertname() -> None:
    labels = {f"label_{i:02d}": f"value {i}" for i in range(75)}
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"description": "too many labels"},
        "fingerprint": "0a1b2c",
    }
    batch = parse_alertmanager({"version": "4", "alerts": [alert]})
    [taken] = batch.firing
    assert (
        taken.title == "Alert label_00=value 0 label_01=value 1 label_02=value 2 (+72 more labels)"
    )
    assert taken.dedup_key.startswith("am:")
    assert len(taken.labels) == MAX_LABELS
    assert taken.labels[TRUNCATED_LABEL].startswith("12 more: label_63=value 63")
    # Without a fingerprint the key comes from every label as sent, not the shortened ones.
    other = {**labels, "label_74": "another"}
    first = parse_alertmanager({"alerts": [{"status": "firing", "labels": labels}]})
    second = parse_alertmanager({"alerts": [{"status": "firing", "labels": other}]})
    assert first.firing[0].dedup_key != second.firing[0].dedup_key


def test_truncated_alerts_are_recorded_on_the_groups_incident() -> None:
    payload = {
        "version": "4",
        "groupKey": '{}:{alertname="SSEConnectionDropRate"}',
        "truncatedAlerts": 1998,
        "alerts": [am_alert(), {**am_alert("resolved"), "fingerprint": "dead"}],
    }
    batch = parse_alertmanager(payload)
    assert batch.truncated_alerts == 1998
    assert batch.group_key == '{}:{alertname="SSEConnectionDropRate"}'
    [firing] = batch.firing
    assert firing.labels["truncated_alerts"] == "1998"
    assert "left 1998 more alert(s) of this group out" in firing.description
    assert firing.group is not None and firing.group.truncated_alerts == 1998
    assert parse_alertmanager({"alerts": []}).truncated_alerts == 0
    # JSON has one number type: 3.0 is three alerts.
    assert parse_alertmanager({"alerts": [], "truncatedAlerts": 3.0}).truncated_alerts == 3


# Grafana alerting's webhook contact point, as Grafana sends it (the payload of Grafana's
# webhook notifier documentation, with the fields Grafana 10/11 adds: version "1", orgId,
# state, title, message, values).
GRAFANA_PAYLOAD = {
    "receiver": "sunflow-ops",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "High memory usage",
                "grafana_folder": "SunFlow",
                "team": "blue",
                "zone": "us-1",
            },
            "annotations": {
                "description": "The system has high memory usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone us-1",
            },
            "startsAt": "2021-10-12T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana"
            "&matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"B": 44.23943737541908, "C": 1},
            "valueString": "[ var='B' labels={} value=44.23943737541908 ], "
            "[ var='C' labels={} value=1 ]",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
            "annotations": {
                "description": "The system has high CPU usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone eu-1",
            },
            "startsAt": "2021-10-12T09:56:03.157076+02:00",
            "endsAt": "2021-10-12T10:01:03.157076+02:00",
            "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit",
            "fingerprint": "bc97ff14869b13e3",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana"
            "&matchers=alertname%3DT1%2Cteam%3Dblue%2Czone%3Deu-1",
            "dashboardURL": "https://play.grafana.org/d/abcd?orgId=1",
            "panelURL": "https://play.grafana.org/d/abcd?orgId=1&viewPanel=efgh",
            "values": None,
            "valueString": "",
        },
    ],
    "groupLabels": {},
    "commonLabels": {"team": "blue"},
    "commonAnnotations": {},
    "externalURL": "https://play.grafana.org/",
    "version": "1",
    "groupKey": '{}:{alertname="High memory usage"}',
    "truncatedAlerts": 0,
    "title": "[FIRING:1, RESOLVED:1]  (blue)",
    "state": "alerting",
    "message": "**Firing**\n\nLabels:\n - alertname = High memory usage\n",
}


def test_grafana_webhook_payload() -> None:
    alerts: list[dict[str, object]] = GRAFANA_PAYLOAD["alerts"]  # type: ignore[assignment]
    # A group of one alert reads as that alert.
    batch = parse_alertmanager({**GRAFANA_PAYLOAD, "alerts": alerts[:1]})
    [firing] = batch.firing
    assert batch.source == "grafana" and firing.source == "grafana"
    assert firing.title == "This alert was triggered for zone us-1"
    assert firing.dedup_key.startswith("am:")
    assert firing.severity is Severity.P2  # no severity label: the documented default
    assert firing.labels["grafana_folder"] == "SunFlow"
    assert firing.labels["runbook_url"] == "https://myrunbook.com/runbook/1234"
    assert firing.description.splitlines() == [
        "The system has high memory usage",
        "Values: B=44.23943737541908, C=1",
        "Silence: " + str(alerts[0]["silenceURL"]),
    ]
    # The whole notification: one incident for the group, each alert listed.
    [group] = parse_alertmanager(GRAFANA_PAYLOAD).firing
    assert group.dedup_key == firing.dedup_key
    assert group.title == "Alert team=blue"  # what its alerts share
    assert group.labels["runbook_url"] == "https://myrunbook.com/runbook/1234"
    assert group.group is not None
    assert [(a["status"], a["title"]) for a in group.group.alerts] == [
        ("firing", "This alert was triggered for zone us-1"),
        ("resolved", "This alert was triggered for zone eu-1"),
    ]
    # Grafana's version "1" is only Grafana's: without orgId it is refused.
    without = {k: v for k, v in GRAFANA_PAYLOAD.items() if k != "orgId"}
    with pytest.raises(InvalidInput):
        parse_alertmanager(without)
