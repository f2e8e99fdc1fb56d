"""End to end: the real bot and outbox sender against the fake Bot API, acting as users."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.callbacks import (
    ChecklistCallback,
    IncidentAction,
    IncidentCallback,
    SSEAction,
    SSECallback,
)
from services.container import Services
from services.incident_types import ChangeKind, IncidentChange
from services.main import background_contexts, open_services, post_weekly_report
from services.models import IncidentState
from services.web.app import create_app
from tests.botkit import (
    ADMIN_USER,
    OUTSIDER,
    PD_USER,
    RESPONDER,
    TEAM,
    TOKEN,
    VIEWER,
    bot_settings,
    running_fake,
)
from tests.conftest import INTAKE, Client, free_port, intake_headers
from tests.fakes.smtp import FakeSmtp
from tests.fakes.telegram import FakeTelegram, Posted


@asynccontextmanager
async def live(
    url: str, fake: FakeTelegram, **overrides: Any
) -> AsyncIterator[tuple[Services, Client]]:
    settings = bot_settings(url, fake, **overrides)
    async with open_services(settings) as services:
        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield services, client


async def post_alert(client: Client, title: str, severity: str = "P1", **extra: Any) -> int:
    body = {"severity": severity, "title": title, "dedup_key": title, "source": "test", **extra}
    resp = await client.post("/api/alerts", json=body, headers=intake_headers())
    assert resp.status == 202, await resp.text()
    data = await resp.json()
    return int(data["incidents"][0]["id"])


async def drained(services: Services) -> None:
    """Wait until the outbox has marked everything it sent (it marks after Telegram answers)."""
    for _ in range(200):
        if (await services.notify.backlog()).pending == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the outbox never drained")


def cards(fake: FakeTelegram) -> list[Posted]:
    # Replies with buttons (the Details view's Logs button) are not alert cards.
    return [p for p in fake.in_chat(TEAM) if p.reply_markup and p.reply_to is None]


def card_for(fake: FakeTelegram, incident_id: int) -> Posted | None:
    for posted in cards(fake):
        if f"#{incident_id} " in posted.text:
            return posted
    return None


def button(action: IncidentAction, incident_id: int, minutes: int = 0) -> str:
    return IncidentCallback(action=action, incident_id=incident_id, minutes=minutes).pack()


async def test_commands_over_long_polling(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake):
        await fake.wait_for(lambda: fake.commands)
        assert [c["command"] for c in fake.commands][:3] == ["start", "help", "health"]
        await fake.send_text(VIEWER, TEAM, "/health")
        reply = await fake.wait_for(lambda: [p for p in fake.in_chat(TEAM) if "Health" in p.text])
        assert "database" in reply[0].text and "telegram" in reply[0].text
        assert fake.webhook is None  # deleteWebhook, then polling


async def test_alert_is_pushed_and_buttons_work(migrated_url: str) -> None:
    async with (
        running_fake() as fake,
        live(migrated_url, fake, telegram_team_thread_id=77) as (
            services,
            client,
        ),
    ):
        incident_id = await post_alert(
            client, "<b>x</b> & <script>", "P0", labels={"service": "instagram"}
        )
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        assert card.thread_id == 77
        assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in card.text
        assert "🔴" in card.text and "Count: 1" in card.text and "service" in card.text
        buttons = [b["text"] for row in card.reply_markup["inline_keyboard"] for b in row]
        assert buttons == [
            "👀 Ack",
            "✅ Resolve",
            "🔎 Details",
            "☑ Checklist",
            "💤 30m",
            "💤 1h",
            "💤 4h",
        ]

        # A repeat edits the same message; it never posts a new one.
        await post_alert(client, "<b>x</b> & <script>", "P0")
        await fake.wait_for(lambda: "Count: 2" in card.text)
        assert len(cards(fake)) == 1

        await fake.press(RESPONDER, card, button(IncidentAction.ACK, incident_id))
        await fake.wait_for(lambda: f"acknowledged by tg:{RESPONDER}" in card.text)
        view = (await services.incidents.get(incident_id)).incident
        assert view.state is IncidentState.ACKNOWLEDGED
        assert view.acknowledged_by == f"tg:{RESPONDER} (@user{RESPONDER})"
        assert any("acknowledged" in a.get("text", "") for a in fake.callback_answers)
        assert "👀 Ack" not in str(card.reply_markup)

        await fake.press(VIEWER, card, button(IncidentAction.DETAILS, incident_id))
        details = await fake.wait_for(
            lambda: [p for p in fake.in_chat(TEAM) if "Timeline" in p.text]
        )
        assert details[0].reply_to == card.message_id

        await fake.press(RESPONDER, card, button(IncidentAction.RESOLVE, incident_id))
        await fake.wait_for(lambda: "resolved by" in card.text)
        assert len(cards(fake)) == 1


async def test_outsiders_and_viewers_are_refused(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (services, client):
        incident_id = await post_alert(client, "Cloudinary upload failing")
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        await fake.send_text(OUTSIDER, OUTSIDER, f"/ack {incident_id}")
        refusal = await fake.wait_for(lambda: fake.in_chat(OUTSIDER))
        assert refusal[0].text.startswith("Sorry, this needs the responder role")
        await fake.press(VIEWER, card, button(IncidentAction.ACK, incident_id))
        answer = await fake.wait_for(
            lambda: [a for a in fake.callback_answers if a.get("show_alert")]
        )
        assert "Sorry" in answer[0]["text"]
        refusals = await services.audit.refusals()
        assert {(r.user_id, r.command) for r in refusals} == {
            (OUTSIDER, "ack"),
            (VIEWER, "button:ack"),
        }
        view = (await services.incidents.get(incident_id)).incident
        assert view.state is IncidentState.TRIGGERED


async def test_429_retry_after_is_honoured(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (services, client):
        fake.fail("sendMessage", status=429, retry_after=2)
        incident_id = await post_alert(client, "FLUX.2 generation failing")
        await fake.wait_for(lambda: card_for(fake, incident_id))
        attempts = [c for c in fake.calls if c.method == "sendMessage"]
        assert [c.status for c in attempts] == [429, 200]
        assert attempts[1].at - attempts[0].at >= 2.0
        assert services.notify.stats.retry_after == 1
        metrics = await (await client.get("/metrics")).text()
        assert "telegram_retry_after_total 1.0" in metrics


async def test_cant_parse_entities_is_resent_as_plain_text(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (_, client):
        fake.fail("sendMessage", status=400, description="Bad Request: can't parse entities: oops")
        incident_id = await post_alert(client, "Stats collection failing")
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        assert card.parse_mode is None
        assert "<b>" not in card.text and "Stats collection failing" in card.text


async def test_long_alert_is_trimmed_with_the_full_text_attached(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (_, client):
        description = "trace line <with> & markup\n" * 400
        incident_id = await post_alert(client, "Huge trace", description=description)
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        document = await fake.wait_for(
            lambda: [p for p in fake.in_chat(TEAM) if p.document is not None]
        )
        assert document[0].reply_to == card.message_id
        assert document[0].document is not None
        assert document[0].document.decode().count("trace line <with> & markup") == 400


async def test_escalation_replies_in_thread_and_pages_directly(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (services, client):
        incident_id = await post_alert(client, "Instagram publishing down", "P0")
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        view = (await services.incidents.get(incident_id)).incident
        await services.incidents.write(
            lambda w: w.record(
                [
                    IncidentChange(
                        ChangeKind.ESCALATED,
                        view,
                        "escalation",
                        w.now,
                        {
                            "step": "pd",
                            "target": "pd",
                            "user_ids": [PD_USER],
                            "message": "1 h without acknowledgement: paging the PD",
                            "late": False,
                        },
                    )
                ]
            )
        )
        reply = await fake.wait_for(
            lambda: [p for p in fake.in_chat(TEAM) if p.reply_to == card.message_id]
        )
        assert "escalated (pd → pd)" in reply[0].text
        page = await fake.wait_for(lambda: fake.in_chat(PD_USER))
        assert f"#{incident_id}" in page[0].text and "Instagram publishing down" in page[0].text
        await fake.wait_for(lambda: "Last: 📣 escalated" in card.text)
        assert len(cards(fake)) == 1


async def test_downtime_falls_back_then_delivers_everything_once_in_order(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    smtp = FakeSmtp(free_port())
    smtp.start()
    try:
        async with (
            running_fake() as fake,
            live(
                migrated_url,
                fake,
                telegram_fallback_after="1s",
                smtp_url=smtp.url,
                alert_email_to="oncall@example.test",
            ) as (services, client),
        ):
            fake.down = True
            first = await post_alert(client, "stats late", "P2")
            second = await post_alert(client, "stats later", "P2")
            urgent = await post_alert(client, "publishing down", "P0")
            mails = await fake.wait_for(
                lambda: [m for m in smtp.messages if str(m["Subject"]).startswith("[P")],
                timeout=20,
            )
            assert mails[0]["Subject"] == f"[P0] #{urgent} publishing down"
            # The outage itself is announced once the sender has failed for 1 s.
            await fake.wait_for(lambda: services.notify.fallback.outage_announced, timeout=20)
            assert fake.in_chat(TEAM) == []
            fake.down = False
            await fake.wait_for(lambda: len(cards(fake)) == 3, timeout=20)
            assert [p.text.split("\n")[0] for p in cards(fake)] == [
                f"🔴 <b>P0</b> · <b>#{urgent} publishing down</b>",
                f"🟡 <b>P2</b> · <b>#{first} stats late</b>",
                f"🟡 <b>P2</b> · <b>#{second} stats later</b>",
            ]
            assert len(fake.sent("sendMessage")) == 3
            subjects = [str(m["Subject"]) for m in smtp.messages]
            # P2 alerts never go to the fallback; Telegram's outage itself is said there,
            # once when it began and once when it ended.
            assert [t for t in subjects if t.startswith("[P")] == [
                f"[P0] #{urgent} publishing down"
            ]
            await fake.wait_for(lambda: len(smtp.messages) == 3, timeout=20)
            assert sorted(str(m["Subject"]) for m in smtp.messages) == sorted(
                [
                    f"[P0] #{urgent} publishing down",
                    "[SunFlow Ops] Telegram failing: alerts do not reach the chat",
                    "[SunFlow Ops] Telegram delivers again",
                ]
            )
            await drained(services)
            report = await (await client.get("/api/health")).json()
            assert report["components"]["telegram"]["status"] == "healthy"
            assert TOKEN not in caplog.text
            assert "Telegram is unreachable (sendMessage: HTTP 502)" in caplog.text
            assert "Telegram is reachable again" in caplog.text
    finally:
        smtp.stop()


async def test_restart_with_queued_messages_delivers_each_once(migrated_url: str) -> None:
    async with running_fake() as fake:
        fake.down = True
        async with live(migrated_url, fake) as (services, client):
            ids = [await post_alert(client, f"queued {n}", "P1") for n in range(4)]
            await fake.wait_for(lambda: any(c.status == 502 for c in fake.calls))
            assert (await services.notify.backlog()).pending == 4
        fake.down = False
        async with live(migrated_url, fake) as (services, _):
            await fake.wait_for(lambda: len(cards(fake)) == 4, timeout=20)
            await drained(services)
        titles = [p.text.split("\n")[0] for p in cards(fake)]
        assert titles == [f"🟠 <b>P1</b> · <b>#{i} queued {n}</b>" for n, i in enumerate(ids)]
        assert len(fake.sent("sendMessage")) == 4


async def test_webhook_mode_checks_the_secret(migrated_url: str) -> None:
    async with (
        running_fake() as fake,
        live(
            migrated_url,
            fake,
            telegram_webhook_url="https://ops.example.test/telegram/hook",
            telegram_webhook_secret="s3cret-Token_1",
        ) as (_, client),
    ):
        await fake.wait_for(lambda: fake.webhook)
        assert fake.webhook is not None
        assert fake.webhook["secret_token"] == "s3cret-Token_1"
        assert fake.webhook["url"] == "https://ops.example.test/telegram/hook"
        update = fake.message_update(VIEWER, TEAM, "/status")
        wrong = await client.post(
            "/telegram/hook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "nope"}
        )
        assert wrong.status == 403
        missing = await client.post("/telegram/hook", json=update)
        assert missing.status == 403
        assert not [c for c in fake.calls if c.method == "getUpdates"]
        right = await client.post(
            "/telegram/hook",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1"},
        )
        assert right.status == 200
        await fake.wait_for(lambda: [p for p in fake.in_chat(TEAM) if "Status" in p.text])
        # Telegram retrying the same update (or a proxy handing it to us twice): handled once.
        again = await client.post(
            "/telegram/hook",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1"},
        )
        assert (await again.json()) == {"ok": True, "duplicate": True}
        no_id = await client.post(
            "/telegram/hook",
            json={"message": update["message"]},
            headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1"},
        )
        assert no_id.status == 400
        assert (await no_id.json())["error"] == "bad_request"
        fresh = fake.message_update(VIEWER, TEAM, "/status")
        ok = await client.post(
            "/telegram/hook",
            json=fresh,
            headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1"},
        )
        assert ok.status == 200
        # The repeated update was answered `duplicate` above and never handled: one more only.
        await fake.wait_for(
            lambda: len([p for p in fake.in_chat(TEAM) if "Status" in p.text]) == 2
        )
        document = await (await client.get("/api/openapi.json")).json()
        assert "post" in document["paths"]["/telegram/hook"]


async def test_killed_with_queued_messages_then_restarted(
    migrated_url: str, tmp_path: Path
) -> None:
    """`kill -9` while messages wait for Telegram; after a restart each arrives exactly once."""
    async with running_fake() as fake:
        fake.down = True
        port = free_port()
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("TELEGRAM_", "HTTP_", "DATABASE_", "SMTP_"))
            },
            "DATABASE_URL": migrated_url,
            "HTTP_PORT": str(port),
            "INTAKE_TOKEN": INTAKE,
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_BASE": fake.base,
            "TELEGRAM_TEAM_CHAT_ID": str(TEAM),
            "TELEGRAM_RETRY_MAX_SECONDS": "0.5",
        }
        base = f"http://127.0.0.1:{port}"

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        async def health(session: aiohttp.ClientSession) -> dict[str, Any] | None:
            try:
                async with session.get(f"{base}/api/health") as resp:
                    data: dict[str, Any] = await resp.json()
                    return data
            except aiohttp.ClientError:
                return None

        proc = start()
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(300):
                    if await health(session):
                        break
                    await asyncio.sleep(0.1)
                titles = [f"killed {n}" for n in range(3)]
                for title in titles:
                    body = {"severity": "P1", "title": title, "dedup_key": title}
                    async with session.post(
                        f"{base}/api/alerts", json=body, headers=intake_headers()
                    ) as resp:
                        assert resp.status == 202
                await fake.wait_for(lambda: [c for c in fake.calls if c.method == "sendMessage"])
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                fake.down = False
                proc = start()
                await fake.wait_for(lambda: len(cards(fake)) == 3, timeout=30)
                for _ in range(300):
                    report = await health(session)
                    telegram = (report or {}).get("components", {}).get("telegram", {})
                    if telegram.get("outbox_pending") == 0:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the outbox never drained after the restart")
            assert [p.text.split("\n")[0].rsplit(" ", 2)[-2:] for p in cards(fake)] == [
                ["killed", f"{n}</b>"] for n in range(3)
            ]
            assert len(fake.sent("sendMessage")) == 3
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)


async def test_a_deleted_alert_message_is_posted_afresh(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (services, client):
        incident_id = await post_alert(client, "token expiring")
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        del fake.messages[(TEAM, card.message_id)]  # someone deleted it in the chat
        await services.incidents.acknowledge(incident_id, actor="cli:kim")
        again = await fake.wait_for(
            lambda: [p for p in cards(fake) if "acknowledged by cli:kim" in p.text]
        )
        assert again[0].message_id != card.message_id
        await drained(services)


async def test_a_change_while_the_alert_is_in_flight_is_not_lost(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (services, client):
        gate = fake.hold("sendMessage")
        incident_id = await post_alert(client, "in flight")
        await fake.wait_for(lambda: fake.held)  # the alert is on its way, not yet answered
        await services.incidents.acknowledge(incident_id, actor="cli:lee")
        gate.set()
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        await fake.wait_for(lambda: "acknowledged by cli:lee" in card.text)
        await drained(services)
        assert len(cards(fake)) == 1


# -- escalation, SSE admin, checklists, post-mortems and reports -------------

# The playbook's ladder in seconds, with a last step far enough away to be shown as "next".
SECONDS_LADDER = """
[[ladder.default]]
name = "team"
after = "0s"
target = "team"

