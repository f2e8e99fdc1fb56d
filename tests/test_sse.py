import asyncio
import gc
import json
import random
import time
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.clock import FrozenClock
from services.errors import InvalidInput, NotFound
from services.sse import (
    CLIENT_GONE,
    FINISHED,
    IDLE,
    SLICE,
    SLOW,
    Frame,
    HubConfig,
    JobFinished,
    Overloaded,
    SSEHub,
    check_event_type,
    check_job_id,
    chunk,
    encode_event,
    parse_last_event_id,
    retry_hint,
)
from tests.sse_wire import BufferSink, parse

NOW = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


def make_hub(**overrides: object) -> tuple[SSEHub, CollectorRegistry]:
    registry = CollectorRegistry()
    config = HubConfig(**overrides)  # type: ignore[arg-type]
    return SSEHub(
        config, clock=FrozenClock(NOW), registry=registry, rng=random.Random(7)
    ), registry


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        ("one", ["data: one"]),
        ("a\nb", ["data: a", "data: b"]),
        ("a\r\nb", ["data: a", "data: b"]),
        ("a\rb", ["data: a", "data: b"]),
        ("a\n\nb", ["data: a", "data: ", "data: b"]),
        ("", ["data: "]),
        ("trailing\n", ["data: trailing", "data: "]),
        ("한국어 ✓", ["data: 한국어 ✓"]),
    ],
)
def test_one_data_line_per_payload_line(data: str, lines: list[str]) -> None:
    encoded = encode_event(data)
    assert encoded.decode("utf-8") == "\n".join(lines) + "\n\n"
    assert [e.data for e in parse(encoded.decode())] == [
        data.replace("\r\n", "\n").replace("\r", "\n")
    ]


def test_fields_and_their_order() -> None:
    text = encode_event("x", event_type="progress", event_id="7", retry_ms=3000).decode()
    assert text == "retry: 3000\nid: 7\nevent: progress\ndata: x\n\n"
    (event,) = parse(text)
    assert (event.type, event.id, event.retry, event.data) == ("progress", "7", 3000, "x")


@pytest.mark.parametrize("bad", ["1\n2", "1\r", "a\0b"])
def test_ids_never_hold_nul_or_newlines(bad: str) -> None:
    with pytest.raises(InvalidInput):
        encode_event("x", event_id=bad)


def test_chunk_framing() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert Frame.of(b"ab") == Frame(b"ab", b"2\r\nab\r\n")


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("  ", None), ("0", 0), ("42", 42), (" 9 ", 9)],
)
def test_last_event_id_parsing(header: str | None, expected: int | None) -> None:
    assert parse_last_event_id(header) == expected


@pytest.mark.parametrize("header", ["-1", "abc", "1.5", "١٢", "9" * 19])
def test_last_event_id_refused(header: str) -> None:
    with pytest.raises(InvalidInput):
        parse_last_event_id(header)


@pytest.mark.parametrize("job_id", ["", "-x", "a b", "a/b", "x" * 129, "a\nb"])
def test_bad_job_ids(job_id: str) -> None:
    with pytest.raises(InvalidInput):
        check_job_id(job_id)


@pytest.mark.parametrize("event_type", ["", "1x", "a b", "heartbeat", "reconnect", "x" * 65])
def test_bad_event_types(event_type: str) -> None:
    with pytest.raises(InvalidInput):
        check_event_type(event_type)


def test_retry_hint_is_spread_around_the_base() -> None:
    rng = random.Random(1)
    hints = {retry_hint(3000, rng) for _ in range(200)}
    assert min(hints) >= 2400
    assert max(hints) <= 3600
    assert len(hints) > 50


async def test_unknown_job_is_not_found_until_published() -> None:
    hub, _ = make_hub()
    with pytest.raises(NotFound):
        hub.job_state("job-1", None)
    hub.publish("job-1", "progress", {"pct": 1})
    job, more = hub.job_state("job-1", None)
    assert more
    assert job.last_id == 1


async def test_probe_jobs_exist_and_never_finish() -> None:
    hub, _ = make_hub(probe_jobs=("test-job-id",))
    assert hub.job_state("test-job-id", None)[1]
    with pytest.raises(InvalidInput):
        hub.publish("test-job-id", "done", None, final=True)


