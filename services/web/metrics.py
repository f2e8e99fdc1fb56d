"""`GET /metrics` in the Prometheus text format, and the request-counting middleware."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from services.web.keys import SERVICES_KEY

routes = web.RouteTableDef()

OPENAPI: dict[str, dict[str, Any]] = {
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "tags": ["meta"],
            "responses": {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
}


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
    metrics = request.app[SERVICES_KEY].metrics
    started = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status_code
        raise
    finally:
        endpoint = endpoint_of(request)
        metrics.http_requests_total.labels(endpoint, request.method, str(status)).inc()
        metrics.http_request_duration_seconds.labels(endpoint).observe(
            time.perf_counter() - started
        )
