"""Escalation timers: firing lateness for 1,000 staggered incidents, and CPU while waiting.

A `sunflow-ops serve` process gets a policy of seconds (steps at 0 s, 30 s, 60 s, 90 s and a
last one an hour out); 1,000 alerts arrive spread over 60 s, so about 3,000 steps come due
over two and a half minutes. Lateness is read from the database afterwards (each firing's
`fired_at - due_at`); CPU is the process's own user+system time over a quiet window in
which 1,000 incidents wait and nothing is due. A second run freezes the process (SIGSTOP) for
20 s once the alerts are in, and times the steps that came due meanwhile from the moment it
ran again (`--pause 0` leaves it out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench.common import (
    PYTHON,
    cpu_seconds,
    free_port,
    machine,
    percentile,
    start_process,
    stop_process,
    wait_http,
)

TOKEN = "bench-escalation-token"
POLICY = """
[[ladder.default]]
name = "team"
after = "0s"
target = "team"

[[ladder.default]]
name = "retries_done"
after = "30s"
target = "team"

[[ladder.default]]
name = "pd"
after = "60s"
target = "pd"

[[ladder.default]]
name = "manual"
after = "90s"
target = "team"

[[ladder.default]]
name = "later"
after = "1h"
target = "team"

[deadlines]
P0 = "1h"
P1 = "1h"
P2 = "1h"
P3 = "1h"
"""


async def post_alerts(base: str, count: int, spread: float) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            target = started + spread * i / count
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = {"severity": "P1", "title": f"job {i} failing", "dedup_key": f"esc-{i}"}
            async with session.post(f"{base}/api/alerts", json=body, headers=headers) as resp:
                if resp.status != 202:
                    raise RuntimeError(f"intake answered {resp.status}")


def firings(db: Path) -> list[tuple[datetime, datetime]]:
    """(due, fired) of every step but the 0 s one (the alert itself)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT due_at, fired_at FROM escalation_firings WHERE step_name != 'team'"
        ).fetchall()
    return [(_utc(d), _utc(f)) for d, f in rows]


def _utc(text: str) -> datetime:
    """SQLite keeps UTC as text without an offset."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.0f} ms" if values else "-"


def run(args: argparse.Namespace, pause: float) -> int:
    """One run; with `pause`, the process is frozen (SIGSTOP) that long once the alerts are
    in, and the steps that came due meanwhile are timed from the moment it ran again."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "policy.toml").write_text(POLICY)
        db = workdir / "esc.db"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DATABASE_"))}
        env.update(
            HTTP_PORT=str(port),
            INTAKE_TOKEN=TOKEN,
            DATABASE_URL=f"sqlite+aiosqlite:///{db}",
            ESCALATION_POLICY_FILE=str(workdir / "policy.toml"),
            LOG_LEVEL="WARNING",
        )
        proc = start_process([PYTHON, "-m", "services.cli", "serve"], env, Path.cwd())
        frozen: tuple[datetime, datetime] | None = None
        cpu = None
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_http(f"{base}/api/health", proc))
            asyncio.run(post_alerts(base, args.incidents, args.spread))
            if pause:
                time.sleep(5)
                stopped = datetime.now(UTC)
                os.kill(proc.pid, signal.SIGSTOP)
                time.sleep(pause)
                os.kill(proc.pid, signal.SIGCONT)
                frozen = (stopped, datetime.now(UTC))
                # The 90 s steps of the last incidents, plus a margin.
                time.sleep(max(0.0, 95 - 5 - pause))
            else:
                # Wait for the 90 s step of the last incident, plus a margin; the quiet
                # window then spans at least one repair of the wake-ups.
                time.sleep(95)
                cpu_before, wall_before = cpu_seconds(proc.pid), time.monotonic()
                time.sleep(args.idle)
                cpu = (cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - wall_before)
        finally:
            stop_process(proc)
        fired = firings(db)
    expected = args.incidents * 3
    on_time = [(f - d).total_seconds() for d, f in fired if not frozen or not _in(d, frozen)]
    print(f"machine: {machine()}")
    if frozen is None:
        print(
            "| incidents | steps fired (expected) | lateness p50 | p99 | max "
            "| CPU while waiting |\n| --- | --- | --- | --- | --- | --- |\n"
            f"| {args.incidents} | {len(fired)} ({expected}) | {ms(on_time, 50)} | "
            f"{ms(on_time, 99)} | {max(on_time) * 1000:.0f} ms | "
            f"{(cpu or 0.0) * 100:.2f} % of one core |"
        )
        print("targets: lateness p99 <= 1 s; CPU while waiting < 1 % of one core")
    else:
        stopped, resumed = frozen
        during = [(f - resumed).total_seconds() for d, f in fired if _in(d, frozen)]
        print(
            f"SIGSTOP for {pause:g} s from {stopped:%H:%M:%S} to {resumed:%H:%M:%S} UTC\n"
            "| incidents | steps fired (expected) | due while frozen | after resuming: p50 "
            "| p99 | max | the others: p99 |\n| --- | --- | --- | --- | --- | --- | --- |\n"
            f"| {args.incidents} | {len(fired)} ({expected}) | {len(during)} | "
            f"{ms(during, 50)} | {ms(during, 99)} | "
            f"{max(during, default=0) * 1000:.0f} ms | {ms(on_time, 99)} |"
        )
        print("target: every step due while frozen fires within 3 s of resuming, once")
    return 0 if len(fired) == expected else 1


def _in(due: datetime, window: tuple[datetime, datetime]) -> bool:
    return window[0] <= due <= window[1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench escalation")
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=60.0)
    parser.add_argument("--idle", type=float, default=65.0)
    parser.add_argument(
        "--pause",
        type=float,
        default=20.0,
        help="a second run with a SIGSTOP this long once the alerts are in (0: none)",
    )
    args = parser.parse_args(argv)
    status = run(args, 0.0)
    if args.pause:
        status |= run(args, args.pause)
    return status
