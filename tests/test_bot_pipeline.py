"""The pipeline from the chat (bot.routers.pipeline): handler tests and a playbook scenario."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import Update
from aiohttp.test_utils import TestClient, TestServer

from bot.callbacks import IncidentAction, IncidentCallback, JobCallback
from bot.dispatcher import create_dispatcher
from bot.filters import Role
from bot.runtime import make_bot
from services.main import background_contexts
from services.models import IncidentState, JobState
from services.web.app import create_app
from tests.botkit import ADMIN_USER, PD_USER, RESPONDER, TEAM, TOKEN, VIEWER, running_fake
from tests.fakes.telegram import FakeTelegram, Posted
from tests.fakes.world import World, pipeline_world
from tests.test_bot import USERS, Harness


def chat_overrides(fake: FakeTelegram) -> dict[str, Any]:
    """The world's settings, with the full fake Bot API and our team and roles."""
    return {
        "telegram_bot_token": TOKEN,
        "telegram_api_base": fake.base,
        "telegram_team_chat_id": TEAM,
        "telegram_admin_user_ids": str(ADMIN_USER),
        "telegram_responder_user_ids": str(RESPONDER),
        "telegram_pd_user_ids": str(PD_USER),
        "telegram_retry_max_seconds": 0.5,
        "bot_language": "en",
    }


@asynccontextmanager
async def chat_world(url: str, root: Path) -> AsyncIterator[tuple[World, Harness]]:
    async with running_fake() as fake, pipeline_world(url, root, **chat_overrides(fake)) as world:
        bot = make_bot(TOKEN, fake.base)
        try:
            yield world, Harness(fake, world.services, bot, create_dispatcher(world.services))
        finally:
            await bot.session.close()


@pytest.fixture
async def chat(migrated_url: str, tmp_path: Path) -> AsyncIterator[tuple[World, Harness]]:
    async with chat_world(migrated_url, tmp_path) as pair:
        yield pair


async def press(harness: Harness, role: Role, data: str) -> tuple[str, list[Posted]]:
    """Press a button under a message in the team chat; (popup, what the chat received)."""
    user_id, chat_id = USERS[role]
    before = len(harness.fake.calls)
    seen = len(harness.fake.in_chat(chat_id))
    posted = Posted(chat_id, 1, "listing", "HTML", None, None, None)
    update = Update.model_validate(
        harness.fake.callback_update(user_id, posted, data), context={"bot": harness.bot}
    )
    await harness.dp.feed_update(harness.bot, update)
    calls = harness.fake.calls[before:]
    popup = "\n".join(
        str(c.params.get("text", "")) for c in calls if c.method == "answerCallbackQuery"
    )
    return popup, harness.fake.in_chat(chat_id)[seen:]


def buttons(posted: Posted) -> list[dict[str, str]]:
    assert posted.reply_markup is not None
    return [b for row in posted.reply_markup["inline_keyboard"] for b in row]


async def test_token_status_guide_and_set_expiry(chat: tuple[World, Harness]) -> None:
    world, harness = chat
    status = await harness.say(Role.VIEWER, "/token")
    assert "Instagram token" in status and "no expiry registered" in status
    assert "IGQVJ" not in status  # the token itself never reaches the chat
    guide = await harness.say(Role.VIEWER, "/token guide")
    assert "Meta developer console" in guide and "/token set_expiry 60" in guide

    reply = await harness.say(Role.ADMIN, "/token set_expiry")
    assert "Token expiry registered by tg:1004" in reply and "60 days left" in reply
    reply = await harness.say(Role.ADMIN, "/token set_expiry 30")
    assert "30 days left" in reply
    assert (await world.services.ops.tokens.status()).days_left == 30

    wrong = await harness.say(Role.ADMIN, "/token set_expiry 400")
    assert "The expiry is 1 to 365 days, not 400" in wrong
    assert "Usage: /token [status|guide|set_expiry [DAYS]]" in wrong
    assert (await harness.say(Role.ADMIN, "/token set_expiry soon")).startswith("Usage: /token")
    assert (await harness.say(Role.VIEWER, "/token frobnicate")).startswith("Usage: /token")
    refused = await harness.say(Role.RESPONDER, "/token set_expiry 5")
    assert refused.startswith("Sorry, this needs the admin role")
    assert (await world.services.ops.tokens.status()).days_left == 30


