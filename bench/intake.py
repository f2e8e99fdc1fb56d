"""Alert intake throughput and latency, beside a bare aiohttp handler as the ceiling.

10,000 alerts posted over HTTP from this process to a server in another process; half of
them repeat an earlier dedup key. Both servers get the same load, alternately, twice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    PYTHON,
    cpu_seconds,
    free_port,
    machine,
    median,
    percentile,
    start_process,
    stop_process,
    wait_http,
)

TOKEN = "bench-intake-token"


@dataclass
class Run:
    name: str
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    # The server's own CPU (user + system) per alert: steadier than the rates on a shared
    # machine, where the host's load moves both servers' rates from run to run.
    cpu_ms: float


async def load(base: str, total: int, concurrency: int) -> tuple[float, list[float], int]:
    bodies = [
        {
            "severity": "P2" if i % 10 else "P1",
            "title": f"stats collection failing on shard {i % (total // 2)}",
            "dedup_key": f"bench-{i % (total // 2)}",
            "source": "bench",
            "labels": {"shard": str(i % (total // 2))},
        }
        for i in range(total)
    ]
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                async with session.post(f"{base}/api/alerts", json=body, headers=headers) as r:
                    await r.read()
                    if r.status != 202:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return total / elapsed, latencies, errors


async def run_server(kind: str, total: int, concurrency: int, workdir: Path) -> Run:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DATABASE_"))}
    db = workdir / f"{kind}-{port}.db"
    env.update(
        HTTP_PORT=str(port),
        INTAKE_TOKEN=TOKEN,
        DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        LOG_LEVEL="WARNING",
    )
    if kind == "ceiling":
        args = [PYTHON, "-m", "bench.ceiling_server", str(port)]
    else:
        args = [PYTHON, "-m", "services.cli", "serve"]
    proc = start_process(args, env, Path.cwd())
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/api/health", proc)
        cpu_before = cpu_seconds(proc.pid)
        rate, latencies, errors = await load(base, total, concurrency)
        cpu_ms = (cpu_seconds(proc.pid) - cpu_before) / total * 1000
    finally:
        stop_process(proc)
    return Run(kind, rate, percentile(latencies, 50), percentile(latencies, 99), errors, cpu_ms)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench intake")
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    async def go() -> list[Run]:
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for kind in ("ceiling", "sunflow"):
                    run = await run_server(kind, args.alerts, args.concurrency, Path(tmp))
                    print(
                        f"  {run.name:<8} {run.rate:8.0f} alerts/s  p50 {run.p50_ms:6.2f} ms"
                        f"  p99 {run.p99_ms:6.2f} ms  errors {run.errors}"
                        f"  server CPU {run.cpu_ms:5.3f} ms/alert",
                        flush=True,
                    )
                    runs.append(run)
        return runs

    runs = asyncio.run(go())
    ceiling = [r for r in runs if r.name == "ceiling"]
    ours = [r for r in runs if r.name == "sunflow"]
    ratio = median([r.rate for r in ours]) / median([r.rate for r in ceiling])
    print(f"machine: {machine()}")
    print(
        f"{args.alerts} alerts, concurrency {args.concurrency}, {args.rounds} rounds; medians:\n"
        "| server | alerts/s | p50 ms | p99 ms | errors | server CPU ms/alert |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    for name, group in (("bare aiohttp 202 (ceiling)", ceiling), ("sunflow-ops intake", ours)):
        print(
            f"| {name} | {median([r.rate for r in group]):.0f} | "
            f"{median([r.p50_ms for r in group]):.2f} | {median([r.p99_ms for r in group]):.2f} | "
            f"{sum(r.errors for r in group)} | {median([r.cpu_ms for r in group]):.3f} |"
        )
    print(f"throughput ratio sunflow/ceiling: {ratio:.3f} (target >= 0.5)")
    cpu_ratio = median([r.cpu_ms for r in ours]) / median([r.cpu_ms for r in ceiling])
    print(f"server CPU per alert sunflow/ceiling: {cpu_ratio:.1f}x")
    worst_p99 = max(r.p99_ms for r in ours)
    print(f"worst p99 of sunflow: {worst_p99:.2f} ms (target < 50 ms)")
    return 0 if all(r.errors == 0 for r in runs) else 1
