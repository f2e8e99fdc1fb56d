import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.main import background_contexts, open_services
from services.web.app import create_app
from services.web.keys import SERVICES_KEY
from tests.conftest import Client, admin_headers, intake_headers, make_settings
from tests.sse_wire import Received, StreamParser
from tests.waiting import until

EVENTS = "/api/generation/jobs/{}/events"
STREAM = {"Accept": "text/event-stream"}

MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client(migrated_url: str) -> AsyncIterator[MakeClient]:
    """A client for an app built with these setting overrides."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: object) -> Client:
            settings = make_settings(migrated_url, **overrides)
            services = await stack.enter_async_context(open_services(settings))
            app = create_app(settings, services)
            app.cleanup_ctx.extend(background_contexts(services))
            client: Client = TestClient(TestServer(app))
            return await stack.enter_async_context(client)

        yield make


async def publish(
    client: Client, job_id: str, event_type: str = "progress", data: object = None, **extra: object
) -> dict[str, object]:
    body = {"type": event_type, "data": data, **extra}
    resp = await client.post(EVENTS.format(job_id), json=body, headers=intake_headers())
    assert resp.status == 202, await resp.text()
    result: dict[str, object] = await resp.json()
    return result


async def read_events(
    resp: aiohttp.ClientResponse,
    parser: StreamParser,
    until: Callable[[list[Received]], bool],
    timeout: float = 10,
) -> list[Received]:
    async def pump() -> list[Received]:
        while not until(parser.events):
            chunk = await resp.content.readany()
            if not chunk:
                break
            parser.feed(chunk.decode("utf-8"))
        return parser.events

    return await asyncio.wait_for(pump(), timeout)


def _app(client: Client) -> web.Application:
    app = client.app
    assert app is not None
    return app


async def test_stream_headers_retry_and_live_events(client: Client) -> None:
    await publish(client, "job-1", data={"pct": 0})
    resp = await client.get(EVENTS.format("job-1"), headers=STREAM)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    parser = StreamParser()
    await read_events(resp, parser, lambda ev: len(ev) >= 1)
    assert parser.retry is not None
    assert 2400 <= parser.retry <= 3600
    result = await publish(client, "job-1", data={"pct": 50, "note": "line one\nline two"})
    assert result["delivered_to"] == 1
    await publish(client, "job-1", "done", {"url": "https://cdn/x.png"}, final=True)
    events = await read_events(resp, parser, lambda ev: any(e.type == "done" for e in ev))
    assert [(e.id, e.type) for e in events] == [
        ("1", "progress"),
        ("2", "progress"),
        ("3", "done"),
    ]
    assert json.loads(events[1].data) == {"pct": 50, "note": "line one\nline two"}
    assert await resp.content.read() == b""  # the final event ended the stream
    resp.release()


async def test_head_answers_the_headers_without_a_stream(client: Client) -> None:
    await publish(client, "job-head", data=1)
    resp = await client.head(EVENTS.format("job-head"), headers=STREAM)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert await resp.read() == b""
    health = await (await client.get("/api/generation/health")).json()
    assert health["sse_connections"] == 0


async def test_unknown_job_is_404_json(client: Client) -> None:
    resp = await client.get(EVENTS.format("no-such-job"), headers=STREAM)
    assert resp.status == 404
    body = await resp.json()
    assert body["error"] == "not_found"
    assert "first published event" in body["detail"]["message"]


async def test_the_runbook_probe_job_streams_without_a_publisher(client: Client) -> None:
    resp = await client.get(EVENTS.format("test-job-id"), headers=STREAM)
    assert resp.status == 200
    await publish(client, "test-job-id", "ping", {"ok": True})
    events = await read_events(resp, StreamParser(), lambda ev: len(ev) >= 1)
    assert events[0].type == "ping"
    resp.close()


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_with_last_event_id(client: Client, how: str) -> None:
    for n in range(5):
        await publish(client, "job-2", data=n)
    if how == "header":
        resp = await client.get(EVENTS.format("job-2"), headers={**STREAM, "Last-Event-ID": "3"})
    else:
        resp = await client.get(EVENTS.format("job-2") + "?last_event_id=3", headers=STREAM)
    parser = StreamParser()
    await read_events(resp, parser, lambda ev: len(ev) >= 2)
    await publish(client, "job-2", data=5)
    events = await read_events(resp, parser, lambda ev: len(ev) >= 3)
    assert [e.id for e in events] == ["4", "5", "6"]
    resp.close()
    metrics = await (await client.get("/metrics")).text()
    assert "sse_reconnect_count 1.0" in metrics


async def test_the_header_wins_over_the_query(client: Client) -> None:
    for n in range(4):
        await publish(client, "job-h", data=n)
    resp = await client.get(
        EVENTS.format("job-h") + "?last_event_id=1", headers={**STREAM, "Last-Event-ID": "3"}
    )
    events = await read_events(resp, StreamParser(), lambda ev: len(ev) >= 1)
    assert [e.id for e in events] == ["4"]
    resp.close()


@pytest.mark.parametrize("value", ["abc", "-2", "1e3"])
async def test_bad_last_event_id_is_400(client: Client, value: str) -> None:
    await publish(client, "job-3", data=1)
    resp = await client.get(EVENTS.format("job-3"), headers={**STREAM, "Last-Event-ID": value})
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_input"


async def test_finished_job_replays_then_answers_204(client: Client) -> None:
    await publish(client, "job-4", data=1)
    await publish(client, "job-4", "done", data=2, final=True)
    resp = await client.get(EVENTS.format("job-4"), headers=STREAM)
    assert resp.status == 200
    events = await read_events(resp, StreamParser(), lambda ev: False)
    assert [e.id for e in events] == ["1", "2"]
    again = await client.get(EVENTS.format("job-4"), headers={**STREAM, "Last-Event-ID": "2"})
    assert again.status == 204
    late = await client.post(EVENTS.format("job-4"), json={"type": "x"}, headers=intake_headers())
    assert late.status == 409
    assert (await late.json())["error"] == "job_finished"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"data": 1}, "type"),
        ({"type": "heartbeat"}, "type"),
        ({"type": "bad type"}, "type"),
        ({"type": "progress", "final": "yes"}, "final"),
        ({"type": "progress", "data": 1e400}, "data"),
    ],
)
async def test_publish_rejects_bad_input(client: Client, body: object, field: str) -> None:
    raw = json.dumps(body) if field != "data" else '{"type": "progress", "data": NaN}'
    resp = await client.post(
        EVENTS.format("job-5"),
        data=raw,
        headers={**intake_headers(), "Content-Type": "application/json"},
    )
    assert resp.status == 400
    payload = await resp.json()
    assert set(payload) == {"error", "detail"}
    assert payload["detail"]["field"] == field


async def test_publish_needs_the_intake_token(client: Client) -> None:
    resp = await client.post(EVENTS.format("job-6"), json={"type": "progress"})
    assert resp.status == 401
    wrong = await client.post(
        EVENTS.format("job-6"),
        json={"type": "progress"},
        headers={"Authorization": "Bearer nope"},
    )
    assert wrong.status == 401
    assert "intake-test-token" not in await wrong.text()


async def test_bad_job_id_is_400(client: Client) -> None:
    resp = await client.post(
        EVENTS.format("a%20b"), json={"type": "progress"}, headers=intake_headers()
    )
    assert resp.status == 400
    assert (await resp.json())["detail"]["field"] == "job_id"


async def test_health_counts_streams_per_job(client: Client) -> None:
    await publish(client, "job-7", data=1)
    streams = [await client.get(EVENTS.format("job-7"), headers=STREAM) for _ in range(2)]
    streams.append(await client.get(EVENTS.format("test-job-id"), headers=STREAM))
    health = await (await client.get("/api/generation/health")).json()
    assert health["sse_connections"] == 3
    assert health["connections_per_job"] == {"job-7": 2, "test-job-id": 1}
    assert health["status"] == "healthy"
    assert health["uptime_seconds"] >= 0
    assert "last_heartbeat" in health
    overall = await (await client.get("/api/health")).json()
    assert overall["components"]["sse"]["sse_connections"] == 3
    for resp in streams:
        resp.close()


@pytest.mark.parametrize(
    ("path", "action"),
    [
        ("/api/admin/sse/restart", "restart"),
        ("/api/admin/connections/reset", "reset"),
        ("/api/admin/sse/broadcast-reconnect", "broadcast_reconnect"),
    ],
)
async def test_admin_actions(client: Client, path: str, action: str) -> None:
    assert (await client.post(path)).status == 401
    await publish(client, "job-8", data=1)
    resp = await client.get(EVENTS.format("job-8"), headers=STREAM)
    parser = StreamParser()
    await read_events(resp, parser, lambda ev: len(ev) >= 1)
    answer = await client.post(path, headers=admin_headers())
    assert answer.status == 200
    assert await answer.json() == {
        "action": action,
        "connections_before": 1,
        "connections_after": 0,
        "closed": 1,
    }
    events = await read_events(resp, parser, lambda ev: False)
    assert await resp.content.read() == b""  # the stream ended, so the browser reconnects
    if action == "broadcast_reconnect":
        assert [e.type for e in events] == ["progress", "reconnect"]
    health = await (await client.get("/api/generation/health")).json()
    assert health["sse_connections"] == 0
    assert health["status"] == "healthy"  # the hub (and after restart its timer) runs


async def test_admin_refused_without_a_configured_token(make_client: MakeClient) -> None:
    client = await make_client(admin_token=None)
    resp = await client.post("/api/admin/connections/reset", headers=admin_headers())
    assert resp.status == 403
    assert (await resp.json())["error"] == "disabled"


async def test_over_the_limit_streams_get_retry_and_others_503(make_client: MakeClient) -> None:
    client = await make_client(max_sse_connections=1)
    await publish(client, "job-9", data=1)
    first = await client.get(EVENTS.format("job-9"), headers=STREAM)
    assert first.status == 200
    refused = await client.get(EVENTS.format("job-9"), headers=STREAM)
    assert refused.status == 200
    events = await read_events(refused, StreamParser(), lambda ev: False)
    assert [e.type for e in events] == ["overloaded"]
    assert events[0].retry is not None
    assert events[0].retry >= 10_000
    assert int(refused.headers["Retry-After"]) >= 10
    plain = await client.get(EVENTS.format("job-9"))
    assert plain.status == 503
    assert "Retry-After" in plain.headers
    assert (await plain.json())["error"] == "too_many_connections"
    health = await (await client.get("/api/generation/health")).json()
    assert health["status"] == "degraded"
    first.close()
    metrics = await (await client.get("/metrics")).text()
    assert "sse_connections_refused_total 2.0" in metrics


async def test_a_client_that_goes_away_is_freed(make_client: MakeClient) -> None:
    client = await make_client(sse_heartbeat_seconds=3600)
    await publish(client, "job-10", data=1)
    services = _app(client)[SERVICES_KEY]
    reader, writer = await asyncio.open_connection(client.host, client.port)
    path = EVENTS.format("job-10")
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    await reader.readuntil(b"data: 1\n")
    assert len(services.sse.connections) == 1
    writer.close()
    await writer.wait_closed()
    # The socket tells the stream's sink at once, long before the next heartbeat.
    await until(lambda: len(services.sse.connections) == 0, timeout=10)
    metrics = await (await client.get("/metrics")).text()
    assert 'sse_connections_closed_total{reason="client_gone"} 1.0' in metrics


async def test_http_10_clients_get_a_close_delimited_stream(client: Client) -> None:
    await publish(client, "job-11", data="x")
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {EVENTS.format('job-11')} HTTP/1.0\r\n\r\n".encode())
    await publish(client, "job-11", "done", data="y", final=True)
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert body.endswith(b'id: 2\nevent: done\ndata: "y"\n\n')


def _fd_count() -> int:
    """Open sockets of this process: a stream that leaks keeps its socket. Files are left
    out: the database's pools open connections lazily (the scheduler lease's renewal, the
    SQLite writer thread) at any point of a long run, and those are not leaks."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since listed
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.mark.slow
async def test_no_leak_over_10000_connect_disconnect_cycles(make_client: MakeClient) -> None:
    client = await make_client(sse_heartbeat_seconds=3600, max_sse_connections=100)
    services = _app(client)[SERVICES_KEY]
    hub = services.sse
    await publish(client, "job-12", data=1)
    request = (
        f"GET {EVENTS.format('job-12')} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()

    async def cycle(n: int) -> None:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(request)
        await reader.readuntil(b"data: 1\n")
        if n % 2:
            writer.transport.abort()  # a client that vanishes
        else:
            writer.close()  # a client that says goodbye
            await writer.wait_closed()

    async def run(count: int) -> None:
        gate = asyncio.Semaphore(50)

        async def one(n: int) -> None:
            async with gate:
                await cycle(n)

        await asyncio.gather(*(one(n) for n in range(count)))
        await until(lambda: not hub.connections, timeout=30)

    await run(200)  # warm up: pools, caches, lazily created objects
    await asyncio.sleep(0.2)
    tasks, fds = len(asyncio.all_tasks()), _fd_count()
    await run(10_000)
    await until(lambda: len(asyncio.all_tasks()) <= tasks, timeout=30)
    await until(lambda: _fd_count() <= fds + 2, timeout=30)
    assert hub.connections == {}
    assert hub.jobs["job-12"].streams == {}
    assert hub._pending == 0
    registry = services.metrics.registry
    gone = registry.get_sample_value("sse_connections_closed_total", {"reason": "client_gone"})
    assert gone == 10_200  # every stream opened was noticed closing and freed
    assert registry.get_sample_value("sse_connections_open") == 0


async def test_an_open_stream_keeps_no_task_request_or_handler(make_client: MakeClient) -> None:
    """After its headers a stream is its socket, a sink and the hub's bookkeeping: aiohttp's
    connection handler, its task, the request and the response are let go."""
    client = await make_client(sse_heartbeat_seconds=3600)
    await publish(client, "job-13", data=1)
    hub = _app(client)[SERVICES_KEY].sse
    request = (
        f"GET {EVENTS.format('job-13')} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    streams = []
    for _ in range(3):  # warm up
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(request)
        await reader.readuntil(b"data: 1\n")
        streams.append((reader, writer))
    await asyncio.sleep(0.05)
    tasks = len(asyncio.all_tasks())
    handlers = len(client.server.runner.server.connections)  # type: ignore[union-attr]
    for _ in range(20):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(request)
        await reader.readuntil(b"data: 1\n")
        streams.append((reader, writer))
    await until(lambda: len(asyncio.all_tasks()) <= tasks)
    assert len(client.server.runner.server.connections) == handlers  # type: ignore[union-attr]
    assert len(hub.connections) == 23
    # ... and it still streams, heartbeats and ends cleanly.
    await publish(client, "job-13", data=2)
    await hub.heartbeat()
    await publish(client, "job-13", "done", data=3, final=True)
    for reader, writer in streams:
        body = await asyncio.wait_for(reader.read(), 10)
        assert b"data: 2\n" in body
        assert b"event: heartbeat\n" in body
        assert body.endswith(b"data: 3\n\n\r\n0\r\n\r\n")  # the zero-length chunk
        writer.close()
    assert hub.connections == {}
