from typing import Any

import pytest

from bot.locales import Catalogue
from bot.render import LIMIT, TelegramRenderer, visible_len
from services.alert_groups import MAX_GROUP_ALERTS, AlertGroupIn, merge
from services.errors import InvalidInput
from services.intake import parse_alertmanager
from services.models import IncidentState
from services.severity import Severity
from tests.botkit import running_fake
from tests.conftest import Client, intake_headers
from tests.fakes.telegram import FakeTelegram, Posted
from tests.test_bot_e2e import cards, drained, live
from tests.test_bot_language import HANGUL, leaks, sent_texts
from tests.test_locales import english

GROUP_KEY = '{}:{alertname="HighLatency"}'


def member(key: str, status: str = "firing", severity: str = "P2") -> dict[str, Any]:
    return {"key": key, "status": status, "severity": severity, "title": f"instance={key}"}


def group(*alerts: dict[str, Any], status: str = "firing", truncated: int = 0) -> AlertGroupIn:
    return AlertGroupIn(GROUP_KEY, "sunflow-ops", status, tuple(alerts), truncated)


def states(stored: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["key"], a["status"]) for a in stored["alerts"]]


@pytest.mark.parametrize(
    ("before", "incoming", "after", "change"),
    [
        # The first notification: every firing alert is new.
        (None, group(member("a"), member("b")), [("a", "firing"), ("b", "firing")], (2, 0)),
        # Re-sent unchanged: nothing changed.
        ([member("a")], group(member("a")), [("a", "firing")], None),
        # One alert of the group resolved (send_resolved), one joined.
        (
            [member("a"), member("b")],
            group(member("a", "resolved"), member("b"), member("c")),
            [("a", "resolved"), ("b", "firing"), ("c", "firing")],
            (1, 1),
        ),
        # Gone from a complete notification: it left the group (resolved or silenced).
        (
            [member("a"), member("b")],
            group(member("b")),
            [("a", "resolved"), ("b", "firing")],
            (0, 1),
        ),
        # The group resolved: every alert resolved.
        (
            [member("a"), member("b")],
            group(member("a", "resolved"), member("b", "resolved"), status="resolved"),
            [("a", "resolved"), ("b", "resolved")],
            (0, 2),
        ),
        # A resolved alert firing again.
        ([member("a", "resolved")], group(member("a")), [("a", "firing")], (1, 0)),
    ],
)
def test_merge_table(
    before: list[dict[str, Any]] | None,
    incoming: AlertGroupIn,
    after: list[tuple[str, str]],
    change: tuple[int, int] | None,
) -> None:
    previous = None if before is None else {"alerts": before}
    stored, changed = merge(previous, incoming)
    assert states(stored) == after
    assert changed == ({"added": change[0], "cleared": change[1]} if change else {})
    assert stored["firing"] == sum(1 for _, s in after if s == "firing")
    assert stored["resolved"] == sum(1 for _, s in after if s == "resolved")


def test_merge_keeps_missing_alerts_of_a_truncated_notification_firing() -> None:
    """With max_alerts, Alertmanager leaves alerts out that still fire."""
    stored, changed = merge(
        {"alerts": [member("a"), member("b")]}, group(member("b"), truncated=1)
    )
    assert states(stored) == [("a", "firing"), ("b", "firing")]
    assert changed == {}
    assert stored["truncated_alerts"] == 1


def test_merge_caps_the_list_dropping_old_resolved_alerts_first() -> None:
    resolved = [member(f"r{i}", "resolved") for i in range(10)]
    firing = [member(f"f{i}") for i in range(MAX_GROUP_ALERTS - 5)]
    stored, _ = merge({"alerts": resolved}, group(*resolved, *firing))
    assert len(stored["alerts"]) == MAX_GROUP_ALERTS
    assert stored["omitted"] == 5
    kept = {a["key"] for a in stored["alerts"]}
    assert {"r0", "r4"}.isdisjoint(kept) and {"r5", "r9", "f0"} <= kept
    assert stored["firing"] == MAX_GROUP_ALERTS - 5 and stored["resolved"] == 10


def am_alert(i: int, status: str = "firing", severity: str = "warning") -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": "HighLatency",
            "severity": severity,
            "job": "api",
            "instance": f"web-{i:02d}",
        },
        "annotations": {"summary": "API latency is high", "description": "p99 over 2 s"},
        "startsAt": "2026-12-07T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local/graph?g0.expr=latency",
        "fingerprint": f"f{i:04d}",
    }


def notification(alerts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "receiver": "sunflow-ops",
        "status": "firing" if firing else "resolved",
        "groupKey": GROUP_KEY,
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency", "job": "api"},
        "commonAnnotations": {"summary": "API latency is high"},
        "externalURL": "http://alertmanager.local",
        "truncatedAlerts": 0,
        "alerts": alerts,
        **extra,
    }


