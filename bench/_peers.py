"""Minimal peer SSE servers for bench/sse.py: the same endpoints on aiohttp-sse and sse-starlette.

Each is written the way its library's documentation shows: an asyncio.Queue and a task or
generator per connection, the library's own keep-alive ping. Run as
`python -m bench._peers aiohttp-sse PORT [--uvloop]` or `... sse-starlette PORT [--uvloop]`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

# The same period as our SSE_HEARTBEAT_SECONDS (bench/sse.py's --heartbeat sets both).
PING_SECONDS = float(os.environ.get("BENCH_PING_SECONDS", "30"))
QUEUE_SIZE = 256


def _fan_out(subscribers: set[asyncio.Queue[str]], data: str) -> int:
    sent = 0
    for queue in list(subscribers):
        try:
            queue.put_nowait(data)
            sent += 1
        except asyncio.QueueFull:  # a slow client loses the event; good enough for a peer
            pass
    return sent


def aiohttp_sse_app() -> Any:
    from aiohttp import web
    from aiohttp_sse import sse_response

    subscribers: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)

    async def events(request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        job = subscribers[request.match_info["job_id"]]
        job.add(queue)
        try:
            async with sse_response(request) as response:
                response.ping_interval = PING_SECONDS
                while response.is_connected():
                    data = await queue.get()
                    await response.send(data, event="progress")
        finally:
            job.discard(queue)
        return response

    async def publish(request: web.Request) -> web.Response:
        body = await request.json()
        sent = _fan_out(subscribers[request.match_info["job_id"]], json.dumps(body.get("data")))
        return web.json_response({"delivered_to": sent}, status=202)

    app = web.Application()
    app.router.add_get("/api/generation/jobs/{job_id}/events", events)
    app.router.add_post("/api/generation/jobs/{job_id}/events", publish)
    return app


def sse_starlette_app() -> Any:
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    subscribers: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)

    async def events(request: Request) -> EventSourceResponse:
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        job = subscribers[request.path_params["job_id"]]
        job.add(queue)

        async def stream() -> AsyncIterator[dict[str, str]]:
            try:
                while True:
                    yield {"event": "progress", "data": await queue.get()}
            finally:
                job.discard(queue)

        return EventSourceResponse(stream(), ping=PING_SECONDS)

    async def publish(request: Request) -> JSONResponse:
        body = await request.json()
        sent = _fan_out(subscribers[request.path_params["job_id"]], json.dumps(body.get("data")))
        return JSONResponse({"delivered_to": sent}, status_code=202)

    return Starlette(
        routes=[
            Route("/api/generation/jobs/{job_id}/events", events, methods=["GET"]),
            Route("/api/generation/jobs/{job_id}/events", publish, methods=["POST"]),
        ]
    )


def main(argv: list[str]) -> int:
    kind, port = argv[0], int(argv[1])
    use_uvloop = "--uvloop" in argv[2:]
    if use_uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if kind == "aiohttp-sse":
        from aiohttp import web

        web.run_app(aiohttp_sse_app(), host="127.0.0.1", port=port, print=None, backlog=4096)
    elif kind == "sse-starlette":
        import uvicorn

        uvicorn.run(
            sse_starlette_app(),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            loop="uvloop" if use_uvloop else "asyncio",
            access_log=False,
            backlog=4096,
            # aiohttp's keep-alive (ours, aiohttp-sse): uvicorn's 5 s closes the publisher's
            # idle connections while a ramp opens streams, and a publish then meets a close.
            timeout_keep_alive=75,
        )
    else:
        print(f"unknown peer {kind!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
