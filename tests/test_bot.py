"""Handler tests: updates fed to the dispatcher, replies read from the fake Bot API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.types import Update

from bot.callbacks import IncidentAction, IncidentCallback
from bot.dispatcher import bot_commands, create_dispatcher
from bot.filters import BUTTON_ROLES, COMMAND_ROLES, Role
from bot.locales import Catalogue
from bot.runtime import make_bot
from services.incidents import AlertIn
from services.main import Services, open_services
from services.models import IncidentState
from services.severity import Severity
from tests.botkit import (
    ADMIN_USER,
    OUTSIDER,
    RESPONDER,
    TEAM,
    TOKEN,
    VIEWER,
    bot_settings,
    running_fake,
)
from tests.fakes.telegram import FakeTelegram, Posted

USERS = {
    Role.OUTSIDER: (OUTSIDER, OUTSIDER),  # (user id, chat): a stranger writing privately
    Role.VIEWER: (VIEWER, TEAM),
    Role.RESPONDER: (RESPONDER, TEAM),
    Role.ADMIN: (ADMIN_USER, TEAM),
}


class Harness:
    def __init__(self, fake: FakeTelegram, services: Services, bot: Bot, dp: Dispatcher) -> None:
        self.fake, self.services, self.bot, self.dp = fake, services, bot, dp

    async def say(self, role: Role, text: str) -> str:
        """Send `text` as a user of `role`; return everything the bot answered in that chat."""
        user_id, chat_id = USERS[role]
        before = len(self.fake.calls)
        update = Update.model_validate(
            self.fake.message_update(user_id, chat_id, text), context={"bot": self.bot}
        )
        await self.dp.feed_update(self.bot, update)
        replies = [
            str(c.params.get("text", ""))
            for c in self.fake.calls[before:]
            if c.method == "sendMessage" and int(c.params["chat_id"]) == chat_id
        ]
        return "\n".join(replies)

    async def press(self, role: Role, data: str) -> tuple[str, str]:
        """Press a button as a user of `role`; return (the popup answer, messages in the chat)."""
        user_id, chat_id = USERS[role]
        before = len(self.fake.calls)
        posted = Posted(chat_id, 1, "alert", "HTML", None, None, None)
        update = Update.model_validate(
            self.fake.callback_update(user_id, posted, data), context={"bot": self.bot}
        )
        await self.dp.feed_update(self.bot, update)
        calls = self.fake.calls[before:]
        answers = [
            str(c.params.get("text", "")) for c in calls if c.method == "answerCallbackQuery"
        ]
        sent = [str(c.params.get("text", "")) for c in calls if c.method == "sendMessage"]
        return "\n".join(answers), "\n".join(sent)

    async def incident(self, title: str = "Instagram token expired") -> int:
        result = await self.services.incidents.trigger(
            AlertIn(Severity.P0, title, dedup_key=title)
        )
        return result.incident.id


def local_dirs(root: Path) -> dict[str, Any]:
    """Backups, log bundles and stats under the test's own directory, never the checkout."""
    return {
        "backup_dir": root / "data" / "backups",
        "log_dir": root / "config" / "logs",
        "stats_file": root / "config" / "data" / "instagram_stats.json",
        "content_dir": root / "content",
        "env_file_path": root / ".env",
    }