async def test_retry_lists_failed_jobs_with_buttons_and_retries(
    chat: tuple[World, Harness],
) -> None:
    world, harness = chat
    ops = world.services.ops
    world.add_topic("sunflower")
    await ops.tokens.set_expiry(60, actor="test")
    world.cloudinary.fault = "500"
    result = await ops.pipeline.publish("sunflower")
    assert result.job is not None
    job_id = result.job.id

    listing = await harness.say(Role.RESPONDER, "/retry")
    assert f"#{job_id} publish sunflower · failed 0/3" in listing
    posted = harness.fake.in_chat(TEAM)[-1]
    [retry] = buttons(posted)
    assert retry["text"] == f"🔁 Retry #{job_id}"
    assert retry["callback_data"] == JobCallback(job_id=job_id).pack()

    # Still failing: the retry runs, fails again and says so.
    reply = await harness.say(Role.RESPONDER, f"/retry {job_id}")
    assert f"Job #{job_id} retried by tg:{RESPONDER}" in reply and "failed" in reply

    # A viewer may not press it; nothing runs.
    popup, _ = await press(harness, Role.VIEWER, retry["callback_data"])
    assert popup.startswith("Sorry, this needs the responder role")
    assert (await ops.retry.get(job_id)).attempts == 1

    world.cloudinary.fault = None
    popup, sent = await press(harness, Role.RESPONDER, retry["callback_data"])
    assert f"Job #{job_id} retried by" in popup and "succeeded" in popup
    assert any("succeeded" in p.text for p in sent)
    assert (await ops.retry.get(job_id)).state is JobState.SUCCEEDED
    assert len(world.instagram.published) == 1

    # Never doubled: a succeeded job is refused, from the button and the command.
    popup, _ = await press(harness, Role.RESPONDER, retry["callback_data"])
    assert "already succeeded" in popup
    again = await harness.say(Role.RESPONDER, f"/retry #{job_id}")
    assert "already succeeded" in again and "Usage: /retry [JOB_ID]" in again
    assert "no job #999" in await harness.say(Role.RESPONDER, "/retry 999")
    assert (await harness.say(Role.RESPONDER, "/retry seven")).startswith("Usage: /retry")
    assert "No failed pipeline jobs" in await harness.say(Role.RESPONDER, "/retry")


async def test_traces_list_and_show(chat: tuple[World, Harness]) -> None:
    world, harness = chat
    assert "No pipeline traces yet" in await harness.say(Role.VIEWER, "/traces")
    world.add_topic("sunflower")
    await world.services.ops.tokens.set_expiry(60, actor="test")
    result = await world.services.ops.pipeline.publish("sunflower")
    assert result.ok and result.trace_id
    listing = await harness.say(Role.VIEWER, "/traces")
    assert result.trace_id in listing and "publish" in listing
    shown = await harness.say(Role.VIEWER, f"/traces {result.trace_id}")
    assert f"Trace {result.trace_id}" in shown and "✅" in shown
    bad = await harness.say(Role.VIEWER, "/traces nope")
    assert bad.startswith("⚠️") and "Usage: /traces [TRACE_ID]" in bad
    missing = await harness.say(Role.VIEWER, "/traces SF-20260130-090000-ffff")
    assert "no trace <code>SF-20260130-090000-ffff</code>" in missing


async def test_backup_create_list_restore(chat: tuple[World, Harness]) -> None:
    world, harness = chat
    world.settings.env_file_path.write_text("BOT_LANGUAGE=en\nADMIN_TOKEN=s3cret\n", "utf-8")
    assert "No backups yet" in await harness.say(Role.ADMIN, "/backup")
    created = await harness.say(Role.ADMIN, "/backup create before the token change")
    assert created.startswith("💾 Backup <code>")
    [info] = await world.services.ops.backups.list()
    listing = await harness.say(Role.ADMIN, "/backup list")
    assert info.id in listing and "before the token change" in listing
    assert "s3cret" not in listing
    restored = await harness.say(Role.ADMIN, f"/backup restore {info.id}")
    assert f"Restored <code>{info.id}</code>" in restored
    unknown = await harness.say(Role.ADMIN, "/backup restore 20200101-000000-dead")
    assert unknown.startswith("⚠️") and "Usage: /backup" in unknown
    assert (await harness.say(Role.ADMIN, "/backup frob")).startswith("Usage: /backup")
    assert (await harness.say(Role.RESPONDER, "/backup")).startswith("Sorry, this needs the admin")


async def test_stats_status_and_restart(chat: tuple[World, Harness]) -> None:
    world, harness = chat
    await world.services.ops.tokens.set_expiry(60, actor="test")
    status = await harness.say(Role.VIEWER, "/stats")
    assert "Stats collector" in status
    world.services.scheduler.start()
    try:
        restarted = await harness.say(Role.RESPONDER, "/stats restart")
    finally:
        world.services.scheduler.shutdown()
    assert "Stats collector restarted" in restarted and "UTC" in restarted
    assert world.settings.stats_file.exists()
    assert "healthy" in await harness.say(Role.VIEWER, "/stats status")
    assert (await harness.say(Role.VIEWER, "/stats now")).startswith("Usage: /stats")


