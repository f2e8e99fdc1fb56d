import json
import statistics
from pathlib import Path

import pytest

from bench._looptime import Turns, over
from bench.sse import FIGURES, Plan, Result, Round, behind, steal_seconds
from tests.benchrun import run_bench


@pytest.mark.slow
def test_the_sse_benchmark_runs_small(tmp_path: Path) -> None:
    """`python -m bench sse --quick`: every server starts, holds streams and delivers all."""
    out = tmp_path / "figures.json"
    run = run_bench("sse", "--quick", f"--json={out}")
    assert run.returncode == 0, run.stdout + run.stderr

    figures = {r["server"]: r for r in json.loads(out.read_text())}
    assert set(figures) == {"ours", "aiohttp-sse", "sse-starlette"}
    for result in figures.values():
        assert all(result["held"].values())
        # --quick: one round, a per-job window at each held size, the most streams first.
        assert [w["streams"] for w in result["rounds"]] == [60, 20]
        for one in result["rounds"]:
            assert one["received"] == one["expected"]
            assert 0 < one["p50"] <= one["p99"] <= one["p99.9"] <= one["max"]
            if Path("/proc/stat").exists():
                assert one["steal_s"] is not None and one["steal_s"] >= 0
            per_job = result["per_job"][str(one["streams"])]
            assert {f: per_job[f] for f in FIGURES} == {f: one[f] for f in FIGURES}
            assert (per_job["received"], per_job["rounds"]) == (one["expected"], 1)
            # Every server's loop turns were timed in each window, by the same probe.
            assert one["loop"]["turns"] > 0
            assert result["loop"][str(one["streams"])]["max_ms"] == one["loop"]["max_ms"] > 0
        for _p50, _p99, got, wanted in result["broadcast"].values():
            assert got == wanted
        assert set(result["broadcast_cpu_us"]) == set(result["broadcast"])
        assert all(us >= 0 for us in result["broadcast_cpu_us"].values())
    assert "| RSS per stream" in run.stdout
    assert "| per-job publish→receive p99, 20 open" in run.stdout
    assert "| 1 | 60 | " in run.stdout  # the per-round table


def a_round(
    number: int, p50: float, p99: float, steal: float | None, *, streams: int = 2
) -> Round:
    figures = {"p50": p50, "p99": p99, "p99.9": p99 * 2, "max": p99 * 3}
    return Round(number, streams, figures, 10, 10, 1000.0, steal, 0.5)


def test_per_job_figures_are_medians_over_the_rounds_at_each_size() -> None:
    result = Result("ours")
    result.rounds = [
        a_round(1, 0.8, 40.0, 0.9),
        a_round(1, 0.1, 0.2, 0.0, streams=1),
        a_round(2, 0.7, 5.0, None),
        a_round(3, 0.9, 6.0, 0.1),
    ]
    assert result.sizes() == [1, 2]
    one = result.per_job_at(1)
    assert one is not None and (one["p99"], one["rounds"]) == (0.2, 1)
    per_job = result.per_job_at(2)
    assert per_job is not None
    assert (per_job["p50"], per_job["p99"], per_job["p99.9"], per_job["max"]) == (
        0.8,
        6.0,
        12.0,
        18.0,
    )
    assert per_job["steal_s"] == statistics.median([0.9, 0.1])  # an unreadable round skipped
    assert (per_job["received"], per_job["expected"], per_job["rounds"]) == (30, 30, 3)
    assert Result("aiohttp-sse").per_job_at(2) is None


def test_behind_lists_each_figure_a_peer_matches_or_beats() -> None:
    plan = Plan(held=(1, 2), broadcast_sizes=(2,))
    ours, peer = Result("ours"), Result("aiohttp-sse")
    ours.rss_samples = {1: [100.0], 2: [110.0]}  # 10 KiB per stream
    peer.rss_samples = {1: [100.0], 2: [120.0]}  # 20
    ours.rounds = [a_round(1, 1.0, 9.0, 0.0), a_round(1, 1.0, 1.0, 0.0, streams=1)]
    peer.rounds = [a_round(1, 2.0, 5.0, 0.0), a_round(1, 2.0, 2.0, 0.0, streams=1)]
    ours.broadcast = {2: (3.0, 7.0, 4, 4)}
    peer.broadcast = {2: (3.0, 8.0, 4, 4)}
    assert behind([ours, peer], plan) == [
        "per-job p99 at 2",
        "per-job p99.9 at 2",
        "per-job max at 2",
        "broadcast to 2 p50",  # a tie is not ahead
    ]
    ours.rounds = ours.rounds[:1]  # a size ours has no window at is not ahead either
    assert "per-job p50 at 1" in behind([ours, peer], plan)
    ours.broadcast = {}  # a figure ours lacks is not ahead either
    assert "broadcast to 2 p99" in behind([ours, peer], plan)


def test_steal_is_read_from_proc_stat_where_there_is_one() -> None:
    steal = steal_seconds()
    if Path("/proc/stat").exists():
        assert steal is not None and steal >= 0
    else:
        assert steal is None


def test_loop_turns_are_counted_by_length() -> None:
    turns = Turns()
    for ms in (0.05, 0.3, 3.0, 7.0, 60.0):
        turns.add(ms / 1000)
    window = turns.to_json()
    assert window["turns"] == 5
    assert (over(window, 5.0), over(window, 2.0), over(window, 50.0)) == (2, 3, 1)
    assert window["max_ms"] == 60.0
    assert [round(t["ms"], 3) for t in window["longest"]] == [60.0, 7.0, 3.0]
    turns.clear()
    assert turns.to_json()["turns"] == 0
