from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.main import background_contexts, open_services
from services.web.app import create_app
from tests.conftest import Client, admin_headers, intake_headers, make_settings, require_program
from tests.waiting import until

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The page of docs/sse.md, reduced to what the test reads back.
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>job stream</title>
<script>
window.received = [];
window.opens = 0;
window.reconnectEvents = 0;
const source = new EventSource('/api/generation/jobs/browser-job/events');
source.addEventListener('progress', (e) => {
  window.received.push({id: e.lastEventId, n: JSON.parse(e.data).n});
});
source.addEventListener('done', (e) => {
  window.received.push({id: e.lastEventId, n: JSON.parse(e.data).n});
});
source.addEventListener('reconnect', () => { window.reconnectEvents += 1; });
source.addEventListener('open', () => { window.opens += 1; });
window.source = source;
</script>
"""


@pytest.fixture
async def service(migrated_url: str) -> AsyncIterator[Client]:
    # A short retry hint so the browser's reconnects do not slow the test down.
    settings = make_settings(migrated_url, sse_retry_ms=300)
    async with AsyncExitStack() as stack:
        services = await stack.enter_async_context(open_services(settings))
        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        client: Client = TestClient(TestServer(app))
        yield await stack.enter_async_context(client)


@pytest.fixture
async def page(service: Client) -> AsyncIterator[Any]:
    executable = require_program("chromium")
    from playwright.async_api import Route, async_playwright

    origin = f"http://127.0.0.1:{service.port}"

    async def serve_page(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html; charset=utf-8", body=PAGE)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            # The page comes from the service's own origin, so EventSource needs no CORS; only
            # this one URL is answered by the test, the stream is the real service.
            await page.route(f"{origin}/test-page", serve_page)
            yield page
        finally:
            await browser.close()


@pytest.mark.parametrize(
    "admin_call",
    [
        "/api/admin/connections/reset",
        "/api/admin/sse/broadcast-reconnect",
        "/api/admin/sse/restart",
    ],
)
async def test_browser_gets_every_event_once_in_order_across_a_reset(
    service: Client, page: Any, admin_call: str
) -> None:
    job = "/api/generation/jobs/browser-job/events"

    async def publish(n: int, event_type: str = "progress", final: bool = False) -> None:
        body = {"type": event_type, "data": {"n": n}, "final": final}
        resp = await service.post(job, json=body, headers=intake_headers())
        assert resp.status == 202, await resp.text()

    async def count() -> int:
        return int(await page.evaluate("window.received.length"))

    # A job exists from its first event; the page opens its stream after that (a 404 before
    # it would make the EventSource give up, as the standard says).
    await publish(1)
    await page.goto(f"http://127.0.0.1:{service.port}/test-page")
    await until(lambda: _opened(page))
    for n in range(2, 6):
        await publish(n)
    await until(lambda: _at_least(count, 5))

    reset = await service.post(admin_call, headers=admin_headers())
    assert reset.status == 200
    assert (await reset.json())["connections_before"] == 1
    # Published while the browser is away: it must get them from the history on return.
    for n in range(6, 11):
        await publish(n)
    await until(lambda: _at_least(count, 10))
    await publish(11, "done", final=True)
    await until(lambda: _at_least(count, 11))
    # After the final event the stream ends; the browser's reconnect gets 204 and stops.
    await until(lambda: _closed(page))

    received = await page.evaluate("window.received")
    assert [r["n"] for r in received] == list(range(1, 12))
    assert [r["id"] for r in received] == [str(n) for n in range(1, 12)]
    assert await page.evaluate("window.opens") >= 2
    if admin_call.endswith("broadcast-reconnect"):
        assert await page.evaluate("window.reconnectEvents") == 1


async def _opened(page: Any) -> bool:
    return bool(await page.evaluate("window.opens >= 1"))


async def _closed(page: Any) -> bool:
    return bool(await page.evaluate("window.source.readyState === EventSource.CLOSED"))


async def _at_least(count: Callable[[], Awaitable[int]], n: int) -> bool:
    return await count() >= n
