"""The SSE hub: per-job event history, live fan-out to streams, heartbeats, limits, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

from services.clock import Clock
from services.errors import DomainError, InvalidInput, NotFound
from services.health import ComponentHealth, Status

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_LINES = re.compile(r"\r\n|\r|\n")

# Event types the hub itself sends; a publisher may not use them.
RESERVED_TYPES = frozenset({"heartbeat", "reconnect", "gap", "overloaded"})

# Why a connection ended; also the `reason` label of sse_connections_closed_total.
FINISHED = "finished"
CLIENT_GONE = "client_gone"
SLOW = "slow_client"
IDLE = "idle"
RESET = "reset"
RESTART = "restart"
RECONNECT = "reconnect"
SHUTDOWN = "shutdown"
# The server stops writing at once (the client is not reading or is gone).
ABORTED_REASONS = frozenset({CLIENT_GONE, SLOW, IDLE})

# Streams the timer's rounds (heartbeats, the tidy-up) go through per event-loop turn. A
# heartbeat write is a socket send, 5-15 us: a slice holds the loop 0.5-1.5 ms.
SLICE = 100
# A round rests between two slices at least this many times as long as the last slice
# took, so it holds at most a quarter of the loop while it runs (see `_in_slices`)...
_REST_FACTOR = 3
# ... and spreads over this share of its period when the slices leave room,
_SPREAD = 0.1
# ... but never rests longer than this between two slices.
_MAX_REST = 0.05
_T = TypeVar("_T")


class JobFinished(DomainError):
    code = "job_finished"
    http_status = 409


class Overloaded(DomainError):
    code = "too_many_connections"
    http_status = 503


# --- encoding (pure) -----------------------------------------------------------------------


def encode_event(
    data: str,
    *,
    event_type: str | None = None,
    event_id: str | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """One SSE event as UTF-8 bytes: a `data:` line per payload line, ended by a blank line."""
    parts: list[str] = []
    if retry_ms is not None:
        parts.append(f"retry: {int(retry_ms)}\n")
    if event_id is not None:
        if any(c in event_id for c in "\0\r\n"):
            raise InvalidInput("an event id may not contain NUL, CR or LF")
        parts.append(f"id: {event_id}\n")
    if event_type is not None:
        if any(c in event_type for c in "\r\n"):
            raise InvalidInput("an event type may not contain CR or LF")
        parts.append(f"event: {event_type}\n")
    parts.extend(f"data: {line}\n" for line in _LINES.split(data))
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def chunk(payload: bytes) -> bytes:
    """HTTP/1.1 chunked framing of one piece, done once per event, not per subscriber."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


@dataclass(frozen=True, slots=True)
class Frame:
    """Bytes of one event, ready for both kinds of wire: chunked (HTTP/1.1) and raw (1.0)."""

    raw: bytes
    chunked: bytes

    @classmethod
    def of(cls, raw: bytes) -> Frame:
        return cls(raw, chunk(raw))


def retry_hint(base_ms: int, rng: random.Random) -> int:
    """The reconnect delay told to one client: base ±20%, so a reconnect storm spreads out."""
    return max(100, round(base_ms * rng.uniform(0.8, 1.2)))


def parse_last_event_id(value: str | None) -> int | None:
    """`Last-Event-ID` as the hub's integer ids; empty means none (the WHATWG reset)."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise InvalidInput(
            "Last-Event-ID is not an event id of this service (a non-negative integer)",
            detail={"field": "Last-Event-ID"},
        )
    return int(text)


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise InvalidInput(
            "a job id is 1-128 characters: letters, digits and _ . : - (starting alphanumeric)",
            detail={"field": "job_id"},
        )
    return job_id


def check_event_type(event_type: str) -> str:
    if not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidInput(
            "an event type is 1-64 characters: letters, digits and _ . - (starting with a letter)",
            detail={"field": "type"},
        )
    if event_type in RESERVED_TYPES:
        raise InvalidInput(
            f"event type {event_type!r} is reserved for the hub "
            f"({', '.join(sorted(RESERVED_TYPES))})",
            detail={"field": "type"},
        )
    return event_type


def dumps(data: Any) -> str:
    try:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"data is not JSON: {exc}", detail={"field": "data"}) from None


# --- state ---------------------------------------------------------------------------------


class Sink(Protocol):
    """Where a connection's bytes go; the web edge wraps the socket, tests a buffer."""

    def send(self, frame: Frame) -> int:
        """Write without waiting; the bytes still queued for the client, or -1 if it is gone."""

    def buffered(self) -> int:
        """Bytes queued for the client and not yet taken by the kernel; -1 if it is gone."""

    def abort(self) -> None:
        """Drop the connection now, queued bytes and all."""

    def end(self) -> None:
        """End the stream cleanly: the last bytes, then the close once the client has them."""


