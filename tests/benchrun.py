"""Running this project's programs from the tests, as `python -m MODULE ...` subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_module(
    module: str,
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`python -m module args...`, its output captured as text; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A benchmark, as `python -m bench NAME ...` in the checkout."""
    return run_module("bench", *args, timeout=timeout)
