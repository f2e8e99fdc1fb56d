"""`GET /`: the live incident board, server-rendered, kept current by an `EventSource` on the
hub's `board` job. Read-only; with BOARD_TOKEN set it asks for the token first."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from html import escape
from typing import Any

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

_HTML = {"text/html": {"schema": {"type": "string"}}}
OPENAPI: dict[str, dict[str, Any]] = {
    "/": {
        "get": {
            "summary": "The live incident board (HTML; updates itself over the `board` SSE job)",
            "tags": ["board"],
            "parameters": [
                {
                    "name": "token",
                    "in": "query",
                    "required": False,
                    "description": "BOARD_TOKEN, when set: answered by a cookie and a redirect "
                    "to the board without the token in the address",
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": {"description": "the board", "content": _HTML},
                "303": {"description": "the token was right: a cookie and a redirect to /"},
                "401": {
                    "description": "BOARD_TOKEN is set: a form asking for it",
                    "content": _HTML,
                },
            },
        },
        "post": {
            "summary": "The board's token form (only used when BOARD_TOKEN is set)",
            "tags": ["board"],
            "requestBody": {
                # Without BOARD_TOKEN any body (or none) is answered by the redirect.
                "required": False,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"token": {"type": "string"}},
                        }
                    }
                },
            },
            "responses": {
                "303": {"description": "right token (or none needed): a cookie, back to /"},
                "401": {"description": "wrong token: the form again", "content": _HTML},
            },
        },
    }
}


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
        f'data-event="{BOARD_EVENT}">'
        '<header><h1>SunFlow Ops</h1><span id="live" class="live">connecting…</span></header>'
        f'<div id="summary" class="summary">{_summary(snapshot)}</div>'
        f'<main id="incidents">{_incidents(snapshot)}</main>'
        f'<section id="health" class="panel">{_health(snapshot)}</section>'
        f'<section id="sse" class="panel">{_sse(snapshot)}</section>'
        f'<footer>Read-only · updated <span id="updated" data-at="{escape(now)}">'
        f"{escape(snapshot.now.strftime('%H:%M:%S UTC'))}</span></footer>"
        f"<script>{_SCRIPT}</script></body></html>"
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


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


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


_CSS = """
:root{--bg:#f4f5f7;--fg:#111;--card:#fff;--muted:#555;--line:#d9dce1;
--p0:#c62828;--p1:#e65100;--p2:#b58900;--p3:#1565c0;--ok:#2e7d32;--warn:#b58900;--down:#c62828;
--on-p2:#111;--on-p3:#fff}
@media (prefers-color-scheme:dark){:root{--bg:#121417;--fg:#f1f1f1;--card:#1d2024;
--muted:#b0b4ba;--line:#33373d;--p2:#e0b000;--p3:#64a4ff;--warn:#e0b000;--on-p3:#111}}
*{box-sizing:border-box}
body{margin:0;padding:12px;background:var(--bg);color:var(--fg);
font:18px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:60rem;margin:auto}
header{display:flex;align-items:center;justify-content:space-between;gap:8px}
h1{font-size:1.5rem;margin:.2rem 0}
h2{font-size:1.15rem;margin:.8rem 0 .4rem}
.live{font-size:.9rem;padding:.2rem .6rem;border-radius:1rem;background:var(--line)}
.live.on{background:var(--ok);color:#fff}.live.off{background:var(--down);color:#fff}
.summary{display:flex;gap:6px;flex-wrap:wrap;margin:.5rem 0}
.tally{flex:1 1 4rem;text-align:center;padding:.4rem;border-radius:.5rem;color:#fff;
font-size:1rem}
.tally b{display:block;font-size:1.6rem}
.sev-P0.tally{background:var(--p0)}.sev-P1.tally{background:var(--p1)}
.sev-P2.tally{background:var(--p2);color:var(--on-p2)}
.sev-P3.tally{background:var(--p3);color:var(--on-p3)}
.group h2{border-bottom:3px solid var(--line)}
.group.sev-P0 h2{color:var(--p0);border-color:var(--p0)}
.group.sev-P1 h2{color:var(--p1);border-color:var(--p1)}
.group.sev-P2 h2{color:var(--p2);border-color:var(--p2)}
.group.sev-P3 h2{color:var(--p3);border-color:var(--p3)}
ul{list-style:none;margin:0;padding:0}
.incident{background:var(--card);border-left:10px solid var(--line);border-radius:.5rem;
padding:.6rem .8rem;margin:0 0 .6rem;box-shadow:0 1px 2px rgba(0,0,0,.15)}
.incident.sev-P0{border-color:var(--p0)}.incident.sev-P1{border-color:var(--p1)}
.incident.sev-P2{border-color:var(--p2)}.incident.sev-P3{border-color:var(--p3)}
.title{font-size:1.25rem;font-weight:600;overflow-wrap:anywhere}
.meta{display:flex;flex-wrap:wrap;gap:.3rem .8rem;color:var(--muted);font-size:1rem}
.state{font-weight:700;text-transform:uppercase;font-size:.85rem;padding:.05rem .45rem;
border-radius:.3rem;color:#fff;background:var(--down)}
.state-acknowledged{background:var(--ok)}
.ack,.next,.snooze{font-size:1rem;margin-top:.2rem;overflow-wrap:anywhere}
.ack.late{color:var(--down);font-weight:600}
.panel{background:var(--card);border-radius:.5rem;padding:.4rem .8rem;margin:.8rem 0}
.components li{padding:.15rem 0;overflow-wrap:anywhere}
.dot{display:inline-block;width:.8rem;height:.8rem;border-radius:50%;margin-right:.4rem;
background:var(--muted)}
.status-healthy .dot{background:var(--ok)}.status-degraded .dot{background:var(--warn)}
.status-down .dot{background:var(--down)}
.detail{color:var(--muted);font-size:.95rem}
.pill{font-size:.9rem;padding:.1rem .5rem;border-radius:1rem;color:#fff;background:var(--muted)}
.pill.status-healthy{background:var(--ok)}.pill.status-degraded{background:var(--warn)}
.pill.status-down{background:var(--down)}
.empty{font-size:1.3rem;text-align:center;padding:1.5rem;color:var(--ok)}
footer,.more{color:var(--muted);font-size:.9rem;text-align:center}
.login{display:flex;flex-direction:column;gap:.6rem;max-width:24rem;margin:2rem auto}
.login input,.login button{font-size:1.1rem;padding:.6rem}.error{color:var(--down)}
"""

_HEAD = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<meta name="referrer" content="no-referrer">'
    f"<style>{_CSS}</style>"
)

# Builds the same markup as the Python above with DOM calls and textContent only, so alert
# text can never become markup.
_SCRIPT = (
    """
"use strict";
const MEANINGS = __MEANINGS__;
const SEVERITIES = ["P0", "P1", "P2", "P3"];
const body = document.body;
let seq = Number(body.dataset.seq);
let offset = Date.parse(body.dataset.now) - Date.now();
const live = document.getElementById("live");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}
function span(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}
const now = () => Date.now() + offset;
function until(iso) {
  const d = (Date.parse(iso) - now()) / 1000;
  return d >= 0 ? "in " + span(d) : span(-d) + " ago";
}
function tick() {
  for (const n of document.querySelectorAll("[data-since]")) {
    n.textContent = span((now() - Date.parse(n.dataset.since)) / 1000);
  }
  for (const n of document.querySelectorAll("[data-due]")) n.textContent = until(n.dataset.due);
}
function incident(i) {
  const meta = el("div", {class: "meta"},
    el("span", {class: "state state-" + i.state}, i.state),
    el("span", {class: "age"}, "open ", el("span", {"data-since": i.first_seen_at}, "")),
    el("span", {class: "num"}, "#" + i.id),
    i.occurrence_count > 1 ? el("span", {class: "count"}, "\\u00d7" + i.occurrence_count) : null,
    el("span", {class: "source"}, i.source));
  let ack;
  if (i.state === "acknowledged") {
    ack = el("div", {class: "ack"}, "Acknowledged by ",
      el("b", {class: "who"}, i.acknowledged_by || "someone"),
      i.acknowledged_at ? " " : null,
      i.acknowledged_at ? el("span", {"data-since": i.acknowledged_at}, "") : null,
      i.acknowledged_at ? " ago" : null);
  } else {
    const late = Date.parse(i.response_deadline) < now() ? " late" : "";
    ack = el("div", {class: "ack none" + late}, "Not acknowledged \\u00b7 deadline ",
      el("span", {"data-due": i.response_deadline}, ""));
  }
  let snooze = null;
  if (i.snoozed_until && Date.parse(i.snoozed_until) > now()) {
    snooze = el("div", {class: "snooze"}, "Snoozed, wakes ",
      el("span", {"data-due": i.snoozed_until}, ""));
  }
  let next = null;
  if (i.next_step) {
    next = el("div", {class: "next"}, "Next: ", el("b", {}, i.next_step.message),
      " \\u2192 " + i.next_step.target + " ", el("span", {"data-due": i.next_step.due_at}, ""));
  }
  return el("li", {class: "incident sev-" + i.severity, id: "incident-" + i.id,
    "data-id": String(i.id), "data-state": i.state},
    el("div", {class: "title"}, i.title), meta, ack, snooze, next);
}
function render(snap) {
  const summary = document.getElementById("summary");
  summary.replaceChildren(...SEVERITIES.map((s) =>
    el("span", {class: "tally sev-" + s}, s + " ", el("b", {}, snap.open_counts[s] || 0))));
  const main = document.getElementById("incidents");
  const groups = [];
  for (const s of SEVERITIES) {
    const items = snap.incidents.filter((i) => i.severity === s);
    if (!items.length) continue;
    groups.push(el("section", {class: "group sev-" + s},
      el("h2", {}, s + " \\u00b7 " + MEANINGS[s] + " ",
        el("span", {class: "n"}, "(" + (snap.open_counts[s] || items.length) + ")")),
      el("ul", {}, ...items.map(incident))));
  }
  if (!groups.length) groups.push(el("p", {class: "empty"}, "No open incidents."));
  const total = SEVERITIES.reduce((a, s) => a + (snap.open_counts[s] || 0), 0);
  if (total > snap.incidents.length) {
    groups.push(el("p", {class: "more"}, "Showing the " + snap.incidents.length +
      " most urgent."));
  }
  main.replaceChildren(...groups);
  const h = snap.health;
  document.getElementById("health").replaceChildren(
    el("h2", {}, "Health ", el("span", {class: "pill status-" + h.status}, h.status)),
    el("ul", {class: "components"}, ...h.components.map((c) =>
      el("li", {class: "status-" + c.status}, el("span", {class: "dot"}),
        el("span", {class: "name"}, c.name), " ", el("span", {class: "detail"}, c.detail)))));
  const s = snap.sse;
  document.getElementById("sse").replaceChildren("SSE streams open: ",
    el("b", {id: "sse-count"}, s.connections), " of " + s.max_connections +
    " \\u00b7 board viewers ", el("b", {id: "board-viewers"}, s.board_viewers));
  const updated = document.getElementById("updated");
  updated.dataset.at = snap.now;
  updated.textContent = new Date(snap.now).toLocaleTimeString();
  tick();
}
function status(text, cls) { live.textContent = text; live.className = "live " + cls; }
const source = new EventSource(body.dataset.stream);
source.addEventListener("open", () => status("\\u25cf live", "on"));
source.addEventListener(body.dataset.event, (e) => {
  const snap = JSON.parse(e.data);
  if (snap.seq <= seq) return;  // older than what is on the page (a replay)
  seq = snap.seq;
  offset = Date.parse(snap.now) - Date.now();
  render(snap);
});
source.addEventListener("overloaded", () => status("server busy, retrying", "off"));
source.addEventListener("error", () => {
  if (source.readyState === EventSource.CLOSED) {
    status("offline", "off");
    setTimeout(() => location.reload(), 15000);
  } else {
    status("reconnecting\\u2026", "off");
  }
});
window.boardSource = source;
tick();
setInterval(tick, 1000);
"""
).replace(
    "__MEANINGS__",
    json.dumps({s.value: MEANINGS[s] for s in Severity}).replace("<", "\\u003c"),
)

_CSP = (
    "default-src 'none'; "
    f"script-src {_csp_hash(_SCRIPT)}; "
    f"style-src {_csp_hash(_CSS)}; "
    "connect-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
