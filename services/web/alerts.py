"""Alert intake routes: generic JSON alerts and the Alertmanager webhook."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.db import json_dumps
from services.intake import IntakeBatch, IntakeResult, parse_alertmanager, parse_generic
from services.web.auth import require_token
from services.web.body import read_json
from services.web.keys import SERVICES_KEY, SETTINGS_KEY

routes = web.RouteTableDef()

_INTAKE_RESPONSES = {
    "202": {
        "description": "committed: the incidents opened, absorbed or resolved",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IntakeResult"}}},
    },
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Disabled"},
    "413": {"$ref": "#/components/responses/TooLarge"},
}

OPENAPI: dict[str, dict[str, Any]] = {
    "/api/alerts": {
        "post": {
            "summary": "Raise (or resolve) a generic alert",
            "tags": ["intake"],
            "security": [{"intakeToken": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/AlertIn"},
                                {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/AlertIn"},
                                    "minItems": 1,
                                },
                            ]
                        }
                    }
                },
            },
            "responses": _INTAKE_RESPONSES,
        }
    },
    "/api/alerts/alertmanager": {
        "post": {
            "summary": "Prometheus Alertmanager webhook (payload version 4)",
            "tags": ["intake"],
            "security": [{"intakeToken": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/AlertmanagerPayload"}
                    }
                },
            },
            "responses": _INTAKE_RESPONSES,
        }
    },
}


async def _accept(request: web.Request, batch: IntakeBatch, source: str) -> web.Response:
    services = request.app[SERVICES_KEY]
    result: IntakeResult = await services.intake.submit(batch)
    for outcome, items in (
        ("created", result.created),
        ("deduplicated", result.deduplicated),
        ("resolved", result.resolved),
    ):
        if items:
            services.metrics.alerts_received(source, outcome, len(items))
    return web.json_response(result.to_json(), status=202, dumps=json_dumps)


@routes.post("/api/alerts")
async def post_alert(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS_KEY].intake_token, "INTAKE_TOKEN")
    batch = parse_generic(await read_json(request))
    return await _accept(request, batch, "api")


@routes.post("/api/alerts/alertmanager")
async def post_alertmanager(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS_KEY].intake_token, "INTAKE_TOKEN")
    batch = parse_alertmanager(await read_json(request))
    return await _accept(request, batch, "alertmanager")