@dataclass(frozen=True, slots=True)
class Event:
    job_id: str
    id: int
    type: str
    data: str
    final: bool
    at: float
    frame: Frame


@dataclass(frozen=True, slots=True)
class Published:
    event: Event
    delivered: int

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "job_id": e.job_id,
            "id": e.id,
            "type": e.type,
            "final": e.final,
            "delivered_to": self.delivered,
        }


# A history entry is one bytes object: the head below, the type and data (UTF-8), then the
# raw frame. Bytes are invisible to the cyclic collector, so keeping 1,000 events/s for replay
# adds nothing to its counts or to the heap a full collection walks; as Event and Frame
# instances they were two tracked objects per event and pulled full passes into steady
# traffic (docs/benchmarks-history.md, SSE). Hand-packed because no container of Python objects is.
_HEAD = struct.Struct("<qd?II")  # id, at, final, len(type), len(data)
_AT_OFFSET = 8


def _pack(event: Event) -> bytes:
    kind = event.type.encode()
    data = event.data.encode()
    head = _HEAD.pack(event.id, event.at, event.final, len(kind), len(data))
    return b"".join((head, kind, data, event.frame.raw))


def _entry_id(entry: bytes) -> int:
    return int.from_bytes(entry[:8], "little", signed=True)


def _entry_at(entry: bytes) -> float:
    (at,) = struct.unpack_from("<d", entry, _AT_OFFSET)
    return float(at)


class Job:
    __slots__ = (
        "counted",
        "entries",
        "finished_at",
        "id",
        "last_event_at",
        "last_id",
        "probe",
        "streams",
    )

    def __init__(
        self, job_id: str, *, history_size: int, probe: bool, now: float, counted: bool = True
    ) -> None:
        self.id = job_id
        # Whether its streams count in `sse_connections_open` (the live board's own do not:
        # an open board must not hide the runbook's "no active connections" alert).
        self.counted = counted
        self.entries: deque[bytes] = deque(maxlen=history_size)
        self.last_id = 0
        self.last_event_at = now
        self.finished_at: float | None = None
        self.probe = probe
        self.streams: dict[int, Connection] = {}

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def history(self) -> tuple[Event, ...]:
        """The events kept for replay, oldest first (built on demand from `entries`)."""
        return tuple(self._event(entry) for entry in self.entries)

    def record(self, event: Event) -> None:
        """Keep an event for replay; the oldest goes when the history is full."""
        self.entries.append(_pack(event))

    def _event(self, entry: bytes) -> Event:
        n, at, final, type_len, data_len = _HEAD.unpack_from(entry)
        start = _HEAD.size
        kind = entry[start : start + type_len].decode()
        start += type_len
        data = entry[start : start + data_len].decode()
        raw = entry[start + data_len :]
        return Event(self.id, n, kind, data, final, at, Frame.of(raw))

    def missed(self, last_event_id: int | None) -> tuple[list[Event], int | None]:
        """Events after `last_event_id` still in history, and the first id lost, if any."""
        after = 0 if last_event_id is None else last_event_id
        entries = self.entries
        events = [self._event(e) for e in entries if _entry_id(e) > after]
        oldest = _entry_id(entries[0]) if entries else self.last_id + 1
        gap = after + 1 if after + 1 < oldest and after < self.last_id else None
        return events, gap


