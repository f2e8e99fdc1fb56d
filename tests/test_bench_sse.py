import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_sse_benchmark_runs_small(tmp_path: Path) -> None:
    """`python -m bench sse --quick`: every server starts, holds streams and delivers all."""
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "sse", "--quick", f"--json={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr

    figures = {r["server"]: r for r in json.loads(out.read_text())}
    assert set(figures) == {"ours", "aiohttp-sse", "sse-starlette"}
    for result in figures.values():
        assert all(result["held"].values())
        p50, p99, received, expected = result["per_job"]
        assert received == expected
        assert 0 < p50 <= p99
        for _p50, _p99, got, wanted in result["broadcast"].values():
            assert got == wanted
    assert "| RSS per stream" in run.stdout
