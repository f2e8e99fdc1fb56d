"""Alert intake routes: generic JSON alerts and the Alertmanager webhook."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from services.db import json_dumps
from services.intake import IntakeBatch, IntakeResult, parse_alertmanager, parse_generic
from services.web.auth import require_token
from services.web.body import read_json
from services.web.keys import SERVICES_KEY, SETTINGS_KEY

if TYPE_CHECKING:
    from services.container import Services

routes = web.RouteTableDef()


# Why each answer of the Alertmanager route is what it is. Alertmanager's webhook notifier
# (notify/webhook, notify.Retrier) treats 2xx as done, retries 5xx with backoff until the
# notification's deadline, and never retries any 4xx: the group's alerts are dropped for
# that flush (a group still firing is sent again at the next group_interval).
ALERTMANAGER_ANSWERS = (
    "202: committed (incidents opened, repeated or resolved). "
    "400: the body is not an Alertmanager notification (not JSON, not an object with an "
    "alerts list, a status or label that is not text); a retry could not succeed, so "
    "Alertmanager's not retrying is right. Missing alertname, more than 64 labels, "
    "truncatedAlerts and bodies up to ALERTMANAGER_MAX_BODY_BYTES are all taken. "
    "401/403: wrong or unconfigured token, a configuration error a retry cannot fix; "
    "Alertmanager logs it and counts alertmanager_notifications_failed_total. "
    "408: the body stalled (REQUEST_BODY_TIMEOUT_SECONDS). "
    "413: over ALERTMANAGER_MAX_BODY_BYTES (16 MiB, about 25,000 alerts of a group). "
    "503: the database refused the commit; nothing was written and Alertmanager retries."
)


def count_received(services: Services, result: IntakeResult, source: str) -> None:
    for outcome, items in (
        ("created", result.created),
        ("deduplicated", result.deduplicated),
        ("resolved", result.resolved),
    ):
        if items:
            services.metrics.alerts_received(source, outcome, len(items))
    if result.truncated_alerts:
        services.metrics.alerts_truncated(source, result.truncated_alerts)


async def _accept(request: web.Request, batch: IntakeBatch, source: str) -> web.Response:
    services = request.app[SERVICES_KEY]
    result: IntakeResult = await services.intake.submit(batch)
    count_received(services, result, source)
    return web.json_response(result.to_json(), status=202, dumps=json_dumps)


@routes.post("/api/alerts")
async def post_alert(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS_KEY].intake_token, "INTAKE_TOKEN")
    batch = parse_generic(await read_json(request))
    return await _accept(request, batch, "api")


@routes.post("/api/alerts/alertmanager")
async def post_alertmanager(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    require_token(request, settings.intake_token, "INTAKE_TOKEN")
    payload = await read_json(request, limit=settings.alertmanager_max_body_bytes)
    batch = parse_alertmanager(payload)
    del payload  # a 16 MiB group's parsed JSON need not live while it commits
    return await _accept(request, batch, batch.source)
