"""Pipeline routes: token status and expiry, failed jobs and retries, traces, backups, stats."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.models import MAX_ID, parse_id
from services.web.auth import require_local_or_token, require_token
from services.web.body import read_json
from services.web.errors import JSONError
from services.web.keys import SERVICES_KEY, SETTINGS_KEY

routes = web.RouteTableDef()


def _json(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


_READ = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
}
_ADMIN = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Disabled"},
}
_ADMIN_SECURITY: list[dict[str, list[str]]] = [{"adminToken": []}]
_JOB_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
}


def _admin(request: web.Request) -> None:
    require_token(request, request.app[SETTINGS_KEY].admin_token, "ADMIN_TOKEN")


def _reader(request: web.Request) -> None:
    require_local_or_token(request, request.app[SETTINGS_KEY].admin_token)


@routes.get("/api/token")
async def get_token(request: web.Request) -> web.Response:
    _reader(request)
    status = await request.app[SERVICES_KEY].ops.tokens.status()
    return web.json_response(status.to_json())


@routes.post("/api/admin/token/expiry")
async def post_token_expiry(request: web.Request) -> web.Response:
    _admin(request)
    days: int | None = None
    if (await request.read()).strip():
        body = await read_json(request)
        raw = body.get("days") if isinstance(body, dict) else None
        if raw is not None and (not isinstance(raw, int) or isinstance(raw, bool)):
            raise JSONError(400, "invalid_input", {"field": "days", "message": "an integer"})
        days = raw
    status = await request.app[SERVICES_KEY].ops.tokens.set_expiry(days, actor="api:admin")
    return web.json_response(status.to_json())


@routes.get("/api/jobs")
async def get_jobs(request: web.Request) -> web.Response:
    _reader(request)
    jobs = await request.app[SERVICES_KEY].ops.retry.list()
    return web.json_response({"jobs": [j.to_json() for j in jobs]})


@routes.post("/api/jobs/{id}/retry")
async def post_job_retry(request: web.Request) -> web.Response:
    _admin(request)
    raw = request.match_info["id"]
    number = parse_id(raw)
    if number is None or not raw.isdigit():  # "#42" is for people, not paths
        raise JSONError(400, "invalid_input", {"field": "id", "message": "a job number"})
    job = await request.app[SERVICES_KEY].ops.runner.retry_now(number, actor="api:admin")
    return web.json_response(job.to_json())


@routes.get("/api/traces")
async def get_traces(request: web.Request) -> web.Response:
    _reader(request)
    raw = request.query.get("limit", "20")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 4:
        raise JSONError(400, "invalid_input", {"field": "limit", "message": "1 to 500"})
    views = await request.app[SERVICES_KEY].ops.traces.list(limit=int(raw))
    return web.json_response({"traces": [v.to_json() for v in views]})


@routes.get("/api/traces/{id}")
async def get_trace(request: web.Request) -> web.Response:
    _reader(request)
    view = await request.app[SERVICES_KEY].ops.traces.get(request.match_info["id"])
    return web.json_response(view.to_json())


@routes.get("/api/admin/backups")
async def get_backups(request: web.Request) -> web.Response:
    _admin(request)
    found = await request.app[SERVICES_KEY].ops.backups.list()
    return web.json_response({"backups": [b.to_json() for b in found]})


@routes.post("/api/admin/backups")
async def post_backup(request: web.Request) -> web.Response:
    _admin(request)
    info = await request.app[SERVICES_KEY].ops.backups.create(actor="api:admin")
    return web.json_response(info.to_json(), status=201)


@routes.post("/api/admin/stats/restart")
async def post_stats_restart(request: web.Request) -> web.Response:
    _admin(request)
    # 200 either way: the job is re-armed; `ok` says whether the collection at once worked.
    result = await request.app[SERVICES_KEY].ops.stats.restart()
    return web.json_response(result.to_json())


@routes.post("/api/admin/stats/collect")
async def post_stats_collect(request: web.Request) -> web.Response:
    _admin(request)
    force = request.query.get("force", "") in {"1", "true", "yes"}
    result = await request.app[SERVICES_KEY].ops.stats.collect(force=force)
    return web.json_response(result.to_json())