class Connection:
    """One open stream: its sink and the times the idle cleanup needs. Nothing waits on it;
    the sink tells the hub when its client goes (`detach`), the hub ends it (`_close`)."""

    __slots__ = ("id", "job", "last_attempt", "last_ok", "opened", "reason", "sink")

    def __init__(self, conn_id: int, job: Job, sink: Sink, now: float) -> None:
        self.id = conn_id
        self.job = job
        self.sink = sink
        self.opened = now
        self.last_ok = now
        self.last_attempt = now
        # Why it ended; None while open.
        self.reason: str | None = None


@dataclass(frozen=True)
class HubConfig:
    max_connections: int = 1000
    heartbeat_seconds: float = 30.0
    idle_timeout_seconds: float = 300.0
    cleanup_interval_seconds: float = 30.0
    history_size: int = 1000
    history_seconds: float = 3600.0
    retry_ms: int = 3000
    client_buffer_bytes: int = 1024 * 1024
    probe_jobs: tuple[str, ...] = ("test-job-id", "test-job")


@dataclass(frozen=True)
class AdminResult:
    """What an admin action did, for the HTTP answer and the bot's reply."""

    action: str
    connections_before: int
    connections_after: int
    closed: int
    # With REDIS_URL: how many instances were reached and answered, and each one's counts.
    cluster: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "connections_before": self.connections_before,
            "connections_after": self.connections_after,
            "closed": self.closed,
            **(self.cluster or {}),
        }


class Relay(Protocol):
    """Shares a hub's jobs with other instances (services/sse_redis.py, when REDIS_URL is set)."""

    async def load(self, job_id: str) -> None:
        """Bring the job's local history up to date before it is looked up and streamed."""

    async def publish(
        self, job_id: str, event_type: str, payload: str, *, final: bool
    ) -> Published:
        """Record a checked event for every instance; delivery counts this instance's streams."""

    async def admin(self, action: str) -> AdminResult:
        """Run `restart`, `reset` or `broadcast_reconnect` on every instance; the sum."""

    def snapshot(self) -> dict[str, Any]:
        """What /api/generation/health adds: the instance id and the Redis link."""


@dataclass(frozen=True)
class Attached:
    """A stream after `attach`: the connection if it stays open, and what was replayed."""

    connection: Connection | None
    replayed: int


class SSEMetrics:
    """The runbook's SSE metrics, on the process registry."""

    def __init__(self, registry: CollectorRegistry, hub: SSEHub) -> None:
        self._hub = hub
        self.connections_open = Gauge(
            "sse_connections_open", "Open SSE streams.", registry=registry
        )
        self.connections_open.set_function(
            lambda: float(len(hub.connections) - hub.uncounted_streams())
        )
        self.board_streams_open = Gauge(
            "sunflow_board_streams_open",
            "Open streams of the live board (not counted in sse_connections_open).",
            registry=registry,
        )
        self.board_streams_open.set_function(lambda: float(hub.uncounted_streams()))
        self.message_sent = Counter(
            "sse_message_sent_total",
            "SSE messages written to streams, by kind (event, heartbeat, control).",
            ["kind"],
            registry=registry,
        )
        self.connection_duration = Histogram(
            "sse_connection_duration_seconds",
            "How long SSE streams stayed open.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
            registry=registry,
        )
        self.delivery_success_rate = Gauge(
            "sse_message_delivery_success_rate",
            "Share of SSE writes accepted by live streams over the last minute (1 when idle).",
            registry=registry,
        )
        self.delivery_success_rate.set(1.0)
        self.heartbeat_response_time = Histogram(
            "sse_heartbeat_response_time",
            "Seconds to write one heartbeat round to every stream.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.connections_closed = Counter(
            "sse_connections_closed_total",
            "SSE streams ended, by reason.",
            ["reason"],
            registry=registry,
        )
        self.connections_refused = Counter(
            "sse_connections_refused_total",
            "SSE streams refused because MAX_SSE_CONNECTIONS were open.",
            registry=registry,
        )
        self.events_published = Counter(
            "sse_events_published_total", "Job events published to the hub.", registry=registry
        )
        registry.register(_ReconnectCollector(hub))
        # Every series the runbook's rules read exists from the start, at 0, so that the
        # first event is seen by rate().
        for kind in ("event", "heartbeat", "control"):
            self.message_sent.labels(kind)


