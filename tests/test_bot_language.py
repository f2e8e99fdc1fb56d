"""One language at a time, end to end: the real bot (long polling) and the outbox sender
against the fake Bot API, driven as a team would drive it — every command with good and bad
arguments, every button, each card state the ladder and people bring, pages, errors — and
then every text that reached Telegram is read: with `ko` no English word the team did not
write, with `en` no Hangul."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.callbacks import (
    ChecklistCallback,
    IncidentAction,
    JobCallback,
    SSEAction,
    SSECallback,
)
from bot.locales import Catalogue
from bot.render import html_to_plain
from services.container import Services
from services.incident_types import AlertIn
from services.main import background_contexts
from services.models import IncidentState
from services.severity import Severity
from services.web.app import create_app
from tests.botkit import ADMIN_USER, PD_USER, RESPONDER, TEAM, VIEWER, running_fake
from tests.fakes.telegram import FakeTelegram, Posted
from tests.fakes.world import World, pipeline_world
from tests.test_bot_e2e import button, card_for, drained
from tests.test_bot_pipeline import chat_overrides
from tests.test_locales import english

# The walk sends a few hundred messages to one group: paced as Telegram wants, it would
# take minutes (the pacing has tests of its own; this fake enforces nothing).
PACE = {
    "telegram_rate_global_per_second": 10_000,
    "telegram_rate_chat_per_second": 10_000,
    "telegram_rate_group_per_minute": 100_000,
}
HANGUL = re.compile(r"[\uac00-\ud7a3]")
# Read from what the bot sent: texts, captions, button labels, popups, text documents.
TEXT_METHODS = {"sendMessage", "editMessageText", "sendDocument", "answerCallbackQuery"}
# Names and terms the chat shows as they are in both languages, beyond test_locales' list:
# the components /health names, job and trace kinds, the checklist's product names.
NAMES = {
    "instagram_token", "cloudinary", "fal", "scheduler", "stats", "sse", "escalation",
    "heartbeats", "leader", "redis", "publish", "sunflower", "flux-2", "FLUX.2", "dev",
    "Telegram", "fal.ai", "SunFlow", "Redis", "json", "txt", "md", "png", "gz", "p90",
    "HTTP", "Meta", "Developer", "Console", "getMe", "MAX_SSE_CONNECTIONS", "media",
    # Sub-commands of the CLI the token guide tells the reader to type.
    "health", "retry", "dry-run",
}  # fmt: skip
# Data the bot quotes as it is (ids, paths, a provider's answer, what was typed) is set in
# <code>. An alert's own description is content (`own_content`); one our services wrote is
# worded in the chat's language and checked as any other text.
CODE = re.compile(r"<code>.*?</code>", re.S)
FILES = re.compile(r"\S+/\S+|\b[\w.-]+\.(?:json|md|txt|png|gz|toml)\b")
IDS = re.compile(r"\b(?:SF-)?\d{8}-\d{6}-[0-9a-f]{4}\b|\b[\w.-]+:\d+\b")  # host:pid


class Walk:
    """The team's chat, as a user types and taps in it; every answer is awaited."""

    def __init__(self, fake: FakeTelegram, services: Services, world: World) -> None:
        self.fake, self.services, self.world = fake, services, world

    def _answered(self, before: int, chat_id: int) -> bool:
        for call in self.fake.calls[before:]:
            if call.status != 200 or call.method not in TEXT_METHODS:
                continue
            if call.method == "answerCallbackQuery" or int(call.params["chat_id"]) == chat_id:
                return True
        return False

    async def say(self, user_id: int, chat_id: int, text: str, **kw: Any) -> None:
        before = len(self.fake.calls)
        await self.fake.send_text(user_id, chat_id, text, **kw)
        try:
            await self.fake.wait_for(lambda: self._answered(before, chat_id))
        except AssertionError:
            raise AssertionError(f"no answer to {text!r}") from None

    async def press(self, user_id: int, posted: Posted, data: str) -> None:
        before = len(self.fake.calls)
        await self.fake.press(user_id, posted, data)
        await self.fake.wait_for(
            lambda: any(c.method == "answerCallbackQuery" for c in self.fake.calls[before:])
        )

    async def step(self, **delta: float) -> None:
        """Time passes: the ladder's steps come due and fire; their messages go out."""
        self.world.clock.advance(**delta)
        await self.services.escalation.fire_due(self.services.incidents)
        await drained(self.services)

    def newest(self, chat_id: int, needle: str) -> Posted:
        found = [p for p in self.fake.in_chat(chat_id) if needle in p.text]
        assert found, f"nothing with {needle!r} in chat {chat_id}"
        return found[-1]


