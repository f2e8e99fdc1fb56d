"""`GET /`: the live incident board, server-rendered, kept current by an `EventSource` on the
hub's `board` job. Read-only; with BOARD_TOKEN set it asks for the token first."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from html import escape
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr

from services.board import BOARD_EVENT, BOARD_JOB, BoardIncident, BoardSnapshot, as_utc
from services.models import IncidentState
from services.severity import MEANINGS, Severity
from services.web.auth import bearer_token, secret_matches, token_matches
from services.web.errors import JSONError
from services.web.keys import SERVICES_KEY, SETTINGS_KEY

routes = web.RouteTableDef()

COOKIE = "sunflow_board"
COOKIE_MAX_AGE = 30 * 86400
STREAM = f"api/generation/jobs/{BOARD_JOB}/events"  # relative: works behind a path prefix


# --- access --------------------------------------------------------------------------------


def session_value(token: SecretStr) -> str:
    """The cookie's value: derived from BOARD_TOKEN, so the token itself is never stored."""
    key = token.get_secret_value().encode()
    return hmac.new(key, b"sunflow-ops board session v1", hashlib.sha256).hexdigest()


def board_access(request: web.Request) -> bool:
    """Open without BOARD_TOKEN; otherwise the board cookie, a Bearer token or `?token=`."""
    expected: SecretStr | None = request.app[SETTINGS_KEY].board_token
    if expected is None:
        return True
    if secret_matches(request.cookies.get(COOKIE), session_value(expected)):
        return True
    for given in (bearer_token(request), request.query.get("token")):
        if token_matches(given, expected):
            return True
    return False


def require_board_access(request: web.Request) -> None:
    """For the board's SSE stream: 401 JSON unless `board_access`."""
    if not board_access(request):
        raise JSONError(
            401,
            "unauthorized",
            "the board stream needs BOARD_TOKEN: open the board (/) and enter it, or send "
            "'Authorization: Bearer <BOARD_TOKEN>'",
            headers={"WWW-Authenticate": 'Bearer realm="sunflow-ops board"'},
        )


