"""One language at a time: with `ko`, what the bot writes is Korean except for names, ids,
units and the alert's own content. Walks every catalogue message and the rendered cards,
replies, pages, Details and /health in each state."""

from __future__ import annotations

import re
import string
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from bot.keyboards import incident_keyboard, page_keyboard
from bot.locales import CATALOGUES, Catalogue
from bot.render import TelegramRenderer, html_to_plain
from services.errors import InvalidInput, Unavailable
from services.health import ComponentHealth, HealthReport, Status
from services.incident_types import (
    AlertIn,
    ChangeKind,
    IncidentDetail,
    IncidentView,
    TimelineEntry,
    wording,
)
from services.integrations.instagram import InstagramError, InstagramRateLimited
from services.locales import LANGUAGES, SHARED, TEXTS
from services.models import IncidentState
from services.notify.outbox import Op
from services.pipeline import (
    blocked_alert,
    caption_figures,
    cloudinary_alert,
    fal_alert,
    instagram_failure,
)
from services.policy import PLAYBOOK_LADDERS
from services.severity import Severity
from services.stats import stats_alert
from services.tokens import LiveCheck, TokenState, TokenStatus

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
# Not English prose: product and service names, our ids and units, Telegram's terms the
# team uses as they are, and the alert's own content in this test.
ALLOWED = {
    "SunFlow", "Ops", "SSE", "PD", "UTC", "ID", "USER_ID", "ms", "p90", "id", "ack", "viewer",
    "responder", "admin", "dedup", "Alertmanager", "Instagram", "Cloudinary", "FLUX",
    "fal", "ai", "NAME", "every", "grace", "heartbeat", "add", "sunflow-ops",
    # Sub-commands typed as they are (`/token guide`, `/postmortem 42 cause TEXT`).
    "status", "guide", "set_expiry", "list", "create", "restore", "restart", "set",
    "summary", "impact", "cause", "prevention", "SF-20260130-090000-ab12",
    # The alert and the people in it (its own content).
    "Generation", "API", "tg", "kim", "team", "pd", "retries_done", "manual", "test",
    "api", "instagram", "database", "telegram", "reachable", "web", "xx", "gen-5xx",
    # Settings, files and shell commands the reader types as they are.
    "INSTAGRAM_ACCESS_TOKEN", "INSTAGRAM_USER_ID", "env", "serve", "systemctl", "sunflow-ops@",
    "token", "set-expiry", "Graph", "sunflow-ops@*", "notify",
    # Settings, Bot API methods and example ids named in /health and error replies.
    "HTTP", "MAX_SSE_CONNECTIONS", "TELEGRAM_BOT_TOKEN", "getMe", "SF-20260130-091500-a1b2",
    "a1b2",
    # The recovery commands, paths, settings and HTTP words our incidents' descriptions quote.
    "publish", "retry", "generate", "upload", "stats", "collect", "force", "collect_stats",
    "content", "CLOUDINARY_URL", "PUBLISH_DAILY_LIMIT", "Retry-After", "GET", "POST", "Meta",
    "fal.ai", "sunflower", "png", "FAL_KEY",
    # The token guide's names, commands and address (the walk in test_bot_language too).
    "Developer", "Console", "dry-run", "health", "https", "facebook.com",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*[A-Za-z0-9]|[A-Za-z]{2,}")


def english(text: str) -> set[str]:
    plain = html_to_plain(text)
    plain = re.sub(r"/[a-z_]+", " ", plain)  # commands
    plain = re.sub(r"\b(?:\d+[smhd])+\b", " ", plain)  # durations (1h30m)
    plain = re.sub(r"https?://\S+", " ", plain)
    plain = re.sub(r"\btg:\d+|@\w+|\bP[0-3]\b|\bms\d*\b", " ", plain)  # people, severities
    words = set(_WORD.findall(plain))
    return {w for w in words if w not in ALLOWED and w.rstrip(".:") not in ALLOWED}


def view(state: IncidentState, **extra: Any) -> IncidentView:
    values: dict[str, Any] = {
        "id": 42,
        "dedup_key": "gen-5xx",
        "severity": Severity.P1,
        "title": "Generation API 5xx",
        "description": "",
        "source": "api",
        "labels": {},
        "state": state,
        "occurrence_count": 2,
        "first_seen_at": NOW - timedelta(minutes=40),
        "last_seen_at": NOW,
        "response_deadline": NOW + timedelta(minutes=20),
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
    }
    values.update(extra)
    return IncidentView(**values)


def states() -> list[IncidentView]:
    return [
        view(IncidentState.TRIGGERED),
        view(IncidentState.TRIGGERED, snoozed_until=NOW + timedelta(minutes=30)),
        view(
            IncidentState.ACKNOWLEDGED,
            acknowledged_at=NOW,
            acknowledged_by="tg:7 (@kim)",
            ack_expires_at=NOW + timedelta(minutes=30),
        ),
        view(IncidentState.RESOLVED, resolved_at=NOW, resolved_by="tg:7 (@kim)"),
    ]


def changes() -> list[dict[str, Any]]:
    """Every change kind as the card's "Last:" line and a reply render it, with each
    built-in ladder step."""
    found: list[dict[str, Any]] = []
    for kind in ChangeKind:
        found.append({"kind": kind.value, "actor": "tg:7 (@kim)", "at": NOW.isoformat()})
    for ladder in PLAYBOOK_LADDERS.values():
        for step in ladder:
            details = {"step": step.name, "target": step.target, "message": step.message}
            found.append({"kind": "escalated", "actor": "escalation", "details": details})
    missed = {
        "deadline": NOW.isoformat(),
        "severity": "P1",
        "unacknowledged_seconds": 3600,
        "next": {"step": "pd", "target": "pd", "due_at": NOW.isoformat(), "user_ids": [7]},
    }
    found.append({"kind": "deadline_missed", "actor": "escalation", "details": missed})
    return found


def own_alerts() -> list[AlertIn]:
    """Incidents our own services open, built by the functions that open them (the
    provider's answer here is an HTTP status: words of its own would be its content)."""
    image = Path("content/images/sunflower/archive/a.png")
    no_tokens = cast(Any, None)  # only a 401 consults the token service
    not_set = {"reason": "not_set", "setting": "FAL_KEY"}
    return [
        fal_alert("HTTP 503"),
        fal_alert("HTTP 503", archive=image),
        cloudinary_alert("HTTP 420", image),
        blocked_alert("sunflower", Unavailable("FAL_KEY", detail=not_set)),
        blocked_alert("sunflower", InvalidInput("HTTP 400")),
        blocked_alert(
            "sunflower",
            InvalidInput("caption", detail={"reason": "caption", **caption_figures("#a " * 31)}),
        ),
        stats_alert("HTTP 500"),
        *(
            failed.alert
            for exc in (
                InstagramRateLimited("HTTP 429", status=429, retry_after=None),
                InstagramRateLimited("HTTP 429", status=429, retry_after=timedelta(hours=1)),
                InstagramError("HTTP 403", status=403),
                InstagramError("HTTP 500", status=500),
            )
            if (
                failed := instagram_failure(exc, operation="media", tokens=no_tokens, trace_id="")
            ).alert
            is not None
        ),
    ]


def own_descriptions() -> list[IncidentView]:
    """An incident with each description our services word: the built ones, and those
    written by services that need a database (heartbeats, the probe, tokens, health)."""
    views = [
        view(IncidentState.TRIGGERED, description=a.description, wording=a.wording)
        for a in own_alerts()
    ]
    status = TokenStatus(True, TokenState.WARNING, NOW, 3, NOW, "tg:7", None, None, False)
    worded: list[tuple[str, dict[str, Any]]] = [
        ("heartbeat", {"name": "x", "every": "1h", "grace": "5m", "due": "2026-12-07 03:00 UTC"}),
        ("database", {"error": "HTTP 500"}),
        ("unauthorized", {"where": "publishing"}),
        ("unauthorized", {"where": "stats collection"}),
        ("expiry", {"status": status.to_json()}),
        ("health", {"name": "fal", "finding": "timeout", "values": {"seconds": 5}}),
        ("health", {"name": "fal", "finding": "error", "values": {"error": "HTTP 500"}}),
    ]
    for reason, params in worded:
        views.append(view(IncidentState.TRIGGERED, wording=wording(reason, **params)))
    return views


def rendered_texts(language: str) -> list[str]:
    catalogue = Catalogue(language)
    renderer = TelegramRenderer(catalogue)
    texts: list[str] = []
    for incident in states():
        facts = {"next_step": {"name": "pd", "target": "pd", "due_at": NOW.isoformat()}}
        for change in changes():
            card = renderer.render(Op.CARD, {"last": change, **facts}, incident, NOW)
            texts.append(card.html)
            texts.append(renderer.render(Op.REPLY, {"change": change}, incident, NOW).html)
            if change["kind"] == "escalated":
                page = renderer.render(
                    Op.DIRECT,
                    {
                        "change": change,
                        "incident_id": 42,
                        "card": {"chat_id": -1001, "message_id": 5},
                    },
                    incident,
                    NOW,
                )
                texts.append(page.html)
        keyboards = [incident_keyboard(incident, catalogue), page_keyboard(incident, catalogue)]
        texts += [b.text for k in keyboards for row in k.inline_keyboard for b in row]
        timeline = [
            TimelineEntry(n, NOW, kind.value, "tg:7 (@kim)", {})
            for n, kind in enumerate(ChangeKind)
        ]
        texts.append(renderer.detail(IncidentDetail(incident, timeline), NOW))
    health = HealthReport(
        Status.DEGRADED,
        [
            ComponentHealth("database", Status.HEALTHY, "reachable", {}),
            ComponentHealth("telegram", Status.DOWN, "reachable", {}),
        ],
    )
    texts.append(renderer.health_card(health))
    for state in TokenState:
        for live in (LiveCheck(True, None, ""), LiveCheck(False, None, ""), None):
            token = TokenStatus(
                configured=True,
                state=state,
                expires_at=NOW + timedelta(days=3) if live else None,
                days_left=3,
                set_at=NOW,
                set_by="tg:7",
                live=live,
                unauthorized_incident=42 if live and not live.valid else None,
                restart_needed=live is None,
            )
            texts += [renderer.token_status(token), renderer.token_set(token, "tg:7 (@kim)")]
    texts.append(renderer.token_lines(replace(token, configured=False)))
    texts += [renderer.render(Op.CARD, {}, v, NOW).html for v in own_descriptions()]
    return texts


def placeholders(text: str) -> set[str]:
    """The format fields a message takes (`{id}`, `{title}`)."""
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def catalogue_texts(language: str) -> list[str]:
    """Every message of the chat's catalogue and every text the services write themselves
    (post-mortems, checklists, the token guide, the weekly report), placeholders filled."""
    texts = []
    for key, message in [*CATALOGUES[language].items(), *TEXTS[language].items()]:
        texts.append(message.format(**{f: "7" for f in placeholders(message)}))
        assert key
    return texts


def test_korean_mode_sends_no_english() -> None:
    offenders: dict[str, set[str]] = {}
    for text in catalogue_texts("ko") + rendered_texts("ko"):
        words = english(text)
        if words:
            offenders[html_to_plain(text)[:120]] = words
    assert offenders == {}


def test_english_mode_sends_no_korean() -> None:
    hangul = re.compile(r"[\uac00-\ud7a3]")
    mixed = [t for t in catalogue_texts("en") + rendered_texts("en") if hangul.search(t)]
    assert mixed == []


def test_the_services_texts_have_the_same_keys_and_placeholders() -> None:
    ko, en = TEXTS["ko"], TEXTS["en"]
    assert ko.keys() == en.keys()
    for key in ko:
        assert placeholders(ko[key]) == placeholders(en[key]), key
    # The chat's catalogue holds the shared words as they are here: one table for both.
    for language in LANGUAGES:
        shared = {k: v for k, v in TEXTS[language].items() if k.startswith(SHARED)}
        assert shared and shared.items() <= CATALOGUES[language].items()


@pytest.mark.parametrize("language", ["en", "ko"])
def test_every_text_renders_in_both_languages(language: str) -> None:
    texts = rendered_texts(language)
    assert texts and all(t.strip() for t in texts)


# Every title our services give an incident (services/tokens.py, stats.py, heartbeats.py,
# retry.py, health.py, probe.py, pipeline.py), as they write it.
SERVICE_TITLES = [
    "Instagram token expired: the Graph API answers 401",
    "Instagram token expired",
    "Instagram token warning: 12 days left",
    "Instagram token critical: 3 days left",
    "Instagram token warning: ",
    "Instagram stats collection failing",
    "Heartbeat nightly-backup missed: never pinged since it was added",
    "Heartbeat nightly-backup missed: no ping since 2026-12-07T03:00:00+00:00",
    "publish failing",
    "collect_stats failing",
    "Health check: cloudinary is down",
    "Health check: database is down",
    "Image generation failing (FLUX.2 on fal.ai)",
    "Cloudinary upload failing",
    "Instagram API rate limit (429)",
    "Instagram publishing blocked (403)",
    "Instagram API error",
    "Publishing sunflower blocked",
]


@pytest.mark.parametrize("title", SERVICE_TITLES)
def test_our_titles_are_worded_in_korean_and_keep_their_values(title: str) -> None:
    ko = Catalogue("ko").title(title)
    values = {"nightly-backup", "publish", "collect_stats", "cloudinary", "sunflower"}
    names = {"T03:00:00", "FLUX.2", "fal.ai"}  # a time's letter, proper names
    assert english(ko) <= values | names, ko
    assert re.search(r"[\uac00-\ud7a3]", ko), ko
    for value in ("nightly-backup", "cloudinary", "sunflower", "12", "2026-12-07T03:00:00"):
        if value in title:
            assert value in ko
    assert Catalogue("en").title(title) == title


@pytest.mark.parametrize(
    "title",
    ["Generation API 5xx", "Checkout failing", "Health check: db slow", "publish failing!"],
)
def test_an_alerts_own_title_is_shown_as_written(title: str) -> None:
    assert Catalogue("ko").title(title) == title


def test_our_descriptions_are_worded_in_english_as_the_services_wrote_them() -> None:
    """The chat words what our services meant; in English, exactly their description (the
    API's), so the two cannot drift apart."""
    english_renderer = TelegramRenderer(Catalogue("en"))
    korean = TelegramRenderer(Catalogue("ko"))
    for alert in own_alerts():
        assert alert.wording is not None, alert.title
        shown = view(IncidentState.TRIGGERED, description=alert.description, wording=alert.wording)
        if alert.wording["params"].get("refusal"):
            # A refusal that names its reason reads as the chat words that error.
            assert "sunflow-ops publish sunflower --retry" in english_renderer.description(shown)
        else:
            assert english_renderer.description(shown) == alert.description
        assert korean.description(shown) != alert.description
