"""Escalation under pauses, not only kills: every later step fires, each once, the first within
3 s of the process running again — after SIGSTOP, a blocked event loop, repeats across an
outage, and a frozen leader of two. `make test` runs one trial of each; `make soak` runs each
20 times (docs/reliability.md has the figures)."""

from __future__ import annotations

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


async def play(
    scenarios: list[tuple[str, Scenario, str | None]],
    fresh_databases: DatabaseFactory,
    tmp_path: Path,
    served_factory: list[Served],
    parallel: int = PARALLEL,
) -> list[Result]:
    trials = []
    for name, scenario, kind in scenarios:
        url = await fresh_databases(kind)
        trials.append(partial(scenario, name, url, tmp_path / name, served_factory))
    results = await run_side_by_side(trials, parallel)
    print(summary(results))
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
@pytest.mark.parametrize("pause", [5, 11, 14, 30, 60])
async def test_soak_sigstop(
    pause: int, fresh_databases: DatabaseFactory, tmp_path: Path, served_factory: list[Served]
) -> None:
    scenarios: list[tuple[str, Scenario, str | None]] = [
        (f"stop-{pause}-{n}", partial(pause_trial, pause=pause, block=False), None)
        for n in range(SOAK_TRIALS)
    ]
    assert_all_fired_once(await play(scenarios, fresh_databases, tmp_path, served_factory))


@pytest.mark.soak
async def test_soak_blocked_loop(
    fresh_databases: DatabaseFactory, tmp_path: Path, served_factory: list[Served]
) -> None:
    scenarios: list[tuple[str, Scenario, str | None]] = [
        (f"block-15-{n}", partial(pause_trial, pause=15, block=True), None)
        for n in range(SOAK_TRIALS)
    ]
    assert_all_fired_once(await play(scenarios, fresh_databases, tmp_path, served_factory))


@pytest.mark.soak
@pytest.mark.parametrize("outage", ["kill", "stop"])
async def test_soak_repeats_across_outages(
    outage: str, fresh_databases: DatabaseFactory, tmp_path: Path, served_factory: list[Served]
) -> None:
    scenarios: list[tuple[str, Scenario, str | None]] = [
        (f"repeat-{outage}-{n}", partial(repeat_trial, outage=outage), None)
        for n in range(SOAK_TRIALS)
    ]
    assert_all_fired_once(await play(scenarios, fresh_databases, tmp_path, served_factory))


@pytest.mark.soak
async def test_soak_frozen_leader(
    fresh_databases: DatabaseFactory, tmp_path: Path, served_factory: list[Served]
) -> None:
    scenarios: list[tuple[str, Scenario, str | None]] = [
        (f"frozen-leader-{n}", frozen_leader_trial, "postgresql") for n in range(SOAK_TRIALS)
    ]
    # Three pairs at a time: each instance holds a few PostgreSQL connections (of 100).
    results = await play(scenarios, fresh_databases, tmp_path, served_factory, parallel=3)
    assert_all_fired_once(results)
