import os
import re
from pathlib import Path

import pytest

from bench.common import cpu_seconds
from tests.benchrun import run_bench


@pytest.mark.slow
def test_the_intake_benchmark_runs_small() -> None:
    """`python -m bench intake` on a small load: both servers answer every alert, and the
    table gives each one's rate, latencies and its own CPU per alert."""
    run = run_bench("intake", "--alerts", "400", "--rounds", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {
        m["name"]: m
        for m in re.finditer(
            r"^\| (?P<name>[^|]+?) \| (?P<rate>\d+) \| (?P<p50>[\d.]+) \| (?P<p99>[\d.]+) \| "
            r"(?P<errors>\d+) \| (?P<cpu>[\d.]+|nan) \|$",
            run.stdout,
            re.MULTILINE,
        )
    }
    assert set(rows) == {"bare aiohttp 202 (ceiling)", "sunflow-ops intake"}, run.stdout
    for row in rows.values():
        assert int(row["rate"]) > 0 and row["errors"] == "0"
        assert float(row["p50"]) <= float(row["p99"])
        if Path("/proc/self/stat").exists():
            assert float(row["cpu"]) > 0
    assert "throughput ratio sunflow/ceiling:" in run.stdout


def test_cpu_seconds_reads_this_process_and_nothing_for_a_missing_one() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc here")
    spent = cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))  # burn a little CPU
    assert cpu_seconds(os.getpid()) >= spent > 0
    assert cpu_seconds(2**22 + 12345) != cpu_seconds(2**22 + 12345)  # nan: no such process
