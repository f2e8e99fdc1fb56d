"""Escalation under pauses, not only kills: every later step fires, each once, the first within
3 s of the process running again — after SIGSTOP, a blocked event loop, repeats across an
outage, and a frozen leader of two. `make test` runs one trial of each; `make soak` runs each
20 times (docs/reliability.md has the figures)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest

from tests.conftest import DatabaseFactory
from tests.faults.process import Served
from tests.faults.trials import (
    PARALLEL,
    Result,
    frozen_leader_trial,
    pause_trial,
    repeat_trial,
    run_side_by_side,
    summary,
)

pytestmark = pytest.mark.slow

SOAK_TRIALS = int(os.environ.get("SOAK_TRIALS", "20"))

Scenario = Callable[[str, str, Path, list[Served]], Awaitable[Result]]
# PostgreSQL allows 100 connections: at most three two-instance trials on it at a time.
PG_TRIALS_AT_ONCE = 3
# The soak pool: processes are idle or stopped most of a trial, so many run side by side.
SOAK_PARALLEL = 16


async def play(
    scenarios: list[tuple[str, Scenario, str | None]],
    fresh_databases: DatabaseFactory,
    tmp_path: Path,
    served_factory: list[Served],
    parallel: int = PARALLEL,
) -> list[Result]:
    pg_gate = asyncio.Semaphore(PG_TRIALS_AT_ONCE)
    trials = []
    for name, scenario, kind in scenarios:
        url = await fresh_databases(kind)
        trial = partial(scenario, name, url, tmp_path / name)
        trials.append((trial, pg_gate if kind == "postgresql" else None))
    results = await run_side_by_side(trials, served_factory, parallel)
    print(f"all: {summary(results)}")
    by_kind: dict[str, list[Result]] = {}
    for result in results:  # soak trials are named KIND-N
        by_kind.setdefault(result.name.rsplit("-", 1)[0], []).append(result)
    for kind, group in by_kind.items():
        print(f"  {kind}: {summary(group)}")
    for result in results:
        for note in result.notes:
            print(f"  {result.name}: {note}")
    return results


def assert_all_fired_once(results: list[Result]) -> None:
    assert [m for r in results for m in r.missed] == []
    assert [d for r in results for d in r.doubled] == []
    assert [w for r in results for w in r.wrong_late_flag] == []


async def test_steps_survive_pauses_blocks_and_outages(
    fresh_databases: DatabaseFactory, tmp_path: Path, served_factory: list[Served]
) -> None:
    scenarios: list[tuple[str, Scenario, str | None]] = [
        ("stop-5", partial(pause_trial, pause=5, block=False), None),
        ("stop-14", partial(pause_trial, pause=14, block=False), None),
        ("block-15", partial(pause_trial, pause=15, block=True), None),
        ("repeat-kill", partial(repeat_trial, outage="kill"), None),
        ("repeat-stop-17", partial(repeat_trial, outage="stop"), None),
        ("frozen-leader", frozen_leader_trial, "postgresql"),
    ]
    assert_all_fired_once(await play(scenarios, fresh_databases, tmp_path, served_factory))


@pytest.mark.soak
async def test_soak_every_pause_twenty_times(
    fresh_databases: DatabaseFactory, tmp_path: Path, served_factory: list[Served]
) -> None:
    """SIGSTOP for 5, 11, 14, 30 and 60 s, a 15 s blocked loop, a repeating step across a
    kill -9 outage and across a 17 s SIGSTOP, and a frozen leader of two on PostgreSQL: each
    SOAK_TRIALS times, all in one pool (the longest first, so the pool ends together)."""
    kinds: list[tuple[str, Scenario, str | None]] = [
        ("stop-60", partial(pause_trial, pause=60, block=False), None),
        ("stop-30", partial(pause_trial, pause=30, block=False), None),
        ("repeat-kill", partial(repeat_trial, outage="kill"), None),
        ("repeat-stop", partial(repeat_trial, outage="stop"), None),
        ("frozen-leader", frozen_leader_trial, "postgresql"),
        ("block-15", partial(pause_trial, pause=15, block=True), None),
        ("stop-14", partial(pause_trial, pause=14, block=False), None),
        ("stop-11", partial(pause_trial, pause=11, block=False), None),
        ("stop-5", partial(pause_trial, pause=5, block=False), None),
    ]
    scenarios = [
        (f"{kind}-{n}", scenario, db) for kind, scenario, db in kinds for n in range(SOAK_TRIALS)
    ]
    results = await play(scenarios, fresh_databases, tmp_path, served_factory, SOAK_PARALLEL)
    assert_all_fired_once(results)
