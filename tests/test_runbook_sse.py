"""The SSE runbook's commands, as written there, against a real `sunflow-ops serve`."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ADMIN, INTAKE, free_port, require_program

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "HTTP_", "DATABASE_", "SSE_"))
    }
    env.update(
        HTTP_PORT=str(port),
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'sunflow.db'}",
        INTAKE_TOKEN=INTAKE,
        ADMIN_TOKEN=ADMIN,
        SSE_HEARTBEAT_SECONDS="0.5",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def shell(command: str, port: int, **env: str) -> str:
    """Run a runbook command with only the port changed from 8002."""
    run = subprocess.run(
        ["bash", "-c", command.replace("localhost:8002", f"localhost:{port}")],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
        check=False,
    )
    return run.stdout


async def up(port: int, proc: subprocess.Popen[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                async with session.get(f"http://127.0.0.1:{port}/api/generation/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("service did not come up")


async def test_runbook_commands_work_as_written(
    served: tuple[subprocess.Popen[str], int],
) -> None:
    require_program("curl")
    require_program("jq")
    proc, port = served
    await up(port, proc)

    # 3단계: the stream (with -m so the test ends); retry hint and heartbeats.
    stream = await asyncio.to_thread(
        shell,
        'curl -N -m 2 -H "Accept: text/event-stream" '
        "http://localhost:8002/api/generation/jobs/test-job-id/events",
        port,
    )
    assert stream.startswith("retry: ")
    beats = [line for line in stream.splitlines() if line.startswith("data: ")]
    assert beats
    assert set(json.loads(beats[0][6:])) == {"type", "timestamp", "server_time"}

    # 1단계: connections, with one stream open.
    async with aiohttp.ClientSession() as session:
        held = await session.get(
            f"http://127.0.0.1:{port}/api/generation/jobs/test-job/events",
            headers={"Accept": "text/event-stream"},
        )
        # The curl above has just gone; it is noticed within a second, leaving the one held.
        for _ in range(50):
            count = await asyncio.to_thread(
                shell,
                "curl -s http://localhost:8002/api/generation/health | jq '.sse_connections'",
                port,
            )
            if count.strip() == "1":
                break
            await asyncio.sleep(0.1)
        assert count.strip() == "1"

        # 2단계: the process is found by the runbook's name for it.
        pids = await asyncio.to_thread(shell, 'pgrep -f "generation-service"', port)
        assert str(proc.pid) in pids.split()

        # 우선순위 1: the three admin calls, with the token (docs/sse.md).
        answers = []
        for path in ("sse/restart", "connections/reset", "sse/broadcast-reconnect"):
            out = await asyncio.to_thread(
                shell,
                f"curl -s -X POST http://localhost:8002/api/admin/{path} "
                '-H "Authorization: Bearer ${ADMIN_TOKEN}"',
                port,
                ADMIN_TOKEN=ADMIN,
            )
            answers.append(json.loads(out))
        assert answers[0]["connections_before"] == 1
        assert [a["connections_after"] for a in answers] == [0, 0, 0]
        # As the runbook prints them, without a token: refused.
        refused = await asyncio.to_thread(
            shell, "curl -s -X POST http://localhost:8002/api/admin/connections/reset", port
        )
        assert json.loads(refused)["error"] == "unauthorized"
        held.release()

        # The Prometheus queries' series.
        metrics = await asyncio.to_thread(shell, "curl -s http://localhost:8002/metrics", port)
        for name in ("sse_connections_open ", "sse_reconnect_count ", "sse_message_sent_total{"):
            assert name in metrics

        # A stream open at SIGTERM is ended cleanly (the last chunk sent), not cut off.
        last = await session.get(
            f"http://127.0.0.1:{port}/api/generation/jobs/test-job/events",
            headers={"Accept": "text/event-stream"},
        )
        await last.content.readuntil(b"\n\n")
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(last.content.read(), 10)  # ClientPayloadError if cut
        assert await asyncio.to_thread(proc.wait, 10) == 0
