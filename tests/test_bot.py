"""Handler tests: updates fed to the dispatcher, replies read from the fake Bot API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.types import Update

from bot.callbacks import (
    ChecklistCallback,
    IncidentAction,
    IncidentCallback,
    SSEAction,
    SSECallback,
)
from bot.dispatcher import bot_commands, create_dispatcher
from bot.filters import BUTTON_ROLES, COMMAND_ROLES, Role, button_role, command_name, required_role
from bot.locales import Catalogue
from bot.runtime import make_bot
from services.container import Services
from services.incident_types import AlertIn
from services.main import open_services
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
from tests.fakes.telegram import Call, FakeTelegram, Posted

USERS = {
    Role.OUTSIDER: (OUTSIDER, OUTSIDER),  # (user id, chat): a stranger writing privately
    Role.VIEWER: (VIEWER, TEAM),
    Role.RESPONDER: (RESPONDER, TEAM),
    Role.ADMIN: (ADMIN_USER, TEAM),
}


class Harness:
    async def press_on(self, role: Role, posted: Posted, data: str) -> list[Call]:
        """Press a button on a message the bot really posted; return the calls it made."""
        user_id, _ = USERS[role]
        before = len(self.fake.calls)
        update = Update.model_validate(
            self.fake.callback_update(user_id, posted, data), context={"bot": self.bot}
        )
        await self.dp.feed_update(self.bot, update)
        return self.fake.calls[before:]

    def last_posted(self, role: Role) -> Posted:
        return self.fake.in_chat(USERS[role][1])[-1]

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
            str(c.params.get("text") or c.params.get("caption") or "")
            for c in self.fake.calls[before:]
            if c.method in {"sendMessage", "sendDocument"} and int(c.params["chat_id"]) == chat_id
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


ARGS = {
    "ack": "{id}",
    "resolve": "{id} fixed",
    "snooze": "{id} 30m",
    "retry": "1",
    "postmortem": "{id}",
}
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
            IncidentAction.CHECKLIST: "checklists" in sent,
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


# -- escalation, SSE admin, checklists, post-mortems and reports -------------


@pytest.mark.parametrize(
    ("text", "needed"),
    [
        ("/oncall set 1005 8h", Role.ADMIN),
        ("/postmortem {id} cause the token expired", Role.RESPONDER),
        ("/postmortem {id} prevention renew 7 days ahead", Role.RESPONDER),
    ],
)
@pytest.mark.parametrize("role", list(Role))
async def test_every_escalation_subcommand_for_every_role(
    harness: Harness, text: str, needed: Role, role: Role
) -> None:
    incident_id = await harness.incident()
    reply = await harness.say(role, text.format(id=incident_id))
    refusals = await harness.services.audit.refusals()
    fields = await harness.services.postmortems.fields(incident_id)
    oncall = await harness.services.oncall.oncall()
    if role >= needed:
        assert reply and REFUSED not in reply and refusals == []
        assert fields or oncall.overridden_until is not None
    else:
        assert reply.startswith(REFUSED), reply
        assert len(refusals) == 1
        assert fields == {} and oncall.overridden_until is None


async def test_oncall_shows_and_sets_the_person(harness: Harness) -> None:
    shown = await harness.say(Role.VIEWER, "/oncall")
    assert "On call" in shown and "1005" in shown  # TELEGRAM_PD_USER_IDS
    reply = await harness.say(Role.ADMIN, "/oncall set 4242 8h Alice")
    assert "Alice is on call until" in reply
    info = await harness.services.oncall.oncall()
    assert info.person is not None and info.person.user_id == 4242
    shown = await harness.say(Role.VIEWER, "/oncall")
    assert "Alice" in shown and "Override until" in shown
    assert (await harness.say(Role.ADMIN, "/oncall set 4242 forever")).startswith("Usage:")
    assert "between 5 minutes and 30 days" in await harness.say(Role.ADMIN, "/oncall set 4242 1s")


async def test_sse_reset_choose_confirm_and_report_counts(harness: Harness) -> None:
    hub = harness.services.sse
    await hub.start()
    try:
        choose = await harness.say(Role.ADMIN, "/sse_reset")
        assert "SSE reset" in choose and "0 streams open" in choose
        menu = harness.last_posted(Role.ADMIN)
        labels = [b["text"] for row in (menu.reply_markup or {})["inline_keyboard"] for b in row]
        assert labels == ["🔁 Restart the hub", "🔌 Reset connections", "📣 Broadcast reconnect"]

        await harness.press_on(Role.ADMIN, menu, SSECallback(action=SSEAction.RESET).pack())
        assert "Confirm?" in menu.text
        confirm = SSECallback(action=SSEAction.RESET, confirm=True).pack()
        # A responder cannot run it, even with the confirm button in hand.
        calls = await harness.press_on(Role.RESPONDER, menu, confirm)
        assert any(REFUSED in str(c.params.get("text")) for c in calls)
        assert "Confirm?" in menu.text

        await harness.press_on(Role.ADMIN, menu, confirm)
        assert "Reset connections</b> done by" in menu.text
        assert "0 streams before, 0 after (0 closed)" in menu.text

        await harness.say(Role.ADMIN, "/sse_reset")
        menu = harness.last_posted(Role.ADMIN)
        await harness.press_on(Role.ADMIN, menu, SSECallback(action=SSEAction.RESTART).pack())
        await harness.press_on(Role.ADMIN, menu, SSECallback(action=SSEAction.CANCEL).pack())
        assert "cancelled" in menu.text
        await harness.press_on(
            Role.ADMIN, menu, SSECallback(action=SSEAction.BROADCAST, confirm=True).pack()
        )
        assert "Broadcast reconnect</b> done" in menu.text
    finally:
        await hub.stop()


async def test_checklist_button_and_ticks(harness: Harness) -> None:
    incident_id = await harness.incident()
    await harness.press(
        Role.VIEWER,
        IncidentCallback(action=IncidentAction.CHECKLIST, incident_id=incident_id).pack(),
    )
    sheet = harness.last_posted(Role.VIEWER)
    assert f"#{incident_id}</b> — checklists" in sheet.text
    assert "During the incident</b>: 0/6" in sheet.text
    items = [b for row in (sheet.reply_markup or {})["inline_keyboard"] for b in row]
    assert len(items) == 10 and items[0]["text"] == "☐ Run the health check"

    # Viewers may look but not tick.
    calls = await harness.press_on(Role.VIEWER, sheet, items[0]["callback_data"])
    assert any(REFUSED in str(c.params.get("text")) for c in calls)
    await harness.press_on(Role.RESPONDER, sheet, items[0]["callback_data"])
    assert "During the incident</b>: 1/6" in sheet.text
    ticked = [b["text"] for row in (sheet.reply_markup or {})["inline_keyboard"] for b in row]
    assert ticked[0] == "☑ Run the health check"
    state = await harness.services.checklists.state(incident_id)
    assert [(i.item, i.actor) for i in state.items if i.done] == [
        ("health_check", f"tg:{RESPONDER} (@user{RESPONDER})")
    ]
    detail = await harness.services.incidents.get(incident_id)
    assert detail.timeline[-1].kind == "checklist"
    # Pressing again unticks it.
    await harness.press_on(Role.RESPONDER, sheet, items[0]["callback_data"])
    assert (await harness.services.checklists.state(incident_id)).open_items().__len__() == 10
    stale = ChecklistCallback(incident_id=incident_id, checklist="during", item=99).pack()
    calls = await harness.press_on(Role.RESPONDER, sheet, stale)
    assert any("out of date" in str(c.params.get("text")) for c in calls)


async def test_postmortem_document_and_fields(harness: Harness) -> None:
    incident_id = await harness.incident()
    before = len(harness.fake.sent("sendDocument"))
    await harness.say(Role.VIEWER, f"/postmortem {incident_id}")
    documents = harness.fake.sent("sendDocument")[before:]
    assert len(documents) == 1
    assert "Still to fill: summary, impact, cause, prevention" in documents[0].params["caption"]
    assert b"#" in documents[0].params["document"]
    reply = await harness.say(Role.RESPONDER, f"/postmortem {incident_id} cause token expired")
    assert "cause recorded by" in reply
    assert await harness.services.postmortems.fields(incident_id) == {"cause": "token expired"}
    await harness.say(Role.VIEWER, f"/postmortem {incident_id}")
    document = harness.fake.sent("sendDocument")[-1]
    assert "cause" not in document.params["caption"].split("fill:")[1]
    assert b"token expired" in document.params["document"]
    assert (await harness.say(Role.RESPONDER, f"/postmortem {incident_id} mood ok")).startswith(
        "Usage:"
    )
    assert "no incident #999" in await harness.say(Role.VIEWER, "/postmortem 999")


async def test_report_sends_the_summary_and_the_chart(harness: Harness) -> None:
    await harness.incident()
    text = await harness.say(Role.VIEWER, "/report")
    assert "Weekly incident report" in text and "P0 1" in text
    chart = harness.fake.sent("sendDocument")[-1]
    assert chart.params["document"].startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/oncall", Role.VIEWER),
        ("/oncall set 42 8h", Role.ADMIN),
        ("/oncall SET 42 8h", Role.ADMIN),
        ("/postmortem 42", Role.VIEWER),
        ("/postmortem 42 cause the token expired", Role.RESPONDER),
        ("/postmortem 42 Prevention renew earlier", Role.RESPONDER),
        ("/report", Role.VIEWER),
        ("/sse_reset", Role.ADMIN),
    ],
)
def test_required_role_of_subcommands(text: str, expected: Role) -> None:
    name = command_name(text)
    assert name is not None
    assert required_role(name, text) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            IncidentCallback(action=IncidentAction.CHECKLIST, incident_id=1).pack(),
            (Role.VIEWER, "button:checklist"),
        ),
        (
            ChecklistCallback(incident_id=1, checklist="during", item=0).pack(),
            (Role.RESPONDER, "button:checklist_tick"),
        ),
        (
            SSECallback(action=SSEAction.RESET, confirm=True).pack(),
            (Role.ADMIN, "button:sse_reset"),
        ),
        ("something-else", None),
    ],
)
def test_button_roles(data: str, expected: tuple[Role, str] | None) -> None:
    assert button_role(data) == expected
