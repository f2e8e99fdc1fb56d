import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Client, free_port, intake_headers, require_program

pytestmark = pytest.mark.e2e

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"


def test_promtool_checks_the_rules() -> None:
    promtool = require_program("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES_DIR / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 5 rules found" in check.stdout


def test_promtool_unit_tests_fire_the_runbook_alerts() -> None:
    promtool = require_program("promtool")
    run = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        capture_output=True,
        check=False,
        text=True,
        cwd=RULES_DIR,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture
async def prometheus(client: Client, tmp_path: Path) -> AsyncIterator[str]:
    program = require_program("prometheus")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES_DIR / "alerts.yml"}
scrape_configs:
  - job_name: sunflow-ops
    static_configs:
      - targets: ["127.0.0.1:{client.port}"]
"""
    )
    log = (tmp_path / "prometheus.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        program,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()
        log.close()


async def scraped_value(session: aiohttp.ClientSession, base: str, query: str) -> float | None:
    try:
        async with session.get(f"{base}/api/v1/query", params={"query": query}) as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
    except aiohttp.ClientError:
        return None
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def wait_for_value(
    session: aiohttp.ClientSession, base: str, query: str, expected: float
) -> None:
    for _ in range(600):
        if await scraped_value(session, base, query) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{query} never became {expected}")


async def test_prometheus_scrapes_sse_connections_open(client: Client, prometheus: str) -> None:
    job = "/api/generation/jobs/prom-job/events"
    await client.post(job, json={"type": "progress", "data": 0}, headers=intake_headers())
    query = 'sse_connections_open{job="sunflow-ops"}'
    async with aiohttp.ClientSession() as session:
        await wait_for_value(session, prometheus, query, 0)
        streams = [
            await client.get(job, headers={"Accept": "text/event-stream"}) for _ in range(3)
        ]
        await wait_for_value(session, prometheus, query, 3)
        for stream in streams:
            stream.close()
        await wait_for_value(session, prometheus, query, 0)
        async with session.get(f"{prometheus}/api/v1/rules") as resp:
            rules = await resp.json()
        names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert {"SSEConnectionDropRate", "SSENoActiveConnections", "sse:recovered"} <= names
        # The exact runbook names are what Prometheus stored.
        for name in ("sse_reconnect_count", "sse_message_sent_total", "http_requests_total"):
            assert await scraped_value(session, prometheus, f"count({name})") is not None
