"""Several instances, one set of SSE jobs: shared histories, fan-out and admin actions on Redis.

Used only when REDIS_URL is set (docs/sse.md, "SSE across instances"). Each job's events live in
a Redis stream whose entry ids are the event ids (1, 2, 3 ...), numbered by one Lua script that
also trims the stream to SSE_HISTORY_SIZE, sets its TTL to SSE_HISTORY_SECONDS and publishes the
event on one pub/sub channel. Every instance reads that channel and hands each event of a job it
follows to its own hub, which encodes it once and writes it to its own streams. A job's history
is fetched from the stream the first time an instance needs it (a client connects there); pub/sub
messages that arrive meanwhile are held and merged by id, so nothing is missed or sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.aio import wait_event
from services.errors import Unavailable
from services.health import ComponentHealth, Status
from services.sse import (
    AdminResult,
    Event,
    Frame,
    JobFinished,
    Published,
    SSEHub,
    encode_event,
)

log = logging.getLogger(__name__)

# Errors that mean "Redis is not reachable now" (as opposed to a bug or a bad command).
LINK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS: the job's meta hash, its stream. ARGV: type, payload, final (0/1), maxlen, ttl ms,
# channel, message head, wall ms, floor. Atomic, so ids are increasing and gapless across
# instances, and the PUBLISH order (the order every instance sees) is the id order. The floor
# is the publisher's own last id of the job: ids go on increasing even if Redis lost the job
# (a restart without persistence).
PUBLISH_SCRIPT = """
local done = redis.call('HGET', KEYS[1], 'final')
if done then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'seq'))}
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq < tonumber(ARGV[9]) then
  redis.call('HSET', KEYS[1], 'seq', ARGV[9])
