"""Connection limits of the HTTP listener: file descriptors, unfinished requests, eviction.

Every connection costs a file descriptor. With the process's RLIMIT_NOFILE spent (systemd's
default is 1,024; 1,000 SSE streams use nearly all of it), `accept()` fails and nothing,
not even `/api/health`, gets in. So the listener keeps connections below a budget taken
from the limit: when a new one would pass it, the oldest idle connection (one that has not
sent a complete request, or a keep-alive one between requests) is closed to make room. A
connection that has not sent its first request's headers within REQUEST_HEADER_TIMEOUT is
closed as well; idle keep-alive connections close after HTTP_KEEPALIVE_SECONDS (aiohttp),
and request bodies are bounded by REQUEST_BODY_TIMEOUT (services/web/body.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

if TYPE_CHECKING:
    from services.config import Settings

log = logging.getLogger(__name__)

# Descriptors beyond the SSE streams: other clients, the database pool, Redis, log files,
# the bot's connections. MAX_SSE_CONNECTIONS + this is the least RLIMIT_NOFILE to run with.
FD_MARGIN = 1024
# Descriptors kept free below the limit for what the process opens after start.
FD_RESERVE = 128


def wanted_nofile(max_sse_connections: int) -> int:
    """The RLIMIT_NOFILE this configuration needs (deploy/systemd sets LimitNOFILE above)."""
    return max_sse_connections + FD_MARGIN


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards `wanted` (never above the hard limit, which
    needs no privilege); the (soft, hard) limits in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
        except (ValueError, OSError):
            pass
    return soft, hard


def nofile_warning(*, soft: int, max_sse_connections: int) -> str | None:
    """The start-up warning when the descriptor limit is too low for the settings."""
    wanted = wanted_nofile(max_sse_connections)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    return (
        f"RLIMIT_NOFILE is {soft}, below MAX_SSE_CONNECTIONS ({max_sse_connections}) + "
        f"{FD_MARGIN} = {wanted}: streams and other clients will be refused before "
        f"MAX_SSE_CONNECTIONS is reached; raise LimitNOFILE (systemd) or `ulimit -n`"
    )


def fds_in_use() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def connection_budget(soft: int, in_use: int) -> int:
    """How many connections the listener keeps open at most under this limit."""
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(16, soft - in_use - FD_RESERVE)


def _idle(handler: RequestHandler) -> bool:
    # aiohttp has no public "idle" state; this is the condition its own keep-alive timer
    # closes a connection on: waiting for a (first or next) request.
    waiter = getattr(handler, "_waiter", None)
    return waiter is not None and not waiter.done()


def _requests_seen(handler: RequestHandler) -> int:
    # Requests whose headers were parsed on this connection (aiohttp's own count).
    return int(getattr(handler, "_request_count", 1))


class ConnectionGuard:
    """Wraps the aiohttp server's protocol factory; see the module's docstring."""

    def __init__(
        self, *, budget: int, header_timeout: float, held: Callable[[], int] = lambda: 0
    ) -> None:
        self.budget = budget
        self.header_timeout = header_timeout
        # Connections aiohttp has handed over (an SSE stream owns its socket once its
        # headers are out): not ours to close, but they take descriptors all the same.
        self._held = held
        # Oldest first (insertion order); closed ones are dropped lazily.
        self._live: dict[RequestHandler, None] = {}
        self.evicted = 0
        self.timed_out = 0

    def factory(self, server: web.Server) -> Callable[[], RequestHandler]:
        loop = asyncio.get_running_loop()

        def make() -> RequestHandler:
            handler = server()
            if len(self._live) + self._held() >= self.budget:
                self._make_room()
            self._live[handler] = None
            loop.call_later(self.header_timeout, self._first_request_due, handler)
            return handler

        return make

    def _make_room(self) -> None:
        for handler in list(self._live):
            if handler.transport is None:
                del self._live[handler]
        if len(self._live) + self._held() < self.budget:
            return
        for handler in self._live:
            if _idle(handler):
                del self._live[handler]
                handler.force_close()
                self.evicted += 1
                if self.evicted in {1, 100} or self.evicted % 10_000 == 0:
                    log.warning(
                        "%d connections open (budget %d from RLIMIT_NOFILE): closed the "
                        "oldest idle one (%d so far)",
                        len(self._live) + 1,
                        self.budget,
                        self.evicted,
                    )
                return

    def _first_request_due(self, handler: RequestHandler) -> None:
        if handler.transport is None:
            self._live.pop(handler, None)
            return
        if _requests_seen(handler) == 0 and _idle(handler):
            self._live.pop(handler, None)
            handler.force_close()
            self.timed_out += 1

    @property
    def open(self) -> int:
        return sum(1 for handler in self._live if handler.transport is not None)


class GuardedSite(web.BaseSite):
    """`web.TCPSite` with its connections passed through a `ConnectionGuard`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server), self._host, self._port, backlog=self._backlog
        )


class _ParseErrorsInOneLine(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, with a request it cannot parse (a NUL or a bare CR in a header,
    a broken request line) as one warning line instead of an ERROR with a traceback: any
    client can send such bytes, and the log is not theirs to fill. The line keeps only the
    parser's first line, never the offending bytes (which may hold a token)."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            reason = (exc_info.message or "").strip().splitlines()[:1] or ["malformed"]
            self.logger.warning(
                "%s: HTTP %s, %s", str(msg) % args, exc_info.code, reason[0].rstrip(":")
            )
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def server_options(settings: Settings) -> dict[str, Any]:
    """The aiohttp server's settings for `serve` (AppRunner keyword arguments)."""
    return {
        "access_log": None,
        "keepalive_timeout": settings.http_keepalive_seconds,
        "logger": _ParseErrorsInOneLine(logging.getLogger("aiohttp.server"), {}),
    }