async def test_live_events_in_order_with_increasing_ids() -> None:
    hub, registry = make_hub()
    hub.publish("j", "progress", 0)
    sink = BufferSink()
    attached = hub.attach("j", sink, None)
    assert attached.replayed == 1
    for pct in (10, 20, 30):
        published = hub.publish("j", "progress", {"pct": pct})
        assert published.delivered == 1
    events = sink.events()
    assert [e.id for e in events] == ["1", "2", "3", "4"]
    assert [json.loads(e.data) for e in events[1:]] == [{"pct": 10}, {"pct": 20}, {"pct": 30}]
    assert sample(registry, "sse_message_sent_total", {"kind": "event"}) == 4
    assert sample(registry, "sse_connections_open") == 1


async def test_each_event_is_encoded_once_for_every_subscriber() -> None:
    hub, _ = make_hub()
    hub.publish("j", "progress", 0)
    sinks = [BufferSink() for _ in range(5)]
    for sink in sinks:
        hub.attach("j", sink, 1)
    hub.publish("j", "progress", 1)
    assert len({id(s.chunks[-1]) for s in sinks}) == 1


async def test_resume_replays_what_was_missed_then_live_none_twice() -> None:
    hub, registry = make_hub()
    for n in range(5):
        hub.publish("j", "progress", n)
    sink = BufferSink()
    hub.attach("j", sink, 3)
    hub.publish("j", "progress", 5)
    assert [e.id for e in sink.events()] == ["4", "5", "6"]
    assert sample(registry, "sse_reconnect_count") == 0  # counted where the request arrives
    hub.job_state("j", 3)
    assert sample(registry, "sse_reconnect_count") == 1


async def test_resume_past_the_history_says_what_was_lost() -> None:
    hub, _ = make_hub(history_size=3)
    for n in range(10):
        hub.publish("j", "progress", n)
    sink = BufferSink()
    hub.attach("j", sink, 2)
    events = sink.events()
    assert events[0].type == "gap"
    assert json.loads(events[0].data) == {"missed_from": 3, "resumed_at": 8}
    assert [e.id for e in events[1:]] == ["8", "9", "10"]


async def test_kept_events_are_not_walked_by_the_collector() -> None:
    """The replay history is bytes, which the cyclic collector never tracks: events kept at
    1,000/s neither count towards its passes nor grow the heap a full collection walks
    (docs/benchmarks-history.md, SSE)."""
    hub, _ = make_hub(history_size=3)
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for n in range(1000):
            hub.publish("k", "progress", {"n": n})
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < 1000  # less than one tracked object left behind per event
    for n in range(5):
        hub.publish("j", "progress", {"n": n, "text": "line\r\nnext ✓"}, final=n == 4)
    job = hub.jobs["j"]
    assert len(job.entries) == 3
    assert not any(gc.is_tracked(entry) for entry in job.entries)
    assert [(e.id, json.loads(e.data)["n"], e.final) for e in job.history] == [
        (3, 2, False),
        (4, 3, False),
        (5, 4, True),
    ]
    last = job.history[-1]
    assert json.loads(last.data) == {"n": 4, "text": "line\r\nnext ✓"}
    assert last.frame == Frame.of(encode_event(last.data, event_type="progress", event_id="5"))


async def test_history_forgets_by_age() -> None:
    hub, _ = make_hub(history_seconds=10)
    hub.publish("j", "progress", 1)
    hub.publish("j", "progress", 2)
    sink = BufferSink()
    conn = hub.attach("j", sink, None).connection
    assert conn is not None
    hub.expire(time.monotonic() + 11)
    assert list(hub.jobs["j"].history) == []
    assert "j" in hub.jobs  # followed, so kept
    hub.detach(conn, CLIENT_GONE)
    hub.expire(time.monotonic() + 11)
    assert "j" not in hub.jobs