end
local id = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], id .. '-0',
           't', ARGV[1], 'd', ARGV[2], 'f', ARGV[3], 'w', ARGV[8])
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'final', id)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], id .. ' ' .. ARGV[7] .. '\\n' .. ARGV[2])
return {1, id}
"""

# KEYS: the job's meta hash. ARGV: the last id this instance has, ttl ms. After the link
# came back, so ids stay increasing for the clients streaming here.
SEED_SCRIPT = """
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return seq
"""

ADMIN_ACTIONS = ("restart", "reset", "broadcast_reconnect")


class RedisUnavailable(Unavailable):
    code = "redis_unavailable"
    http_status = 503


@dataclass(frozen=True, slots=True)
class SharedEvent:
    """One event as it travels between instances."""

    job_id: str
    id: int
    type: str
    payload: str
    final: bool
    wall_ms: int
    origin: str


def parse_message(data: bytes) -> SharedEvent:
    """`<id> <head JSON>\\n<payload>` as the publish script sends it."""
    first, _, rest = data.partition(b" ")
    head, _, payload = rest.partition(b"\n")
    job_id, event_type, final, wall_ms, origin = json.loads(head)
    return SharedEvent(
        job_id, int(first), event_type, payload.decode(), bool(final), int(wall_ms), origin
    )


def parse_entry(job_id: str, entry_id: bytes, fields: dict[bytes, bytes]) -> SharedEvent:
    """One stream entry (`<id>-0`, fields t d f w) as an event."""
    return SharedEvent(
        job_id,
        int(entry_id.split(b"-", 1)[0]),
        fields[b"t"].decode(),
        fields[b"d"].decode(),
        fields[b"f"] == b"1",
        int(fields[b"w"]),
        "",
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


class RedisRelay:
    """This instance's link to the others: implements `services.sse.Relay` for one hub."""

    def __init__(
        self,
        hub: SSEHub,
        url: str,
        *,
        instance_id: str,
        prefix: str = "sunflow:",
        local_jobs: frozenset[str] = frozenset(),
        registry: CollectorRegistry | None = None,
        admin_timeout: float = 2.0,
        echo_timeout: float = 1.0,
        command_timeout: float = 2.0,
        ping_seconds: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.hub = hub
        self.instance_id = instance_id
        self.prefix = prefix
        self._local_jobs = local_jobs
        self._admin_timeout = admin_timeout
        self._echo_timeout = echo_timeout
        self._ping_seconds = ping_seconds
        self._max_backoff = max_backoff
        # No retries inside redis-py: a publish retried after a lost reply could be recorded
        # twice, and a silently re-established subscription would hide the gap to catch up.
        no_retry = Retry(NoBackoff(), 0)
        self._redis = Redis.from_url(
            url,
            socket_connect_timeout=command_timeout,
            socket_timeout=command_timeout,
            retry=no_retry,
        )
        self._sub = Redis.from_url(
            url,
            socket_connect_timeout=command_timeout,
            retry=no_retry,
            # `CLIENT LIST` names the deployment (key prefix) and the instance.
            client_name=f"sunflow-sse-sub:{prefix}{instance_id}"[:100].replace(" ", "_"),
        )
        self._script = self._redis.register_script(PUBLISH_SCRIPT)
        self._seed = self._redis.register_script(SEED_SCRIPT)
        self.events_channel = f"{prefix}sse:events"
        self.control_channel = f"{prefix}sse:control"
        self.replies_channel = f"{prefix}sse:replies"
        # Jobs whose local history is complete and kept current by the channel.
        self._synced: set[str] = set()
        # Jobs being fetched: channel messages held until the fetch is merged.
        self._loading: dict[str, list[SharedEvent]] = {}
        self._inflight: dict[str, asyncio.Future[None]] = {}
        # Delivery counts of events this instance published, for the publisher's answer.
        self._recent: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._waiters: dict[tuple[str, int], asyncio.Future[int]] = {}
        self._admin_calls: dict[str, tuple[dict[str, dict[str, Any]], asyncio.Event]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None
        self.subscribed = False
        self.link_breaks = 0
        self.last_error: str | None = None
        self._last_pong = time.monotonic()
        registry = registry or CollectorRegistry()
        Info("sunflow_instance", "This instance of sunflow-ops.", registry=registry).info(
            {"instance_id": instance_id}
        )
        connected = Gauge(
            "sse_redis_connected",
            "1 while this instance is subscribed to the shared SSE channels on Redis.",
            registry=registry,
        )
        connected.set_function(lambda: float(self.subscribed))
        self._breaks_total = Counter(
            "sse_redis_link_breaks_total",
            "Times this instance lost its Redis subscription (it resubscribes with backoff).",
            registry=registry,
        )

    # --- keys ----------------------------------------------------------------------------

    def meta_key(self, job_id: str) -> str:
        # The braces keep a job's two keys in one Redis Cluster slot (job ids have none).
        return f"{self.prefix}sse:{{{job_id}}}:meta"

    def stream_key(self, job_id: str) -> str:
        return f"{self.prefix}sse:{{{job_id}}}:events"

    # --- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._run(), name="sse-redis-reader")

    async def wait_subscribed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.subscribed and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.subscribed

    async def stop(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for task in list(self._tasks):
            task.cancel()
        self.subscribed = False

    async def close(self) -> None:
        await self.stop()
        await self._redis.aclose()
        await self._sub.aclose()

    async def _run(self) -> None:
        """Subscribe, catch up, read; on a broken link start again with backoff."""
        delay = 0.1
        while True:
            pubsub = self._sub.pubsub()
            try:
                await self._subscribe(pubsub)
                self.subscribed = True
                caught_up = await self._catch_up()
                if self.link_breaks:
                    log.info(
                        "Redis link back: resubscribed, %s streamed jobs caught up", caught_up
                    )
                delay = 0.1
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.last_error = _describe(exc)
                if self.subscribed:
                    self.link_breaks += 1
                    self._breaks_total.inc()
                    log.warning("Redis link lost (%s); reconnecting", self.last_error)
                self.subscribed = False
            except Exception:  # a bug in one round must not end the link for good
                log.exception("the Redis SSE reader failed; starting it again")
                self.last_error = "internal error (see the log)"
            finally:
                self.subscribed = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._max_backoff)

    async def _subscribe(self, pubsub: PubSub) -> None:
        channels = (self.events_channel, self.control_channel, self.replies_channel)
        await pubsub.subscribe(*channels)
        confirmed = 0
        deadline = time.monotonic() + 5
        while confirmed < len(channels):
            message = await pubsub.get_message(timeout=max(0.01, deadline - time.monotonic()))
            if message is None:
                raise RedisTimeoutError("no confirmation of the subscription within 5 s")
            if message["type"] == "subscribe":
                confirmed += 1
        self._last_pong = time.monotonic()

    async def _read(self, pubsub: PubSub) -> None:
        # A silent network break sends no error: a PING left without PONG is how it shows.
        next_ping = time.monotonic() + self._ping_seconds
        sent: float | None = None
        while True:
            wait = max(0.01, next_ping - time.monotonic())
            message = await pubsub.get_message(timeout=wait)
            if message is not None:
                self._on_message(message)
            now = time.monotonic()
            if sent is not None and self._last_pong >= sent:
                sent = None
            if sent is not None and now - sent > 2 * self._ping_seconds:
                raise RedisTimeoutError(
                    f"no PONG on the subscription within {2 * self._ping_seconds:g} s"
                )
            if sent is None and now >= next_ping:
                await pubsub.ping()
                sent = now
                next_ping = now + self._ping_seconds

    async def _catch_up(self) -> int:
        """After (re)subscribing: fetch what streamed jobs missed while the link was down;
        jobs nobody streams here are fetched again when a client asks for them."""
        streamed = [
            job_id
            for job_id in self._synced
            if (job := self.hub.jobs.get(job_id)) is not None and job.streams
        ]
        self._synced.clear()
        ttl = max(1, int(self.hub.config.history_seconds * 1000))
        for job_id in streamed:
            job = self.hub.jobs[job_id]
            await self._seed(keys=[self.meta_key(job_id)], args=[job.last_id, ttl])
            try:
                await self._fetch(job_id)
            except RedisUnavailable as exc:
                raise RedisConnectionError(exc.message) from None
        return len(streamed)

    # --- incoming ------------------------------------------------------------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            self._last_pong = time.monotonic()
            return
        if kind != "message":
            return
        channel = message["channel"].decode()
        try:
            if channel == self.events_channel:
                self._on_event(parse_message(message["data"]))
            elif channel == self.control_channel:
                self._spawn(self._answer(json.loads(message["data"])))
            elif channel == self.replies_channel:
                self._on_reply(json.loads(message["data"]))
        except Exception:  # one bad message must not stop the reader
            log.exception("bad message on %s", channel)

    def _on_event(self, event: SharedEvent) -> None:
        held = self._loading.get(event.job_id)
        if held is not None:
            held.append(event)
            return
        if event.job_id not in self._synced:
            self._settle(event, 0)
            return
        if event.job_id not in self.hub.jobs:  # forgotten by the hub's cleanup
            self._synced.discard(event.job_id)
            self._settle(event, 0)
            return
        self._settle(event, self._deliver(event, create=False))

    def _deliver(self, event: SharedEvent, *, create: bool) -> int:
        age = max(0.0, time.time() - event.wall_ms / 1000)
        delivered = self.hub.deliver(
            event.job_id,
            event.id,
            event.type,
            event.payload,
            final=event.final,
            age=age,
            create=create,
        )
        return delivered or 0

    def _settle(self, event: SharedEvent, delivered: int) -> None:
        if event.origin != self.instance_id:
            return
        key = (event.job_id, event.id)
        waiter = self._waiters.pop(key, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(delivered)
            return
        self._recent[key] = delivered
        while len(self._recent) > 1024:
            self._recent.popitem(last=False)

    # --- the Relay protocol ----------------------------------------------------------------

    async def load(self, job_id: str) -> None:
        if job_id in self._local_jobs:
            return
        if len(self._synced) > 2 * len(self.hub.jobs) + 100:  # jobs the hub has forgotten
            self._synced.intersection_update(self.hub.jobs)
        if job_id in self._synced and job_id in self.hub.jobs:
            return
        if not self.subscribed:
            raise RedisUnavailable(
                "Redis (REDIS_URL) is unreachable: this instance cannot read the job's shared "
                "history now; try again shortly",
                detail={"job_id": job_id, "instance": self.instance_id},
            )
        await self._fetch(job_id)

    async def _fetch(self, job_id: str) -> None:
        """`_sync`, once at a time per job: a second caller waits for the first."""
        running = self._inflight.get(job_id)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[job_id] = future
        try:
            await self._sync(job_id)
            future.set_result(None)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved; waiters get it through shield
            raise
        finally:
            del self._inflight[job_id]

    async def _sync(self, job_id: str) -> None:
        """Fetch the job's events after the local last id and merge them with what the
        channel brought meanwhile, in id order; the hub skips ids it already has."""
        job = self.hub.jobs.get(job_id)
        after = job.last_id if job is not None else 0
        self._loading[job_id] = []
        try:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._redis.xrange(
                self.stream_key(job_id), min=f"{after + 1}"
            )  # type: ignore[assignment]
        except LINK_ERRORS as exc:
            raise RedisUnavailable(
                f"Redis (REDIS_URL) is unreachable ({_describe(exc)}); try again shortly",
                detail={"job_id": job_id, "instance": self.instance_id},
            ) from None
        finally:
            held = self._loading.pop(job_id)
        events = [parse_entry(job_id, entry_id, fields) for entry_id, fields in entries]
        events.extend(held)
        events.sort(key=lambda e: e.id)
        for event in events:
            self._settle(event, self._deliver(event, create=True))
        if job_id in self.hub.jobs:
            self._synced.add(job_id)

    async def publish(
        self, job_id: str, event_type: str, payload: str, *, final: bool
    ) -> Published:
        head = json.dumps(
            [job_id, event_type, int(final), int(time.time() * 1000), self.instance_id],
            separators=(",", ":"),
        )
        config = self.hub.config
        known = self.hub.jobs.get(job_id)
        if known is not None and known.finished:
            raise JobFinished(
                f"job {job_id!r} has finished; it takes no more events",
                detail={"job_id": job_id, "last_event_id": known.last_id},
            )
        try:
            status, event_id = await self._script(
                keys=[self.meta_key(job_id), self.stream_key(job_id)],
                args=[
                    event_type,
                    payload,
                    int(final),
                    config.history_size,
                    max(1, int(config.history_seconds * 1000)),
                    self.events_channel,
                    head,
                    int(time.time() * 1000),
                    known.last_id if known is not None else 0,
                ],
            )
        except LINK_ERRORS as exc:
            # Not acknowledged, so the publisher sends it again. Had Redis run the script
            # before the link failed (a timeout), the event is there twice: at-least-once.
            raise RedisUnavailable(
                f"Redis (REDIS_URL) is unreachable ({_describe(exc)}): the event was not "
                "acknowledged; publish it again",
                detail={"job_id": job_id, "instance": self.instance_id, "retry": True},
            ) from None
        if status == 0:
            raise JobFinished(
                f"job {job_id!r} has finished; it takes no more events",
                detail={"job_id": job_id, "last_event_id": int(event_id)},
            )
        event_id = int(event_id)
        self.hub.metrics.events_published.inc()
        delivered = await self._delivered(job_id, event_id)
        frame = Frame.of(encode_event(payload, event_type=event_type, event_id=str(event_id)))
        event = Event(job_id, event_id, event_type, payload, final, time.monotonic(), frame)
        return Published(event, delivered)

    async def _delivered(self, job_id: str, event_id: int) -> int:
        """Streams of this instance the event was written to (0 if nobody follows it here)."""
        key = (job_id, event_id)
        if key in self._recent:
            return self._recent.pop(key)
        if job_id not in self._synced and job_id not in self._loading:
            return 0
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        try:
            async with asyncio.timeout(self._echo_timeout):
                return await waiter
        except TimeoutError:
            return 0
        finally:
            self._waiters.pop(key, None)

    async def admin(self, action: str) -> AdminResult:
        """Ask every instance (this one included) to run the action; gather their answers
        for a short while and add them up."""
        if action not in ADMIN_ACTIONS:
            raise ValueError(action)
        request = uuid.uuid4().hex
        answers: dict[str, dict[str, Any]] = {}
        arrived = asyncio.Event()
        self._admin_calls[request] = (answers, arrived)
        note = None
        try:
            message = json.dumps({"request": request, "action": action, "from": self.instance_id})
            try:
                reached = int(await self._redis.publish(self.control_channel, message))
            except LINK_ERRORS as exc:
                reached = 0
                note = f"Redis unreachable ({_describe(exc)}): done on this instance only"
            if not self.subscribed:
                # This instance does not hear the channel now: it acts directly.
                answers[self.instance_id] = (await self._run_here(action)).to_json()
                reached += 1
            deadline = time.monotonic() + self._admin_timeout
            while len(answers) < reached:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                arrived.clear()
                await wait_event(arrived, left)
        finally:
            del self._admin_calls[request]
        cluster: dict[str, Any] = {
            "instances_reached": reached,
            "instances_answered": len(answers),
            "by_instance": {
                name: {k: answer[k] for k in ("connections_before", "connections_after", "closed")}
                for name, answer in sorted(answers.items())
            },
        }
        if len(answers) < reached:
            cluster["note"] = (
                f"{reached - len(answers)} instance(s) did not answer within "
                f"{self._admin_timeout:g} s"
            )
        if note is not None:
            cluster["note"] = note
        return AdminResult(
            action,
            sum(a["connections_before"] for a in answers.values()),
            sum(a["connections_after"] for a in answers.values()),
            sum(a["closed"] for a in answers.values()),
            cluster,
        )

    def _run_here(self, action: str) -> Awaitable[AdminResult]:
        runs: dict[str, Callable[[], Awaitable[AdminResult]]] = {
            "restart": self.hub.restart_here,
            "reset": self.hub.reset_here,
            "broadcast_reconnect": self.hub.broadcast_reconnect_here,
        }
        return runs[action]()

    async def _answer(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action not in ADMIN_ACTIONS:
            return
        result = await self._run_here(str(action))
        log.info(
            "SSE admin %s asked by instance %s: %s closed here",
            action,
            message.get("from"),
            result.closed,
        )
        reply = {"request": message["request"], "instance": self.instance_id}
        reply["result"] = result.to_json()
        try:
            await self._redis.publish(self.replies_channel, json.dumps(reply))
        except LINK_ERRORS as exc:
            log.warning("could not answer SSE admin %s: %s", action, _describe(exc))

    def _on_reply(self, reply: dict[str, Any]) -> None:
        call = self._admin_calls.get(reply.get("request", ""))
        if call is None:
            return
        answers, arrived = call
        answers[str(reply["instance"])] = reply["result"]
        arrived.set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- health --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "instance": self.instance_id,
            "redis": {
                "status": "up" if self.subscribed else "down",
                "subscribed": self.subscribed,
                "link_breaks": self.link_breaks,
                "last_error": self.last_error,
                "jobs_followed": len(self._synced),
            },
        }

    async def check(self) -> ComponentHealth:
        """/api/health's `redis` component: a PING, and whether the subscription is up."""
        figures = {"instance": self.instance_id, "subscribed": self.subscribed}
        try:
            await self._redis.ping()
        except LINK_ERRORS as exc:
            return ComponentHealth(
                "redis",
                Status.DOWN,
                f"unreachable ({_describe(exc)}): events cannot be published",
                figures,
                reason="redis_down",
                params={"error": _describe(exc)},
            )
        if not self.subscribed:
            return ComponentHealth(
                "redis",
                Status.DEGRADED,
                "reachable; resubscribing to the SSE channels",
                figures,
                reason="redis_resubscribing",
            )
        return ComponentHealth("redis", Status.HEALTHY, "up", figures, reason="redis_up")
