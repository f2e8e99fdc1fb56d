"""Escalation replies: how long after a step comes due its reply reaches the team chat, and
how far apart the reply and the card edit of the same step land, against the fake Bot API
enforcing Telegram's limits (1 message/s per chat counts the edit too).

The real service (HTTP intake, scheduler, outbox sender, aiogram bot) on 127.0.0.1 with
SQLite in a temp directory; a policy whose second step comes 3 s after the alert; one P1
alert at a time, `--gap` seconds apart (well inside a group's 20 messages a minute: each
alert is a card, then a reply and an edit), so nothing but the per-chat pacing is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import machine
from bench.inprocess import serving
from services import db as dbmod
from services.config import Settings
from tests.conftest import free_port
from tests.fakes.telegram import Call, FakeTelegram

TOKEN = "123456:BENCH-token"
TEAM = -1009876543211
INTAKE = "bench-intake-token"
STEP_AFTER = 3.0
POLICY = f"""
[[ladder.default]]
name = "team"
after = "0s"
target = "team"

[[ladder.default]]
name = "second"
after = "{STEP_AFTER:g}s"
target = "team"
message = "second step"

[[ladder.default]]
name = "later"
after = "1h"
target = "team"
message = "later"
"""


class Watch:
    """When the fake accepted each card, its step's reply and the card's edits."""

    def __init__(self, fake: FakeTelegram) -> None:
        self.card_at: dict[int, float] = {}  # message id → when the card was posted
        self.reply_at: dict[int, float] = {}  # card message id → when the reply was
        self.edit_at: dict[int, float] = {}  # card message id → when its first edit was
        self._fake = fake
        fake.listeners.append(self.saw)

    def saw(self, call: Call) -> None:
        if call.status != 200 or int(call.params.get("chat_id", 0)) != TEAM:
            return
        if call.method == "editMessageText":
            self.edit_at.setdefault(int(call.params["message_id"]), call.at)
        elif call.method == "sendMessage":
            reply = call.params.get("reply_to_message_id") or call.params.get("reply_parameters")
            if reply:
                target = reply if isinstance(reply, int | str) else reply.get("message_id")
                self.reply_at.setdefault(int(str(target)), call.at)
            else:
                self.card_at[len(self.card_at) + 1] = call.at


async def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    fake = FakeTelegram(TOKEN, enforce_limits=True)
    await fake.start(free_port())
    watch = Watch(fake)
    tmp = Path(tempfile.mkdtemp(prefix="reply-gap-"))
    url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    await asyncio.to_thread(dbmod.upgrade, url)
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    settings = Settings(
        _env_file=None,
        database_url=url,
        intake_token=INTAKE,
        telegram_bot_token=TOKEN,
        telegram_api_base=fake.base,
        telegram_team_chat_id=TEAM,
        escalation_policy_file=policy,
        http_port=free_port(),
    )
    posted: list[float] = []
    async with serving(settings) as (services, intake):
        headers = {"Authorization": f"Bearer {INTAKE}"}
        async with aiohttp.ClientSession() as session:
            for n in range(args.alerts):
                body: dict[str, Any] = {
                    "severity": "P1",
                    "title": f"reply gap {n}",
                    "dedup_key": f"reply-gap-{n}",
                    "source": "bench",
                }
                posted.append(time.monotonic())
                async with session.post(intake, json=body, headers=headers) as resp:
                    if resp.status != 202:
                        raise RuntimeError(f"intake answered {resp.status}")
                await asyncio.sleep(args.gap)
            deadline = time.monotonic() + 30
            while len(watch.reply_at) < args.alerts and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
    await fake.stop()
    # Message ids in the fake's team chat run 1, 2, ... in posting order; cards are the
    # messages without a reply target, in alert order.
    cards = sorted(m.message_id for m in fake.in_chat(TEAM) if m.reply_to is None)
    due_to_reply, gaps = [], []
    for n, card in enumerate(cards[: args.alerts]):
        reply, edit = watch.reply_at.get(card), watch.edit_at.get(card)
        if reply is None or edit is None:
            continue
        due_to_reply.append(reply - (posted[n] + STEP_AFTER))
        gaps.append(reply - edit)
    print(f"machine: {machine()}")
    print(f"alerts: {args.alerts}, {args.gap:g} s apart; step after {STEP_AFTER:g} s")
    print(f"steps answered: {len(gaps)} of {args.alerts}; 429s: {fake.rate_limited}")
    if gaps:
        print(
            f"step due → reply in chat: median {statistics.median(due_to_reply):.3f} s, "
            f"max {max(due_to_reply):.3f} s"
        )
        print(
            f"reply minus card edit (negative: reply first): median "
            f"{statistics.median(gaps):+.3f} s, min {min(gaps):+.3f}, max {max(gaps):+.3f}"
        )
    return 0 if len(gaps) == args.alerts and fake.rate_limited == 0 else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench reply_gap")
    parser.add_argument("--alerts", type=int, default=8)
    parser.add_argument("--gap", type=float, default=12.0)
    return asyncio.run(run(parser.parse_args(argv)))
