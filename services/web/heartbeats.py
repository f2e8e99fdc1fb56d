"""Heartbeat routes: a cron job's one-line ping, and the list for scripts."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.heartbeats import check_name
from services.web.auth import bearer_token, require_local_or_token, token_matches
from services.web.errors import JSONError
from services.web.keys import SERVICES_KEY, SETTINGS_KEY

routes = web.RouteTableDef()

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
}
_TOKEN = {
    "name": "token",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "INTAKE_TOKEN, for senders that cannot set a header (cron's one-line "
    "curl); never written to a log",
}
_PING: dict[str, Any] = {
    "summary": "Ping a heartbeat; ends (and resolves) a miss",
    "tags": ["heartbeats"],
    "security": [{"intakeToken": []}, {}],
    "parameters": [_NAME, _TOKEN],
    "responses": {
        "200": {
            "description": "the ping is recorded",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/HeartbeatPing"}}
            },
        },
        "400": {"$ref": "#/components/responses/BadRequest"},
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "403": {"$ref": "#/components/responses/Disabled"},
        "404": {"$ref": "#/components/responses/NotFound"},
    },
}


def _require_intake(request: web.Request) -> None:
    """INTAKE_TOKEN as a Bearer header or `?token=` (the query is never logged: the access
    log is off and error lines carry the path only)."""
    expected = request.app[SETTINGS_KEY].intake_token
    if expected is None:
        raise JSONError(
            403, "disabled", "INTAKE_TOKEN is not set on the server, so pings are refused"
        )
    for given in (bearer_token(request), request.query.get("token")):
        if token_matches(given, expected):
            return
    raise JSONError(
        401,
        "unauthorized",
        "send 'Authorization: Bearer <INTAKE_TOKEN>' or add ?token=<INTAKE_TOKEN>",
        headers={"WWW-Authenticate": 'Bearer realm="sunflow-ops"'},
    )


async def ping(request: web.Request) -> web.Response:
    _require_intake(request)
    name = check_name(request.match_info["name"])
    heartbeats = request.app[SERVICES_KEY].heartbeats
    result = await heartbeats.ping(name)
    body = {
        **result.heartbeat.to_json(heartbeats.now()),
        "resolved_incident": result.resolved.id if result.resolved else None,
    }
    return web.json_response(body)


routes.post("/api/heartbeats/{name}/ping")(ping)
# No HEAD: a ping changes state, and HEAD must not.
routes.get("/api/heartbeats/{name}/ping", allow_head=False)(ping)


@routes.get("/api/heartbeats", allow_head=False)
async def list_heartbeats(request: web.Request) -> web.Response:
    require_local_or_token(request, request.app[SETTINGS_KEY].admin_token)
    heartbeats = request.app[SERVICES_KEY].heartbeats
    now = heartbeats.now()
    views = await heartbeats.views()
    return web.json_response({"heartbeats": [v.to_json(now) for v in views]})