def test_a_notification_is_one_alert_for_its_group() -> None:
    alerts = [am_alert(i) for i in range(30)]
    alerts[7] = am_alert(7, severity="critical")
    batch = parse_alertmanager(notification(alerts))
    [taken] = batch.firing
    assert batch.resolved == []
    assert taken.severity is Severity.P0  # the most urgent firing alert
    assert taken.title == "API latency is high"
    assert taken.dedup_key.startswith("am:")
    assert taken.group is not None and len(taken.group.alerts) == 30
    assert taken.group.alerts[3]["title"] == "instance=web-03"
    assert taken.labels["alertname"] == "HighLatency" and "instance" not in taken.labels
    # The same group from another receiver is another incident.
    other = parse_alertmanager(notification(alerts, receiver="other"))
    assert other.firing[0].dedup_key != taken.dedup_key


def test_a_resolved_critical_alert_does_not_set_the_severity() -> None:
    alerts = [am_alert(0, "resolved", severity="critical"), am_alert(1)]
    [taken] = parse_alertmanager(notification(alerts)).firing
    assert taken.severity is Severity.P2


def test_a_group_without_a_shared_summary_is_titled_by_its_group_labels() -> None:
    alerts = [am_alert(i) for i in range(3)]
    for i, alert in enumerate(alerts):
        alert["annotations"] = {"summary": f"latency on web-{i}"}
        alert["labels"]["env"] = "prod"
    payload = notification(alerts, groupLabels={"alertname": "HighLatency", "env": "prod"})
    [taken] = parse_alertmanager(payload).firing
    assert taken.title == "HighLatency (env=prod)"
    assert taken.group is not None
    assert [a["title"] for a in taken.group.alerts] == [f"latency on web-{i}" for i in range(3)]


@pytest.mark.parametrize("odd", [[None, None], "prod", {"env": 3, "alertname": "HighLatency"}])
def test_odd_group_labels_are_ignored_not_refused(odd: object) -> None:
    """A 4xx would lose the notification (Alertmanager never retries one); the group labels
    only name the card, so what is not a string is left out."""
    [taken] = parse_alertmanager(
        notification([am_alert(i) for i in range(2)], groupLabels=odd)
    ).firing
    assert taken.group is not None and len(taken.group.alerts) == 2
    assert "3" not in taken.title