def _signed_in(request: web.Request, token: SecretStr) -> web.Response:
    response = web.Response(status=303, headers={"Location": "./", "Cache-Control": "no-store"})
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"
    response.set_cookie(
        COOKIE,
        session_value(token),
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    return response


@routes.get("/")
async def board_page(request: web.Request) -> web.Response:
    expected: SecretStr | None = request.app[SETTINGS_KEY].board_token
    if expected is not None:
        given = request.query.get("token")
        if given is not None:
            if token_matches(given, expected):
                return _signed_in(request, expected)
            return _login_page("That token is not right.")
        if not board_access(request):
            return _login_page(None)
    snapshot = await request.app[SERVICES_KEY].board.snapshot()
    return _page(render_board(snapshot), status=200)


@routes.get("/static/{name}")
async def board_asset(request: web.Request) -> web.Response:
    """The board's style and script (public: they hold no data)."""
    asset = _ASSETS.get(request.match_info["name"])
    if asset is None:
        raise JSONError(404, "not_found", "no such file; the board has board.css and board.js")
    content_type, body = asset
    return web.Response(
        body=body,
        content_type=content_type,
        charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@routes.post("/")
async def board_login(request: web.Request) -> web.Response:
    expected: SecretStr | None = request.app[SETTINGS_KEY].board_token
    if expected is None:
        return web.Response(status=303, headers={"Location": "./"})
    form = await request.post()
    given = form.get("token")
    if isinstance(given, str) and token_matches(given.strip(), expected):
        return _signed_in(request, expected)
    return _login_page("That token is not right.")


# --- rendering -----------------------------------------------------------------------------


def fmt_span(seconds: float) -> str:
    """A short duration, as the page's script writes it too: 45s, 12m, 3h 05m, 2d 4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _since(now: datetime, at: datetime) -> str:
    return fmt_span((now - as_utc(at)).total_seconds())


def _until(now: datetime, at: datetime) -> str:
    delta = (as_utc(at) - now).total_seconds()
    return f"in {fmt_span(delta)}" if delta >= 0 else f"{fmt_span(-delta)} ago"


def _incident(item: BoardIncident, now: datetime) -> str:
    i = item.incident
    sev = i.severity.value
    state = i.state.value
    iso_first = escape(as_utc(i.first_seen_at).isoformat())
    parts = [
        f'<li class="incident sev-{sev}" id="incident-{i.id}" data-id="{i.id}" '
        f'data-state="{state}">',
        f'<div class="title">{escape(i.title)}</div>',
        '<div class="meta">',
        f'<span class="state state-{state}">{state}</span>',
        f'<span class="age">open <span data-since="{iso_first}">'
        f"{_since(now, i.first_seen_at)}</span></span>",
        f'<span class="num">#{i.id}</span>',
    ]
    if i.occurrence_count > 1:
        parts.append(f'<span class="count">×{i.occurrence_count}</span>')
    parts.append(f'<span class="source">{escape(i.source)}</span></div>')
    if i.state is IncidentState.ACKNOWLEDGED:
        who = escape(i.acknowledged_by or "someone")
        when = ""
        if i.acknowledged_at is not None:
            at = as_utc(i.acknowledged_at)
            when = f' <span data-since="{escape(at.isoformat())}">{_since(now, at)}</span> ago'
        parts.append(f'<div class="ack">Acknowledged by <b class="who">{who}</b>{when}</div>')
    else:
        deadline = as_utc(i.response_deadline)
        late = " late" if deadline < now else ""
        parts.append(
            f'<div class="ack none{late}">Not acknowledged · deadline '
            f'<span data-due="{escape(deadline.isoformat())}">{_until(now, deadline)}</span></div>'
        )
    if i.snoozed_until is not None and as_utc(i.snoozed_until) > now:
        until = as_utc(i.snoozed_until)
        parts.append(
            f'<div class="snooze">Snoozed, wakes <span data-due="{escape(until.isoformat())}">'
            f"{_until(now, until)}</span></div>"
        )
    step = item.next_step
    if step is not None:
        due = as_utc(step.due_at)
        parts.append(
            f'<div class="next">Next: <b>{escape(step.message)}</b> → {escape(step.target)} '
            f'<span data-due="{escape(due.isoformat())}">{_until(now, due)}</span></div>'
        )
    parts.append("</li>")
    return "".join(parts)


def _incidents(snapshot: BoardSnapshot) -> str:
    groups = snapshot.by_severity()
    if not groups:
        return '<p class="empty">No open incidents.</p>'
    out = []
    for severity, items in groups:
        sev = severity.value
        out.append(
            f'<section class="group sev-{sev}"><h2>{sev} · {escape(MEANINGS[severity])} '
            f'<span class="n">({snapshot.open_counts.get(sev, len(items))})</span></h2><ul>'
        )
        out.extend(_incident(item, snapshot.now) for item in items)
        out.append("</ul></section>")
    if snapshot.shown_incomplete:
        out.append(f'<p class="more">Showing the {len(snapshot.incidents)} most urgent.</p>')
    return "".join(out)


def _summary(snapshot: BoardSnapshot) -> str:
    return "".join(
        f'<span class="tally sev-{s.value}">{s.value} <b>{snapshot.open_counts.get(s.value, 0)}'
        "</b></span>"
        for s in Severity
    )


def _health(snapshot: BoardSnapshot) -> str:
    health = snapshot.health
    status = escape(str(health.get("status", "")))
    rows = "".join(
        f'<li class="status-{escape(c["status"])}"><span class="dot"></span>'
        f'<span class="name">{escape(c["name"])}</span> '
        f'<span class="detail">{escape(c["detail"])}</span></li>'
        for c in health.get("components", [])
    )
    return (
        f'<h2>Health <span class="pill status-{status}">{status}</span></h2>'
        f'<ul class="components">{rows}</ul>'
    )


def _sse(snapshot: BoardSnapshot) -> str:
    s = snapshot.sse
    return (
        f'SSE streams open: <b id="sse-count">{s["connections"]}</b> of {s["max_connections"]}'
        f' · board viewers <b id="board-viewers">{s["board_viewers"]}</b>'
    )


def render_board(snapshot: BoardSnapshot) -> str:
    now = snapshot.now.isoformat()
    return (
        f"{_HEAD}<title>SunFlow Ops · live board</title></head>"
        f'<body data-seq="{snapshot.seq}" data-now="{escape(now)}" data-stream="{STREAM}" '
        f'data-event="{BOARD_EVENT}" data-meanings="{escape(_MEANINGS)}">'
        '<header><h1>SunFlow Ops</h1><span id="live" class="live">connecting…</span></header>'
        f'<div id="summary" class="summary">{_summary(snapshot)}</div>'
        f'<main id="incidents">{_incidents(snapshot)}</main>'
        f'<section id="health" class="panel">{_health(snapshot)}</section>'
        f'<section id="sse" class="panel">{_sse(snapshot)}</section>'
        f'<footer>Read-only · updated <span id="updated" data-at="{escape(now)}">'
        f"{escape(snapshot.now.strftime('%H:%M:%S UTC'))}</span></footer>"
        '<script src="static/board.js"></script></body></html>'
    )


def render_login(error: str | None) -> str:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    return (
        f"{_HEAD}<title>SunFlow Ops · board</title></head><body>"
        "<header><h1>SunFlow Ops</h1></header>"
        '<form class="panel login" method="post" action="./">'
        '<label for="token">Board token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        "required autofocus>"
        f'{message}<button type="submit">Open the board</button></form></body></html>'
    )


def _login_page(error: str | None) -> web.Response:
    return _page(render_login(error), status=401)


def _page(body: str, *, status: int) -> web.Response:
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": _CSP,
        },
    )


# The page's style and script are files beside this module, served at static/ (relative
# links: the board also works behind a path prefix).
STATIC = Path(__file__).parent / "static"
_ASSETS = {
    "board.css": ("text/css", (STATIC / "board.css").read_bytes()),
    "board.js": ("text/javascript", (STATIC / "board.js").read_bytes()),
}
_MEANINGS = json.dumps({s.value: MEANINGS[s] for s in Severity})

_HEAD = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<meta name="referrer" content="no-referrer">'
    '<link rel="stylesheet" href="static/board.css">'
)

_CSP = (
    "default-src 'none'; "
    "script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
