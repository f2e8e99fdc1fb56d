"""kill -9 between an escalation step's due time and its firing, 100 times: 0 missed, 0 doubled.

Each round posts an alert whose `page` step is due one second later, freezes the process
(SIGSTOP) just before that moment or just after it, lets the due time pass while it is frozen,
kills it (SIGKILL) and starts it again. The restarted process must fire the overdue step once:
exactly one firing row in the database and one escalation reply under the card in the chat.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.botkit import ADMIN_USER, RESPONDER, TEAM, running_fake
from tests.conftest import intake_headers
from tests.fakes.telegram import FakeTelegram
from tests.faults.conftest import base_settings, query
from tests.faults.process import Served
from tests.waiting import until

pytestmark = pytest.mark.slow

# `make test` kills 10 times (3 with the bot), `make soak` 100 (10 with the bot): with the
# bot the chat is checked too, but each start imports aiogram (most of its start-up time,
# docs/reliability.md), so that variant kills fewer times.
SIZES = [
    (False, 10),
    (True, 3),
    pytest.param(False, 100, marks=pytest.mark.soak),
    pytest.param(True, 10, marks=pytest.mark.soak),
]
AFTER = 1.0  # seconds from the alert to its `page` step
POLICY = f"""
[[ladder.default]]
name = "team"
after = "0s"
target = "team"
message = "posted"

[[ladder.default]]
name = "page"
after = "{int(AFTER)}s"
target = "team"
message = "PAGE-STEP"
"""


def bot_env(fake: FakeTelegram, policy: Path) -> dict[str, Any]:
    return {
        "telegram_bot_token": fake.token,
        "telegram_api_base": fake.base,
        "telegram_team_chat_id": TEAM,
        "telegram_admin_user_ids": ADMIN_USER,
        "telegram_responder_user_ids": RESPONDER,
        "telegram_retry_max_seconds": 0.5,
        "bot_language": "en",
        "escalation_policy_file": policy,
    }


def chat_counts(
    fake: FakeTelegram, incident_ids: list[int]
) -> tuple[dict[int, int], dict[int, int]]:
    """Per incident: cards posted, and `page` escalation replies under its card."""
    cards: dict[int, list[int]] = {i: [] for i in incident_ids}
    for posted in fake.in_chat(TEAM):
        for incident_id in incident_ids:
            if posted.reply_markup is not None and posted.text.find(f"<b>#{incident_id} ") >= 0:
                cards[incident_id].append(posted.message_id)
    card_of = {m: i for i, ms in cards.items() for m in ms}
    pages = dict.fromkeys(incident_ids, 0)
    for posted in fake.in_chat(TEAM):
        if "escalated (page" in posted.text and posted.reply_to in card_of:
            pages[card_of[posted.reply_to]] += 1
    return {i: len(ms) for i, ms in cards.items()}, pages


async def post_alert(http: aiohttp.ClientSession, base: str, key: str) -> int:
    body = {"severity": "P1", "title": f"kill round {key}", "dedup_key": key}
    async with http.post(f"{base}/api/alerts", json=body, headers=intake_headers()) as response:
        assert response.status in {200, 201, 202}, await response.text()
        created: list[int] = (await response.json())["created"]
    return created[0]


@pytest.mark.parametrize(("with_bot", "kills"), SIZES)
async def test_kill_9_between_due_and_firing_never_misses_or_doubles(
    migrated_url: str, tmp_path: Path, served_factory: list[Served], with_bot: bool, kills: int
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    rng = random.Random(8)
    async with running_fake() as fake, aiohttp.ClientSession() as http:
        settings = {**base_settings(migrated_url, tmp_path), **bot_env(fake, policy)}
        if not with_bot:
            settings["telegram_bot_token"] = None
        served = Served(settings, tmp_path / "serve.log", tmp_path)
        served_factory.append(served)
        await served.start()
        incidents: list[int] = []
        fired_before_kill = 0
        for round_ in range(kills):
            began = time.monotonic()  # the ladder starts after this, so it is due after +AFTER
            incident_id = await post_alert(http, served.base, f"kill-{round_}")
            incidents.append(incident_id)
            # Three rounds in four freeze just before the due time; one in four just after
            # it, while the step may be firing or its message on its way.
            offset = -rng.uniform(0.005, 0.03) if round_ % 4 else rng.uniform(0.0, 0.05)
            await asyncio.sleep(max(0.0, began + AFTER + offset - time.monotonic()))
            served.pause()
            await asyncio.sleep(max(0.0, began + AFTER + 0.1 - time.monotonic()))
            await served.kill9()
            rows = await query(
                migrated_url,
                "SELECT count(*) FROM escalation_firings WHERE incident_id = :i "
                "AND step_name = 'page'",
                i=incident_id,
            )
            fired_before_kill += int(rows[0][0])
            await served.start()

        # Every page step fires (and reaches the chat) once the last process has caught up.
        async def caught_up() -> bool:
            _, pages = chat_counts(fake, incidents)
            fired = await query(
                migrated_url, "SELECT count(*) FROM escalation_firings WHERE step_name = 'page'"
            )
            return fired[0][0] >= len(incidents) and (
                not with_bot or all(n >= 1 for n in pages.values())
            )

        await until(caught_up, 60, "every page step fired and in the chat", every=0.2)
        if with_bot:
            # Nothing is left to send: a message that could go out twice is in the chat now.
            async def drained() -> bool:
                pending = await query(
                    migrated_url,
                    "SELECT count(*) FROM outbox_messages WHERE status = 'pending'",
                )
                return bool(pending[0][0] == 0)

            await until(drained, 60, "the outbox to drain", every=0.2)
        await served.stop()

    firings = dict(
        await query(
            migrated_url,
            "SELECT incident_id, count(*) FROM escalation_firings WHERE step_name = 'page' "
            "GROUP BY incident_id",
        )
    )
    timeline = dict(
        await query(
            migrated_url,
            "SELECT incident_id, count(*) FROM timeline_events WHERE kind = 'escalated' "
            "GROUP BY incident_id",
        )
    )
    cards, pages = chat_counts(fake, incidents)
    if not with_bot:  # no chat: the database alone says what fired
        cards, pages = dict.fromkeys(incidents, 1), dict.fromkeys(incidents, 1)
    # The `page` step: one escalated event per incident (the 0 s `team` step is the alert
    # itself, claimed with it, with no timeline entry of its own).
    missed = [
        i for i in incidents if firings.get(i, 0) == 0 or pages[i] == 0 or timeline.get(i, 0) < 1
    ]
    doubled = [
        i for i in incidents if firings.get(i, 0) > 1 or pages[i] > 1 or timeline.get(i, 0) > 1
    ]
    double_cards = [i for i in incidents if cards[i] != 1]
    startups = sorted(served.startups)
    print(
        f"escalation kills (bot {'on' if with_bot else 'off'}): {kills} kill -9 "
        "between due and firing "
        f"({fired_before_kill} had fired before the kill), missed {len(missed)}, "
        f"doubled {len(doubled)}, cards not exactly once {len(double_cards)}; "
        f"start-up median {startups[len(startups) // 2]:.2f}s max {startups[-1]:.2f}s"
    )
    assert missed == []
    assert doubled == []
    assert double_cards == []
    assert fired_before_kill < kills  # most rounds really killed it before the step fired