def sent_texts(fake: FakeTelegram) -> list[str]:
    """Every text the bot had accepted by Telegram, with the labels of its buttons."""
    texts: list[str] = []
    for call in fake.calls:
        if call.method not in TEXT_METHODS or call.status != 200:
            continue
        for key in ("text", "caption"):
            if call.params.get(key):
                texts.append(str(call.params[key]))
        markup = call.params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        if isinstance(markup, dict):
            for row in markup.get("inline_keyboard", []):
                texts += [str(b.get("text", "")) for b in row]
    for posted in fake.messages.values():
        if posted.document is not None:
            try:
                texts.append(posted.document.decode())
            except UnicodeDecodeError:
                continue  # the chart, a log bundle: not text
    for command in fake.commands:
        texts.append(str(command.get("description", "")))
    return texts


async def own_content(services: Services, language: str) -> list[str]:
    """What the alerts themselves say (title, description, key, labels): shown as written.
    A title our own services wrote is not content: the chat words it in its language."""
    views = await services.incidents.list(states=list(IncidentState))
    catalogue = Catalogue(language)
    # What the team typed: the on-call person's name, notes and a post-mortem field.
    found: list[str] = ["Mina", "came back", "fixed", "quota"]
    for view in views:
        if catalogue.title(view.title) == view.title:
            found.append(view.title)
        if view.wording is None:
            found.append(view.description)
        else:
            # The provider's answer our service quoted in its description (`{error}`).
            error = (view.wording.get("params") or {}).get("error")
            if isinstance(error, str):
                found.append(error)
        found += [view.dedup_key, view.source]
        found += [f"{k}={v}" for k, v in view.labels.items()]
        found += [str(v) for v in view.labels.values()]
    found += [h.name for h in await services.heartbeats.views()]
    # What the providers answered (an error quoted in /health and /stats): their words.
    for provider in ("instagram", "cloudinary", "fal"):
        state = await services.ops.providers.get(provider)
        if state is not None and state.error:
            found += [state.error[:160], state.error[:120]]
    for job in await services.ops.retry.list():
        found.append(job.last_error[:120])
    # A label's value "1" is not content to cut out of every number.
    return sorted({f for f in found if len(f) > 3 and not f.isdigit()}, key=len, reverse=True)


def leaks(
    texts: list[str], content: list[str], found: Callable[[str], set[str]]
) -> dict[str, Any]:
    offenders: dict[str, Any] = {}
    for text in texts:
        plain = html_to_plain(CODE.sub(" ", text))
        for piece in content:
            plain = plain.replace(piece, " ")
            # A line cut short (the /health card's 120 characters) ends in a piece's start.
            for cut in range(len(piece) - 1, 20, -1):
                plain = re.sub(re.escape(piece[:cut]) + "$", " ", plain, flags=re.M)
        plain = IDS.sub(" ", FILES.sub(" ", plain))
        words = {w for w in found(plain) if w not in NAMES and w.rstrip(".:,") not in NAMES}
        if words:
            offenders[plain[:160]] = sorted(words)
    return offenders