@pytest.fixture
async def harness(migrated_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_fake() as fake:
        settings = bot_settings(migrated_url, fake, **local_dirs(tmp_path))
        async with open_services(settings) as services:
            bot = make_bot(TOKEN, fake.base)
            try:
                yield Harness(fake, services, bot, create_dispatcher(services))
            finally:
                await bot.session.close()


ARGS = {"ack": "{id}", "resolve": "{id} fixed", "snooze": "{id} 30m", "retry": "1"}
REFUSED = "Sorry, this needs the"


@pytest.mark.parametrize("command", sorted(COMMAND_ROLES))
@pytest.mark.parametrize("role", list(Role))
async def test_every_command_for_every_role(harness: Harness, command: str, role: Role) -> None:
    incident_id = await harness.incident()
    args = ARGS.get(command, "").format(id=incident_id)
    reply = await harness.say(role, f"/{command} {args}".strip())
    refusals = await harness.services.audit.refusals()
    state = (await harness.services.incidents.get(incident_id)).incident.state
    if role >= COMMAND_ROLES[command]:
        assert reply and REFUSED not in reply
        assert refusals == []
    else:
        assert reply.startswith(REFUSED), reply
        assert f"your id: {USERS[role][0]}" in reply
        assert [(r.user_id, r.command) for r in refusals] == [(USERS[role][0], command)]
        assert state is IncidentState.TRIGGERED  # no service was called


async def test_ack_resolve_snooze_call_the_service(harness: Harness) -> None:
    first = await harness.incident("first")
    reply = await harness.say(Role.RESPONDER, f"/ack {first} 30m")
    assert f"#{first} acknowledged by tg:{RESPONDER} (@user{RESPONDER}) until" in reply
    view = (await harness.services.incidents.get(first)).incident
    assert view.state is IncidentState.ACKNOWLEDGED
    assert view.acknowledged_by == f"tg:{RESPONDER} (@user{RESPONDER})"
    assert view.ack_expires_at is not None

    reply = await harness.say(Role.ADMIN, f"/snooze #{first} 2h")
    assert f"#{first} snoozed until" in reply
    reply = await harness.say(Role.RESPONDER, f"/resolve {first} token renewed")
    assert f"#{first} resolved by" in reply
    detail = await harness.services.incidents.get(first)
    assert detail.timeline[-1].details == {"note": "token renewed"}

    reply = await harness.say(Role.RESPONDER, f"/resolve {first}")
    assert "already resolved" in reply


@pytest.mark.parametrize("action", list(IncidentAction))
@pytest.mark.parametrize("role", list(Role))
async def test_every_button_for_every_role(
    harness: Harness, action: IncidentAction, role: Role
) -> None:
    incident_id = await harness.incident()
    data = IncidentCallback(action=action, incident_id=incident_id, minutes=60).pack()
    answer, sent = await harness.press(role, data)
    refusals = await harness.services.audit.refusals()
    view = (await harness.services.incidents.get(incident_id)).incident
    if role >= BUTTON_ROLES[action]:
        assert REFUSED not in answer and refusals == []
        expected = {
            IncidentAction.ACK: view.state is IncidentState.ACKNOWLEDGED,
            IncidentAction.RESOLVE: view.state is IncidentState.RESOLVED,
            IncidentAction.SNOOZE: view.snoozed_until is not None,
            IncidentAction.DETAILS: "Timeline" in sent,
            IncidentAction.LOGS: bool(harness.fake.sent("sendDocument")),
        }
        assert expected[action]
    else:
        assert answer.startswith(REFUSED)
        assert [(r.user_id, r.command) for r in refusals] == [
            (USERS[role][0], f"button:{action.name.lower()}")
        ]
        assert view.state is IncidentState.TRIGGERED and view.snoozed_until is None
        assert sent == ""


@pytest.mark.parametrize(
    ("text", "usage"),
    [
        ("/ack", "Usage: /ack ID [DURATION]"),
        ("/ack abc", "Usage: /ack ID [DURATION]"),
        ("/ack 1 soon", "Usage: /ack ID [DURATION]"),
        ("/snooze 1", "Usage: /snooze ID DURATION"),
        ("/snooze 1 forever", "Usage: /snooze ID DURATION"),
        ("/resolve", "Usage: /resolve ID [note]"),
    ],
)
async def test_bad_arguments_answer_the_usage_line(
    harness: Harness, text: str, usage: str
) -> None:
    assert (await harness.say(Role.RESPONDER, text)).startswith(usage)


async def test_unknown_incident_and_unknown_command(harness: Harness) -> None:
    assert "no incident #999" in await harness.say(Role.RESPONDER, "/ack 999")
    assert "Send /help" in await harness.say(Role.VIEWER, "/frobnicate")
    assert await harness.say(Role.VIEWER, "just chatting") == ""


async def test_incidents_health_status_help(harness: Harness) -> None:
    await harness.incident("<b>x</b> & <script>")
    listing = await harness.say(Role.VIEWER, "/incidents")
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in listing
    health = await harness.say(Role.VIEWER, "/health")
    assert "database" in health and "telegram" in health
    status = await harness.say(Role.VIEWER, "/status")
    assert "Open incidents: 1 — P0 1 · P1 0" in status
    viewer_help = await harness.say(Role.VIEWER, "/help")
    assert "/incidents" in viewer_help and "/ack" not in viewer_help
    assert "/notify_test" in await harness.say(Role.ADMIN, "/help")


async def test_later_capabilities_say_so(harness: Harness) -> None:
    assert "not available yet" in await harness.say(Role.ADMIN, "/sse_reset")


# Subcommands that need more than their command (bot.filters.SUBCOMMAND_ROLES).
SUBCOMMANDS = [
    ("/token set_expiry 30", Role.ADMIN, "token"),
    ("/token set-expiry", Role.ADMIN, "token"),
    ("/stats restart", Role.RESPONDER, "stats"),
    ("/backup restore 20260101-000000-abcd", Role.ADMIN, "backup"),
    ("/backup create", Role.ADMIN, "backup"),
]


@pytest.mark.parametrize(("text", "needed", "command"), SUBCOMMANDS)
@pytest.mark.parametrize("role", list(Role))
async def test_every_subcommand_for_every_role(
    harness: Harness, text: str, needed: Role, command: str, role: Role
) -> None:
    harness.services.scheduler.start()
    try:
        reply = await harness.say(role, text)
    finally:
        harness.services.scheduler.shutdown()
    refusals = await harness.services.audit.refusals()
    if role >= needed:
        assert reply and REFUSED not in reply, reply
        assert refusals == []
    else:
        assert reply.startswith(REFUSED), reply
        assert [(r.user_id, r.command) for r in refusals] == [(USERS[role][0], command)]


async def test_korean_is_the_default(migrated_url: str) -> None:
    async with running_fake() as fake:
        settings = bot_settings(migrated_url, fake, bot_language="ko")
        async with open_services(settings) as services:
            bot = make_bot(TOKEN, fake.base)
            try:
                harness = Harness(fake, services, bot, create_dispatcher(services))
                assert "알 수 없는 명령" in await harness.say(Role.VIEWER, "/nope")
                assert "죄송합니다" in await harness.say(Role.OUTSIDER, "/status")
            finally:
                await bot.session.close()


async def test_a_reply_telegram_cannot_parse_goes_again_as_plain_text(harness: Harness) -> None:
    harness.fake.fail(
        "sendMessage", status=400, description="Bad Request: can't parse entities: at 3"
    )
    await harness.say(Role.VIEWER, "/status")
    plain = [c for c in harness.fake.sent("sendMessage") if c.params.get("parse_mode") is None]
    assert plain and "Open incidents: 0 — P0 0" in plain[0].params["text"]
    assert "<b>" not in plain[0].params["text"]


def test_command_menu_lists_every_command() -> None:
    names = [c.command for c in bot_commands(Catalogue("ko"))]
    assert names == list(COMMAND_ROLES)
    assert all(c.description for c in bot_commands(Catalogue("en")))
