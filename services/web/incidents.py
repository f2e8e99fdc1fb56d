"""Incident routes: list, detail with timeline, and the lifecycle for scripts."""

from __future__ import annotations

from aiohttp import web

from services.locales import LANGUAGES
from services.models import MAX_ID, IncidentState, parse_id
from services.severity import Severity
from services.web.auth import require_local_or_token, require_token
from services.web.body import read_json
from services.web.errors import JSONError
from services.web.keys import SERVICES_KEY, SETTINGS_KEY

routes = web.RouteTableDef()

_STATES = "(open|triggered|acknowledged|resolved)"
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
}
_NOTE_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "actor": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 200,
                        "pattern": "\\S",
                    },
                    "note": {"type": ["string", "null"], "maxLength": 4000},
                },
            }
        }
    },
}


def _incident_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    number = parse_id(raw)
    if number is None or not raw.isdigit():  # "#42" is for people, not paths
        raise JSONError(
            400, "invalid_input", {"field": "id", "message": f"{raw!r} is not an incident number"}
        )
    return number


def _csv(request: web.Request, name: str) -> list[str]:
    raw = request.query.get(name, "")
    return raw.split(",") if raw else []


def parse_states(values: list[str]) -> list[IncidentState]:
    states: list[IncidentState] = []
    for value in values:
        if value == "open":
            states += [IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED]
            continue
        try:
            states.append(IncidentState(value))
        except ValueError:
            raise JSONError(
                400,
                "invalid_input",
                {
                    "field": "state",
                    "message": f"unknown state {value!r}; "
                    "use triggered, acknowledged, resolved or open",
                },
            ) from None
    return states


def parse_severities(values: list[str]) -> list[Severity]:
    bad = [v for v in values if v not in Severity.__members__]
    if bad:
        raise JSONError(
            400,
            "invalid_input",
            {"field": "severity", "message": f"unknown severity {bad[0]!r}; use P0, P1, P2, P3"},
        )
    return [Severity(v) for v in values]


@routes.get("/api/incidents")
async def list_incidents(request: web.Request) -> web.Response:
    require_local_or_token(request, request.app[SETTINGS_KEY].admin_token)
    raw_limit = request.query.get("limit", "100")
    if (
        not (raw_limit.isascii() and raw_limit.isdigit())
        or len(raw_limit) > 4
        or not 1 <= int(raw_limit) <= 1000
    ):
        raise JSONError(
            400, "invalid_input", {"field": "limit", "message": "limit is a number from 1 to 1000"}
        )
    incidents = await request.app[SERVICES_KEY].incidents.list(
        states=parse_states(_csv(request, "state")),
        severities=parse_severities(_csv(request, "severity")),
        limit=int(raw_limit),
    )
    return web.json_response(
        {"incidents": [i.to_json() for i in incidents], "count": len(incidents)}
    )


@routes.get("/api/incidents/{id}")
async def get_incident(request: web.Request) -> web.Response:
    require_local_or_token(request, request.app[SETTINGS_KEY].admin_token)
    detail = await request.app[SERVICES_KEY].incidents.get(_incident_id(request))
    return web.json_response(detail.to_json())


@routes.get("/api/incidents/{id}/postmortem")
async def get_postmortem(request: web.Request) -> web.Response:
    require_local_or_token(request, request.app[SETTINGS_KEY].admin_token)
    incident_id = _incident_id(request)
    language = request.query.get("lang")
    if language is not None and language not in LANGUAGES:
        raise JSONError(400, "invalid_input", {"field": "lang", "message": "lang is ko or en"})
    document = await request.app[SERVICES_KEY].postmortems.build(incident_id, language=language)
    return web.Response(
        text=document.markdown,
        content_type="text/markdown",
        charset="utf-8",
        headers={"Content-Disposition": f'inline; filename="{document.filename}"'},
    )


async def _actor_and_note(request: web.Request) -> tuple[str, str | None]:
    if not request.can_read_body:
        return "api", None
    body = await read_json(request)
    if not isinstance(body, dict):
        raise JSONError(
            400, "invalid_input", {"field": "body", "message": "the body must be a JSON object"}
        )
    actor, note = body.get("actor", "api"), body.get("note")
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise JSONError(
            400,
            "invalid_input",
            {"field": "actor", "message": "actor is a non-empty string of at most 200 characters"},
        )
    if note is not None and (not isinstance(note, str) or len(note) > 4000):
        raise JSONError(
            400,
            "invalid_input",
            {"field": "note", "message": "note is a string of at most 4000 characters"},
        )
    return f"api:{actor.strip()}", note


async def _lifecycle(request: web.Request, action: str) -> web.Response:
    """ack, resolve and reopen: the admin token, the id, the actor and note, one call."""
    require_token(request, request.app[SETTINGS_KEY].admin_token, "ADMIN_TOKEN")
    incident_id = _incident_id(request)
    actor, note = await _actor_and_note(request)
    incidents = request.app[SERVICES_KEY].incidents
    change = {
        "ack": incidents.acknowledge,
        "resolve": incidents.resolve,
        "reopen": incidents.reopen,
    }[action]
    view = await change(incident_id, actor=actor, note=note)
    return web.json_response(view.to_json())


@routes.post("/api/incidents/{id}/ack")
async def ack_incident(request: web.Request) -> web.Response:
    return await _lifecycle(request, "ack")


@routes.post("/api/incidents/{id}/resolve")
async def resolve_incident(request: web.Request) -> web.Response:
    return await _lifecycle(request, "resolve")


@routes.post("/api/incidents/{id}/reopen")
async def reopen_incident(request: web.Request) -> web.Response:
    return await _lifecycle(request, "reopen")
