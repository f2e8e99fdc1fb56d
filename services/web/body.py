"""Reading request bodies: JSON with a clear 400 for anything malformed."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from services.web.errors import JSONError


async def read_json(request: web.Request) -> Any:
    raw = await request.read()  # client_max_size turns an oversize body into 413
    if not raw.strip():
        raise JSONError(400, "invalid_json", {"field": "body", "message": "the body is empty"})
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise JSONError(
            400, "invalid_json", {"field": "body", "message": "the body is not UTF-8"}
        ) from None
    except json.JSONDecodeError as exc:
        raise JSONError(
            400,
            "invalid_json",
            {"field": "body", "message": f"{exc.msg} at line {exc.lineno} column {exc.colno}"},
        ) from None
