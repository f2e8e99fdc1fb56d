"""Security at the HTTP edge: every route × (no, wrong, right token), constant-time compares,
body limits on every POST, and the SSE connection limit under a connect flood."""

from __future__ import annotations

import ast
import asyncio
import io
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.config import Settings
from services.main import background_contexts, open_services
from services.web.app import create_app
from tests.conftest import ADMIN, INTAKE, Client, free_port, make_settings

ROOT = Path(__file__).resolve().parent.parent

# Who may call each route. open: anyone; local: loopback, or ADMIN_TOKEN from elsewhere;
# admin / intake: that Bearer token. A new route without an entry fails the test below.
AUTH: dict[tuple[str, str], str] = {
    ("GET", "/"): "open",
    ("GET", "/static/{name}"): "open",
    ("POST", "/"): "open",
    ("GET", "/api/health"): "open",
    ("GET", "/metrics"): "open",
    ("GET", "/api/openapi.json"): "open",
    ("GET", "/api/generation/health"): "open",
    ("GET", "/api/generation/jobs/{job_id}/events"): "open",
    ("POST", "/api/generation/jobs/{job_id}/events"): "intake",
    ("POST", "/api/alerts"): "intake",
    ("POST", "/api/alerts/alertmanager"): "intake",
    # PagerDuty Events API v2: the credential is the body's routing_key (INTAKE_TOKEN).
    ("POST", "/v2/enqueue"): "routing_key",
    ("POST", "/api/integrations/pagerduty/v2/enqueue"): "routing_key",
    ("POST", "/api/heartbeats/{name}/ping"): "intake",
    ("GET", "/api/heartbeats/{name}/ping"): "intake",
    ("GET", "/api/heartbeats"): "local",
    ("GET", "/api/incidents"): "local",
    ("GET", "/api/incidents/{id}"): "local",
    ("GET", "/api/incidents/{id}/postmortem"): "local",
    ("POST", "/api/incidents/{id}/ack"): "admin",
    ("POST", "/api/incidents/{id}/resolve"): "admin",
    ("POST", "/api/incidents/{id}/reopen"): "admin",
    ("GET", "/api/token"): "local",
    ("GET", "/api/jobs"): "local",
    ("GET", "/api/traces"): "local",
    ("GET", "/api/traces/{id}"): "local",
    ("POST", "/api/jobs/{id}/retry"): "admin",
    ("POST", "/api/admin/token/expiry"): "admin",
    ("GET", "/api/admin/backups"): "admin",
    ("POST", "/api/admin/backups"): "admin",
    ("POST", "/api/admin/stats/restart"): "admin",
    ("POST", "/api/admin/stats/collect"): "admin",
    ("POST", "/api/admin/sse/restart"): "admin",
    ("POST", "/api/admin/connections/reset"): "admin",
    ("POST", "/api/admin/sse/broadcast-reconnect"): "admin",
}
FILL = {"{id}": "1", "{job_id}": "job-1", "{name}": "nightly-backup"}
BODIES = {
    "/api/alerts": {"severity": "P3", "title": "matrix"},
    "/api/alerts/alertmanager": {"version": "4", "alerts": []},
    "/api/generation/jobs/{job_id}/events": {"type": "progress", "data": 1},
    "/api/admin/token/expiry": {"days": 60},
}
TOKEN_OF = {"admin": ADMIN, "intake": INTAKE, "local": ADMIN, "routing_key": INTAKE}
# The other real token is wrong too.
OTHER = {"admin": INTAKE, "intake": ADMIN, "local": INTAKE, "routing_key": ADMIN}
REMOTE = {"X-Forwarded-For": "203.0.113.9"}  # a request relayed from elsewhere


def local_settings(url: str, tmp_path: Path, **overrides: object) -> Settings:
    return make_settings(
        url,
        backup_dir=tmp_path / "backups",
        log_dir=tmp_path / "logs",
        stats_file=tmp_path / "stats.json",
        content_dir=tmp_path / "content",
        env_file_path=tmp_path / ".env",
        **overrides,
    )