@pytest.mark.parametrize("status", [{}, [], 3, "done"])
def test_a_notification_status_that_is_no_status_is_a_clear_400(status: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_alertmanager(notification([am_alert(1)], status=status))
    assert "field 'status'" in str(refused.value)


def test_a_resolved_notification_resolves_the_group() -> None:
    batch = parse_alertmanager(notification([am_alert(i, "resolved") for i in range(3)]))
    assert batch.firing == []
    [resolving] = batch.resolved
    assert not isinstance(resolving, str) and resolving.group is not None
    assert resolving.group.status == "resolved"


def test_a_group_of_one_reads_as_that_alert() -> None:
    [taken] = parse_alertmanager(notification([am_alert(4)])).firing
    assert taken.title == "API latency is high"
    assert taken.description == "p99 over 2 s"
    assert taken.labels["instance"] == "web-04"
    assert taken.labels["generator_url"] == "http://prometheus.local/graph?g0.expr=latency"
    card = TelegramRenderer(Catalogue("en"))
    assert card.group_lines(_view(taken), []) == []


def _view(alert: Any) -> Any:
    from datetime import UTC, datetime

    from services.alert_groups import merge as merge_group
    from services.incident_types import IncidentView

    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    return IncidentView(
        id=9,
        dedup_key=alert.dedup_key,
        severity=alert.severity,
        title=alert.title,
        description=alert.description,
        source=alert.source,
        labels=alert.labels,
        state=IncidentState.TRIGGERED,
        occurrence_count=1,
        first_seen_at=now,
        last_seen_at=now,
        response_deadline=now,
        acknowledged_at=None,
        acknowledged_by=None,
        resolved_at=None,
        resolved_by=None,
        alert_group=merge_group(None, alert.group)[0],
    )


@pytest.mark.parametrize("language", ["ko", "en"])
def test_a_huge_group_fits_the_card_and_counts_the_rest(language: str) -> None:
    alerts = [am_alert(i) for i in range(300)]
    for alert in alerts:
        alert["labels"]["pod"] = "api-" + "x" * 80 + alert["labels"]["instance"]
    [taken] = parse_alertmanager(notification(alerts)).firing
    view = _view(taken)
    renderer = TelegramRenderer(Catalogue(language))
    from datetime import UTC, datetime

    text = renderer.card(view, datetime(2026, 12, 7, 3, 1, tzinfo=UTC))
    assert visible_len(text) <= LIMIT
    listed = text.count("🟡 instance=web-")
    assert 10 <= listed < 300
    more = {"ko": f"외 {300 - listed}건", "en": f"+{300 - listed} more"}[language]
    assert more in text
    assert "p99 over 2 s" not in text or visible_len(text) <= LIMIT


# -- through the fake Bot API, in both languages ------------------------------------------

COUNTS = {
    "ko": "알림: 발생 중 {firing}건, 해결 {resolved}건",
    "en": "Alerts: {firing} firing, {resolved} resolved",
}
RESOLVED_STATE = {"ko": "✅ 해결됨", "en": "✅ resolved"}


async def post(client: Client, payload: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/alerts/alertmanager", json=payload, headers=intake_headers())
    assert resp.status == 202, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


def the_card(fake: FakeTelegram) -> Posted:
    [card] = cards(fake)
    return card


@pytest.mark.parametrize("language", ["ko", "en"])
async def test_a_30_alert_group_is_one_card_through_its_life(
    migrated_url: str, language: str
) -> None:
    async with (
        running_fake(enforce_limits=True) as fake,
        live(migrated_url, fake, bot_language=language) as (services, client),
    ):
        alerts = [am_alert(i) for i in range(30)]
        answer = await post(client, notification(alerts))
        [incident_id] = answer["created"]
        card = await fake.wait_for(lambda: cards(fake) and the_card(fake))
        assert f"#{incident_id} API latency is high" in card.text
        assert COUNTS[language].format(firing=30, resolved=0) in card.text
        assert all(f"instance=web-{i:02d}" in card.text for i in range(30))
        sent_before = len(fake.sent())

        # Re-sent unchanged (repeat_interval): the same incident, no second card.
        again = await post(client, notification(alerts))
        assert again["deduplicated"] == [incident_id] and again["created"] == []
        await drained(services)
        assert len(cards(fake)) == 1 and len(fake.sent()) == sent_before

        # One alert of the group resolved: the card is edited to show it.
        alerts[4] = am_alert(4, "resolved")
        await post(client, notification(alerts))
        await fake.wait_for(
            lambda: COUNTS[language].format(firing=29, resolved=1) in the_card(fake).text
        )
        assert "<s>instance=web-04</s>" in the_card(fake).text
        detail = await services.incidents.get(incident_id)
        assert detail.incident.state is IncidentState.TRIGGERED
        [changed] = [e for e in detail.timeline if "alerts" in e.details]
        assert changed.details["alerts"] == {
            "added": 0,
            "cleared": 1,
            "firing": 29,
            "resolved": 1,
        }

        # The group resolved: the incident is resolved, still one card.
        done = await post(client, notification([am_alert(i, "resolved") for i in range(30)]))
        assert done["resolved"] == [incident_id]
        await fake.wait_for(
            lambda: COUNTS[language].format(firing=0, resolved=30) in the_card(fake).text
        )
        assert RESOLVED_STATE[language] in the_card(fake).text
        assert len(cards(fake)) == 1 and len(fake.sent()) == sent_before
        api = await (await client.get(f"/api/incidents/{incident_id}")).json()
        assert api["state"] == "resolved"
        assert api["alert_group"]["group_key"] == GROUP_KEY
        assert len(api["alert_group"]["alerts"]) == 30
        assert {a["status"] for a in api["alert_group"]["alerts"]} == {"resolved"}
    # One language: what the alerts say is theirs; every other word is the chat's language.
    content = ["API latency is high", "p99 over 2 s", "HighLatency", "alertmanager", "api"]
    content += [f"{k}={v}" for a in alerts for k, v in a["labels"].items()]
    content += [str(v) for a in alerts for v in a["labels"].values()]
    content = sorted(set(content), key=len, reverse=True)
    if language == "ko":
        assert leaks(sent_texts(fake), content, english) == {}
    else:
        assert leaks(sent_texts(fake), content, lambda p: set(HANGUL.findall(p))) == {}


@pytest.mark.parametrize("language", ["ko", "en"])
async def test_a_p0_alert_joining_a_group_raises_its_card(
    migrated_url: str, language: str
) -> None:
    async with (
        running_fake(enforce_limits=True) as fake,
        live(migrated_url, fake, bot_language=language) as (services, client),
    ):
        alerts = [am_alert(i) for i in range(3)]
        [incident_id] = (await post(client, notification(alerts)))["created"]
        card = await fake.wait_for(lambda: cards(fake) and the_card(fake))
        assert "🟡 <b>P2</b>" in card.text
        alerts.append(am_alert(3, severity="critical"))
        await post(client, notification(alerts))
        await fake.wait_for(lambda: "🔴 <b>P0</b>" in the_card(fake).text)
        assert COUNTS[language].format(firing=4, resolved=0) in the_card(fake).text
        assert len(cards(fake)) == 1
        view = (await services.incidents.get(incident_id)).incident
        assert view.severity is Severity.P0


def test_the_list_escapes_what_alerts_bring() -> None:
    alerts = [am_alert(i) for i in range(2)]
    alerts[0]["annotations"] = {"summary": "<b>5xx</b> & more"}
    alerts[1]["status"] = "resolved"
    [taken] = parse_alertmanager(notification(alerts)).firing
    lines = TelegramRenderer(Catalogue("en")).group_lines(_view(taken), [])
    assert lines == [
        "Alerts: 1 firing, 1 resolved",
        "  🟡 &lt;b&gt;5xx&lt;/b&gt; &amp; more",
        "  ✅ <s>API latency is high</s>",
    ]
