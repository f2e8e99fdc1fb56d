"""`GET /api/openapi.json`: the OpenAPI 3 description, assembled from each route module."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.severity import ALIASES, Severity
from services.web import (
    alerts,
    board,
    health,
    heartbeats,
    incidents,
    metrics,
    pagerduty,
    pipeline,
    sse,
)

routes = web.RouteTableDef()

SEVERITY_NAMES = [
    *(s.value for s in Severity),
    *(s.value.lower() for s in Severity),
    *ALIASES,
]

_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

OPENAPI: dict[str, dict[str, Any]] = {
    "/api/openapi.json": {
        "get": {
            "summary": "This document",
            "tags": ["meta"],
            "responses": {
                "200": {
                    "description": "OpenAPI 3 document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {}},
    },
    "Severity": {"type": "string", "enum": ["P0", "P1", "P2", "P3"]},
    "AlertIn": {
        "type": "object",
        "required": ["title"],
        "description": "severity is required unless status is 'resolved'.",
        "properties": {
            "severity": {
                "type": "string",
                "enum": [*SEVERITY_NAMES],
                "description": "P0-P3, or critical (P0), high (P1), warning (P2), info (P3)",
            },
            "title": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": "\\S"},
            "dedup_key": {"type": ["string", "null"], "maxLength": 255},
            "source": {"type": ["string", "null"], "maxLength": 100},
            "description": {"type": ["string", "null"], "maxLength": 20000},
            "labels": {
                "type": ["object", "null"],
                "maxProperties": 64,
                "additionalProperties": {"type": ["string", "number"]},
            },
            "status": {"type": ["string", "null"], "enum": ["firing", "resolved", None]},
        },
        "if": {"properties": {"status": {"const": "resolved"}}, "required": ["status"]},
        "else": {"required": ["severity"]},
    },
    "AlertmanagerPayload": {
        "type": "object",
        "required": ["alerts"],
        "description": "Alertmanager's webhook (version 4), or Grafana alerting's webhook "
        "contact point (version 1 with orgId). Any number of labels is taken (beyond 64 "
        "they are kept shortened in a truncated_labels label); an alert without alertname "
        "gets its title from summary, other labels or the fingerprint.",
        "properties": {
            "version": {
                "type": "string",
                "enum": ["4", "1"],
                "description": '"1" only with orgId (Grafana)',
            },
            # Sent by Alertmanager, read per alert instead, so any value is accepted.
            "status": {"description": "ignored: each alert's own status counts"},
            "receiver": {"description": "ignored"},
            "groupKey": {"description": "names the group in the log line of a truncation"},
            "groupLabels": {"description": "ignored"},
            "commonLabels": {"description": "ignored"},
            "commonAnnotations": {"description": "ignored"},
            "externalURL": {"description": "ignored"},
            "truncatedAlerts": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "alerts the sender left out (max_alerts): recorded on the "
                "incidents, in the answer, the log and sunflow_alerts_truncated_total",
            },
            "orgId": {"description": "Grafana: marks the payload as Grafana's"},
            "title": {"description": "Grafana: ignored (each alert has its own)"},
            "state": {"description": "Grafana: ignored"},
            "message": {"description": "Grafana: ignored"},
            "alerts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status", "labels"],
                    "properties": {
                        "status": {"type": "string", "enum": ["firing", "resolved"]},
                        "labels": {
                            "type": ["object", "null"],
                            "additionalProperties": {"type": "string"},
                        },
                        "annotations": {
                            "type": ["object", "null"],
                            "additionalProperties": {"type": "string"},
                        },
                        "startsAt": {"type": ["string", "null"]},
                        "endsAt": {"type": ["string", "null"]},
                        "generatorURL": {"type": ["string", "null"]},
                        "fingerprint": {"type": ["string", "null"]},
                        "values": {"description": "Grafana: shown in the description"},
                        "valueString": {"description": "Grafana: ignored"},
                        "silenceURL": {"type": ["string", "null"]},
                        "dashboardURL": {"type": ["string", "null"]},
                        "panelURL": {"type": ["string", "null"]},
                        "imageURL": {"type": ["string", "null"]},
                    },
                },
            },
        },
    },
    "PagerDutyEvent": {
        "type": "object",
        "required": ["routing_key", "event_action"],
        "description": "An Events API v2 alert event. payload (summary, source, severity) "
        "is required for a trigger; dedup_key for acknowledge and resolve.",
        "properties": {
            "routing_key": {"type": "string", "minLength": 1, "description": "INTAKE_TOKEN"},
            "event_action": {"type": "string", "enum": ["trigger", "acknowledge", "resolve"]},
            "dedup_key": {"type": "string", "maxLength": 255},
            "payload": {
                "type": "object",
                "required": ["summary", "source", "severity"],
                "properties": {
                    "summary": {"type": "string", "pattern": "\\S"},
                    "source": {"type": "string", "pattern": "\\S"},
                    "severity": {
                        "type": "string",
                        "enum": ["critical", "error", "warning", "info"],
                        "description": "P0, P1, P2, P3",
                    },
                    "timestamp": {"type": "string"},
                    "component": {"type": "string"},
                    "group": {"type": "string"},
                    "class": {"type": "string"},
                    "custom_details": {},
                },
            },
            "client": {"type": "string"},
            "client_url": {"type": "string"},
            "links": {"type": "array", "items": {"type": "object"}},
            "images": {"type": "array", "items": {"type": "object"}},
        },
    },
    "PagerDutyAccepted": {
        "type": "object",
        "required": ["status", "message", "dedup_key"],
        "properties": {
            "status": {"type": "string", "enum": ["success"]},
            "message": {"type": "string", "enum": ["Event processed"]},
            "dedup_key": {"type": "string"},
        },
    },
    "PagerDutyError": {
        "type": "object",
        "required": ["status", "message", "errors"],
        "properties": {
            "status": {"type": "string"},
            "message": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "string"}},
        },
    },
    "HeartbeatPing": {
        "type": "object",
        "required": ["name", "state", "every", "grace", "severity", "due_at"],
        "properties": {
            "name": {"type": "string"},
            "state": {"type": "string", "enum": ["waiting", "up", "late", "down"]},
            "every": {"type": "string"},
            "grace": {"type": "string"},
            "severity": {"$ref": "#/components/schemas/Severity"},
            "last_ping_at": {"type": ["string", "null"], "format": "date-time"},
            "due_at": {"type": "string", "format": "date-time"},
            "down_since": {"type": ["string", "null"], "format": "date-time"},
            "set_by": {"type": "string"},
            "resolved_incident": {
                "type": ["integer", "null"],
                "description": "the incident of the miss this ping ended",
            },
        },
    },
    "IntakeResult": {
        "type": "object",
        "required": ["created", "deduplicated", "resolved", "resolved_unknown", "incidents"],
        "properties": {
            "created": {"type": "array", "items": {"type": "integer"}},
            "deduplicated": {"type": "array", "items": {"type": "integer"}},
            "resolved": {"type": "array", "items": {"type": "integer"}},
            "resolved_unknown": {"type": "array", "items": {"type": "string"}},
            "truncated_alerts": {
                "type": "integer",
                "description": "alerts the sender left out of this notification",
            },
            "incidents": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Incident": {
        "type": "object",
        "required": ["id", "dedup_key", "severity", "title", "state", "occurrence_count"],
        "properties": {
            "id": {"type": "integer"},
            "dedup_key": {"type": "string"},
            "severity": {"$ref": "#/components/schemas/Severity"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "source": {"type": "string"},
            "labels": {"type": "object"},
            "state": {"type": "string", "enum": ["triggered", "acknowledged", "resolved"]},
            "occurrence_count": {"type": "integer"},
            "first_seen_at": {"type": "string", "format": "date-time"},
            "last_seen_at": {"type": "string", "format": "date-time"},
            "response_deadline": {"type": "string", "format": "date-time"},
            "acknowledged_at": {"type": ["string", "null"], "format": "date-time"},
            "acknowledged_by": {"type": ["string", "null"]},
            "resolved_at": {"type": ["string", "null"], "format": "date-time"},
            "resolved_by": {"type": ["string", "null"]},
        },
    },
    "IncidentDetail": {
        "allOf": [
            {"$ref": "#/components/schemas/Incident"},
            {
                "type": "object",
                "required": ["timeline"],
                "properties": {
                    "timeline": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "at", "kind", "actor", "details"],
                            "properties": {
                                "id": {"type": "integer"},
                                "at": {"type": "string", "format": "date-time"},
                                "kind": {"type": "string"},
                                "actor": {"type": "string"},
                                "details": {"type": "object"},
                            },
                        },
                    }
                },
            },
        ]
    },
    "Health": {
        "type": "object",
        "required": ["status", "components"],
        "properties": {
            "instance": {"type": "string", "description": "INSTANCE_ID of who answered"},
            "status": {"type": "string", "enum": ["healthy", "degraded", "down"]},
            "components": {"type": "object"},
        },
    },
}

RESPONSES: dict[str, Any] = {
    "BadRequest": {"description": "malformed input; detail names the field", **_ERROR},
    "Unauthorized": {"description": "missing or wrong Bearer token", **_ERROR},
    "Disabled": {"description": "the token for this endpoint is not configured", **_ERROR},
    "NotFound": {"description": "no such object", **_ERROR},
    "Conflict": {"description": "the transition is not allowed in this state", **_ERROR},
    "TooLarge": {
        "description": "the body is over the size limit (MAX_BODY_BYTES, 1 MiB; "
        "ALERTMANAGER_MAX_BODY_BYTES, 16 MiB, on /api/alerts/alertmanager)",
        **_ERROR,
    },
    "TooSlow": {
        "description": "the body did not fully arrive within REQUEST_BODY_TIMEOUT_SECONDS",
        **_ERROR,
    },
    "Unavailable": {
        "description": "the database refused the write; nothing was committed, retry",
        **_ERROR,
    },
}

# Route modules that describe themselves; a test checks every registered route appears.
MODULES: list[Any] = [
    health,
    alerts,
    pagerduty,
    heartbeats,
    incidents,
    metrics,
    sse,
    pipeline,
    board,
]


def build_document(extra: list[dict[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for part in [*(m.OPENAPI for m in MODULES), OPENAPI, *(extra or [])]:
        for path, operations in part.items():
            paths.setdefault(path, {}).update(operations)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SunFlow Ops",
            "version": "0.1.0",
            "description": "Chat-ops incident response for the SunFlow pipeline. "
            "Errors are JSON {error, detail}. Text in JSON bodies must not hold NUL (\\u0000) "
            "or lone surrogates: such a body is refused with 400 invalid_json.",
        },
        "paths": paths,
        "components": {
            "schemas": {**SCHEMAS, **sse.SCHEMAS},
            "responses": RESPONSES,
            "securitySchemes": {
                "intakeToken": {"type": "http", "scheme": "bearer", "description": "INTAKE_TOKEN"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN"},
            },
        },
    }


DOCUMENT_KEY = web.AppKey("openapi_document", dict)


@routes.get("/api/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT_KEY])
