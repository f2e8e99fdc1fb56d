"""`GET /`: the live incident board, server-rendered, kept current by an `EventSource` on the
hub's `board` job. Read-only; with BOARD_TOKEN set it asks for the token first."""

from __future__ import annotations

import hashlib
import hmac
import json
from html import escape
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr

from services.board import BOARD_EVENT, BOARD_JOB, BoardSnapshot
from services.locales import Texts
from services.severity import Severity
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


# --- pages ----------------------------------------------------------------------------------

# The pages are files beside this module with one slot each, filled here (a template engine
# for two slots would be more than the job needs). board.js renders every snapshot, the first
# one included, so the board's markup is built in one place.
PAGES = Path(__file__).parent / "pages"
_BOARD_PAGE = (PAGES / "board.html").read_text(encoding="utf-8")
_LOGIN_PAGE = (PAGES / "login.html").read_text(encoding="utf-8")
# Inside <script type="application/json"> only "</script" could end the block early; with
# every <, > and & escaped no alert text can (as Django's json_script does).
_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


_ENGLISH = Texts("en")


def board_data(snapshot: BoardSnapshot) -> dict[str, object]:
    """What the page starts from: the stream to follow, the severities' meanings, a snapshot."""
    return {
        "stream": STREAM,
        "event": BOARD_EVENT,
        # The board's page is English (`lang="en"`): its words, like the chat's, from one table.
        "meanings": {s.value: _ENGLISH.t(f"severity.meaning.{s.value}") for s in Severity},
        "snapshot": snapshot.to_json(),
    }


def render_board(snapshot: BoardSnapshot) -> str:
    data = json.dumps(board_data(snapshot), ensure_ascii=False).translate(_JSON_ESCAPES)
    return _BOARD_PAGE.replace("{{board_data}}", data)


def render_login(error: str | None) -> str:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    return _LOGIN_PAGE.replace("{{error}}", message)


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
_CSP = (
    "default-src 'none'; "
    "script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