async def test_health_is_a_compact_card(chat: tuple[World, Harness]) -> None:
    world, harness = chat
    await world.services.ops.tokens.set_expiry(60, actor="test")
    card = await harness.say(Role.VIEWER, "/health")
    assert "<pre>Health: " in card
    for name in ("instagram_token", "cloudinary", "fal", "database", "telegram"):
        assert f" {name}: " in card
    assert "IGQVJ" not in card


async def test_details_offer_the_logs_as_a_document(chat: tuple[World, Harness]) -> None:
    world, harness = chat
    logs = world.settings.log_dir
    assert logs is not None
    logs.mkdir(parents=True)
    (logs / "pipeline.log").write_text("INFO fine\nERROR upload failed: 500\n", "utf-8")
    incident_id = await harness.incident("Cloudinary upload failing")
    details = IncidentCallback(action=IncidentAction.DETAILS, incident_id=incident_id).pack()
    _, sent = await press(harness, Role.VIEWER, details)
    timeline = [p for p in sent if "Timeline" in p.text][-1]
    [logs_button] = buttons(timeline)
    assert logs_button["text"] == "📦 Logs"

    popup, _ = await press(harness, Role.VIEWER, logs_button["callback_data"])
    assert popup.startswith("Sorry, this needs the responder role")
    assert harness.fake.sent("sendDocument") == []
    popup, _ = await press(harness, Role.RESPONDER, logs_button["callback_data"])
    assert popup == f"Logs of #{incident_id} sent"
    [document] = [p for p in harness.fake.in_chat(TEAM) if p.document is not None]
    assert document.text.startswith(f"📦 Logs of incident #{incident_id}: 0 trace(s), 1 error")
    assert document.document is not None
    assert b"ERROR upload failed" in gzip.decompress(document.document)

    gone = IncidentCallback(action=IncidentAction.LOGS, incident_id=999).pack()
    popup, _ = await press(harness, Role.RESPONDER, gone)
    assert "no incident #999" in popup


async def test_scenario_4_rate_limit_recovered_from_the_chat(
    migrated_url: str, tmp_path: Path
) -> None:
    """Playbook scenario 4 played by the team in Telegram: the real bot over long polling."""
    async with (
        running_fake() as fake,
        pipeline_world(migrated_url, tmp_path, **chat_overrides(fake)) as world,
    ):
        services, ops = world.services, world.services.ops
        app = create_app(world.settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        async with TestClient(TestServer(app, host="127.0.0.1")):
            world.add_topic("sunflower")
            await ops.tokens.set_expiry(60, actor="test")
            # The fault: Instagram answers 429 with a one-hour Retry-After.
            world.instagram.fault = "429"
            world.instagram.retry_after = 3600
            result = await ops.pipeline.publish("sunflower")
            assert not result.ok and result.job is not None
            job_id = result.job.id

            # The incident reaches the chat as a P1 alert.
            [incident] = [
                v
                for v in await services.incidents.list(states=[IncidentState.TRIGGERED])
                if v.dedup_key == "instagram:rate-limit"
            ]
            incident_id = incident.id
            card = await fake.wait_for(
                lambda: [
                    p
                    for p in fake.in_chat(TEAM)
                    if p.reply_markup and f"#{incident_id} " in p.text
                ]
            )
            alert = card[0]
            assert alert.text.startswith("🟠 <b>P1</b>")

            # Diagnosis from the chat: the failed job, with its Retry button.
            await fake.send_text(RESPONDER, TEAM, "/retry")
            listing = await fake.wait_for(
                lambda: [p for p in fake.in_chat(TEAM) if f"#{job_id} publish" in p.text]
            )
            data = JobCallback(job_id=job_id).pack()
            assert [b["callback_data"] for b in buttons(listing[0])] == [data]

            # Recovery: Instagram accepts again; the responder presses Retry.
            world.instagram.fault = None
            await fake.press(RESPONDER, listing[0], data)
            await fake.wait_for(lambda: "resolved by" in alert.text)
            assert (await ops.retry.get(job_id)).state is JobState.SUCCEEDED
            view = (await services.incidents.get(incident_id)).incident
            assert view.state is IncidentState.RESOLVED
            assert len(world.instagram.published) == 1
            await fake.wait_for(
                lambda: [p for p in fake.in_chat(TEAM) if f"Job #{job_id} retried" in p.text]
            )

            # Verification from the chat: /health answers with the compact card.
            await fake.send_text(VIEWER, TEAM, "/health")
            health = await fake.wait_for(
                lambda: [p for p in fake.in_chat(TEAM) if "<pre>Health:" in p.text]
            )
            assert "instagram_token: " in health[0].text

            # The weekly token status is posted to the team chat through the outbox.
            await ops.tokens.weekly_post()
            weekly = await fake.wait_for(
                lambda: [
                    p
                    for p in fake.in_chat(TEAM)
                    if "Weekly Instagram token" in p.text and "60 days left" in p.text
                ]
            )
            assert "IGQVJ" not in weekly[0].text
