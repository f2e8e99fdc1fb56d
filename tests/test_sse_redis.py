"""Two hubs (and two whole services) in one process sharing the real Redis on 127.0.0.1:6379."""

import asyncio
import json
import random
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio import Redis

from services.clock import FrozenClock
from services.config import SettingsError, load_settings
from services.errors import NotFound
from services.main import background_contexts, open_services
from services.sse import RESET, HubConfig, JobFinished, SSEHub
from services.sse_redis import RedisRelay, RedisUnavailable
from tests.conftest import (
    Client,
    admin_headers,
    free_port,
    intake_headers,
    make_settings,
    require_program,
    require_redis,
)
from tests.sse_wire import BufferSink, StreamParser
from tests.waiting import until

NOW = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
EVENTS = "/api/generation/jobs/{}/events"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    url = require_redis()
    name = f"sunflow-test-{uuid.uuid4().hex[:10]}:"
    yield name
    client = Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{name}*"):
            await client.delete(key)
    finally:
        await client.aclose()


@dataclass
class Node:
    hub: SSEHub
    relay: RedisRelay
    registry: CollectorRegistry


MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node(prefix: str) -> AsyncIterator[MakeNode]:
    """An instance: a hub with its Redis relay, started and subscribed."""
    async with AsyncExitStack() as stack:

        async def make(name: str, *, url: str | None = None, **config: object) -> Node:
            registry = CollectorRegistry()
            hub = SSEHub(
                HubConfig(**config),  # type: ignore[arg-type]
                clock=FrozenClock(NOW),
                registry=registry,
                rng=random.Random(7),
            )
            relay = RedisRelay(
                hub,
                url or require_redis(),
                instance_id=name,
                prefix=prefix,
                registry=registry,
                max_backoff=0.3,
                ping_seconds=0.5,
            )
            hub.relay = relay
            stack.push_async_callback(relay.close)
            stack.push_async_callback(hub.stop)
            await hub.start()
            await relay.start()
            assert await relay.wait_subscribed(5)
            return Node(hub, relay, registry)

        yield make


async def stream(node: Node, job_id: str, last_id: int | None = None) -> BufferSink:
    """A client of `node`: looked up and attached as the HTTP route does it."""
    await node.hub.lookup(job_id, last_id)
    sink = BufferSink()
    node.hub.attach(job_id, sink, last_id)
    return sink


def ids(sink: BufferSink) -> list[int]:
    return [int(e.id or 0) for e in sink.events() if e.type not in {"heartbeat", "gap"}]


