"""End to end with the real Alertmanager from Debian: its webhook reaches our intake."""

import asyncio
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from services.main import Services
from services.models import IncidentState
from tests.conftest import INTAKE, Client, free_port, require_program

CONFIG = """
route:
  receiver: sunflow-ops
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sunflow-ops
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token_file}
"""


def test_shipped_config_is_valid(tmp_path: Path) -> None:
    amtool = require_program("amtool")
    shipped = Path(__file__).parent.parent / "deploy" / "alertmanager" / "alertmanager.yml"
    token = tmp_path / "token"
    token.write_text(INTAKE)
    config = tmp_path / "alertmanager.yml"
    text = shipped.read_text()
    assert "/etc/prometheus/sunflow-intake-token" in text
    config.write_text(text.replace("/etc/prometheus/sunflow-intake-token", str(token)))
    proc = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.fixture
def alertmanager_binary() -> str:
    return require_program("prometheus-alertmanager")


def start_alertmanager(
    binary: str, tmp: Path, webhook: str
) -> tuple[subprocess.Popen[bytes], str]:
    token_file = tmp / "token"
    token_file.write_text(INTAKE)
    config = tmp / "alertmanager.yml"
    config.write_text(CONFIG.format(url=webhook, token_file=token_file))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
def stop_later() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        proc.wait(10)


async def wait_for(check: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_alertmanager_webhook_opens_and_resolves(
    client: Client,
    services: Services,
    alertmanager_binary: str,
    tmp_path: Path,
    stop_later: list[subprocess.Popen[bytes]],
) -> None:
    webhook = str(client.make_url("/api/alerts/alertmanager"))
    proc, base = start_alertmanager(alertmanager_binary, tmp_path, webhook)
    stop_later.append(proc)
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "SSENoActiveConnections", "severity": "critical", "job": "gen"},
        "annotations": {"summary": "No active SSE connections but requests are coming in"},
        "startsAt": (now - timedelta(seconds=30)).isoformat(),
    }
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            try:
                async with session.get(f"{base}/-/ready") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready)
        async with session.post(f"{base}/api/v2/alerts", json=[alert]) as resp:
            assert resp.status == 200, await resp.text()

        async def opened() -> bool:
            return bool(await services.incidents.list())

        await wait_for(opened)
        [incident] = await services.incidents.list()
        assert incident.severity.value == "P0"
        assert incident.title == "No active SSE connections but requests are coming in"
        assert incident.source == "alertmanager"

        ended = {**alert, "endsAt": (now - timedelta(seconds=1)).isoformat()}
        async with session.post(f"{base}/api/v2/alerts", json=[ended]) as resp:
            assert resp.status == 200

        async def resolved() -> bool:
            detail = await services.incidents.get(incident.id)
            return detail.incident.state is IncidentState.RESOLVED

        await wait_for(resolved)
    assert isinstance(client.app, web.Application)
