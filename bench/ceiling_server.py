"""A bare aiohttp server answering 202 to any POST without doing anything: the ceiling.

Run as `python -m bench.ceiling_server PORT`; `python -m bench` skips it (no `main`).
"""

from __future__ import annotations

import sys

from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"ok": True}, status=202)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy"})


def serve(port: int) -> None:
    app = web.Application()
    app.router.add_post("/{tail:.*}", accept)
    app.router.add_get("/api/health", health)
    # The same event loop as `sunflow-ops serve` uses, so the comparison is like for like.
    try:
        import uvloop
    except ImportError:
        loop = None
    else:
        loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
