"""bot.render: escaping, splitting without cutting tags or entities, the alert card."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.locales import CATALOGUES, Catalogue
from bot.render import TelegramRenderer, esc, html_to_plain, split_html, trim_html, visible_len
from services.incident_types import IncidentView
from services.models import IncidentState
from services.notify.outbox import Op
from services.severity import Severity
from services.stats import CollectResult, RestartResult
from tests.fakes.telegram import check_html

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def view(**overrides: object) -> IncidentView:
    values: dict[str, object] = {
        "id": 7,
        "dedup_key": "k",
        "severity": Severity.P0,
        "title": "<b>x</b> & <script>",
        "description": "",
        "source": "api",
        "labels": {"service": "instagram<1>"},
        "state": IncidentState.TRIGGERED,
        "occurrence_count": 3,
        "first_seen_at": NOW - timedelta(minutes=5),
        "last_seen_at": NOW,
        "response_deadline": NOW - timedelta(minutes=5),
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
    }
    values.update(overrides)
    return IncidentView(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("plain " * 2000, 4096),
        ("<b>" + "bold &amp; safe " * 600 + "</b>", 4096),
        ("<i>a</i>\n" * 2500, 4096),
        ("<b><i>" + "x&lt;" * 50 + "</i></b>", 37),
        ("<blockquote>" + "한국어 텍스트 🔴 " * 700 + "</blockquote>", 4096),
        ('<a href="https://e.x/?a=1&amp;b=2">' + "link " * 30 + "</a>", 60),
    ],
)
def test_split_never_cuts_tags_or_entities(text: str, limit: int) -> None:
    parts = split_html(text, limit)
    assert len(parts) > 1
    for part in parts:
        assert visible_len(part) <= limit
        assert check_html(part) is None, part
    assert "".join(html_to_plain(p) for p in parts) == html_to_plain(text)


def test_short_text_is_one_part() -> None:
    assert split_html("<b>hi</b>") == ["<b>hi</b>"]


def test_trim_marks_the_cut() -> None:
    text, trimmed = trim_html("<b>" + "y" * 5000 + "</b>", 4096, "…")
    assert trimmed
    assert visible_len(text) <= 4096
    assert check_html(text) is None
    assert trim_html("short", 4096) == ("short", False)


def test_card_escapes_alert_content() -> None:
    rendered = TelegramRenderer(Catalogue("en")).render(Op.CARD, {}, view(), NOW)
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in rendered.html
    assert "<script>" not in rendered.html
    assert check_html(rendered.html) is None
    assert "<b>x</b> & <script>" in rendered.plain
    assert "instagram&lt;1&gt;" in rendered.html
    assert rendered.full_text is None
    buttons = [b["text"] for row in rendered.reply_markup["inline_keyboard"] for b in row]  # type: ignore[index]
    assert buttons == [
        "👀 Ack",
        "✅ Resolve",
        "🔎 Details",
        "☑ Checklist",
        "💤 30m",
        "💤 1h",
        "💤 4h",
    ]


def test_card_shows_who_acknowledged_and_drops_the_ack_button() -> None:
    acked = view(
        state=IncidentState.ACKNOWLEDGED,
        acknowledged_at=NOW,
        acknowledged_by="tg:5 (@kim)",
    )
    rendered = TelegramRenderer(Catalogue("en")).render(Op.CARD, {}, acked, NOW)
    assert "acknowledged by tg:5 (@kim) at 2026-11-22 01:00 UTC" in rendered.plain
    buttons = [b["text"] for row in rendered.reply_markup["inline_keyboard"] for b in row]  # type: ignore[index]
    assert "👀 Ack" not in buttons


def test_long_card_is_trimmed_and_keeps_the_full_text() -> None:
    long = view(description="<p>" + "a&b " * 3000)
    rendered = TelegramRenderer(Catalogue("ko")).render(Op.CARD, {}, long, NOW)
    assert visible_len(rendered.html) <= 4096
    assert check_html(rendered.html) is None
    assert rendered.full_text is not None
    assert rendered.full_text.count("a&b") == 3000


def test_the_limit_counts_visible_text_not_markup() -> None:
    """Telegram counts 4096 after entity parsing: escaped markup keeps as much visible text
    as plain text would."""
    renderer = TelegramRenderer(Catalogue("en"))
    marked = renderer.render(Op.CARD, {}, view(description="<x>&" * 900), NOW)
    assert marked.full_text is None  # 3,600 visible characters fit, though the HTML is 12,600
    assert len(marked.html) > 4096 >= visible_len(marked.html)
    assert html_to_plain(marked.html).count("<x>&") == 900
    plain = renderer.render(Op.CARD, {}, view(description="abcd" * 1500), NOW)
    markup = renderer.render(Op.CARD, {}, view(description="<&>;" * 1500), NOW)
    assert plain.full_text is not None and markup.full_text is not None
    assert visible_len(markup.html) == visible_len(plain.html)
    assert 4000 < visible_len(markup.html) <= 4096
    assert check_html(markup.html) is None


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("<b>abc</b>", 10, 3),
        ("&lt;&amp;&gt;", 10, 3),
        ("🔴 x", 10, 4),
        ('<a href="https://e.x/?a=1&amp;b=2">go</a>', 10, 2),
    ],
)
def test_visible_length(text: str, limit: int, expected: int) -> None:
    assert visible_len(text) == expected
    assert split_html(text, limit) == [text]


def test_a_new_card_has_no_last_line_for_the_step_that_made_it() -> None:
    renderer = TelegramRenderer(Catalogue("en"))
    initial: dict[str, Any] = {
        "kind": "escalated",
        "actor": "escalation",
        "at": NOW.isoformat(),
        "details": {"step": "team", "target": "team", "message": "alert", "initial": True},
    }
    card = renderer.render(Op.CARD, {"last": initial}, view(), NOW)
    assert "Last:" not in card.plain
    later = {**initial, "details": {**initial["details"], "initial": False, "step": "pd"}}
    assert (
        "Last: 📣 escalated (pd → team)"
        in renderer.render(Op.CARD, {"last": later}, view(), NOW).plain
    )


def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    from tests.test_locales import placeholders

    ko, en = CATALOGUES["ko"], CATALOGUES["en"]
    assert ko.keys() == en.keys()
    for key in ko:
        assert placeholders(ko[key]) == placeholders(en[key]), key
        for message in (ko[key], en[key]):
            # `desc.*` are plain text (an incident's description), escaped where shown.
            text = esc(message) if key.startswith("desc.") else message
            assert check_html(text.replace("{", "").replace("}", "")) is None, key


# -- the card's facts: next escalation step, unticked checklist items ----------


@pytest.mark.parametrize(
    ("facts", "state", "expected", "absent"),
    [
        (
            {"next_step": {"name": "pd", "target": "pd", "due_at": "2026-11-22T01:12:00+00:00"}},
            IncidentState.TRIGGERED,
            "⏭ Next: pd → pd at 01:12 UTC, in 12m",
            "unticked",
        ),
        (
            {"next_step": {"name": "pd", "target": "pd", "due_at": "2026-11-22T00:59:00+00:00"}},
            IncidentState.TRIGGERED,
            "⏭ Next: pd → pd at 00:59 UTC, due now",
            "unticked",
        ),
        ({"next_step": None, "checklist_open": 4}, IncidentState.TRIGGERED, "", "unticked"),
        (
            {"next_step": None, "checklist_open": 4},
            IncidentState.RESOLVED,
            "☐ 4 checklist items are still unticked",
            "Next:",
        ),
        ({"checklist_open": 0}, IncidentState.RESOLVED, "", "unticked"),
    ],
)
def test_card_shows_the_next_step_and_unticked_items(
    facts: dict[str, object], state: IncidentState, expected: str, absent: str
) -> None:
    extra: dict[str, object] = {"state": state}
    if state is IncidentState.RESOLVED:
        extra.update(resolved_at=NOW, resolved_by="alice")
    rendered = TelegramRenderer(Catalogue("en")).render(Op.CARD, facts, view(**extra), NOW)
    assert expected in rendered.html
    assert absent not in rendered.html
    assert check_html(rendered.html) is None


def test_card_of_a_timed_ack_says_until_when() -> None:
    acked = view(
        state=IncidentState.ACKNOWLEDGED,
        acknowledged_at=NOW,
        acknowledged_by="alice",
        ack_expires_at=NOW + timedelta(minutes=30),
    )
    rendered = TelegramRenderer(Catalogue("en")).render(Op.CARD, {}, acked, NOW)
    assert "acknowledged by alice at 2026-11-22 01:00 UTC (until 2026-11-22 01:30 UTC)" in (
        rendered.html
    )


@pytest.mark.parametrize("language", ["ko", "en"])
def test_a_failed_stats_restart_words_our_outcome_and_quotes_the_provider(
    language: str,
) -> None:
    render = TelegramRenderer(Catalogue(language))
    unset = RestartResult(None, CollectResult(False, None, "X not set", "not_configured"))
    said = "Graph API /me answered 429: Application request limit reached"
    refused = RestartResult(None, CollectResult(False, None, said))

    worded = render.stats_restarted(unset)
    quoted = render.stats_restarted(refused)

    assert "X not set" not in worded and "INSTAGRAM_USER_ID" in worded
    assert f"<code>{esc(said)}</code>" in quoted
    if language == "ko":
        outside = html_to_plain(quoted.replace(f"<code>{esc(said)}</code>", ""))
        assert not any(c.isascii() and c.isalpha() for c in outside), outside
