"""Error translation at the HTTP edge: every error leaves as JSON `{"error", "detail"}`."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from services.errors import DomainError

log = logging.getLogger(__name__)


def error_response(
    status: int, error: str, detail: Any = None, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


class JSONError(Exception):
    """Raised by a route to answer with this status and JSON error document."""

    def __init__(
        self, status: int, error: str, detail: Any = None, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


_REASONS = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def error_for(request: web.Request, exc: Exception) -> web.Response:
    """The JSON error answer for an exception out of a route; re-raises redirects (< 400).
    The web's one error handler, called by `metrics_middleware` (one middleware layer)."""
    if isinstance(exc, DomainError):
        return error_response(exc.http_status, exc.code, {"message": exc.message, **_dict(exc)})
    if isinstance(exc, JSONError):
        return error_response(exc.status, exc.error, exc.detail, headers=exc.headers)
    if isinstance(exc, web.HTTPException):
        if exc.status_code < 400:
            raise exc
        code = _REASONS.get(exc.status_code, exc.reason.lower().replace(" ", "_"))
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status_code)) else None
        if exc.status_code == 413:
            detail = (
                "the request body is larger than this endpoint accepts "
                f"({request.client_max_size:,} bytes)"
            )
        return error_response(exc.status_code, code, detail, headers=_keep_headers(exc))
    log.exception("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed; see its log")


def _dict(exc: DomainError) -> dict[str, Any]:
    return exc.detail if isinstance(exc.detail, dict) else {}


def _keep_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