class _ReconnectCollector(Collector):
    """`sse_reconnect_count` by its exact runbook name (a Counter would add `_total`)."""

    def __init__(self, hub: SSEHub) -> None:
        self._hub = hub

    def collect(self) -> Iterable[Metric]:
        yield UnknownMetricFamily(
            "sse_reconnect_count",
            "SSE streams opened with Last-Event-ID (a client resuming); monotonic.",
            value=float(self._hub.reconnects),
        )


async def _in_slices(
    items: list[_T],
    work: Callable[[list[_T]], object],
    *,
    size: int = SLICE,
    period: float = 0.0,
) -> None:
    """`work` on `size` items per event-loop turn. Between two slices it rests at least
    `_REST_FACTOR` times as long as the last one took, and long enough to spread the round
    over `_SPREAD` of its `period` (at most `_MAX_REST`): a round takes at most a quarter of
    the loop while it runs, on a core shared with other work too, and a request that needs a
    few loop turns meets one slice, not one per turn."""
    slices = -(-len(items) // size)
    spread = period * _SPREAD / slices if slices else 0.0
    took = 0.0
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(min(_MAX_REST, max(took * _REST_FACTOR, spread - took)))
        began = time.perf_counter()
        work(items[start : start + size])
        took = time.perf_counter() - began


class SSEHub:
    """Every open stream of this process and the recent events of every known job."""

    def __init__(
        self,
        config: HubConfig,
        *,
        clock: Clock,
        registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
        relay: Callable[[SSEHub], Relay] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self.jobs: dict[str, Job] = {}
        self.connections: dict[int, Connection] = {}
        self.reconnects = 0
        self._ids = itertools.count(1)
        self._pending = 0
        self._timer: asyncio.Task[None] | None = None
        self.started_at = time.monotonic()
        self.created_at = self.started_at
        self.last_heartbeat: float | None = None
        self.last_heartbeat_wall: str | None = None
        self._attempts = 0
        self._accepted = 0
        self._window_started = self.started_at
        self.metrics = SSEMetrics(registry or CollectorRegistry(), self)
        # The link to the other instances (REDIS_URL), made for this hub; None: it is alone.
        self.relay: Relay | None = relay(self) if relay is not None else None
        for job_id in config.probe_jobs:
            self.jobs[job_id] = self._new_job(job_id, probe=True)

    def uncounted_streams(self) -> int:
        """Open streams of jobs kept out of `sse_connections_open` (the live board's)."""
        return sum(len(job.streams) for job in self.jobs.values() if not job.counted)

    # --- jobs and events -----------------------------------------------------------------

    def _new_job(self, job_id: str, *, probe: bool = False) -> Job:
        return Job(
            job_id, history_size=self.config.history_size, probe=probe, now=time.monotonic()
        )

    def publish(
        self, job_id: str, event_type: str, data: Any, *, final: bool = False
    ) -> Published:
        """Record an event and write it to the job's streams; never waits on a client."""
        check_job_id(job_id)
        check_event_type(event_type)
        payload = dumps(data)
        job = self.jobs.get(job_id)
        if job is None:
            job = self.jobs[job_id] = self._new_job(job_id)
        if job.finished:
            raise JobFinished(
                f"job {job_id!r} has finished; it takes no more events",
                detail={"job_id": job_id, "last_event_id": job.last_id},
            )
        if final and job.probe:
            raise InvalidInput(
                f"{job_id!r} is a diagnostic job (SSE_PROBE_JOBS); it never finishes",
                detail={"field": "final"},
            )
        now = time.monotonic()
        job.last_id += 1
        frame = Frame.of(encode_event(payload, event_type=event_type, event_id=str(job.last_id)))
        event = Event(job_id, job.last_id, event_type, payload, final, now, frame)
        job.record(event)
        job.last_event_at = now
        self.metrics.events_published.inc()
        delivered = self._fan_out(list(job.streams.values()), frame, "event", now)
        if final:
            job.finished_at = now
            for conn in list(job.streams.values()):
                self._close(conn, FINISHED)
        return Published(event, delivered)

    def job_state(self, job_id: str, last_event_id: int | None) -> tuple[Job, bool]:
        """The job to stream and whether anything is left to send; NotFound if unknown."""
        check_job_id(job_id)
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(
                f"no job {job_id!r}: a job exists from its first published event "
                "(POST /api/generation/jobs/{job_id}/events) until its history expires",
                detail={"job_id": job_id},
            )
        if last_event_id is not None:
            self.reconnects += 1
        if not job.finished:
            return job, True
        events, _gap = job.missed(last_event_id)
        return job, bool(events)

    # --- streams -------------------------------------------------------------------------

    def admit(self) -> None:
        """Reserve a place for a stream about to open; Overloaded when the limit is reached."""
        if len(self.connections) + self._pending >= self.config.max_connections:
            self.metrics.connections_refused.inc()
            raise Overloaded(
                f"{self.config.max_connections} SSE streams are open (MAX_SSE_CONNECTIONS)",
                detail={"max_connections": self.config.max_connections},
            )
        self._pending += 1

    def release(self) -> None:
        """Give back a place taken by `admit` (after `attach`, or when the stream failed)."""
        self._pending = max(0, self._pending - 1)

    def retry_ms(self) -> int:
        return retry_hint(self.config.retry_ms, self._rng)

    def refusal_retry_ms(self) -> int:
        """A longer, spread-out delay for clients refused at MAX_SSE_CONNECTIONS."""
        return retry_hint(self.config.retry_ms * 5, self._rng)

    def attach(self, job_id: str, sink: Sink, last_event_id: int | None) -> Attached:
        """Replay what the client missed, then subscribe it; synchronous, so no event falls
        between the replay and the live stream and none comes twice."""
        job = self.jobs.get(job_id)
        if job is None:  # forgotten between the check and now: the stream just ends
            return Attached(None, 0)
        now = time.monotonic()
        events, gap = job.missed(last_event_id)
        if gap is not None:
            note = dumps({"missed_from": gap, "resumed_at": events[0].id if events else None})
            sink.send(Frame.of(encode_event(note, event_type="gap")))
            self.metrics.message_sent.labels("control").inc()
        for event in events:
            sink.send(event.frame)
        if events:
            self.metrics.message_sent.labels("event").inc(len(events))
        if job.finished:
            return Attached(None, len(events))
        conn = Connection(next(self._ids), job, sink, now)
        self.connections[conn.id] = conn
        job.streams[conn.id] = conn
        if last_event_id is not None:
            log.info("SSE connection established (client reconnected) c%s job=%s", conn.id, job_id)
        return Attached(conn, len(events))

    def detach(self, conn: Connection, reason: str) -> None:
        """The sink's connection ended (its client went away): forget the connection."""
        self._close(conn, reason)

    def _close(self, conn: Connection, reason: str) -> bool:
        if self.connections.pop(conn.id, None) is None:
            return False
        conn.job.streams.pop(conn.id, None)
        conn.reason = reason
        self.metrics.connection_duration.observe(time.monotonic() - conn.opened)
        self.metrics.connections_closed.labels(reason).inc()
        if reason in ABORTED_REASONS:
            conn.sink.abort()
        else:
            conn.sink.end()
        return True

    def _fan_out(self, conns: Iterable[Connection], frame: Frame, kind: str, now: float) -> int:
        """Write one frame to many streams; drops the gone and the slow. Returns writes."""
        limit = self.config.client_buffer_bytes
        written = 0
        attempts = 0
        dropped: list[tuple[Connection, str]] = []
        for conn in conns:
            attempts += 1
            left = conn.sink.send(frame)
            conn.last_attempt = now
            if left == 0:
                conn.last_ok = now
                written += 1
            elif left < 0:
                dropped.append((conn, CLIENT_GONE))
            elif left > limit:
                dropped.append((conn, SLOW))
            else:
                written += 1
        for conn, reason in dropped:
            if reason == SLOW:
                log.warning(
                    "SSE connection lost for client c%s (job %s): more than %s bytes unread; "
                    "it can resume with Last-Event-ID",
                    conn.id,
                    conn.job.id,
                    limit,
                )
            self._close(conn, reason)
        self._attempts += attempts
        self._accepted += written
        if written:
            self.metrics.message_sent.labels(kind).inc(written)
        return written

    # --- the shared timer ----------------------------------------------------------------

    async def start(self) -> None:
        if self._timer is None or self._timer.done():
            self.started_at = time.monotonic()
            self._timer = asyncio.create_task(self._run_timer(), name="sse-hub-timer")

    async def stop(self, reason: str = SHUTDOWN) -> int:
        """Stop the timer and end every stream; the number of streams ended."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        return self.close_all(reason)

    @property
    def running(self) -> bool:
        return self._timer is not None and not self._timer.done()

    def close_all(self, reason: str) -> int:
        closed = 0
        for conn in list(self.connections.values()):
            closed += self._close(conn, reason)
        return closed

    async def _run_timer(self) -> None:
        """Heartbeats every `heartbeat_seconds`, the tidy-up every `cleanup_interval_seconds`;
        asleep in between. Both go through the streams a slice at a time (`SLICE`)."""
        cfg = self.config
        next_heartbeat = time.monotonic() + cfg.heartbeat_seconds
        next_cleanup = time.monotonic() + cfg.cleanup_interval_seconds
        while True:
            await asyncio.sleep(max(0.0, min(next_heartbeat, next_cleanup) - time.monotonic()))
            now = time.monotonic()
            try:
                if now >= next_heartbeat:
                    next_heartbeat = now + cfg.heartbeat_seconds
                    await self.heartbeat()
                if now >= next_cleanup:
                    next_cleanup = now + cfg.cleanup_interval_seconds
                    await self.tidy()
            except Exception:  # the timer must outlive a bug in one round
                log.exception("SSE hub timer round failed")

    async def tidy(self) -> int:
        """`cleanup` a slice of streams per loop turn, so that at 20,000 streams no turn holds
        the loop for more than a fraction of a millisecond; the number of streams closed."""
        closed = 0

        def tidy_streams(part: list[Connection]) -> None:
            nonlocal closed
            now = time.monotonic()
            live = [c for c in part if c.reason is None]  # closed since the list was taken
            closed += self.sweep(now, live) + self.close_idle(now, live)

        period = self.config.cleanup_interval_seconds
        await _in_slices(list(self.connections.values()), tidy_streams, period=period)
        await asyncio.sleep(0)
        await _in_slices(
            list(self.jobs.values()), lambda p: self.expire(time.monotonic(), p), period=period
        )
        return closed

    def sweep(self, now: float, conns: Iterable[Connection] | None = None) -> int:
        """Free the streams whose client went away and note writes that have drained since
        (a sink normally reports its client's departure itself, at once)."""
        gone = []
        for conn in self.connections.values() if conns is None else conns:
            if conn.reason is not None:  # closed since the list was taken
                continue
            left = conn.sink.buffered()
            if left < 0:
                gone.append(conn)
            elif left == 0 and conn.last_attempt > conn.last_ok:
                conn.last_ok = now
        for conn in gone:
            log.debug("SSE connection lost for client c%s (job %s)", conn.id, conn.job.id)
            self._close(conn, CLIENT_GONE)
        if now - self._window_started >= 60:
            self._roll_delivery_window(now)
        return len(gone)

    def _roll_delivery_window(self, now: float) -> None:
        rate = self._accepted / self._attempts if self._attempts else 1.0
        self.metrics.delivery_success_rate.set(rate)
        self._attempts = self._accepted = 0
        self._window_started = now

    async def heartbeat(self, *, batch: int | None = None) -> int:
        """One heartbeat round to every stream, encoded once; the number written. Written
        `batch` (`SLICE`) streams per loop turn, with rests between (`_in_slices`)."""
        started = time.perf_counter()
        wall = self._clock.now()
        payload = dumps(
            {
                "type": "heartbeat",
                "timestamp": wall.isoformat(),
                "server_time": int(wall.timestamp()),
            }
        )
        frame = Frame.of(encode_event(payload, event_type="heartbeat"))
        written = attempted = 0

        def beat(part: list[Connection]) -> None:
            nonlocal written, attempted
            # A stream closed meanwhile may be writing its last chunk: nothing after that.
            live = [c for c in part if c.reason is None]
            attempted += len(live)
            written += self._fan_out(live, frame, "heartbeat", time.monotonic())

        await _in_slices(
            list(self.connections.values()),
            beat,
            size=batch or SLICE,
            period=self.config.heartbeat_seconds,
        )
        if written < attempted:
            log.error(
                "Failed to send SSE heartbeat to %s of %s streams", attempted - written, attempted
            )
        self.last_heartbeat = time.monotonic()
        self.last_heartbeat_wall = wall.isoformat()
        self.metrics.heartbeat_response_time.observe(time.perf_counter() - started)
        return written

    def cleanup(self, now: float) -> int:
        """The tidy-up in one go: free gone clients, close streams with no successful write
        for the idle timeout, forget old events and jobs; the number of streams closed."""
        closed = self.sweep(now) + self.close_idle(now)
        self.expire(now)
        return closed

    def close_idle(self, now: float, conns: Iterable[Connection] | None = None) -> int:
        """Close streams with no successful write for the idle timeout."""
        limit = self.config.idle_timeout_seconds
        candidates = self.connections.values() if conns is None else conns
        stale = [c for c in candidates if c.reason is None and now - c.last_ok > limit]
        for conn in stale:
            log.warning(
                "SSE connection c%s (job %s) idle for %.0f s: closed",
                conn.id,
                conn.job.id,
                now - conn.last_ok,
            )
            self._close(conn, IDLE)
        return len(stale)

    def expire(self, now: float, jobs: Iterable[Job] | None = None) -> int:
        """Drop events older than the history age, and jobs nobody follows that have aged out
        (of all jobs, or of `jobs`)."""
        horizon = now - self.config.history_seconds
        forgotten = []
        for job in self.jobs.values() if jobs is None else jobs:
            entries = job.entries
            while entries and _entry_at(entries[0]) < horizon:
                entries.popleft()
            if job.probe or job.streams:
                continue
            ended = job.finished_at if job.finished_at is not None else job.last_event_at
            if ended < horizon:
                forgotten.append(job.id)
        for job_id in forgotten:
            self.jobs.pop(job_id, None)
        return len(forgotten)

    # --- admin actions (HTTP admin routes and the bot's /sse_reset) ----------------------

    async def restart(self) -> AdminResult:
        """Drain every stream and restart the timer (on every instance, with a relay)."""
        if self.relay is not None:
            return await self.relay.admin("restart")
        return await self.restart_here()

    async def reset_connections(self) -> AdminResult:
        """Close every stream (on every instance, with a relay)."""
        if self.relay is not None:
            return await self.relay.admin("reset")
        return await self.reset_here()

    async def broadcast_reconnect(self) -> AdminResult:
        """Tell every stream to reconnect (on every instance, with a relay)."""
        if self.relay is not None:
            return await self.relay.admin("broadcast_reconnect")
        return await self.broadcast_reconnect_here()

    async def restart_here(self) -> AdminResult:
        """Drain every stream and restart the timer; histories stay so clients resume."""
        before = len(self.connections)
        closed = await self.stop(RESTART)
        await self.start()
        log.info("SSE hub restarted: %s streams drained", closed)
        return AdminResult("restart", before, len(self.connections), closed)

    async def reset_here(self) -> AdminResult:
        """Close every stream now; browsers reconnect by themselves with Last-Event-ID."""
        before = len(self.connections)
        closed = self.close_all(RESET)
        log.info("SSE connections reset: %s closed", closed)
        return AdminResult("reset", before, len(self.connections), closed)

    async def broadcast_reconnect_here(self) -> AdminResult:
        """Tell every stream to reconnect (a `reconnect` event with a spread-out `retry:`),
        then end the streams so even clients without a handler come back."""
        before = len(self.connections)
        variants = [self._reconnect_frame(self.retry_ms()) for _ in range(8)]
        conns = list(self.connections.values())
        now = time.monotonic()
        for index, frame in enumerate(variants):
            self._fan_out(conns[index :: len(variants)], frame, "control", now)
        closed = self.close_all(RECONNECT)
        log.info("SSE broadcast-reconnect: %s streams told to reconnect", closed)
        return AdminResult("broadcast_reconnect", before, len(self.connections), closed)

    @staticmethod
    def _reconnect_frame(retry: int) -> Frame:
        data = dumps({"type": "reconnect", "retry_ms": retry, "reason": "operator request"})
        return Frame.of(encode_event(data, event_type="reconnect", retry_ms=retry))

    # --- health --------------------------------------------------------------------------

    def per_job(self, limit: int = 100) -> dict[str, int]:
        """Streams per job, the busiest first."""
        counts = [(len(j.streams), j.id) for j in self.jobs.values() if j.streams]
        counts.sort(key=lambda pair: (-pair[0], pair[1]))
        return {job_id: n for n, job_id in counts[:limit]}

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "status": self.status().value,
            "sse_connections": len(self.connections),
            "max_connections": self.config.max_connections,
            "connections_per_job": self.per_job(),
            "jobs": len(self.jobs),
            "jobs_streaming": sum(1 for j in self.jobs.values() if j.streams),
            "last_heartbeat": self.last_heartbeat_wall,
            "last_heartbeat_age_seconds": (
                None if self.last_heartbeat is None else round(now - self.last_heartbeat, 3)
            ),
            "heartbeat_seconds": self.config.heartbeat_seconds,
            "uptime_seconds": round(now - self.started_at, 3),
            "process_uptime_seconds": round(now - self.created_at, 3),
            "reconnects": self.reconnects,
            "timer_running": self.running,
            **(self.relay.snapshot() if self.relay is not None else {}),
        }

    def status(self) -> Status:
        if not self.running:
            return Status.DOWN
        if len(self.connections) >= self.config.max_connections:
            return Status.DEGRADED
        return Status.HEALTHY

    async def check(self) -> ComponentHealth:
        status = self.status()
        detail = {
            Status.HEALTHY: "streaming",
            Status.DEGRADED: "at MAX_SSE_CONNECTIONS: new streams are refused",
            Status.DOWN: "the hub timer is not running (heartbeats and cleanup stopped)",
        }[status]
        return ComponentHealth(
            "sse",
            status,
            detail,
            {
                "sse_connections": len(self.connections),
                "max_connections": self.config.max_connections,
            },
            reason=f"sse_{status.value}",
            params={"connections": len(self.connections)},
        )

    # --- the seam to other instances (services/sse_redis.py) -----------------------------

    async def lookup(self, job_id: str, last_event_id: int | None) -> tuple[Job, bool]:
        """`job_state`, after the relay (if any) has brought the job's history up to date."""
        check_job_id(job_id)
        if self.relay is not None:
            await self.relay.load(job_id)
        return self.job_state(job_id, last_event_id)

    async def submit(
        self, job_id: str, event_type: str, data: Any, *, final: bool = False
    ) -> Published:
        """`publish` for a publisher: through the relay (every instance) when there is one."""
        if self.relay is None:
            return self.publish(job_id, event_type, data, final=final)
        check_job_id(job_id)
        check_event_type(event_type)
        payload = dumps(data)
        if final and job_id in self.config.probe_jobs:
            raise InvalidInput(
                f"{job_id!r} is a diagnostic job (SSE_PROBE_JOBS); it never finishes",
                detail={"field": "final"},
            )
        return await self.relay.publish(job_id, event_type, payload, final=final)

    def deliver(
        self,
        job_id: str,
        event_id: int,
        event_type: str,
        payload: str,
        *,
        final: bool,
        age: float = 0.0,
        create: bool = False,
    ) -> int | None:
        """Take an event numbered elsewhere (the relay): record it and write it to the job's
        streams. None if the job is unknown here (and not `create`) or the id is not new."""
        job = self.jobs.get(job_id)
        if job is None:
            if not create:
                return None
            job = self.jobs[job_id] = self._new_job(job_id)
        if event_id <= job.last_id or job.finished:
            return None
        now = time.monotonic()
        at = now - max(0.0, age)
        job.last_id = event_id
        frame = Frame.of(encode_event(payload, event_type=event_type, event_id=str(event_id)))
        job.record(Event(job_id, event_id, event_type, payload, final, at, frame))
        job.last_event_at = max(job.last_event_at, at)
        delivered = self._fan_out(list(job.streams.values()), frame, "event", now)
        if final:
            job.finished_at = at
            for conn in list(job.streams.values()):
                self._close(conn, FINISHED)
        return delivered
