"""`GET /api/health`: overall status and each component's."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.web.keys import SERVICES_KEY

routes = web.RouteTableDef()

OPENAPI: dict[str, dict[str, Any]] = {
    "/api/health": {
        "get": {
            "summary": "Overall status and each component's",
            "tags": ["health"],
            "responses": {
                "200": {
                    "description": "healthy or degraded",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                    },
                },
                "503": {
                    "description": "down",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                    },
                },
            },
        }
    }
}


@routes.get("/api/health")
async def get_health(request: web.Request) -> web.Response:
    report = await request.app[SERVICES_KEY].health.run()
    status = 503 if report.status.value == "down" else 200
    return web.json_response(report.to_json(), status=status)
