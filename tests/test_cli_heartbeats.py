"""`sunflow-ops heartbeat add|list|remove`, as an operator types it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.clock import FrozenClock
from services.config import Settings
from services.main import open_services
from services.models import IncidentState
from tests.benchrun import run_module


async def cli(tmp_path: Path, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "HTTP_PORT": "8002"}
    return await asyncio.to_thread(
        run_module, "services.cli", "heartbeat", *args, cwd=tmp_path, env=env, timeout=60
    )


async def test_add_list_remove(tmp_path: Path, settings: Settings) -> None:
    added = await cli(
        tmp_path, settings, "add", "nightly-backup", "--every", "1h", "--grace", "10m",
        "--severity", "P1",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "heartbeat nightly-backup added: a ping every 1h, grace 10m, P1 when missed" in (
        added.stdout
    )
    assert (
        'curl -fsS -m 10 -X POST -H "Authorization: Bearer $INTAKE_TOKEN" '
        "http://127.0.0.1:8002/api/heartbeats/nightly-backup/ping" in added.stdout
    )
    changed = await cli(
        tmp_path, settings, "add", "nightly-backup", "--every", "2h", "--grace", "0"
    )
    assert changed.returncode == 0 and "changed: a ping every 2h, grace 0s, P2" in changed.stdout
    listing = await cli(tmp_path, settings, "list")
    assert listing.returncode == 0
    assert listing.stdout.startswith("nightly-backup") and " waiting " in listing.stdout
    assert "last ping never" in listing.stdout
    as_json = json.loads((await cli(tmp_path, settings, "list", "--json")).stdout)
    assert [(h["name"], h["every"], h["grace"]) for h in as_json] == [
        ("nightly-backup", "2h", "0s")
    ]
    removed = await cli(tmp_path, settings, "remove", "nightly-backup")
    assert removed.returncode == 0 and removed.stdout.strip() == "heartbeat nightly-backup removed"
    again = await cli(tmp_path, settings, "remove", "nightly-backup")
    assert again.returncode == 1
    assert again.stderr.strip() == "sunflow-ops: no heartbeat named 'nightly-backup'"
    assert (await cli(tmp_path, settings, "list")).stdout.startswith("no heartbeats")


async def test_remove_resolves_the_open_incident(tmp_path: Path, settings: Settings) -> None:
    clock = FrozenClock(datetime.now(UTC) - timedelta(hours=3))
    async with open_services(settings, clock=clock) as services:
        await services.heartbeats.add(
            "old-job", every=timedelta(hours=1), grace=timedelta(0), actor="test"
        )
        clock.advance(hours=2)
        assert await services.heartbeats.check() == ["old-job"]
    listing = await cli(tmp_path, settings, "list")
    assert " down " in listing.stdout
    removed = await cli(tmp_path, settings, "remove", "old-job")
    assert removed.returncode == 0
    assert removed.stdout.strip().startswith("heartbeat old-job removed; incident #1 resolved")
    async with open_services(settings) as services:
        detail = await services.incidents.get(1)
        assert detail.incident.state is IncidentState.RESOLVED
        assert detail.incident.resolved_by.startswith("cli:")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "bad name", "--every", "1h", "--grace", "1m"], "is not a heartbeat name"),
        (["add", "job", "--every", "soon", "--grace", "1m"], "is not a duration"),
        (["add", "job", "--every", "1h", "--grace", "8d"], "--grace is from 0 to 7d"),
    ],
)
async def test_bad_input_is_one_line_and_an_exit_status(
    tmp_path: Path, settings: Settings, args: list[str], says: str
) -> None:
    done = await cli(tmp_path, settings, *args)
    assert done.returncode in {1, 2}, done.stdout
    assert says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
