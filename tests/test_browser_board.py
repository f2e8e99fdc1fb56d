"""The live board in headless Chromium: an alert posted over HTTP appears without a reload,
and its acknowledgement through the API changes its state on the page."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.container import Services
from services.main import background_contexts, open_services
from services.web.app import create_app
from tests.conftest import Client, admin_headers, intake_headers, make_settings, require_program
from tests.test_browser_sse import CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

BOARD_TOKEN = "board-browser-token-2468"
TITLE = "<b>x</b> & <script>window.pwned = 1</script> FLUX.2 generation failing"
# A phone: the board must read well at this size.
PHONE_WIDTH, PHONE_HEIGHT = 390, 844


@pytest.fixture
async def service(migrated_url: str) -> AsyncIterator[tuple[Client, Services]]:
    settings = make_settings(migrated_url, board_token=BOARD_TOKEN, sse_retry_ms=300)
    async with AsyncExitStack() as stack:
        services = await stack.enter_async_context(open_services(settings))
        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        client: Client = TestClient(TestServer(app, host="127.0.0.1"))
        yield await stack.enter_async_context(client), services


@pytest.fixture(params=["light", "dark"])
async def page(
    service: tuple[Client, Services], request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    executable = require_program("chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": PHONE_WIDTH, "height": PHONE_HEIGHT},
                device_scale_factor=2,
                color_scheme=request.param,
                is_mobile=True,
                has_touch=True,
            )
            yield await context.new_page()
        finally:
            await browser.close()


async def test_board_shows_a_new_alert_live_and_its_acknowledgement(
    service: tuple[Client, Services], page: Any, tmp_path: Path
) -> None:
    client, services = service
    origin = f"http://127.0.0.1:{client.port}"
    existing = await client.post(
        "/api/alerts",
        json={"severity": "P2", "title": "Stats collector stale", "source": "stats"},
        headers=intake_headers(),
    )
    assert existing.status == 202

    # Without the token the board asks for it; the form sets the cookie and redirects.
    await page.goto(f"{origin}/")
    assert await page.locator("input[name=token]").count() == 1
    await page.screenshot(path=str(tmp_path / "board-phone-token-form.png"))
    await page.fill("input[name=token]", BOARD_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#live.on", timeout=5000)  # the board's stream is open
    assert await page.locator(".incident").count() == 1
    assert services.board.viewers() == 1
    await page.evaluate("window.notReloaded = true")

    resp = await client.post(
        "/api/alerts",
        json={"severity": "P0", "title": TITLE, "source": "fal"},
        headers=intake_headers(),
    )
    assert resp.status == 202
    incident_id = (await resp.json())["incidents"][0]["id"]
    card = f"#incident-{incident_id}"
    await page.wait_for_selector(f'{card}[data-state="triggered"]', timeout=10_000)
    assert await page.text_content(f"{card} .title") == TITLE
    assert await page.evaluate("window.pwned") is None
    assert await page.text_content("#summary .sev-P0 b") == "1"
    assert "P0 · service down" in (await page.text_content("#incidents") or "")
    # P0 comes before P2 on the page.
    ids = await page.eval_on_selector_all(".incident", "els => els.map(e => e.dataset.id)")
    assert ids[0] == str(incident_id)
    assert "Next:" in (await page.text_content(card) or "")
    await page.screenshot(path=str(tmp_path / "board-phone-new-alert.png"), full_page=True)

    ack = await client.post(
        f"/api/incidents/{incident_id}/ack", json={"actor": "alice"}, headers=admin_headers()
    )
    assert ack.status == 200
    await page.wait_for_selector(f'{card}[data-state="acknowledged"]', timeout=10_000)
    assert await page.text_content(f"{card} .who") == "api:alice"
    assert await page.evaluate("window.notReloaded") is True

    # Streams reset by an operator: the board resumes by itself and stays current.
    reset = await client.post("/api/admin/connections/reset", headers=admin_headers())
    assert (await reset.json())["closed"] == 1
    resp = await client.post(
        "/api/alerts",
        json={"severity": "P1", "title": "Instagram publishing failing"},
        headers=intake_headers(),
    )
    later = (await resp.json())["incidents"][0]["id"]
    # Reconnecting takes the stream's retry hint (300 ms here) and a snapshot; 5 s was once
    # too short for a loaded CI machine (PostgreSQL pass, 2026-12-04). Still well inside the
    # page's 15 s reload fallback, which `notReloaded` below rules out.
    await page.wait_for_selector(f"#incident-{later}", timeout=10_000)
    assert await page.evaluate("window.notReloaded") is True

    shot = tmp_path / "board-phone.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # The page fits the phone's width: nothing scrolls sideways.
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
