"""`GET /api/health`: overall status and each component's."""

from __future__ import annotations

from aiohttp import web

from services.web.keys import SERVICES_KEY

routes = web.RouteTableDef()


@routes.get("/api/health")
async def get_health(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    report = await services.health.run()
    status = 503 if report.status.value == "down" else 200
    # Which instance answered: behind a load balancer each one reports for itself.
    return web.json_response(
        {"instance": services.leader.instance, **report.to_json()}, status=status
    )
