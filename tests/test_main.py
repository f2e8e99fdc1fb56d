import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from services.config import Settings
from services.main import open_services
from tests.conftest import ADMIN, INTAKE, free_port, make_settings
from tests.waiting import until


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "HTTP_", "DATABASE_"))
    }
    env.update(
        HTTP_PORT=str(port),
        DATABASE_URL=db_url,
        INTAKE_TOKEN=INTAKE,
        ADMIN_TOKEN=ADMIN,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc, f"http://127.0.0.1:{port}", db_url
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


async def wait_until_up(base: str, proc: subprocess.Popen[str]) -> None:
    async with aiohttp.ClientSession() as session:

        async def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                async with session.get(f"{base}/api/health") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await until(up, 30, "the service to answer /api/health", every=0.1)


async def test_serve_end_to_end(served: tuple[subprocess.Popen[str], str, str]) -> None:
    proc, base, db_url = served
    await wait_until_up(base, proc)
    headers = {"Authorization": f"Bearer {INTAKE}"}
    payload = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "InstagramTokenExpired", "severity": "critical"},
                "annotations": {"summary": "Instagram token expired"},
                "fingerprint": "tok1",
            }
        ],
    }
    async with aiohttp.ClientSession() as session:
        # A burst of accepted alerts, then SIGTERM while none is in flight.
        async def post(i: int) -> int:
            body = {"severity": "P2", "title": f"stats stale {i % 7}", "dedup_key": f"s{i % 7}"}
            async with session.post(f"{base}/api/alerts", json=body, headers=headers) as resp:
                return resp.status

        statuses = await asyncio.gather(*(post(i) for i in range(70)))
        assert statuses == [202] * 70
        for _ in range(2):
            async with session.post(
                f"{base}/api/alerts/alertmanager", json=payload, headers=headers
            ) as resp:
                assert resp.status == 202
        async with session.get(f"{base}/api/incidents?severity=P0") as resp:
            [incident] = (await resp.json())["incidents"]
            assert incident["occurrence_count"] == 2
        async with session.get(f"{base}/metrics") as resp:
            assert "http_requests_total" in await resp.text()

    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 10)
    assert code == 0
    stderr = proc.stderr.read() if proc.stderr else ""
    assert stderr.count("TELEGRAM_BOT_TOKEN is not set") == 1
    assert INTAKE not in stderr and ADMIN not in stderr

    async with open_services(make_settings(db_url)) as services:
        views = await services.incidents.list()
    counts = sorted(v.occurrence_count for v in views)
    assert counts == [2, 10, 10, 10, 10, 10, 10, 10]


async def test_sigint_stops_too(served: tuple[subprocess.Popen[str], str, str]) -> None:
    proc, base, _ = served
    await wait_until_up(base, proc)
    proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(proc.wait, 10) == 0


def test_services_never_import_aiogram() -> None:
    code = (
        "import sys, pkgutil, importlib, services\n"
        "for m in pkgutil.walk_packages(services.__path__, 'services.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('aiogram' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_settings_type(settings: Settings) -> None:
    assert settings.intake_token is not None
    assert settings.intake_token.get_secret_value() == INTAKE
