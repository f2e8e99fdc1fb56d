"""The Bot API failing for two minutes (5xx, timeouts, 429): then every card once, in order."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.botkit import TEAM, VIEWER, running_fake
from tests.conftest import intake_headers
from tests.fakes.telegram import Call, FakeTelegram
from tests.faults.conftest import base_settings, query
from tests.faults.process import Served
from tests.faults.test_kill_escalation import bot_env
from tests.waiting import until

pytestmark = pytest.mark.slow

# Two minutes of failures in `make soak`; 20 s in `make test`.
OUTAGES = [20.0, pytest.param(120.0, marks=pytest.mark.soak)]
# Cards in one group go out at most 20 a minute (P2/P3 fewer: bot/limits.py).
ALERTS = 12
# What the Bot API answers during the outage, in turn: server errors, a request that hangs
# past the sender's 15 s client timeout, and rate limiting with retry_after.
PLAN = ["500", "502", "hang", "429", "503", "429"]
HANG_SECONDS = 20.0
POLICY = """
[[ladder.default]]
name = "team"
after = "0s"
target = "team"
message = "posted"
"""


class Outage:
    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds
        self.kinds = itertools.cycle(PLAN)
        self.seen: Counter[str] = Counter()

    async def __call__(self, method: str, call: Call) -> web.Response | None:
        if time.monotonic() >= self.until:
            return None
        kind = next(self.kinds)
        self.seen[kind] += 1
        if kind == "hang":
            await asyncio.sleep(HANG_SECONDS)  # the client has given up by now
            return web.json_response(
                {"ok": False, "error_code": 504, "description": "Gateway Timeout"}, status=504
            )
        if kind == "429":
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 3",
                    "parameters": {"retry_after": 3},
                },
                status=429,
            )
        return web.Response(status=int(kind), text=f"<html>{kind}</html>")


def cards_in_order(fake: FakeTelegram, incident_ids: list[int]) -> list[int]:
    """Incident ids of the cards in the team chat, in the order Telegram took them."""
    found = []
    for posted in sorted(fake.in_chat(TEAM), key=lambda p: p.message_id):
        for incident_id in incident_ids:
            if posted.reply_markup is not None and f"<b>#{incident_id} " in posted.text:
                found.append(incident_id)
    return found


@pytest.mark.parametrize("outage_seconds", OUTAGES)
async def test_bot_api_failures_then_each_card_once_in_order(
    migrated_url: str, tmp_path: Path, served_factory: list[Served], outage_seconds: float
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    async with running_fake() as fake, aiohttp.ClientSession() as http:
        settings = {**base_settings(migrated_url, tmp_path), **bot_env(fake, policy)}
        served = Served(settings, tmp_path / "serve.log", tmp_path)
        served_factory.append(served)
        await served.start()
        outage = Outage(outage_seconds)
        fake.outage = outage
        incidents: list[int] = []
        spacing = outage_seconds * 0.8 / ALERTS
        for n in range(ALERTS):
            body = {"severity": "P2", "title": f"outage alert {n}", "dedup_key": f"out-{n}"}
            async with http.post(
                f"{served.base}/api/alerts", json=body, headers=intake_headers()
            ) as response:
                assert response.status in {200, 201, 202}
                incidents.append((await response.json())["created"][0])
            await asyncio.sleep(spacing)
        await asyncio.sleep(max(0.0, outage.until - time.monotonic()))
        delivered_during = len(cards_in_order(fake, incidents))

        recovered_at = time.monotonic()
        await until(
            lambda: len(set(cards_in_order(fake, incidents))) == ALERTS,
            150,
            "every card after the outage",
            every=0.5,
        )
        caught_up = time.monotonic() - recovered_at

        # Nothing is left to send: a card that could go out twice is in the chat now.
        async def drained() -> bool:
            pending = await query(
                migrated_url, "SELECT count(*) FROM outbox_messages WHERE status = 'pending'"
            )
            return bool(pending[0][0] == 0)

        await until(drained, 60, "the outbox to drain", every=0.2)
        # The bot polls again: a command is answered.
        await fake.send_text(VIEWER, TEAM, "/status")
        await fake.wait_for(lambda: [p for p in fake.in_chat(TEAM) if "Open incidents" in p.text])
        await served.stop()

    order = cards_in_order(fake, incidents)
    counts = Counter(order)
    lost = [i for i in incidents if counts[i] == 0]
    doubled = [i for i, n in counts.items() if n > 1]
    out_of_order = sum(1 for a, b in itertools.pairwise(order) if b < a)
    print(
        f"bot api outage: {outage_seconds:.0f}s of failures {dict(outage.seen)}; "
        f"{ALERTS} alerts, {delivered_during} cards during it, all delivered {caught_up:.1f}s "
        f"after; lost {len(lost)}, doubled {len(doubled)}, out of order {out_of_order}"
    )
    assert sum(outage.seen.values()) > 10 and set(outage.seen) == set(PLAN)
    assert lost == [] and doubled == [] and out_of_order == 0
    assert "Traceback" not in served.log_text().split(" INFO sunflow_ops: stopping")[0]