async def walk_the_chat(walk: Walk, language: str) -> None:  # noqa: PLR0915
    fake, services, world = walk.fake, walk.services, walk.world
    ops = services.ops
    admin, responder, viewer = ADMIN_USER, RESPONDER, VIEWER

    # A failed pipeline job behind an incident: /retry, /traces, Logs have something to show.
    world.add_topic("sunflower")
    await ops.tokens.set_expiry(60, actor="test")
    world.instagram.fault = "429"
    world.instagram.retry_after = 3600
    failed = await ops.pipeline.publish("sunflower")
    assert failed.job is not None
    job_id = failed.job.id

    # The team's own alert, with a description and labels (its own words, any language).
    opened = await services.incidents.trigger(
        AlertIn(
            Severity.P1,
            "Generation API 5xx",
            dedup_key="gen-5xx",
            source="api",
            description="5xx rate above 5 % for 10 minutes",
            labels={"component": "fal"},
        ),
        actor="test",
    )
    incident_id = opened.incident.id
    card = await fake.wait_for(lambda: card_for(fake, incident_id))
    await drained(services)

    # The ladder: the retries step, the PD page and the deadline, the manual step.
    await walk.step(minutes=31)
    await walk.step(minutes=30)
    page = await fake.wait_for(
        lambda: [p for p in fake.in_chat(PD_USER) if f"#{incident_id}</b>" in p.text]
    )
    await walk.step(hours=3)

    # Commands, as each role would type them, good and bad.
    for text in [
        "/start", "/help", "/status", "/incidents", "/health", "/oncall", "/heartbeats",
        "/token", "/token guide", "/token set_expiry 60", "/token nonsense",
        "/retry", f"/retry {job_id}", "/retry 9999", "/retry x y",
        "/traces", "/traces SF-missing", "/traces a b",
        "/backup", "/backup create before the change", "/backup nonsense",
        "/stats", "/stats restart", "/stats nonsense",
        "/ack", "/ack x", "/ack 9999", f"/ack {incident_id} 0m", "/snooze",
        f"/snooze {incident_id} 9d", f"/snooze {incident_id} soon", "/resolve", "/reopen",
        f"/reopen {incident_id}",
        "/postmortem", f"/postmortem {incident_id}", f"/postmortem {incident_id} cause quota",
        f"/postmortem {incident_id} nonsense", "/oncall set", "/oncall set x 8h",
        f"/oncall set {PD_USER} 8h Mina", f"/oncall set {PD_USER} 1m", "/notify_test",
        "/sse_reset", "/nonsense",
    ]:  # fmt: skip
        await walk.say(admin, TEAM, text)
    await ops.tokens.weekly_post()  # the scheduler's weekly token status
    await drained(services)
    backups = await ops.backups.list()
    await walk.say(admin, TEAM, f"/backup restore {backups[0].id}")
    await walk.say(admin, TEAM, "/backup restore missing-id")
    await walk.say(viewer, TEAM, f"/ack {incident_id}")  # refused: a viewer
    await walk.say(viewer, TEAM, "/sse_reset")  # refused: an admin's

    # The SSE runbook's buttons: choose, cancel; choose, confirm.
    menu = walk.newest(TEAM, "SSE")
    await walk.press(admin, menu, SSECallback(action=SSEAction.RESET).pack())
    await walk.press(admin, menu, SSECallback(action=SSEAction.CANCEL).pack())
    for action in (SSEAction.RESTART, SSEAction.RESET, SSEAction.BROADCAST):
        await walk.press(admin, menu, SSECallback(action=action).pack())
        await walk.press(admin, menu, SSECallback(action=action, confirm=True).pack())

    # The card's buttons: Details, Logs, Checklist and a tick, Retry, Snooze, Ack, Resolve.
    await walk.press(viewer, card, button(IncidentAction.DETAILS, incident_id))
    await walk.press(responder, card, button(IncidentAction.LOGS, incident_id))
    await walk.press(responder, card, button(IncidentAction.CHECKLIST, incident_id))
    checklist = walk.newest(TEAM, f"#{incident_id}</b>")
    tick = ChecklistCallback(incident_id=incident_id, checklist="during", item=0).pack()
    await walk.press(responder, checklist, tick)
    await walk.press(responder, card, JobCallback(job_id=job_id).pack())
    world.instagram.fault = None  # recovered: the retry succeeds, a second is refused
    await walk.say(responder, TEAM, f"/retry {job_id}")
    await walk.say(responder, TEAM, f"/retry {job_id}")
    await walk.press(viewer, card, button(IncidentAction.ACK, incident_id))  # refused
    await walk.press(responder, card, button(IncidentAction.SNOOZE, incident_id, 30))
    await drained(services)
    await walk.press(responder, card, button(IncidentAction.ACK, incident_id))
    await drained(services)
    # Acknowledged: a second ack, then a timed one that runs out.
    await walk.say(responder, TEAM, f"/ack {incident_id}")
    await walk.say(responder, TEAM, f"/snooze {incident_id} 30m")
    second = await services.incidents.trigger(
        AlertIn(Severity.P2, "Stats late", dedup_key="stats-late", source="stats"), actor="test"
    )
    second_card = await fake.wait_for(lambda: card_for(fake, second.incident.id))
    await drained(services)
    await walk.say(responder, TEAM, "/ack 10m", reply_to=second_card)
    await walk.step(minutes=11)
    # Resolved from the page; again; reopened; the reopened card resolved with a note.
    await walk.press(PD_USER, page[0], button(IncidentAction.RESOLVE, incident_id))
    await drained(services)
    await walk.say(responder, TEAM, f"/resolve {incident_id}")
    await walk.say(responder, TEAM, f"/snooze {incident_id} 30m")
    await walk.say(responder, TEAM, f"/ack {incident_id}")
    await walk.say(responder, TEAM, f"/reopen {incident_id} came back")
    await drained(services)
    await walk.say(responder, TEAM, f"/resolve {incident_id} fixed", reply_to=card)
    await walk.say(responder, TEAM, f"/postmortem {incident_id}")
    await walk.say(viewer, TEAM, "/report")
    await fake.wait_for(
        lambda: [p for p in fake.in_chat(TEAM) if (p.document or b"").startswith(b"\x89PNG")]
    )
    await drained(services)
    assert world.clock.now() > opened.incident.first_seen_at + timedelta(hours=4)


@pytest.mark.parametrize("language", ["ko", "en"])
async def test_every_text_the_bot_sends_is_in_one_language(
    migrated_url: str, tmp_path: Path, language: str
) -> None:
    async with (
        running_fake() as fake,
        pipeline_world(
            migrated_url,
            tmp_path,
            **{**chat_overrides(fake), **PACE, "bot_language": language},
        ) as world,
    ):
        services = world.services
        app = create_app(world.settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        async with TestClient(TestServer(app, host="127.0.0.1")):
            await walk_the_chat(Walk(fake, services, world), language)
            content = await own_content(services, language)
        texts = sent_texts(fake)
    assert len(texts) > 150
    if language == "ko":
        found = leaks(texts, content, english)
    else:
        found = leaks(texts, content, lambda plain: set(HANGUL.findall(plain)))
    assert found == {}
