"""Two `sunflow-ops serve` processes on one PostgreSQL database and one Redis behind nginx
round-robin: the leader is killed with SIGKILL mid-ladder, the other takes over, and every
step reaches the team chat exactly once; a Telegram update delivered to both is handled once;
an SSE client of one instance gets the events published on the other."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from services.db import Database
from services.models import TimelineEvent
from tests.botkit import PD_USER, RESPONDER, TEAM, TOKEN, VIEWER, running_fake
from tests.conftest import (
    INTAKE,
    free_port,
    intake_headers,
    require_redis,
)
from tests.fakes.telegram import FakeTelegram, Posted
from tests.sse_wire import StreamParser
from tests.test_deploy_nginx import run_nginx
from tests.waiting import until

pytestmark = pytest.mark.e2e

SECRET = "cluster-Secret_0123"
STEPS = [f"s{n}" for n in range(10)]
# Ten steps four seconds apart, one of them paging the PD: the leader dies after the third,
# and the steps due while nobody leads fire late, once each, on the instance that takes over.
LADDER = (
    "\n".join(
        f'[[ladder.default]]\nname = "{name}"\nafter = "{4 * n}s"\n'
        f'target = "{"pd" if name == "s5" else "team"}"\nmessage = "step {name}"\n'
        for n, name in enumerate(STEPS)
    )
    + '\n[deadlines]\nP1 = "1h"\n'
)
STEP_RE = re.compile(r"escalated \((s\d+) → ")


@contextmanager
def nginx_round_robin(tmp_path: Path, ports: list[int]) -> Iterator[str]:
    """nginx with one upstream of the given instances, round-robin (nginx's default)."""
    listen = free_port()
    line = "        server 127.0.0.1:{} max_fails=1 fail_timeout=5s;"
    servers = "\n".join(line.format(p) for p in ports)
    site = f"""
    upstream sunflow-ops {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://sunflow-ops;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
        }}
    }}
"""
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    with run_nginx(site, listen, nginx_dir) as url:
        yield url


class Instance:
    """One `sunflow-ops serve` process."""

    def __init__(self, name: str, port: int, env: dict[str, str], cwd: Path) -> None:
        self.name, self.port = name, port
        self.base = f"http://127.0.0.1:{port}"
        self.log = cwd / f"{name}.log"
        (cwd / name).mkdir()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve"],
                env={**env, "INSTANCE_ID": name, "HTTP_PORT": str(port)},
                cwd=cwd / name,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def health(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        try:
            async with session.get(f"{self.base}/api/health") as resp:
                data: dict[str, Any] = await resp.json()
                return data
        except (aiohttp.ClientError, ValueError):
            return None

    async def leads(self, session: aiohttp.ClientSession) -> bool:
        report = await self.health(session)
        leader = (report or {}).get("components", {}).get("leader", {})
        return bool(leader.get("leader"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def environment(
    url: str, fake: FakeTelegram, nginx: str, policy: Path, redis_prefix: str
) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "HTTP_", "DATABASE_", "SMTP_", "INSTANCE_", "REDIS_"))
    }
    return {
        **keep,
        "DATABASE_URL": url,
        "REDIS_URL": require_redis(),
        "REDIS_KEY_PREFIX": redis_prefix,
        "INTAKE_TOKEN": INTAKE,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE": fake.base,
        "TELEGRAM_TEAM_CHAT_ID": str(TEAM),
        "TELEGRAM_PD_USER_IDS": str(PD_USER),
        "TELEGRAM_RESPONDER_USER_IDS": str(RESPONDER),
        "TELEGRAM_RETRY_MAX_SECONDS": "0.5",
        "TELEGRAM_WEBHOOK_URL": f"{nginx}/telegram/hook",
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "ESCALATION_POLICY_FILE": str(policy),
        "BOT_LANGUAGE": "en",
    }


def step_replies(fake: FakeTelegram, card: Posted) -> list[str]:
    return [
        m.group(1)
        for p in fake.in_chat(TEAM)
        if p.reply_to == card.message_id and (m := STEP_RE.search(p.text))
    ]


def status_replies(fake: FakeTelegram) -> list[Posted]:
    return [p for p in fake.in_chat(TEAM) if "Status" in p.text and p.reply_markup is None]


async def test_two_instances_page_once_through_a_leader_kill(
    pg_url: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(LADDER)
    ports = [free_port(), free_port()]
    prefix = f"sunflow-paging-{uuid.uuid4().hex[:8]}:"
    async with running_fake() as fake:
        with nginx_round_robin(tmp_path, ports) as nginx:
            env = environment(pg_url, fake, nginx, policy, prefix)
            a = Instance("ops-a", ports[0], env, tmp_path)
            b = Instance("ops-b", ports[1], env, tmp_path)
            try:
                await _play(Cluster(fake, nginx, a, b, pg_url), record_property)
            finally:
                for instance in (a, b):
                    instance.stop()
                client = Redis.from_url(env["REDIS_URL"])
                async for key in client.scan_iter(match=f"{prefix}*"):
                    await client.delete(key)
                await client.aclose()


async def sse_across(session: aiohttp.ClientSession, reader: Instance, writer: Instance) -> None:
    """An SSE client of `reader` receives what is published on `writer` (through Redis)."""
    url = "{}/api/generation/jobs/cluster-paging/events"
    headers = intake_headers()
    async with session.post(
        url.format(writer.base), json={"type": "progress", "data": {"n": 1}}, headers=headers
    ) as resp:
        assert resp.status == 202, await resp.text()
    async with session.get(
        url.format(reader.base), headers={"Accept": "text/event-stream", "Last-Event-ID": "0"}
    ) as stream:
        assert stream.status == 200
        parser = StreamParser()
        async with session.post(
            url.format(writer.base), json={"type": "progress", "data": {"n": 2}}, headers=headers
        ) as resp:
            assert resp.status == 202, await resp.text()
        got: list[str] = []
        async with asyncio.timeout(10):
            while len(got) < 2:
                chunk = await stream.content.readany()
                assert chunk, "the stream ended"
                got += [e.data for e in parser.feed(chunk.decode()) if e.type == "progress"]
        assert [json.loads(d) for d in got] == [{"n": 1}, {"n": 2}], got


@dataclass(frozen=True)
class Cluster:
    fake: FakeTelegram
    nginx: str
    a: Instance
    b: Instance
    url: str


async def _play(  # noqa: PLR0914, PLR0915
    cluster: Cluster, record_property: Callable[[str, object], None]
) -> None:
    fake, nginx, a, b = cluster.fake, cluster.nginx, cluster.a, cluster.b
    async with aiohttp.ClientSession() as session:

        async def both_up() -> bool:
            reports = [await i.health(session) for i in (a, b)]
            return all(reports) and fake.webhook is not None

        await until(both_up, timeout=120, what="both instances to answer /api/health")

        async def one_leads() -> list[Instance]:
            leading = [i for i in (a, b) if await i.leads(session)]
            return leading if len(leading) == 1 else []

        leader = (await until(one_leads, timeout=30, what="exactly one leader"))[0]
        follower = b if leader is a else a
        await sse_across(session, leader, follower)
        report = await follower.health(session)
        assert report is not None and report["instance"] == follower.name
        assert report["components"]["leader"]["holder"] == leader.name

        # -- webhook: an update delivered twice through the round-robin, and one delivered
        # straight to each instance, is each handled once.
        assert await fake.deliver(fake.message_update(VIEWER, TEAM, "/status"), secret="no") == 403
        twice = fake.message_update(VIEWER, TEAM, "/status")
        assert [await fake.deliver(twice), await fake.deliver(twice)] == [200, 200]
        both = fake.message_update(VIEWER, TEAM, "/status")
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        answers = []
        for instance in (a, b):
            async with session.post(
                f"{instance.base}/telegram/hook", json=both, headers=headers
            ) as resp:
                assert resp.status == 200
                answers.append(await resp.json())
        assert sorted(bool(x.get("duplicate")) for x in answers) == [False, True]
        await fake.wait_for(lambda: len(status_replies(fake)) == 2, timeout=20)

        # -- the ladder: the alert arrives at the follower; the leader runs the timers.
        body = {"severity": "P1", "title": "Cluster ladder", "dedup_key": "cluster", "source": "t"}
        async with session.post(
            f"{follower.base}/api/alerts", json=body, headers=intake_headers()
        ) as resp:
            assert resp.status == 202, await resp.text()
            incident_id = int((await resp.json())["incidents"][0]["id"])
        card = await fake.wait_for(
            lambda: next((p for p in fake.in_chat(TEAM) if f"#{incident_id} " in p.text), None)
        )
        await fake.wait_for(lambda: "s2" in step_replies(fake, card), timeout=30)
        # Between two steps (4 s apart), so no message is half-sent when the leader dies.
        await asyncio.sleep(1.0)
        leader.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        leader.proc.wait()

        async def survivor_leads() -> bool:
            return await follower.leads(session)

        await until(survivor_leads, timeout=40, what="the survivor to take over", every=0.05)
        failover = time.monotonic() - killed_at
        record_property("failover_seconds", round(failover, 2))
        print(f"failover after SIGKILL of the leader: {failover:.2f} s")

        await fake.wait_for(lambda: set(step_replies(fake, card)) >= set(STEPS[1:]), timeout=60)

        async def drained() -> bool:
            report = await follower.health(session)
            telegram = (report or {}).get("components", {}).get("telegram", {})
            return bool(telegram.get("outbox_pending") == 0)

        # Nothing is left to send: a message that could go out twice is in the chat now.
        await until(drained, timeout=30, what="the outbox to drain")

        # Each step: once in the timeline, once in the team chat (s0 is the card itself),
        # and the PD paged once.
        assert sorted(step_replies(fake, card)) == STEPS[1:]
        pages = [p for p in fake.in_chat(PD_USER) if f"#{incident_id}" in p.text]
        assert len(pages) == 1
        cards = [p for p in fake.in_chat(TEAM) if f"#{incident_id} " in p.text and p.reply_markup]
        assert len(cards) == 1
        database = Database(cluster.url)
        try:
            async with database.read() as db_session:
                rows = (
                    await db_session.scalars(
                        select(TimelineEvent).where(
                            TimelineEvent.incident_id == incident_id,
                            TimelineEvent.kind == "escalated",
                        )
                    )
                ).all()
        finally:
            await database.dispose()
        # s0 (0 s, to the team chat) is the alert itself: claimed with it, no timeline entry.
        assert sorted(str(r.details["step"]) for r in rows) == STEPS[1:]
        assert len(status_replies(fake)) == 2

        # Through nginx, the survivor answers alone; the dead upstream is skipped.
        async with session.get(f"{nginx}/api/health") as resp:
            assert (await resp.json())["instance"] == follower.name
