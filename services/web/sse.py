"""SSE routes: the job event stream, publishing, the generation health and the SSE admin calls."""

from __future__ import annotations

import asyncio
import json
import math

from aiohttp import web
from aiohttp.http import HttpVersion11

from services.board import BOARD_JOB
from services.errors import Unavailable
from services.sse import (
    ABORTED_REASONS,
    CLIENT_GONE,
    SHUTDOWN,
    Frame,
    Overloaded,
    SSEHub,
    dumps,
    encode_event,
    parse_last_event_id,
)
from services.web.auth import require_token
from services.web.board import require_board_access
from services.web.body import read_json
from services.web.errors import JSONError
from services.web.keys import SERVICES_KEY, SETTINGS_KEY

routes = web.RouteTableDef()

STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
# How long a clean end of stream may wait on a client before the socket is dropped.
_EOF_TIMEOUT = 5.0

_JOB = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,127}$"},
}
# What parse_last_event_id accepts: empty (none) or a non-negative integer of up to 18 digits.
_EVENT_ID = {"type": "string", "pattern": "^\\s*[0-9]{0,18}\\s*$"}


class TransportSink:
    """Writes straight to the socket's transport: no task and no wake-up per event, and the
    transport's write buffer is the connection's bounded queue (the hub drops it when full)."""

    __slots__ = ("_chunked", "_transport")

    def __init__(self, transport: asyncio.Transport, *, chunked: bool) -> None:
        self._transport = transport
        self._chunked = chunked

    def send(self, frame: Frame) -> int:
        transport = self._transport
        if transport.is_closing():
            return -1
        transport.write(frame.chunked if self._chunked else frame.raw)
        return transport.get_write_buffer_size()

    def buffered(self) -> int:
        if self._transport.is_closing():
            return -1
        return self._transport.get_write_buffer_size()

    def abort(self) -> None:
        self._transport.abort()


def _hub(request: web.Request) -> SSEHub:
    return request.app[SERVICES_KEY].sse


def _last_event_id(request: web.Request) -> int | None:
    # Browsers send the header on their own reconnects; the query serves a new EventSource.
    # Both are checked, so a malformed one is refused even when the other wins.
    from_query = parse_last_event_id(request.query.get("last_event_id"))
    if "Last-Event-ID" in request.headers:
        return parse_last_event_id(request.headers["Last-Event-ID"])
    return from_query