async def test_final_event_closes_and_a_finished_job_replays_then_ends() -> None:
    hub, registry = make_hub()
    sink = BufferSink()
    hub.publish("j", "progress", 1)
    conn = hub.attach("j", sink, None).connection
    assert conn is not None
    hub.publish("j", "done", {"url": "x"}, final=True)
    assert conn.reason == FINISHED
    assert sink.ended
    assert not sink.aborted  # a clean end, not a dropped socket
    assert [e.type for e in sink.events()] == ["progress", "done"]
    with pytest.raises(JobFinished):
        hub.publish("j", "progress", 2)
    # A browser reconnecting after the final event: nothing more, so the route answers 204.
    assert hub.job_state("j", 2) == (hub.jobs["j"], False)
    # One that missed the end gets it replayed, and the stream ends after it.
    late = BufferSink()
    assert hub.job_state("j", 1)[1]
    attached = hub.attach("j", late, 1)
    assert attached.connection is None
    assert [e.id for e in late.events()] == ["2"]
    assert sample(registry, "sse_connections_closed_total", {"reason": FINISHED}) == 1


async def test_a_slow_client_is_dropped_and_counted_never_waited_on() -> None:
    hub, registry = make_hub(client_buffer_bytes=4096)
    hub.publish("j", "progress", 0)
    slow, fast = BufferSink(reading=False), BufferSink()
    slow_conn = hub.attach("j", slow, 1).connection
    hub.attach("j", fast, 1)
    assert slow_conn is not None
    for n in range(40):
        hub.publish("j", "progress", {"n": n, "pad": "x" * 200})
    assert slow.aborted
    assert slow_conn.reason == SLOW
    assert len(fast.events()) == 40
    assert sample(registry, "sse_connections_closed_total", {"reason": SLOW}) == 1
    assert hub.jobs["j"].streams.keys() == {c.id for c in hub.connections.values()}


async def test_heartbeat_reaches_every_stream_with_the_runbook_fields() -> None:
    hub, registry = make_hub()
    sinks = [BufferSink() for _ in range(3)]
    for n, sink in enumerate(sinks):
        hub.publish(f"j{n}", "progress", 0)
        hub.attach(f"j{n}", sink, 1)
    assert await hub.heartbeat(batch=2) == 3
    for sink in sinks:
        (beat,) = sink.events()
        assert beat.type == "heartbeat"
        assert beat.id == ""  # heartbeats do not move Last-Event-ID
        body = json.loads(beat.data)
        assert body == {
            "type": "heartbeat",
            "timestamp": NOW.isoformat(),
            "server_time": int(NOW.timestamp()),
        }
    assert hub.snapshot()["last_heartbeat"] == NOW.isoformat()
    assert sample(registry, "sse_heartbeat_response_time_count") == 1
    assert sample(registry, "sse_message_sent_total", {"kind": "heartbeat"}) == 3


async def test_the_shared_timer_beats_and_frees_gone_clients() -> None:
    hub, _ = make_hub(heartbeat_seconds=0.02, cleanup_interval_seconds=0.02)
    hub.publish("j", "progress", 0)
    sink, gone = BufferSink(), BufferSink()
    hub.attach("j", sink, 1)
    gone_conn = hub.attach("j", gone, 1).connection
    assert gone_conn is not None
    tasks_before = len(asyncio.all_tasks())
    await hub.start()
    assert len(asyncio.all_tasks()) == tasks_before + 1  # one timer, not one per stream
    gone.gone = True  # a sink that could not say so itself: the tidy-up finds it
    for _ in range(500):
        if gone_conn.reason is not None and any(e.type == "heartbeat" for e in sink.events()):
            break
        await asyncio.sleep(0.01)
    assert any(e.type == "heartbeat" for e in sink.events())
    assert gone_conn.reason == CLIENT_GONE
    assert len(hub.connections) == 1
    await hub.stop()
    assert hub.connections == {}
    assert sink.ended


async def test_rounds_go_through_the_streams_a_slice_per_loop_turn() -> None:
    hub, registry = make_hub(idle_timeout_seconds=60)
    hub.publish("j", "progress", 0)
    sinks = [BufferSink() for _ in range(2 * SLICE + 1)]
    conns = [hub.attach("j", s, 1).connection for s in sinks]
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    turns = 0
    assert await hub.heartbeat() == len(sinks)
    beat_turns, turns = turns, 0
    sinks[-1].gone = True
    assert await hub.tidy() == 1
    tidy_turns = turns
    counter.cancel()
    # Three slices of streams each: the counter ran between them.
    assert beat_turns >= 2
    assert tidy_turns >= 2
    assert conns[-1] is not None and conns[-1].reason == CLIENT_GONE
    assert sample(registry, "sse_connections_closed_total", {"reason": CLIENT_GONE}) == 1


