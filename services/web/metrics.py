"""`GET /metrics` in the Prometheus text format, and the request-counting middleware."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from services.web.errors import error_for
from services.web.keys import SERVICES_KEY

routes = web.RouteTableDef()


@routes.get("/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    metrics = request.app[SERVICES_KEY].metrics
    response = web.Response(body=metrics.render())
    response.headers["Content-Type"] = metrics.content_type
    return response


def endpoint_of(request: web.Request) -> str:
    """The route pattern, so job ids and incident ids do not explode the label set."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Counts and times every request, and turns errors into JSON (`error_for`): the two
    jobs in one middleware, since each middleware layer costs on every request."""
    metrics = request.app[SERVICES_KEY].metrics
    started = time.perf_counter()
    status = 500
    try:
        try:
            response: web.StreamResponse = await handler(request)
        except Exception as exc:
            if isinstance(exc, web.HTTPException):
                status = exc.status_code
            response = error_for(request, exc)
        status = response.status
        return response
    finally:
        metrics.request_served(
            endpoint_of(request), request.method, status, time.perf_counter() - started
        )