@pytest.fixture
async def app_client(migrated_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    settings = local_settings(migrated_url, tmp_path)
    async with open_services(settings) as services:
        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        async with TestClient(TestServer(app)) as client:
            yield client


def registered(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        if route.method in {"HEAD", "OPTIONS"}:
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        found.add((route.method, str(info.get("path") or info.get("formatter"))))
    return found


async def test_every_route_has_a_matrix_entry(app_client: Client) -> None:
    assert app_client.app is not None
    assert registered(app_client.app) == set(AUTH)


def build(path: str) -> str:
    for key, value in FILL.items():
        path = path.replace(key, value)
    return path


def pd_event(routing_key: str | None) -> dict[str, object]:
    event: dict[str, object] = {
        "event_action": "trigger",
        "payload": {"summary": "matrix", "source": "test", "severity": "info"},
    }
    if routing_key is not None:
        event["routing_key"] = routing_key
    return event


async def call(
    client: Client, method: str, path: str, headers: dict[str, str], body: object = None
) -> int:
    body = BODIES.get(path) if body is None else body
    async with client.request(
        method, build(path), json=body, headers=headers, allow_redirects=False
    ) as response:
        return response.status


@pytest.mark.parametrize("token", ["none", "wrong", "other", "right"])
@pytest.mark.parametrize(("method", "path"), sorted(AUTH))
async def test_route_token_matrix(app_client: Client, method: str, path: str, token: str) -> None:
    kind = AUTH[(method, path)]
    headers = dict(REMOTE) if kind == "local" else {}
    if token == "wrong":
        headers["Authorization"] = "Bearer not-the-token-at-all"
    elif token == "other" and kind in OTHER:
        headers["Authorization"] = f"Bearer {OTHER[kind]}"
    elif token == "right" and kind in TOKEN_OF:
        headers["Authorization"] = f"Bearer {TOKEN_OF[kind]}"
    if path.endswith("/events") and method == "GET":
        headers["Accept"] = "application/json"  # a stream would stay open; the status is enough
    body = None
    if kind == "routing_key":
        # No header at all: PagerDuty senders put the credential in the event.
        given = {"wrong": "not-the-token-at-all", "other": OTHER[kind], "right": INTAKE}
        body, headers = pd_event(given.get(token)), {}
    status = await call(app_client, method, path, headers, body)
    assert status < 500
    refused = token != "right" and kind != "open"
    if kind == "routing_key":
        # PagerDuty answers a missing or wrong routing key with 400 and a list of errors.
        assert status == (400 if refused else 202), (method, path, token, status)
    elif refused:
        assert status == 401, (method, path, token, status)
    else:
        assert status not in {401, 403}, (method, path, token, status)


async def test_no_configured_token_refuses_with_403(migrated_url: str, tmp_path: Path) -> None:
    settings = local_settings(migrated_url, tmp_path, admin_token=None, intake_token=None)
    async with open_services(settings) as services:
        app = create_app(settings, services)
        async with TestClient(TestServer(app)) as client:
            for (method, path), kind in AUTH.items():
                if kind in {"admin", "intake"}:
                    bearer = {"Authorization": f"Bearer {ADMIN}"}
                    assert await call(client, method, path, bearer) == 403, path
                elif kind == "routing_key":
                    assert await call(client, method, path, {}, pd_event(ADMIN)) == 403, path


# -- tokens are compared in constant time ---------------------------------------------------


def secret_compares(source: str) -> list[int]:
    """Lines comparing something token- or secret-like with == / != (not against None)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        sides = [node.left, *node.comparators]
        if any(isinstance(s, ast.Constant) and s.value is None for s in sides):
            continue
        text = " ".join(ast.unparse(s).lower() for s in sides)
        if any(word in text for word in ("token", "secret", "password", "signature", "cookie")):
            lines.append(node.lineno)
    return lines


# Reviewed: these compare names or kinds, never a secret value.
NOT_SECRET = {
    "services/tokens.py",  # token *states* and expiry days
    "services/cli_pipeline.py",  # `args.token_command == "guide"`: a sub-command name
    "services/leader.py",  # the lease's fencing token: a public counter, not a credential
}


def test_secrets_are_compared_in_constant_time() -> None:
    found = {}
    for path in sorted([*ROOT.glob("services/**/*.py"), *ROOT.glob("bot/**/*.py")]):
        rel = str(path.relative_to(ROOT))
        if rel in NOT_SECRET:
            continue
        lines = secret_compares(path.read_text())
        if lines:
            found[rel] = lines
    assert found == {}, "use hmac.compare_digest for secrets: " + repr(found)
    assert secret_compares("ok = given == settings.admin_token") == [1]  # the scan works


# -- body limits -----------------------------------------------------------------------------


MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/api/alerts", MIB),
        # Alertmanager sends a whole group in one body and never retries a 413.
        ("/api/alerts/alertmanager", 16 * MIB),
        ("/v2/enqueue", MIB),
        ("/api/generation/jobs/job-1/events", MIB),
        ("/api/admin/token/expiry", MIB),
        ("/api/incidents/1/resolve", MIB),
    ],
)
async def test_every_post_body_has_the_limit(app_client: Client, path: str, limit: int) -> None:
    token = ADMIN if "/admin/" in path or "/incidents/" in path else INTAKE
    big = b'{"title": "' + b"x" * (limit + 10) + b'"}'

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 256 * 1024):
            yield big[start : start + 256 * 1024]

    for sized in (True, False):  # with Content-Length, and chunked without it
        response = await app_client.post(
            path,
            data=io.BytesIO(big) if sized else chunked(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert response.status == 413, (sized, await response.text())
        body = await response.json()
        assert body["error"] == "body_too_large"
        assert f"{limit:,}" in body["detail"]


# -- the SSE connection limit under a connect flood ----------------------------------------

LIMIT = 20
FLOOD = 120


async def test_sse_limit_holds_under_a_connect_flood(migrated_url: str, tmp_path: Path) -> None:
    settings = local_settings(
        migrated_url, tmp_path, max_sse_connections=LIMIT, http_port=free_port()
    )
    async with AsyncExitStack() as stack:
        services = await stack.enter_async_context(open_services(settings))
        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", settings.http_port).start()
        base = f"http://127.0.0.1:{settings.http_port}"
        http = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        )
        open_streams: list[aiohttp.ClientResponse] = []
        for job in range(7):  # streams are for known jobs: one progress event each
            async with http.post(
                f"{base}/api/generation/jobs/flood-{job}/events",
                json={"type": "progress", "data": job},
                headers={"Authorization": f"Bearer {INTAKE}"},
            ) as published:
                assert published.status == 202

        async def connect(i: int) -> str:
            accept = "text/event-stream" if i % 2 else "application/json"
            response = await http.get(
                f"{base}/api/generation/jobs/flood-{i % 7}/events", headers={"Accept": accept}
            )
            if response.status == 503:
                body = await response.json()
                assert body["error"] == "too_many_connections"
                assert "Retry-After" in response.headers
                response.release()
                return "503"
            assert response.status == 200, response.status
            first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 10)
            if b"overloaded" in first or b"event: overloaded" in (
                first + await _more(response, first)
            ):
                response.release()
                return "overloaded"
            open_streams.append(response)
            return "open"

        outcomes = await asyncio.gather(*(connect(i) for i in range(FLOOD)))
        async with http.get(f"{base}/api/health") as health:
            assert health.status == 200  # the service answers during the flood
        async with http.get(f"{base}/api/generation/health") as gen:
            during = (await gen.json())["sse_connections"]
        print(
            f"flood: {outcomes.count('open')} open, {outcomes.count('overloaded')} overloaded, "
            f"{outcomes.count('503')} 503 of {FLOOD}; sse_connections {during}"
        )
        assert outcomes.count("open") == LIMIT == during
        assert outcomes.count("overloaded") + outcomes.count("503") == FLOOD - LIMIT

        for response in open_streams:
            response.close()
        for _ in range(200):
            async with http.get(f"{base}/api/generation/health") as gen:
                if (await gen.json())["sse_connections"] == 0:
                    break
            await asyncio.sleep(0.05)
        async with http.get(f"{base}/api/generation/health") as gen:
            assert (await gen.json())["sse_connections"] == 0  # nothing leaked
        again = await connect(1)
        assert again == "open"  # and the slots are free again
        for response in open_streams:
            response.close()


async def _more(response: aiohttp.ClientResponse, first: bytes) -> bytes:
    """The refusal is `retry:` then the `overloaded` event; a stream starts with `retry:` too."""
    if b"event:" in first or b"data:" in first:
        return b""
    try:
        return await asyncio.wait_for(response.content.readuntil(b"\n\n"), 0.5)
    except TimeoutError:
        return b""


# -- header values that are not text -------------------------------------------------------


async def raw_status(port: int, request: bytes) -> int:
    """Send `request` byte for byte (clients refuse to send such headers) and read the
    status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(line.split()[1])


NOT_TEXT = [b"\xff\xfe", b"caf\xe9", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80" * 64]


@pytest.mark.parametrize("junk", NOT_TEXT)
async def test_token_headers_that_are_not_text_are_wrong_tokens(
    migrated_url: str, tmp_path: Path, junk: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not UTF-8 in Authorization, the board cookie, the board stream's
    Bearer or the Telegram secret header are a wrong token: 401/403, never a 500 (which
    anyone could use to fill the log with tracebacks)."""
    settings = local_settings(
        migrated_url,
        tmp_path,
        board_token="board-test-token-89",
        telegram_webhook_url="https://ops.example.test/telegram/hook",
    )
    async with open_services(settings) as services:

        async def feed(update: dict[str, object]) -> None:
            raise AssertionError("no update may get through")

        services.webhook.open(feed, "s3cret-Token_1")
        async with TestClient(TestServer(create_app(settings, services))) as client:
            assert client.port is not None
            body = b'{"severity": "P3", "title": "x"}'
            cases = [
                (b"POST /api/alerts", b"Authorization: Bearer " + junk, body, 401),
                (b"POST /api/alerts/alertmanager", b"Authorization: " + junk, body, 401),
                (b"POST /api/admin/sse/restart", b"Authorization: Bearer " + junk, b"", 401),
                (
                    b"GET /api/incidents",
                    b"X-Forwarded-For: 203.0.113.9\r\nAuthorization: Bearer " + junk,
                    b"",
                    401,
                ),
                (b"GET /", b"Cookie: sunflow_board=" + junk, b"", 401),
                (
                    b"GET /api/generation/jobs/board/events",
                    b"Accept: application/json\r\nAuthorization: Bearer " + junk,
                    b"",
                    401,
                ),
                (b"POST /api/heartbeats/nightly/ping", b"Authorization: Bearer " + junk, b"", 401),
                (
                    b"POST /telegram/hook",
                    b"X-Telegram-Bot-Api-Secret-Token: " + junk,
                    b'{"update_id": 1}',
                    403,
                ),
            ]
            for start, header, payload, expected in cases:
                request = (
                    start
                    + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + header
                    + b"\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(payload)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + payload
                )
                status = await raw_status(client.port, request)
                assert status == expected, (start, header, status)
            # ?token= with bytes that are not UTF-8 after percent-decoding.
            status = await raw_status(
                client.port,
                b"GET /api/heartbeats/nightly/ping?token=%FF%FE HTTP/1.1\r\nHost: x\r\n"
                b"Connection: close\r\n\r\n",
            )
            assert status == 401
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