async def test_idle_streams_are_closed_by_the_cleanup() -> None:
    hub, registry = make_hub(idle_timeout_seconds=60)
    hub.publish("j", "progress", 0)
    stuck, fine = BufferSink(reading=False), BufferSink(reading=False)
    stuck_conn = hub.attach("j", stuck, 1).connection
    fine_conn = hub.attach("j", fine, 1).connection
    assert stuck_conn is not None
    assert fine_conn is not None
    hub.publish("j", "progress", 1)  # queued for both; only the fine client reads it
    fine.drain()
    later = time.monotonic() + 61
    hub.sweep(later - 1)  # notes that the fine client's write went through
    assert hub.cleanup(later) == 1
    assert stuck_conn.reason == IDLE
    assert stuck.aborted
    assert fine_conn.reason is None
    assert sample(registry, "sse_connections_closed_total", {"reason": IDLE}) == 1


async def test_limit_refuses_beyond_max_connections() -> None:
    hub, registry = make_hub(max_connections=2)
    hub.publish("j", "progress", 0)
    for _ in range(2):
        hub.admit()
        hub.attach("j", BufferSink(), None)
        hub.release()
    with pytest.raises(Overloaded):
        hub.admit()
    assert sample(registry, "sse_connections_refused_total") == 1
    await hub.reset_connections()
    hub.admit()  # room again


async def test_admin_actions_report_counts_before_and_after() -> None:
    hub, registry = make_hub()
    hub.publish("j", "progress", 0)
    sinks = [BufferSink() for _ in range(4)]
    for sink in sinks:
        hub.attach("j", sink, 1)
    await hub.start()
    result = await hub.broadcast_reconnect()
    assert (result.connections_before, result.connections_after, result.closed) == (4, 0, 4)
    retries = set()
    for sink in sinks:
        (event,) = sink.events()
        assert event.type == "reconnect"
        assert event.retry is not None
        retries.add(event.retry)
        assert not sink.aborted
    assert len(retries) > 1  # spread out, so they do not all come back at once
    for sink in sinks[:2]:
        hub.attach("j", sink, 1)
    reset = await hub.reset_connections()
    assert reset.to_json() == {
        "action": "reset",
        "connections_before": 2,
        "connections_after": 0,
        "closed": 2,
    }
    hub.attach("j", BufferSink(), 1)
    restarted = await hub.restart()
    assert (restarted.connections_before, restarted.connections_after) == (1, 0)
    assert hub.running
    assert hub.jobs["j"].last_id == 1  # histories survive a restart
    assert sample(registry, "sse_connections_closed_total", {"reason": "reconnect"}) == 4
    await hub.stop()
    assert not hub.running
    assert hub.status().value == "down"


async def test_metrics_use_the_runbook_names() -> None:
    hub, registry = make_hub()
    hub.publish("j", "progress", 0)
    hub.attach("j", BufferSink(), None)
    text = generate_latest(registry).decode()
    for name in (
        "sse_connections_open 1.0",
        "sse_reconnect_count 0.0",
        "sse_message_sent_total{",
        "sse_connection_duration_seconds_bucket",
        "sse_message_delivery_success_rate 1.0",
        "sse_heartbeat_response_time_bucket",
    ):
        assert name in text


async def test_delivery_success_rate_over_the_window() -> None:
    hub, registry = make_hub()
    hub.publish("j", "progress", 0)
    hub.attach("j", BufferSink(), 1)
    for _ in range(3):
        dead = BufferSink()
        hub.attach("j", dead, 1)
        dead.gone = True
    hub.publish("j", "progress", 1)  # 1 of 4 writes accepted
    hub.sweep(time.monotonic() + 61)
    assert sample(registry, "sse_message_delivery_success_rate") == 0.25
