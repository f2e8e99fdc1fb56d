"""Schemathesis against /api/openapi.json: every operation, no 5xx, nothing off the schema."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from prometheus_client.parser import text_string_to_metric_families

from services.config import Settings
from services.main import background_contexts, open_services
from services.web.app import create_app
from tests.conftest import free_port
from tests.test_security import local_settings

pytestmark = pytest.mark.slow

# One token for both, so one Authorization header reaches every protected operation.
TOKEN = "fuzz-token-0123456789"
# Per operation and phase; 27 operations and four phases make well over 1,000 cases
# (1,537 with seed 1) in about a minute. FUZZ_MAX_EXAMPLES / FUZZ_SEED change them by hand.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "40"))
SEED = int(os.environ.get("FUZZ_SEED", "1"))
MIN_CASES = 1000
RUN_TIMEOUT = 600.0


def fuzz_settings(database_url: str, tmp_path: Path) -> Settings:
    # One token for intake and admin, so the fuzzer reaches every endpoint; the files the
    # admin endpoints write stay inside the test's directory.
    return local_settings(
        database_url, tmp_path, intake_token=TOKEN, admin_token=TOKEN, http_port=free_port()
    )


@pytest.fixture
async def served(migrated_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """The real app with its background parts, on a real port; yields its base URL."""
    settings = fuzz_settings(migrated_url, tmp_path)
    async with open_services(settings) as services:
        app = create_app(settings, services)
        app.cleanup_ctx.extend(background_contexts(services))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.http_port).start()
        try:
            yield f"http://127.0.0.1:{settings.http_port}"
        finally:
            await runner.cleanup()


def server_errors(metrics_text: str) -> int:
    """5xx answers the service counted itself (http_requests_total by status)."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels["status"].startswith("5"):
                total += sample.value
    return int(total)


def failures_excerpt(output: str, limit: int = 6000) -> str:
    start = output.find("FAILURES")
    return output[start : start + limit] if start >= 0 else output[-limit:]


async def test_schemathesis_finds_no_5xx_and_no_response_off_the_schema(
    served: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    report = tmp_path / "schemathesis.xml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{served}/api/openapi.json",
        "-H",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # Text holding NUL is refused with a 400 on purpose (PostgreSQL cannot store it; see
        # info.description and tests/test_bad_input.py), which JSON Schema cannot say.
        "--generation-allow-x00",
        "false",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # its cache directory stays out of the checkout
        env={**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"},
    )
    raw, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    output = raw.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(output)

    async with ClientSession() as http, http.get(f"{served}/metrics") as response:
        seen_5xx = server_errors(await response.text())
    generated = re.search(r"(\d+) generated", output)
    cases = int(generated.group(1)) if generated else 0
    operations = re.search(r"Tested: (\d+)", output)
    print(f"schemathesis: {cases} cases, {seen_5xx} 5xx, exit {proc.returncode}")

    assert seen_5xx == 0, failures_excerpt(output)
    assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]
    assert proc.returncode == 0, failures_excerpt(output)
    assert cases >= MIN_CASES, output[-2000:]
    assert operations is not None
    assert re.search(r"Selected: (\d+)/\1", output), "every operation is selected"