@routes.get("/api/generation/jobs/{job_id}/events")
async def stream_events(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    job_id = request.match_info["job_id"]
    if job_id == BOARD_JOB:  # the live board's stream: BOARD_TOKEN when set (docs/api.md)
        require_board_access(request)
    last_id = _last_event_id(request)
    try:
        _job, more = await hub.lookup(job_id, last_id)
    except Unavailable as exc:
        return _unavailable(request, hub, exc)
    if not more:
        # A finished job with nothing left: 204 is what makes a browser's EventSource stop.
        return web.Response(status=204, headers={"Cache-Control": "no-cache"})
    if request.method == "HEAD":  # headers only; the hub writes bodies straight to sockets
        return web.Response(status=200, headers=STREAM_HEADERS)
    try:
        hub.admit()
    except Overloaded as exc:
        return _refuse(request, hub, exc)
    try:
        response = web.StreamResponse(status=200, headers=STREAM_HEADERS)
        chunked = request.version >= HttpVersion11
        if chunked:
            response.enable_chunked_encoding()
        response.force_close()  # one stream per TCP connection; EventSource opens a new one
        await response.prepare(request)
        # The first write sends the headers; after it the hub writes to the transport itself.
        await response.write(f"retry: {hub.retry_ms()}\n\n".encode())
        transport = request.transport
        if transport is None or transport.is_closing():
            return response
        attached = hub.attach(job_id, TransportSink(transport, chunked=chunked), last_id)
    finally:
        hub.release()
    conn = attached.connection
    if conn is None:  # a finished job: the replay ended with its final event
        await _end(request, response)
        return response
    reason = SHUTDOWN
    try:
        reason = await conn.done
    except asyncio.CancelledError:
        reason = CLIENT_GONE if transport.is_closing() else SHUTDOWN
        raise
    finally:
        hub.detach(conn, reason)
    if reason not in ABORTED_REASONS:
        await _end(request, response)
    return response


async def _end(request: web.Request, response: web.StreamResponse) -> None:
    """End the stream cleanly (the zero-length chunk), without waiting long on a client."""
    try:
        await asyncio.wait_for(response.write_eof(), _EOF_TIMEOUT)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:
        pass


def _refuse(request: web.Request, hub: SSEHub, exc: Overloaded) -> web.Response:
    """Over MAX_SSE_CONNECTIONS. An EventSource gives up for good on any status but 200, so
    stream clients get 200, a long `retry:` and an `overloaded` event, then the end of the
    stream, and come back by themselves; other clients get 503 with Retry-After."""
    retry = hub.refusal_retry_ms()
    headers = {"Retry-After": str(math.ceil(retry / 1000)), "Cache-Control": "no-cache"}
    if "text/event-stream" in request.headers.get("Accept", ""):
        data = dumps({"type": "overloaded", "retry_ms": retry, "detail": exc.message})
        body = encode_event(data, event_type="overloaded", retry_ms=retry)
        headers["Content-Type"] = "text/event-stream; charset=utf-8"
        headers["X-Accel-Buffering"] = "no"
        return web.Response(status=200, body=body, headers=headers)
    raise JSONError(
        503, exc.code, {"message": exc.message, "retry_after_ms": retry}, headers=headers
    )


def _unavailable(request: web.Request, hub: SSEHub, exc: Unavailable) -> web.Response:
    """Redis (REDIS_URL) is down and this instance cannot read the job's shared history.
    As with overload, stream clients get 200, a long `retry:` and the end of the stream (an
    EventSource gives up for good on a 503); other clients get 503 with Retry-After."""
    retry = hub.refusal_retry_ms()
    headers = {"Retry-After": str(math.ceil(retry / 1000)), "Cache-Control": "no-cache"}
    if "text/event-stream" in request.headers.get("Accept", ""):
        headers["Content-Type"] = "text/event-stream; charset=utf-8"
        headers["X-Accel-Buffering"] = "no"
        body = f"retry: {retry}\n: {exc.code}\n\n".encode()
        return web.Response(status=200, body=body, headers=headers)
    raise JSONError(
        503,
        exc.code,
        {"message": exc.message, "retry_after_ms": retry, **_as_dict(exc.detail)},
        headers=headers,
    )


def _as_dict(detail: object) -> dict[str, object]:
    return dict(detail) if isinstance(detail, dict) else {}


@routes.post("/api/generation/jobs/{job_id}/events")
async def publish_event(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS_KEY].intake_token, "INTAKE_TOKEN")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise JSONError(
            400, "invalid_input", {"field": "body", "message": "the body must be a JSON object"}
        )
    event_type = body.get("type")
    if not isinstance(event_type, str):
        raise JSONError(
            400, "invalid_input", {"field": "type", "message": "type is a string, e.g. progress"}
        )
    final = body.get("final", False)
    if not isinstance(final, bool):
        raise JSONError(
            400, "invalid_input", {"field": "final", "message": "final is true or false"}
        )
    hub = _hub(request)
    job_id = request.match_info["job_id"]
    if job_id == BOARD_JOB:
        raise JSONError(
            403, "reserved_job", f"{BOARD_JOB!r} is the live board's job; the service writes it"
        )
    published = await hub.submit(job_id, event_type, body.get("data"), final=final)
    return web.json_response(published.to_json(), status=202)


@routes.get("/api/generation/health")
async def generation_health(request: web.Request) -> web.Response:
    snapshot = _hub(request).snapshot()
    status = 503 if snapshot["status"] == "down" else 200
    return web.json_response(snapshot, status=status, dumps=json.dumps)


@routes.post("/api/admin/sse/restart")
async def admin_restart(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS_KEY].admin_token, "ADMIN_TOKEN")
    return web.json_response((await _hub(request).restart()).to_json())


@routes.post("/api/admin/connections/reset")
async def admin_reset(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS_KEY].admin_token, "ADMIN_TOKEN")
    return web.json_response((await _hub(request).reset_connections()).to_json())


@routes.post("/api/admin/sse/broadcast-reconnect")
async def admin_broadcast_reconnect(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS_KEY].admin_token, "ADMIN_TOKEN")
    return web.json_response((await _hub(request).broadcast_reconnect()).to_json())


async def on_shutdown(app: web.Application) -> None:
    """End the streams before aiohttp waits for handlers, so shutdown is not held up."""
    await app[SERVICES_KEY].sse.stop()
