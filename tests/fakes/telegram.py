"""A fake Telegram Bot API server: records what it gets, plays users, injects failures.

It speaks the subset of the Bot API the bot uses, checks HTML the way Telegram does
(unknown tags or unbalanced markup: "can't parse entities"; more than 4096 characters:
"message is too long"), and can enforce Telegram's rate limits with 429 and retry_after.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

BOT_USER = {"id": 4242, "is_bot": True, "first_name": "SunFlow Ops", "username": "sunflow_bot"}
SENDING = frozenset({"sendMessage", "editMessageText", "sendDocument"})
ALLOWED_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a",
     "blockquote", "tg-spoiler", "span", "tg-emoji"}
)  # fmt: skip
_TOKEN = re.compile(r"<[^<>]*>|&[^;\s]*;|[^<&]+|[<&]")


def check_html(text: str) -> str | None:
    """None when Telegram would accept this HTML; else its error description."""
    stack: list[str] = []
    for token in _TOKEN.findall(text):
        if token.startswith("<") and token.endswith(">") and len(token) > 2:
            match = re.match(r"<\s*(/)?\s*([a-zA-Z][a-zA-Z0-9-]*)", token)
            if match is None:
                return "Bad Request: can't parse entities: unsupported start tag"
            name = match.group(2).lower()
            if name not in ALLOWED_TAGS:
                return f'Bad Request: can\'t parse entities: unsupported start tag "{name}"'
            if match.group(1):
                if not stack or stack[-1] != name:
                    return f'Bad Request: can\'t parse entities: unmatched end tag "{name}"'
                stack.pop()
            else:
                stack.append(name)
        elif token == "<":
            return "Bad Request: can't parse entities: unexpected <"
        elif token.startswith("&") and token != "&":
            if html.unescape(token) == token:
                return "Bad Request: can't parse entities: unsupported HTML entity"
        elif token == "&":
            return "Bad Request: can't parse entities: unexpected &"
    if stack:
        return f"Bad Request: can't parse entities: can't find end tag \"{stack[-1]}\""
    return None


def visible_length(text: str, parse_mode: str | None) -> int:
    if parse_mode == "HTML":
        text = html.unescape(re.sub(r"<[^<>]*>", "", text))
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    status: int = 200


@dataclass
class Posted:
    """A message the bot has in a chat, as users would see it now."""

    chat_id: int
    message_id: int
    text: str
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    reply_to: int | None
    thread_id: int | None
    edits: int = 0
    document: bytes | None = None
    history: list[str] = field(default_factory=list)


@dataclass
class Fault:
    methods: frozenset[str]
    status: int
    description: str
    retry_after: int | None
    remaining: int


class Window:
    def __init__(self, limit: int, period: float) -> None:
        self.limit, self.period = limit, period
        self.times: deque[float] = deque()

    def wait(self, now: float) -> float:
        while self.times and self.times[0] <= now - self.period:
            self.times.popleft()
        if len(self.times) < self.limit:
            return 0.0
        return self.times[0] + self.period - now


class FakeTelegram:
    """`await fake.start()`; `fake.base` is the TELEGRAM_API_BASE to give the bot."""

    def __init__(self, token: str, *, enforce_limits: bool = False) -> None:
        self.token = token
        self.enforce_limits = enforce_limits
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], Posted] = {}
        self.down = False
        self.faults: list[Fault] = []
        self.rate_limited = 0
        self.commands: list[dict[str, Any]] = []
        self.webhook: dict[str, Any] | None = None
        self.callback_answers: list[dict[str, Any]] = []
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._callback_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._global = Window(30, 1.0)
        self._chats: dict[int, Window] = {}
        self._groups: dict[int, Window] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.listeners: list[Callable[[Call], None]] = []
        # Calls of a held method wait (inside the request) until the hold is released.
        self.holds: dict[str, asyncio.Event] = {}
        self.held: list[str] = []
        # A test's failure plan: called first for every call; a response it returns is the
        # answer (an outage: 5xx, 429, or a reply after the client gave up).
        self.outage: Callable[[str, Call], Awaitable[web.Response | None]] | None = None

    # -- server ---------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        return app

    async def start(self, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = port

    async def stop(self) -> None:
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- acting as users -----------------------------------------------------------

    @staticmethod
    def user(user_id: int, username: str | None = None) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
        if username:
            user["username"] = username
        return user

    @staticmethod
    def chat(chat_id: int) -> dict[str, Any]:
        if chat_id < 0:
            return {"id": chat_id, "type": "supergroup", "title": "Team"}
        return {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}

    def message_update(
        self, user_id: int, chat_id: int, text: str, *, reply_to: Posted | None = None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._ids(chat_id)),
            "date": int(time.time()),
            "chat": self.chat(chat_id),
            "from": self.user(user_id, f"user{user_id}"),
            "text": text,
        }
        if reply_to is not None:
            message["reply_to_message"] = self._message_json(reply_to)
        if text.startswith("/"):
            length = len(text.split(maxsplit=1)[0])
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        return {"update_id": next(self._update_ids), "message": message}

    def callback_update(self, user_id: int, posted: Posted, data: str) -> dict[str, Any]:
        return {
            "update_id": next(self._update_ids),
            "callback_query": {
                "id": str(next(self._callback_ids)),
                "from": self.user(user_id, f"user{user_id}"),
                "chat_instance": "team",
                "data": data,
                "message": self._message_json(posted),
            },
        }

    async def send_text(
        self, user_id: int, chat_id: int, text: str, *, reply_to: Posted | None = None
    ) -> None:
        """A user writes in a chat (in reply to `reply_to`); the bot gets it from getUpdates."""
        await self._push(self.message_update(user_id, chat_id, text, reply_to=reply_to))

    async def press(self, user_id: int, posted: Posted, data: str) -> None:
        await self._push(self.callback_update(user_id, posted, data))

    async def deliver(self, update: dict[str, Any], *, secret: str | None = None) -> int:
        """Webhook mode: POST one update to the URL given to setWebhook, with its secret
        header, as Telegram does (and again, on a retry); returns the HTTP status."""
        if self.webhook is None:
            raise AssertionError("no webhook is set (setWebhook was never called)")
        token = self.webhook.get("secret_token") if secret is None else secret
        headers = {"X-Telegram-Bot-Api-Secret-Token": token} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.webhook["url"], json=update, headers=headers) as resp,
        ):
            await resp.read()
            return resp.status

    async def _push(self, update: dict[str, Any]) -> None:
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()

    # -- reading what the bot did ----------------------------------------------------

    def in_chat(self, chat_id: int) -> list[Posted]:
        return sorted(
            (p for (c, _), p in self.messages.items() if c == chat_id),
            key=lambda p: p.message_id,
        )

    def sent(self, method: str = "sendMessage") -> list[Call]:
        return [c for c in self.calls if c.method == method and c.status == 200]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        """Wait until `predicate()` is truthy (checked on every request); return its value."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("the fake Bot API never saw what the test waited for")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    def hold(self, method: str) -> asyncio.Event:
        """Calls of `method` arrive but get no answer until the returned event is set."""
        self.holds[method] = asyncio.Event()
        return self.holds[method]

    # -- failures --------------------------------------------------------------------

    def fail(
        self,
        *methods: str,
        status: int = 429,
        retry_after: int | None = None,
        description: str | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` calls of `methods` (any, when none given) fail like this."""
        text = description or {
            429: f"Too Many Requests: retry after {retry_after}",
            500: "Internal Server Error",
            502: "Bad Gateway",
        }.get(status, "Bad Request")
        self.faults.append(Fault(frozenset(methods), status, text, retry_after, times))

    # -- the API ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        params = await self._params(request)
        call = Call(method, params, time.monotonic())
        try:
            response = await self._dispatch(method, params, call)
        finally:
            self.calls.append(call)
            for listener in self.listeners:
                listener(call)
            async with self._changed:
                self._changed.notify_all()
        return response

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data: dict[str, Any] = await request.json()
            return data
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                params[key] = value.file.read()
                continue
            text = str(value)
            # aiogram sends objects as JSON inside form fields; plain values as they are.
            params[key] = json.loads(text) if text[:1] in "{[" else text
        # aiogram uploads a file under its own field and names it `attach://<field>`.
        for key, value in list(params.items()):
            if isinstance(value, str) and value.startswith("attach://"):
                params[key] = params.pop(value.removeprefix("attach://"), value)
        return params

    def _error(
        self, status: int, description: str, retry_after: int | None = None
    ) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return web.json_response(body, status=status)

    def _ok(self, result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    async def _dispatch(self, method: str, params: dict[str, Any], call: Call) -> web.Response:
        if self.outage is not None:
            failure = await self.outage(method, call)
            if failure is not None:
                call.status = failure.status
                return failure
        if self.down:
            call.status = 502
            return web.Response(status=502, text="<html>502 Bad Gateway</html>")
        for fault in self.faults:
            if fault.remaining > 0 and (not fault.methods or method in fault.methods):
                fault.remaining -= 1
                call.status = fault.status
                if fault.status == 429:
                    self.rate_limited += 1
                return self._error(fault.status, fault.description, fault.retry_after)
        if method == "getUpdates":
            return self._ok(await self._get_updates(params))
        if method in self.holds:
            self.held.append(method)
            async with self._changed:
                self._changed.notify_all()
            await self.holds[method].wait()
        if method in SENDING and self.enforce_limits:
            wait = self._limit(int(params["chat_id"]), time.monotonic())
            if wait > 0:
                call.status = 429
                self.rate_limited += 1
                retry = max(1, math.ceil(wait))
                return self._error(429, f"Too Many Requests: retry after {retry}", retry)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            call.status = 404
            return self._error(404, "Not Found: method not found")
        result = handler(params)
        if isinstance(result, web.Response):
            call.status = result.status
            return result
        return self._ok(result)

    def _limit(self, chat_id: int, now: float) -> float:
        windows = [self._global, self._chats.setdefault(chat_id, Window(1, 1.0))]
        if chat_id < 0:
            windows.append(self._groups.setdefault(chat_id, Window(20, 60.0)))
        wait = max(w.wait(now) for w in windows)
        if wait <= 0:
            for window in windows:
                window.times.append(now)
        return wait

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 1.0)
        async with self._changed:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if not self._updates and timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            return list(self._updates)

    def _ids(self, chat_id: int) -> itertools.count[int]:
        return self._message_ids.setdefault(chat_id, itertools.count(1))

    def _message_json(self, posted: Posted) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": posted.message_id,
            "date": int(time.time()),
            "chat": self.chat(posted.chat_id),
            "from": BOT_USER,
            "text": posted.text,
        }
        if posted.reply_markup:
            message["reply_markup"] = posted.reply_markup
        return message

    def _validate(self, text: str, parse_mode: str | None) -> web.Response | None:
        if parse_mode == "HTML":
            problem = check_html(text)
            if problem:
                return self._error(400, problem)
        if visible_length(text, parse_mode) > 4096:
            return self._error(400, "Bad Request: message is too long")
        if not text.strip():
            return self._error(400, "Bad Request: message text is empty")
        return None

    def _reply_to(self, params: dict[str, Any]) -> int | None:
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            return int(reply["message_id"])
        if params.get("reply_to_message_id"):
            return int(params["reply_to_message_id"])
        return None

    def _m_getMe(self, params: dict[str, Any]) -> Any:
        return BOT_USER

    def _m_setMyCommands(self, params: dict[str, Any]) -> Any:
        self.commands = list(params.get("commands") or [])
        return True

    def _m_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = None
        return True

    def _m_setWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = dict(params)
        return True

    def _m_answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        self.callback_answers.append(dict(params))
        return True

    def _m_sendMessage(self, params: dict[str, Any]) -> Any:
        chat_id = int(params["chat_id"])
        text = str(params.get("text", ""))
        parse_mode = params.get("parse_mode")
        problem = self._validate(text, parse_mode)
        if problem is not None:
            return problem
        posted = Posted(
            chat_id=chat_id,
            message_id=next(self._ids(chat_id)),
            text=text,
            parse_mode=parse_mode,
            reply_markup=params.get("reply_markup"),
            reply_to=self._reply_to(params),
            thread_id=params.get("message_thread_id"),
        )
        self.messages[(chat_id, posted.message_id)] = posted
        return self._message_json(posted)

    def _m_editMessageText(self, params: dict[str, Any]) -> Any:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        posted = self.messages.get((chat_id, message_id))
        if posted is None:
            return self._error(400, "Bad Request: message to edit not found")
        text = str(params.get("text", ""))
        parse_mode = params.get("parse_mode")
        problem = self._validate(text, parse_mode)
        if problem is not None:
            return problem
        markup = params.get("reply_markup")
        if text == posted.text and markup == posted.reply_markup:
            return self._error(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message",
            )
        posted.history.append(posted.text)
        posted.text, posted.parse_mode, posted.reply_markup = text, parse_mode, markup
        posted.edits += 1
        return self._message_json(posted)

    def _m_sendDocument(self, params: dict[str, Any]) -> Any:
        chat_id = int(params["chat_id"])
        document = params.get("document")
        if not isinstance(document, bytes):
            return self._error(400, "Bad Request: there is no document in the request")
        posted = Posted(
            chat_id=chat_id,
            message_id=next(self._ids(chat_id)),
            text=str(params.get("caption") or ""),
            parse_mode=params.get("parse_mode"),
            reply_markup=None,
            reply_to=self._reply_to(params),
            thread_id=params.get("message_thread_id"),
            document=document,
        )
        self.messages[(chat_id, posted.message_id)] = posted
        return self._message_json(posted)