async def test_an_event_published_on_a_reaches_a_client_on_b(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    # Unknown everywhere until its first event, on whichever instance.
    for node in (a, b):
        with pytest.raises(NotFound):
            await node.hub.lookup("job-1", None)
    first = await a.hub.submit("job-1", "progress", {"pct": 0})
    assert (first.event.id, first.delivered) == (1, 0)
    sink = await stream(b, "job-1")
    assert ids(sink) == [1]  # the history, from Redis
    second = await a.hub.submit("job-1", "progress", {"pct": 50})
    assert second.event.id == 2
    await until(lambda: ids(sink) == [1, 2], what="event 2 on b")
    assert [json.loads(e.data) for e in sink.events()] == [{"pct": 0}, {"pct": 50}]
    # Published on b, where the client is: b's answer counts it.
    third = await b.hub.submit("job-1", "progress", {"pct": 90})
    assert (third.event.id, third.delivered) == (3, 1)
    assert ids(sink) == [1, 2, 3]
    assert b.hub.snapshot()["instance"] == "b"
    assert b.hub.snapshot()["redis"]["status"] == "up"


async def test_last_event_id_replay_on_b_of_events_published_on_a(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    for n in range(1, 8):
        await a.hub.submit("job-r", "progress", n)
    a_sink = await stream(a, "job-r", 2)
    assert ids(a_sink) == [3, 4, 5, 6, 7]
    # The client moves to b with the last id it saw; then both instances publish.
    b_sink = await stream(b, "job-r", 5)
    assert ids(b_sink) == [6, 7]
    await a.hub.submit("job-r", "progress", 8)
    await b.hub.submit("job-r", "progress", 9)
    await until(lambda: ids(b_sink) == [6, 7, 8, 9] and ids(a_sink)[-1] == 9)
    assert ids(a_sink) == [3, 4, 5, 6, 7, 8, 9]


async def test_the_shared_history_is_trimmed_and_a_gap_is_told(
    make_node: MakeNode, prefix: str
) -> None:
    a, b = await make_node("a", history_size=3), await make_node("b", history_size=3)
    for n in range(1, 7):
        await a.hub.submit("job-g", "progress", n)
    client = Redis.from_url(require_redis())
    try:
        assert await client.xlen(f"{prefix}sse:{{job-g}}:events") == 3
        ttl = await client.pttl(f"{prefix}sse:{{job-g}}:events")
        assert 0 < ttl <= 3_600_000
    finally:
        await client.aclose()
    sink = await stream(b, "job-g", 1)
    gap, *events = sink.events()
    assert (gap.type, json.loads(gap.data)) == ("gap", {"missed_from": 2, "resumed_at": 4})
    assert [e.id for e in events] == ["4", "5", "6"]


async def test_two_publishers_one_order_none_twice(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    await a.hub.submit("job-c", "progress", 0)
    sinks = [await stream(a, "job-c"), await stream(b, "job-c")]

    async def publish(node: Node, tag: str) -> list[int]:
        return [
            (await node.hub.submit("job-c", "progress", f"{tag}{n}")).event.id for n in range(50)
        ]

    got_a, got_b = await asyncio.gather(publish(a, "a"), publish(b, "b"))
    assert sorted(got_a + got_b) == list(range(2, 102))
    for sink in sinks:
        await until(lambda sink=sink: len(ids(sink)) == 101, what="101 events")
        assert ids(sink) == list(range(1, 102))
    # Every instance wrote the same bytes for the same event.
    assert sinks[0].text == sinks[1].text


async def test_many_clients_arriving_at_once_fetch_the_history_once(
    make_node: MakeNode,
) -> None:
    a, b = await make_node("a"), await make_node("b")
    for n in range(1, 4):
        await a.hub.submit("job-m", "progress", n)

    async def arrive() -> BufferSink:
        return await stream(b, "job-m")

    async def publish_more() -> None:
        for n in range(4, 24):
            await a.hub.submit("job-m", "progress", n)

    arriving = asyncio.gather(*(arrive() for _ in range(20)))
    sinks, _ = await asyncio.gather(arriving, publish_more())
    for sink in sinks:
        await until(lambda sink=sink: len(ids(sink)) == 23, what="23 events")
        assert ids(sink) == list(range(1, 24))
    assert len(b.hub.jobs["job-m"].history) == 23


async def test_a_job_finished_on_a_is_finished_on_b(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    await a.hub.submit("job-f", "progress", 1)
    b_sink = await stream(b, "job-f")
    done = await a.hub.submit("job-f", "done", {"ok": True}, final=True)
    assert done.event.id == 2
    await until(lambda: ids(b_sink) == [1, 2])
    assert not b.hub.connections  # the final event closed b's stream
    c = await make_node("c")  # an instance that never saw the job
    for node in (b, c):
        # Replay then the end; after the final event nothing is left: the route answers 204.
        assert (await node.hub.lookup("job-f", None))[1] is True
        assert (await node.hub.lookup("job-f", 2))[1] is False
    replay = BufferSink()
    assert c.hub.attach("job-f", replay, 1).connection is None
    assert ids(replay) == [2]
    for node in (a, b, c):
        with pytest.raises(JobFinished):
            await node.hub.submit("job-f", "progress", 3)


async def test_admin_reset_from_a_closes_the_streams_on_b(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    await a.hub.submit("job-x", "progress", 1)
    on_b = [await stream(b, "job-x") for _ in range(2)]
    await stream(a, "job-x")
    result = await a.hub.reset_connections()
    assert result.to_json() == {
        "action": "reset",
        "connections_before": 3,
        "connections_after": 0,
        "closed": 3,
        "instances_reached": 2,
        "instances_answered": 2,
        "by_instance": {
            "a": {"connections_before": 1, "connections_after": 0, "closed": 1},
            "b": {"connections_before": 2, "connections_after": 0, "closed": 2},
        },
    }
    assert not a.hub.connections
    assert not b.hub.connections
    assert all(not sink.aborted for sink in on_b)  # ended cleanly: browsers resume
    assert b.hub.metrics.connections_closed.labels(RESET)._value.get() == 2

    await stream(b, "job-x")
    told = await b.hub.broadcast_reconnect()
    assert (told.closed, told.cluster and told.cluster["instances_answered"]) == (1, 2)
    restarted = await a.hub.restart()
    assert restarted.cluster is not None
    assert restarted.cluster["instances_answered"] == 2
    assert a.hub.running
    assert b.hub.running


async def test_an_instance_that_does_not_answer_is_reported(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    await b.relay.stop()  # subscribed no more, as if b hung
    b.hub.relay = None
    a.relay._admin_timeout = 0.3
    result = await a.hub.reset_connections()
    assert result.cluster is not None
    assert (result.cluster["instances_reached"], result.cluster["instances_answered"]) == (1, 1)


async def kill_subscription(url: str, prefix: str, instance: str) -> int:
    """Cut one instance's subscription (the key prefix keeps tests running side by side,
    which may use the same instance names, apart)."""
    client = Redis.from_url(url)
    try:
        killed = 0
        for info in await client.client_list():
            if info.get("name") == f"sunflow-sse-sub:{prefix}{instance}".replace(" ", "_"):
                killed += int(await client.client_kill_filter(_id=info["id"]))
        return killed
    finally:
        await client.aclose()


async def test_a_broken_link_resubscribes_and_catches_up(make_node: MakeNode, prefix: str) -> None:
    url = require_redis()
    a, b = await make_node("a"), await make_node("b")
    await a.hub.submit("job-k", "progress", 1)
    sink = await stream(b, "job-k")
    assert await kill_subscription(url, prefix, "b") == 1
    # Published while b is not listening: b fetches it from the stream once it is back.
    for n in range(2, 5):
        await a.hub.submit("job-k", "progress", n)
    await until(lambda: b.relay.link_breaks == 1 and b.relay.subscribed, what="resubscribed")
    await until(lambda: ids(sink) == [1, 2, 3, 4], what="caught up")
    await a.hub.submit("job-k", "progress", 5)
    await until(lambda: ids(sink) == [1, 2, 3, 4, 5])
    metrics = generate_latest(b.registry).decode()
    assert "sse_redis_link_breaks_total 1.0" in metrics
    assert "sse_redis_connected 1.0" in metrics
    assert 'sunflow_instance_info{instance_id="b"} 1.0' in metrics


class PrivateRedis:
    """A Redis of this test's own (no persistence), which the test stops and starts."""

    def __init__(self, program: str, workdir: Path) -> None:
        self.program = program
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir)]
        proc = subprocess.Popen([self.program, *args], stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        ping = ["redis-cli", "-p", str(self.port), "ping"]
        deadline = time.monotonic() + 10
        while subprocess.run(ping, capture_output=True, check=False).stdout.strip() != b"PONG":
            assert proc.poll() is None, "redis-server stopped"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return proc


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(require_program("redis-server"), tmp_path)
    yield server
    for proc in server.procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_redis_down_refuses_publishing_and_recovers(
    migrated_url: str, private_redis: PrivateRedis, prefix: str
) -> None:
    server = private_redis.start()
    url = private_redis.url
    settings = make_settings(
        migrated_url, redis_url=url, instance_id="solo", redis_key_prefix=prefix
    )
    async with AsyncExitStack() as stack:
        services = await stack.enter_async_context(open_services(settings))
        assert services.sse_relay is not None
        services.sse_relay._max_backoff = 0.3
        from services.web.app import create_app

        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        client: Client = await stack.enter_async_context(TestClient(TestServer(app)))
        job = EVENTS.format("job-d")
        assert (
            await client.post(job, json={"type": "p", "data": 1}, headers=intake_headers())
        ).status == 202
        resp = await client.get(job, headers={"Accept": "text/event-stream"})
        parser = StreamParser()

        async def read(n: int) -> None:
            while len([e for e in parser.events if e.type == "p"]) < n:
                parser.feed((await asyncio.wait_for(resp.content.readany(), 10)).decode())

        await read(1)
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        # Down: publishing answers 503 (nothing recorded, the publisher retries) ...
        refused = await client.post(job, json={"type": "p", "data": 2}, headers=intake_headers())
        assert refused.status == 503
        body = await refused.json()
        assert body["error"] == "redis_unavailable"
        assert "publish it again" in body["detail"]["message"]
        assert url not in json.dumps(body)
        # ... health says so, and a client new to the job is told to come back later.
        health = await (await client.get("/api/health")).json()
        assert health["components"]["redis"]["status"] == "down"
        await until(lambda: not services.sse_relay.subscribed)
        generation = await (await client.get("/api/generation/health")).json()
        assert (generation["instance"], generation["redis"]["status"]) == ("solo", "down")
        other = await client.get(EVENTS.format("job-new"))
        assert other.status == 503
        assert (await other.json())["error"] == "redis_unavailable"
        held = await client.get(EVENTS.format("job-new"), headers={"Accept": "text/event-stream"})
        assert held.status == 200
        assert (await held.text()).startswith("retry: ")
        # Back (empty: no persistence): the link comes back, ids go on from 2, the open
        # stream gets the next event.
        private_redis.start()
        await until(lambda: services.sse_relay.subscribed, 10)
        again = await client.post(job, json={"type": "p", "data": 2}, headers=intake_headers())
        assert again.status == 202, await again.text()
        assert (await again.json())["id"] == 2
        await read(2)
        assert [(e.id, e.data) for e in parser.events if e.type == "p"] == [("1", "1"), ("2", "2")]
        health = await (await client.get("/api/health")).json()
        assert health["components"]["redis"]["status"] == "healthy"
        resp.close()


async def test_two_services_over_http(migrated_url: str, prefix: str) -> None:
    url = require_redis()
    async with AsyncExitStack() as stack:
        clients: list[Client] = []
        for name in ("one", "two"):
            settings = make_settings(
                migrated_url, redis_url=url, instance_id=name, redis_key_prefix=prefix
            )
            services = await stack.enter_async_context(open_services(settings))
            from services.web.app import create_app

            app = create_app(settings, services)
            app.cleanup_ctx.extend(background_contexts(services))
            clients.append(await stack.enter_async_context(TestClient(TestServer(app))))
        one, two = clients
        job = EVENTS.format("job-h")
        assert (await two.get(job)).status == 404
        posted = await one.post(job, json={"type": "p", "data": 1}, headers=intake_headers())
        assert posted.status == 202
        resp = await two.get(job, headers={"Accept": "text/event-stream"})
        assert resp.status == 200
        parser = StreamParser()
        await one.post(job, json={"type": "p", "data": 2}, headers=intake_headers())
        while len([e for e in parser.events if e.type == "p"]) < 2:
            parser.feed((await asyncio.wait_for(resp.content.readany(), 10)).decode())
        reset = await one.post("/api/admin/connections/reset", headers=admin_headers())
        body = await reset.json()
        assert (body["closed"], body["instances_answered"]) == (1, 2)
        assert body["by_instance"]["two"]["closed"] == 1
        health = await (await two.get("/api/health")).json()
        assert health["components"]["redis"]["status"] == "healthy"
        assert health["components"]["redis"]["instance"] == "two"
        metrics = await (await two.get("/metrics")).text()
        assert 'sunflow_instance_info{instance_id="two"} 1.0' in metrics
        done = await two.post(job, json={"type": "end", "final": True}, headers=intake_headers())
        assert (await done.json())["id"] == 3
        finished = await one.get(job, headers={"Last-Event-ID": "3"})
        assert finished.status == 204
        late = await one.post(job, json={"type": "p"}, headers=intake_headers())
        assert late.status == 409


async def test_fsm_state_lives_in_redis(migrated_url: str, prefix: str) -> None:
    from aiogram.fsm.storage.base import StorageKey
    from aiogram.fsm.storage.memory import MemoryStorage
    from aiogram.fsm.storage.redis import RedisStorage

    from bot.runtime import fsm_storage

    url = require_redis()
    assert isinstance(fsm_storage(make_settings(migrated_url)), MemoryStorage)
    key = StorageKey(bot_id=1, chat_id=2, user_id=3)
    first = fsm_storage(make_settings(migrated_url, redis_url=url, redis_key_prefix=prefix))
    second = fsm_storage(make_settings(migrated_url, redis_url=url, redis_key_prefix=prefix))
    try:
        assert isinstance(first, RedisStorage)
        await first.set_state(key, "Snooze:waiting")
        await first.set_data(key, {"incident": 7})
        # Another instance (its own storage object) sees the conversation.
        assert await second.get_state(key) == "Snooze:waiting"
        assert await second.get_data(key) == {"incident": 7}
        client = Redis.from_url(url)
        keys = [k async for k in client.scan_iter(match=f"{prefix}fsm:*")]
        await client.aclose()
        assert keys
    finally:
        await first.close()
        await second.close()


def test_a_bad_redis_url_names_the_setting() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, redis_url="http://127.0.0.1:6379")
    assert str(caught.value).startswith("setting REDIS_URL: not a Redis URL")
    assert "127.0.0.1" not in str(caught.value)
    assert load_settings(_env_file=None, redis_url="").redis_url is None


async def test_a_relay_refuses_when_redis_is_unreachable(prefix: str) -> None:
    hub = SSEHub(HubConfig(), clock=FrozenClock(NOW))
    relay = RedisRelay(hub, f"redis://127.0.0.1:{free_port()}/0", instance_id="x", prefix=prefix)
    hub.relay = relay
    try:
        with pytest.raises(RedisUnavailable):
            await hub.submit("job-u", "progress", 1)
        with pytest.raises(RedisUnavailable):
            await hub.lookup("job-u", None)
        assert (await relay.check()).status.value == "down"
        # Admin actions still act here, and say Redis was not reachable.
        result = await hub.reset_connections()
        assert result.cluster is not None
        assert result.cluster["instances_answered"] == 1
        assert "unreachable" in result.cluster["note"]
    finally:
        await relay.close()


async def test_the_bots_sse_reset_acts_on_every_instance(
    migrated_url: str, prefix: str, tmp_path: Path
) -> None:
    from bot.callbacks import SSEAction, SSECallback
    from bot.dispatcher import create_dispatcher
    from bot.filters import Role
    from bot.runtime import make_bot
    from tests.botkit import TOKEN, bot_settings, running_fake
    from tests.test_bot import Harness, local_dirs

    url = require_redis()
    cluster = {"redis_url": url, "redis_key_prefix": prefix}
    async with running_fake() as fake, AsyncExitStack() as stack:
        settings = bot_settings(
            migrated_url, fake, instance_id="bot", **cluster, **local_dirs(tmp_path)
        )
        services = await stack.enter_async_context(open_services(settings))
        other = await stack.enter_async_context(
            open_services(make_settings(migrated_url, instance_id="other", **cluster))
        )
        for built in (services, other):
            assert built.sse_relay is not None
            await built.sse.start()
            await built.sse_relay.start()
            assert await built.sse_relay.wait_subscribed(5)
            stack.push_async_callback(built.sse_relay.stop)
            stack.push_async_callback(built.sse.stop)
        await other.sse.submit("job-bot", "progress", 1)
        await other.sse.lookup("job-bot", None)
        other.sse.attach("job-bot", BufferSink(), None)
        bot = make_bot(TOKEN, fake.base)
        stack.push_async_callback(bot.session.close)
        harness = Harness(fake, services, bot, create_dispatcher(services))
        await harness.say(Role.ADMIN, "/sse_reset")
        menu = harness.last_posted(Role.ADMIN)
        confirm = SSECallback(action=SSEAction.RESET, confirm=True).pack()
        await harness.press_on(Role.ADMIN, menu, confirm)
        assert "1 streams before, 0 after (1 closed)" in menu.text
        assert "2 of 2 instances answered" in menu.text
        assert not other.sse.connections


async def test_a_silent_break_is_noticed_by_the_missing_pong(
    make_node: MakeNode, private_redis: PrivateRedis
) -> None:
    server = private_redis.start()
    a = await make_node("a", url=private_redis.url)
    await a.hub.submit("job-s", "progress", 1)
    await asyncio.sleep(1.6)  # three PING periods: a healthy link stays up
    assert (a.relay.link_breaks, a.relay.subscribed) == (0, True)
    server.send_signal(signal.SIGSTOP)  # the socket stays open; nothing answers
    try:
        await until(lambda: not a.relay.subscribed, 5, "the missing PONG noticed")
        assert "PONG" in (a.relay.last_error or "")
        with pytest.raises(RedisUnavailable):
            await a.hub.submit("job-s", "progress", 2)
    finally:
        server.send_signal(signal.SIGCONT)
    await until(lambda: a.relay.subscribed, 10, "resubscribed")
    again = await a.hub.submit("job-s", "progress", 2)
    # The refused publish may have been run by Redis when it woke (at-least-once): then the
    # retry is id 3 and event 2 is there too; either way the ids have no hole.
    client = Redis.from_url(private_redis.url)
    try:
        entries: list[tuple[bytes, object]] = await client.xrange(  # type: ignore[assignment]
            a.relay.stream_key("job-s")
        )
    finally:
        await client.aclose()
    assert [int(entry_id.split(b"-")[0]) for entry_id, _ in entries] == list(
        range(1, again.event.id + 1)
    )
    assert again.event.id in (2, 3)
