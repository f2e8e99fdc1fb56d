"""Reading request bodies: JSON with a clear 400 for anything malformed."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from aiohttp import web

from services.web.errors import JSONError

# Text the databases cannot store: NUL (PostgreSQL text) and lone UTF-16 surrogates (not
# encodable as UTF-8). In JSON both can only come as \u escapes, so the walk below runs only
# when the raw body has one.
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


async def read_json(request: web.Request) -> Any:
    raw = await request.read()  # client_max_size turns an oversize body into 413
    if not raw.strip():
        raise JSONError(400, "invalid_json", {"field": "body", "message": "the body is empty"})
    # orjson first (a few times faster); what it refuses (NaN, infinities, a lone surrogate,
    # bytes that are not UTF-8) and integers of 19 digits or more (which it would turn into
    # floats beyond 64 bits) go to the standard library, whose answers, accepting or
    # refusing, stay the ones this API has always given.
    if _LONG_NUMBER.search(raw):
        value = _stdlib_loads(raw)
    else:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = _stdlib_loads(raw)
    if _SUSPECT.search(raw):
        problem = unstorable(value)
        if problem:
            raise JSONError(400, "invalid_json", {"field": "body", "message": problem})
    return value


def _stdlib_loads(raw: bytes) -> Any:
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


def unstorable(value: Any) -> str | None:
    """Why a parsed JSON value holds text no database column can keep, or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "a string holds a NUL character (\\u0000), which text cannot hold"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff) that is not text"
    return None
