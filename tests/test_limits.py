"""Connection limits: the descriptor limit and its warning as tables, a client that never
finishes its request, and a real `serve` at a 1,024 descriptor limit that still answers
/api/health through 1,100 half-open connections."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.config import Settings
from services.main import open_services
from services.web.app import create_app
from services.web.limits import (
    FD_MARGIN,
    FD_RESERVE,
    connection_budget,
    nofile_warning,
    wanted_nofile,
)
from tests.conftest import INTAKE, free_port, require_program

INFINITY = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("soft", "max_sse", "warns"),
    [
        (1024, 1000, True),  # systemd's default: 1,000 streams leave nothing for the rest
        (2023, 1000, True),
        (2024, 1000, False),
        (8192, 1000, False),  # the shipped unit
        (8192, 7168, False),
        (8192, 7169, True),
        (INFINITY, 100_000, False),
    ],
)
def test_the_start_up_warning(soft: int, max_sse: int, warns: bool) -> None:
    warning = nofile_warning(soft=soft, max_sse_connections=max_sse)
    assert (warning is not None) is warns
    if warning:
        assert str(soft) in warning and "MAX_SSE_CONNECTIONS" in warning
        assert "LimitNOFILE" in warning
    assert wanted_nofile(max_sse) == max_sse + FD_MARGIN


@pytest.mark.parametrize(
    ("soft", "in_use", "budget"),
    [
        (1024, 40, 1024 - 40 - FD_RESERVE),
        (8192, 60, 8192 - 60 - FD_RESERVE),
        (150, 40, 16),  # never below a handful
        (INFINITY, 40, 1_000_000),
    ],
)
def test_connection_budget(soft: int, in_use: int, budget: int) -> None:
    assert connection_budget(soft, in_use) == budget


async def test_a_body_that_never_finishes_is_answered_408(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(update={"request_body_timeout_seconds": 0.5})
    async with (
        open_services(settings) as services,
        TestClient(TestServer(create_app(settings, services))) as client,
    ):
        assert client.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(
            b"POST /api/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + INTAKE.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            + b'{"severity": "P1", '
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status.startswith(b"HTTP/1.1 408"), status
        assert (await (await client.get("/api/incidents")).json())["count"] == 0


def serve_env(tmp_path: Path, port: int, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "HTTP_"))}
    env.update(HTTP_PORT=str(port), DATABASE_URL=db_url, INTAKE_TOKEN=INTAKE, **extra)
    return env


async def health_status(base: str, timeout: float) -> int:
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as http,
        http.get(f"{base}/api/health") as response,
    ):
        return response.status


HALF_OPEN = 1100


async def test_health_answers_through_1100_half_open_connections_at_1024_fds(
    tmp_path: Path, migrated_url: str
) -> None:
    prlimit = require_program("prlimit")
    port = free_port()
    env = serve_env(tmp_path, port, migrated_url, REQUEST_HEADER_TIMEOUT_SECONDS="3")
    proc = subprocess.Popen(
        [prlimit, "--nofile=1024:1024", sys.executable, "-m", "services.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(300):
            assert proc.poll() is None
            try:
                if await health_status(base, 2) in {200, 503}:
                    break
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.1)
        # Half-open: connected, and then a request line without its end, or nothing at all.
        for i in range(HALF_OPEN):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            if i % 2:
                writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            writers.append(writer)
        started = time.monotonic()
        assert await health_status(base, 5) in {200, 503}
        answered_in = time.monotonic() - started
        # And the half-open ones are dropped once their headers are overdue.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/health HTTP/1.1\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        writer.close()
        assert proc.poll() is None
    finally:
        for writer in writers:
            writer.close()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    print(f"/api/health answered in {answered_in:.2f} s beside {HALF_OPEN} half-open connections")
    assert "RLIMIT_NOFILE is 1024, below MAX_SSE_CONNECTIONS (1000) + 1024 = 2024" in stderr
    assert "closed the oldest idle one" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]
