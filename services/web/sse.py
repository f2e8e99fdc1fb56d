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
    CLIENT_GONE,
    Connection,
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


class StreamSink(asyncio.Protocol):
    """A stream's socket once its headers and `retry:` are out. It becomes the socket's
    protocol and aiohttp lets go of the connection (`_hand_over`): from then on the stream
    is this object, a `Connection` and the socket, with no request, response, task or
    parser kept alive for it. The hub writes events straight to the transport (its write
    buffer is the connection's bounded queue); the client's going away reaches the hub the
    moment the socket says so."""

    __slots__ = ("_chunked", "_transport", "conn", "hub")

    def __init__(self, transport: asyncio.Transport, *, chunked: bool) -> None:
        self._transport = transport
        self._chunked = chunked
        self.hub: SSEHub | None = None
        self.conn: Connection | None = None

    # --- services.sse.Sink -------------------------------------------------------------

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

    def end(self) -> None:
        transport = self._transport
        if transport.is_closing():
            return
        if self._chunked:
            transport.write(b"0\r\n\r\n")  # the zero-length chunk: a clean end of the body
        transport.close()  # once the client has taken what is queued
        if transport.get_write_buffer_size():
            # A client that stops reading must not keep the socket for ever.
            asyncio.get_running_loop().call_later(_EOF_TIMEOUT, transport.abort)

    # --- asyncio.Protocol --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """An event stream's client has nothing more to say; whatever it sends is dropped."""

    def eof_received(self) -> None:
        """The client closed its side: the transport closes, and `connection_lost` follows."""

    def connection_lost(self, exc: Exception | None) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and self.hub is not None:
            self.hub.detach(conn, CLIENT_GONE)


class _HandedOver(web.StreamResponse):
    """The response of a stream whose socket `StreamSink` owns: aiohttp, which finishes a
    response when its handler returns, must not write the end of the body; the hub does,
    when the stream ends."""

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def _hand_over(request: web.Request, sink: StreamSink) -> None:
    """Make `sink` the socket's protocol and tell aiohttp's connection handler that its
    connection is gone (with its transport unset first, so it does not close the socket):
    it frees its parser and timers and, once the handler returns, its task, the request and
    the response. What a stream needs after its headers is the socket alone."""
    protocol = request.protocol
    transport = protocol.transport
    assert transport is not None
    transport.set_protocol(sink)
    protocol.transport = None
    protocol.connection_lost(None)


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
        response = _HandedOver(status=200, headers=STREAM_HEADERS)
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
        sink = StreamSink(transport, chunked=chunked)
        attached = hub.attach(job_id, sink, last_id)
    finally:
        hub.release()
    conn = attached.connection
    _hand_over(request, sink)
    if conn is None:  # a finished job: the replay ended with its final event
        sink.end()
    else:
        sink.hub, sink.conn = hub, conn
    return response


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
