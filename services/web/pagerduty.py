"""PagerDuty Events API v2 routes: `POST /v2/enqueue`, answered as PagerDuty answers."""

from __future__ import annotations

from aiohttp import web

from services.pagerduty import InvalidEvent, parse_event
from services.web.alerts import count_received
from services.web.auth import token_matches
from services.web.body import read_json
from services.web.errors import JSONError
from services.web.keys import SERVICES_KEY, SETTINGS_KEY

routes = web.RouteTableDef()

PATHS = ("/v2/enqueue", "/api/integrations/pagerduty/v2/enqueue")


def pd_error(status: int, errors: list[str], *, kind: str = "invalid event") -> web.Response:
    """PagerDuty's error body: `status`, `message` and the list of `errors`."""
    message = "Event object is invalid" if kind == "invalid event" else errors[0]
    return web.json_response({"status": kind, "message": message, "errors": errors}, status=status)


_ERROR_SCHEMA = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PagerDutyError"}}}
}


async def enqueue(request: web.Request) -> web.Response:
    expected = request.app[SETTINGS_KEY].intake_token
    try:
        body = await read_json(request)
        event = parse_event(body)
    except JSONError as exc:
        if exc.status != 400:
            raise
        reason = exc.detail.get("message") if isinstance(exc.detail, dict) else exc.detail
        return pd_error(400, [f"the body is not valid JSON: {reason}"])
    except InvalidEvent as exc:
        return pd_error(400, exc.errors)
    if expected is None:
        return pd_error(
            403,
            ["INTAKE_TOKEN is not set on the server, so this endpoint is refused"],
            kind="disabled",
        )
    if not token_matches(event.routing_key, expected):
        return pd_error(400, ["Invalid routing key"])
    services = request.app[SERVICES_KEY]
    result = await services.pagerduty.apply(event)
    if result is not None:
        count_received(services, result, "pagerduty")
    return web.json_response(
        {"status": "success", "message": "Event processed", "dedup_key": event.dedup_key},
        status=202,
    )


for _path in PATHS:
    routes.post(_path)(enqueue)
