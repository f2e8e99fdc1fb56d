import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from services.config import Settings
from services.intake import parse_generic
from services.main import open_services
from tests.benchrun import run_module


def run_cli(*args: str, cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return run_module("services.cli", *args, cwd=cwd, env=env, timeout=60)


async def test_incident_list_ack_resolve(tmp_path: Path, settings: Settings) -> None:
    async with open_services(settings) as services:
        await services.intake.submit(
            parse_generic(
                {"severity": "P0", "title": "Instagram token expired", "dedup_key": "tok"}
            )
        )
    url = settings.database_url
    listing = await asyncio.to_thread(run_cli, "incident", "list", cwd=tmp_path, database_url=url)
    assert listing.returncode == 0, listing.stderr
    assert "#1" in listing.stdout
    assert "P0" in listing.stdout
    assert "Instagram token expired" in listing.stdout

    ack = await asyncio.to_thread(run_cli, "incident", "ack", "1", cwd=tmp_path, database_url=url)
    assert ack.returncode == 0, ack.stderr
    assert "#1 acknowledged by cli:" in ack.stdout

    again = await asyncio.to_thread(
        run_cli, "incident", "ack", "1", cwd=tmp_path, database_url=url
    )
    assert again.returncode == 1
    assert again.stderr.strip().startswith("sunflow-ops: incident #1 is already acknowledged")

    res = await asyncio.to_thread(
        run_cli,
        "incident",
        "resolve",
        "1",
        "--note",
        "token renewed",
        cwd=tmp_path,
        database_url=url,
    )
    assert res.returncode == 0, res.stderr

    shown = await asyncio.to_thread(
        run_cli, "incident", "show", "1", "--json", cwd=tmp_path, database_url=url
    )
    detail = json.loads(shown.stdout)
    assert detail["state"] == "resolved"

    reopen = await asyncio.to_thread(
        run_cli, "incident", "reopen", "1", cwd=tmp_path, database_url=url
    )
    assert reopen.returncode == 0, reopen.stderr
    assert "#1 reopened" in reopen.stdout
    twice = await asyncio.to_thread(
        run_cli, "incident", "reopen", "1", cwd=tmp_path, database_url=url
    )
    assert twice.returncode == 1
    assert twice.stderr.strip().startswith("sunflow-ops: incident #1 is not resolved")
    assert [e["kind"] for e in detail["timeline"]] == ["triggered", "acknowledged", "resolved"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("incident", "ack", "abc"), "is not an incident number"),
        (("incident", "resolve", "77"), "no incident #77"),
        (("incident", "list", "--severity", "P9"), "unknown severity"),
    ],
)
async def test_cli_errors(
    tmp_path: Path, migrated_url: str, args: tuple[str, ...], fragment: str
) -> None:
    proc = await asyncio.to_thread(run_cli, *args, cwd=tmp_path, database_url=migrated_url)
    assert proc.returncode != 0
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