[[ladder.default]]
name = "retries_done"
after = "1s"
target = "team"
message = "automatic retries are done"

[[ladder.default]]
name = "pd"
after = "2s"
target = "pd"
message = "paging the PD"

[[ladder.default]]
name = "manual"
after = "1h"
target = "team"
message = "manual intervention required"
"""


def replies_to(fake: FakeTelegram, card: Posted) -> list[Posted]:
    return [p for p in fake.in_chat(TEAM) if p.reply_to == card.message_id]


async def test_the_ladder_runs_in_the_chat_and_ack_stops_it(
    migrated_url: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(SECONDS_LADDER)
    async with (
        running_fake() as fake,
        live(migrated_url, fake, escalation_policy_file=policy) as (services, client),
    ):
        incident_id = await post_alert(client, "Generation API 5xx", "P1")
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        # Each step is a reply in the alert's thread; the PD step pages the PD directly.
        await fake.wait_for(
            lambda: any("escalated (pd → pd)" in p.text for p in replies_to(fake, card))
        )
        texts = [p.text for p in replies_to(fake, card)]
        assert any("escalated (retries_done → team)" in t for t in texts)
        page = await fake.wait_for(lambda: fake.in_chat(PD_USER))
        assert f"#{incident_id}" in page[0].text and "paging the PD" in page[0].text
        # The card shows the step after the PD's, and when.
        await fake.wait_for(lambda: "⏭ Next: manual → team at" in card.text)
        assert "in 59m" in card.text or "in 1h" in card.text

        await fake.press(RESPONDER, card, button(IncidentAction.ACK, incident_id))
        await fake.wait_for(lambda: f"acknowledged by tg:{RESPONDER}" in card.text)
        assert "Next:" not in card.text
        assert await services.escalation.next_step_for(incident_id) is None
        steps = [
            e.details.get("step")
            for e in (await services.incidents.get(incident_id)).timeline
            if e.kind == "escalated"
        ]
        assert steps == ["retries_done", "pd"]  # the 0 s step is the alert itself


async def test_timed_ack_from_the_chat_shows_until_when(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (services, client):
        incident_id = await post_alert(client, "Cloudinary slow", "P2")
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        await fake.send_text(RESPONDER, TEAM, f"/ack {incident_id} 30m")
        await fake.wait_for(lambda: "(until " in card.text)
        view = (await services.incidents.get(incident_id)).incident
        assert view.ack_expires_at is not None
        assert f"(until {view.ack_expires_at:%Y-%m-%d %H:%M} UTC)" in card.text


async def test_sse_reset_from_the_chat_reports_counts(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (services, client):
        services.sse.publish("job-bot-1", "progress", {"percent": 10})
        stream = await client.get("/api/generation/jobs/job-bot-1/events")
        assert stream.status == 200
        for _ in range(200):
            if len(services.sse.connections) == 1:
                break
            await asyncio.sleep(0.02)
        assert len(services.sse.connections) == 1

        await fake.send_text(ADMIN_USER, TEAM, "/sse_reset")
        menu = (
            await fake.wait_for(lambda: [p for p in fake.in_chat(TEAM) if "SSE reset" in p.text])
        )[0]
        assert "1 streams open" in menu.text
        await fake.press(ADMIN_USER, menu, SSECallback(action=SSEAction.RESET).pack())
        await fake.wait_for(lambda: "Confirm?" in menu.text)
        await fake.press(
            ADMIN_USER, menu, SSECallback(action=SSEAction.RESET, confirm=True).pack()
        )
        await fake.wait_for(lambda: "done by" in menu.text)
        assert "1 streams before, 0 after (1 closed)" in menu.text
        stream.close()


async def test_checklist_ticks_and_postmortem_from_the_chat(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (services, client):
        incident_id = await post_alert(client, "Instagram token expired", "P1")
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        await fake.press(VIEWER, card, button(IncidentAction.CHECKLIST, incident_id))
        sheet = (
            await fake.wait_for(lambda: [p for p in replies_to(fake, card) if "☐" in str(p)])
        )[0]
        for index in (0, 1):
            data = ChecklistCallback(incident_id=incident_id, checklist="during", item=index)
            await fake.press(RESPONDER, sheet, data.pack())
            counted = f"During the incident</b>: {index + 1}/6"
            await fake.wait_for(lambda counted=counted: counted in sheet.text)  # type: ignore[misc]
        timeline = (await services.incidents.get(incident_id)).timeline
        ticks = [e.details for e in timeline if e.kind == "checklist"]
        assert [(t["item"], t["done"]) for t in ticks] == [
            ("health_check", True),
            ("error_logs", True),
        ]

        await fake.send_text(RESPONDER, TEAM, f"/resolve {incident_id}")
        await fake.wait_for(lambda: "8 checklist items are still unticked" in card.text)

        await fake.send_text(RESPONDER, TEAM, f"/postmortem {incident_id} cause token expired")
        await fake.wait_for(lambda: [p for p in fake.in_chat(TEAM) if "cause recorded" in p.text])
        await fake.send_text(VIEWER, TEAM, f"/postmortem {incident_id}")
        document = (await fake.wait_for(lambda: [p for p in fake.in_chat(TEAM) if p.document]))[0]
        assert "Still to fill: summary, impact, prevention" in document.text
        assert b"token expired" in (document.document or b"")
        assert b"Run the health check" in (document.document or b"")


async def test_weekly_report_job_posts_text_and_chart(migrated_url: str) -> None:
    async with running_fake() as fake, live(migrated_url, fake) as (services, client):
        job = services.scheduler.scheduler.get_job("weekly-report")
        assert job is not None and "mon" in str(job.trigger)
        await post_alert(client, "Fal.ai timeouts", "P2")
        assert await post_weekly_report(services)
        chart = await fake.wait_for(lambda: [p for p in fake.in_chat(TEAM) if p.document])
        assert (chart[0].document or b"").startswith(b"\x89PNG")
        text = [p for p in fake.in_chat(TEAM) if "Weekly incident report" in p.text]
        assert text and "P2 1" in text[0].text
        assert text[0].message_id < chart[0].message_id
        # The same week queued twice is sent once.
        assert await post_weekly_report(services)
        await drained(services)
        assert len([p for p in fake.in_chat(TEAM) if p.document]) == 1


async def test_polling_starts_again_after_telegram_failed_at_start(migrated_url: str) -> None:
    """Playbook scenario 6: Telegram down while the bot starts; the bot comes back by itself."""
    async with running_fake() as fake:
        # getMe (which polling starts with) refused twice, as with a token being replaced.
        fake.fail("getMe", status=401, description="Unauthorized", times=2)
        async with live(migrated_url, fake):
            await fake.wait_for(
                lambda: len([c for c in fake.calls if c.method == "getMe"]) >= 3, timeout=30
            )
            await fake.send_text(VIEWER, TEAM, "/health")
            reply = await fake.wait_for(
                lambda: [p for p in fake.in_chat(TEAM) if "Health" in p.text], timeout=30
            )
            assert reply
