"""Bearer-token checks for the HTTP edge, in constant time."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web
from pydantic import SecretStr

from services.web.errors import JSONError


def header_text(value: str | None) -> str | None:
    """A header (or cookie) value as text, or None when its bytes were not UTF-8.

    aiohttp keeps undecodable bytes as lone surrogates (surrogateescape); such a value is
    never decoded further or compared: it is simply not the right token.
    """
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def bearer_token(request: web.Request) -> str | None:
    header = header_text(request.headers.get("Authorization")) or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def secret_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of text from a request with a secret; text that is not
    valid UTF-8 (see `header_text`) never matches."""
    given = header_text(given)
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def token_matches(given: str | None, expected: SecretStr | None) -> bool:
    if expected is None:
        return False
    return secret_matches(given, expected.get_secret_value())


def require_token(request: web.Request, expected: SecretStr | None, setting: str) -> None:
    """401 without the right Bearer token; 403 when the server has no token configured."""
    if expected is None:
        raise JSONError(
            403,
            "disabled",
            f"{setting} is not set on the server, so this endpoint is refused",
        )
    if not token_matches(bearer_token(request), expected):
        raise JSONError(
            401,
            "unauthorized",
            f"send 'Authorization: Bearer <{setting}>'",
            headers={"WWW-Authenticate": 'Bearer realm="sunflow-ops"'},
        )


def is_local(request: web.Request) -> bool:
    """A direct request from this machine; anything relayed by a proxy does not count."""
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    peer = request.remote
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def require_local_or_token(request: web.Request, expected: SecretStr | None) -> None:
    """Read endpoints: open on loopback, otherwise the admin token (docs/api.md: access)."""
    if is_local(request):
        return
    if token_matches(bearer_token(request), expected):
        return
    raise JSONError(
        401,
        "unauthorized",
        "this endpoint is open on loopback only; elsewhere send 'Authorization: Bearer "
        "<ADMIN_TOKEN>'",
        headers={"WWW-Authenticate": 'Bearer realm="sunflow-ops"'},
    )
