"""Test-only faults (FAULT_INJECTION=true): block the event loop, as a long GC pause or a
burst of heavy requests would. Never registered otherwise; not in the OpenAPI document."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from services.web.auth import require_token
from services.web.errors import JSONError
from services.web.keys import SETTINGS_KEY

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

MAX_BLOCK_SECONDS = 120.0


@routes.post("/api/admin/faults/block-loop")
async def block_loop(request: web.Request) -> web.Response:
    """`?seconds=N`: answers first, then holds the loop for N seconds without yielding."""
    require_token(request, request.app[SETTINGS_KEY].admin_token, "ADMIN_TOKEN")
    raw = request.query.get("seconds", "")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_BLOCK_SECONDS:
        raise JSONError(
            400, "invalid_input", f"seconds must be a number in (0, {MAX_BLOCK_SECONDS:.0f}]"
        )

    def block() -> None:
        log.warning("fault injection: blocking the event loop for %.1f s", seconds)
        time.sleep(seconds)  # on purpose: the loop does nothing else meanwhile

    asyncio.get_running_loop().call_later(0.05, block)  # after this answer has gone out
    return web.json_response({"blocking_seconds": seconds})
