"""Reading request bodies: JSON within a size and time limit, a clear 4xx for anything else."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import orjson
from aiohttp import web

from services.web.errors import JSONError
from services.web.keys import SETTINGS_KEY

# Text the databases cannot store: NUL (PostgreSQL text) and lone UTF-16 surrogates (not
# encodable as UTF-8). In JSON both can only come as \u escapes, so the walk below runs only
# when the raw body has one.
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_LONG_NUMBER = re.compile(rb"[0-9]{19}")

# The deepest nesting taken. orjson reads up to 1,024 levels, but what is read is written
# again (an SSE event's data, JSON columns) by encoders that recurse, and Python's recursion
# limit (1,000 frames, the request's own included) is reached first: a body nested deeper
# than this is refused up front instead of failing (500) on its way out.
MAX_DEPTH = 512


def _invalid(message: str) -> JSONError:
    return JSONError(400, "invalid_json", {"field": "body", "message": message})


def too_large(limit: int) -> JSONError:
    return JSONError(
        413,
        "body_too_large",
        f"the request body is larger than this endpoint accepts ({limit:,} bytes)",
    )


async def read_json(request: web.Request, *, limit: int | None = None) -> Any:
    """The body as JSON: 400 `invalid_json` with the reason for anything that is not, 413
    over `limit` bytes (default: the app's MAX_BODY_BYTES), 408 when the client stops
    sending before the body is complete."""
    return parse_json(await read_body(request, limit=limit))


async def read_body(request: web.Request, *, limit: int | None = None) -> bytes | bytearray:
    if request.content.is_eof():
        # All of it is here already (a small body comes with its headers): nothing to wait
        # for, so no timer (a few microseconds a request, on intake's hot path).
        return await _read(request, limit)
    seconds = request.app[SETTINGS_KEY].request_body_timeout_seconds
    try:
        async with asyncio.timeout(seconds):
            return await _read(request, limit)
    except TimeoutError:
        raise JSONError(
            408,
            "request_timeout",
            f"the request body did not arrive within {seconds:g} s; send it whole and retry",
        ) from None


async def _read(request: web.Request, limit: int | None) -> bytes | bytearray:
    if limit is not None and limit > request.client_max_size:
        return await _stream(request, limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(request.client_max_size) from None
    if limit is not None and len(raw) > limit:
        raise too_large(limit)
    return raw


async def _stream(request: web.Request, limit: int) -> bytearray:
    """A body larger than the app-wide limit (the Alertmanager route): read into one growing
    buffer that the parser reads in place, instead of `request.read()`'s bytearray plus its
    bytes copy, which would hold two copies of up to `limit` bytes."""
    if (request.content_length or 0) > limit:
        raise too_large(limit)
    body = bytearray()
    async for piece in request.content.iter_any():
        body += piece
        if len(body) > limit:
            raise too_large(limit)
    return body


def parse_json(raw: bytes | bytearray) -> Any:
    """Parse a request body; every way it can fail is a 400 `invalid_json` saying why."""
    if not raw.strip():
        raise _invalid("the body is empty")
    # orjson first (a few times faster); what it refuses (NaN, infinities, a lone surrogate,
    # bytes that are not UTF-8, nesting past MAX_DEPTH) and integers of 19 digits or more
    # (which it would turn into floats beyond 64 bits) go to the standard library, whose
    # answers, accepting or refusing, stay the ones this API has always given.
    if _LONG_NUMBER.search(raw):
        value = _stdlib_loads(raw)
    else:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = _stdlib_loads(raw)
    # Only a body with that many brackets can nest that deep: the walk is skipped for almost
    # every body (counting is a C loop over the bytes).
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and depth_over(value, MAX_DEPTH):
        raise _invalid(_TOO_DEEP)
    if _SUSPECT.search(raw):
        problem = unstorable(value)
        if problem:
            raise _invalid(problem)
    return value


_TOO_DEEP = f"the JSON is nested more than {MAX_DEPTH} levels deep"


def depth_over(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _stdlib_loads(raw: bytes | bytearray) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise _invalid("the body is not UTF-8 (nor UTF-16 or UTF-32) text") from None
    except json.JSONDecodeError as exc:
        raise _invalid(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise _invalid(_TOO_DEEP) from None
    except ValueError:
        # int() refuses more than sys.get_int_max_str_digits() digits (4,300 by default).
        raise _invalid("a number has more digits than this server reads (4,300)") from None


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
