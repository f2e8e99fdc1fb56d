"""SSE job streams under load: ours against minimal aiohttp-sse and sse-starlette peers.

`python -m bench sse [--quick] [--servers ours,aiohttp-sse,sse-starlette]`. Each server runs
in its own process on 127.0.0.1; this process is the load: it holds the streams, publishes
over HTTP and times every event from the publish call to its arrival on each stream.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

STAMP = re.compile(rb'"t":\s*(\d+)[,}]')
SERVERS = ("ours", "aiohttp-sse", "sse-starlette")
# `sunflow-ops serve` on uvloop, whichever way the CLI builds its loop.
UVLOOP_SERVE = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from services.cli import main; sys.exit(main(['serve']))"
)
# ... and on the plain asyncio loop like the peers: the CLI picks uvloop when it can import it.
ASYNCIO_SERVE = (
    "import sys; sys.modules['uvloop'] = None; "
    "from services.cli import main; sys.exit(main(['serve']))"
)
TARGETS = {
    "rss_kib_per_stream": 16.0,
    "per_job_p99_ms": 50.0,
    "broadcast_1k_p99_ms": 100.0,
    "broadcast_10k_p99_ms": 500.0,
}


@dataclass
class Plan:
    held: tuple[int, ...] = (1000, 5000, 10_000)
    streams_per_job: int = 5
    rate: int = 1000  # per-job events per second, in total
    seconds: float = 5.0
    broadcasts: int = 10
    broadcast_sizes: tuple[int, ...] = (1000, 10_000)


@dataclass
class Result:
    server: str
    held: dict[int, bool] = field(default_factory=dict)
    rss_kib: dict[int, float] = field(default_factory=dict)
    per_job: tuple[float, float, int, int] | None = None  # p50, p99, received, expected
    broadcast: dict[int, tuple[float, float, int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def rss_slope(self) -> float | None:
        sizes = sorted(self.rss_kib)
        if len(sizes) < 2:
            return None
        low, high = sizes[0], sizes[-1]
        return (self.rss_kib[high] - self.rss_kib[low]) / (high - low)


class Stream(asyncio.Protocol):
    """One held SSE connection; finds `"t":<ns>` stamps and records their latency."""

    def __init__(self, sink: list[int]) -> None:
        self.sink = sink
        self.connected = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._rest = b""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.connected.done():
            if not data.startswith(b"HTTP/1.1 200"):
                self.connected.set_exception(ConnectionError(data[:80].decode(errors="replace")))
                return
            self.connected.set_result(None)
        # A stamp ends with `,` or `}`, so one cut between reads is never matched half; what
        # follows the last stamp is kept for the next read (line endings vary by server).
        buffer = self._rest + data
        end = 0
        for match in STAMP.finditer(buffer):
            self.sink.append(now - int(match.group(1)))
            end = match.end()
        self._rest = buffer[max(end, len(buffer) - 64) :]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed"))


class Load:
    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: list[Stream] = []
        self.latencies: list[int] = []

    async def open(self, count: int, job_of: Any, *, parallel: int = 100) -> int:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(parallel)
        failed = 0

        async def one(index: int) -> None:
            nonlocal failed
            async with gate:
                try:
                    _, stream = await loop.create_connection(
                        lambda: Stream(self.latencies), "127.0.0.1", self.port
                    )
                    assert stream.transport is not None
                    sock = stream.transport.get_extra_info("socket")
                    # Closing resets, so 30,000 client sockets leave no TIME_WAIT behind.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    stream.transport.write(
                        f"GET /api/generation/jobs/{job_of(index)}/events HTTP/1.1\r\n"
                        f"Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
                    )
                    await asyncio.wait_for(stream.connected, 30)
                    self.streams.append(stream)
                except (OSError, TimeoutError, ConnectionError):
                    failed += 1

        start = len(self.streams)
        await asyncio.gather(*(one(start + i) for i in range(count)))
        return failed

    def alive(self) -> int:
        return sum(1 for s in self.streams if not s.closed)

    def close_all(self) -> None:
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.abort()
        self.streams.clear()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def rss_kib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    return float("nan")


async def publish(session: aiohttp.ClientSession, base: str, job: str, n: int) -> None:
    body = {"type": "progress", "data": {"t": time.monotonic_ns(), "n": n}}
    async with session.post(
        f"{base}/api/generation/jobs/{job}/events",
        json=body,
        headers={"Authorization": "Bearer b"},
    ) as resp:
        await resp.read()


@contextmanager
def timed_window() -> Iterator[None]:
    """No collection in this (the load) process while it times a server: a pause here stops
    the publisher, which then fires the missed events at once, and that burst would land on
    whichever server is measured at the time. What the window allocates is freed after it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def settle(load: Load, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(load.latencies) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def run_server(kind: str, plan: Plan, port: int, pid: int) -> Result:
    result = Result(kind)
    base = f"http://127.0.0.1:{port}"
    jobs = max(1, plan.held[-1] // plan.streams_per_job)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        for job in range(jobs):  # our service knows a job from its first event
            await publish(session, base, f"j{job}", -1)
        await publish(session, base, "all", -1)
        load = Load(port)
        # 1. Held streams, and memory per stream.
        for size in plan.held:
            failed = await load.open(size - len(load.streams), lambda i: f"j{i % jobs}")
            await asyncio.sleep(2)
            ok = failed == 0 and load.alive() == size
            result.held[size] = ok
            result.rss_kib[size] = rss_kib(pid)
            print(
                f"  {kind}: {load.alive()}/{size} streams held, RSS {rss_kib(pid) / 1024:.1f} MiB"
            )
            if not ok:
                result.notes.append(f"{failed} of {size} streams failed to open or dropped")
                break
        # 2. Per-job events at `rate`/s with every stream open.
        if all(result.held.values()):
            load.latencies.clear()
            total = int(plan.rate * plan.seconds)
            expected = total * plan.streams_per_job
            with timed_window():
                started = time.monotonic()
                tasks = []
                for n in range(total):
                    delay = started + n / plan.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(publish(session, base, f"j{n % jobs}", n)))
                await asyncio.gather(*tasks)
                await settle(load, expected, 10)
                achieved = total / (time.monotonic() - started)
            lat = [v / 1e6 for v in load.latencies]
            if lat:
                result.per_job = (percentile(lat, 0.5), percentile(lat, 0.99), len(lat), expected)
            print(
                f"  {kind}: per-job {len(lat)}/{expected} received, ~{achieved:.0f} events/s; "
                + ", ".join(
                    f"p{q * 100:g} {percentile(lat, q):.2f}" for q in (0.9, 0.95, 0.99, 0.999)
                )
                + (f", max {max(lat):.1f} ms" if lat else "")
            )
        load.close_all()
        await asyncio.sleep(1)
        # 3. Broadcast: every stream follows one job.
        for size in plan.broadcast_sizes:
            failed = await load.open(size - len(load.streams), lambda _i: "all")
            if failed or load.alive() < size:
                result.notes.append(f"broadcast at {size}: {failed} streams failed to open")
                break
            await asyncio.sleep(1)
            load.latencies.clear()
            expected = plan.broadcasts * size
            with timed_window():
                for n in range(plan.broadcasts):
                    await publish(session, base, "all", n)
                    await asyncio.sleep(max(0.2, size / 10_000))
                await settle(load, expected, 15)
            lat = [v / 1e6 for v in load.latencies]
            if lat:
                result.broadcast[size] = (
                    percentile(lat, 0.5),
                    percentile(lat, 0.99),
                    len(lat),
                    expected,
                )
            print(f"  {kind}: broadcast to {size}: {len(lat)}/{expected} received")
        load.close_all()
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(
    kind: str, port: int, workdir: Path, *, use_uvloop: bool
) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SSE_"))}
    if kind == "ours":
        env.update(
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(port),
            DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
            INTAKE_TOKEN="b",
            ADMIN_TOKEN="b",
            MAX_SSE_CONNECTIONS="20000",
            LOG_LEVEL="WARNING",
        )
        subprocess.run(
            [sys.executable, "-m", "services.cli", "db", "upgrade"],
            env=env,
            cwd=workdir,
            check=True,
            capture_output=True,
        )
        argv = [sys.executable, "-c", UVLOOP_SERVE if use_uvloop else ASYNCIO_SERVE]
    else:
        argv = [sys.executable, "-m", "bench._peers", kind, str(port)]
        if use_uvloop:
            argv.append("--uvloop")
    proc = subprocess.Popen(argv, env=env, cwd=workdir if kind == "ours" else None)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} did not start") from None
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(results: list[Result], plan: Plan) -> str:
    rows = [
        "| figure | " + " | ".join(r.server for r in results) + " |",
        "| --- | " + " | ".join("---" for _ in results) + " |",
    ]
    for size in plan.held:
        rows.append(
            f"| streams held: {size:,} | "
            + " | ".join(
                ("yes" if r.held.get(size) else "no")
                + (f" ({r.rss_kib[size] / 1024:.0f} MiB RSS)" if size in r.rss_kib else "")
                for r in results
            )
            + " |"
        )
    rows.append(
        f"| RSS per stream, slope {plan.held[0]:,}→{plan.held[-1]:,} (KiB) | "
        + " | ".join(fmt(r.rss_slope) for r in results)
        + " |"
    )
    for label, index in (("p50", 0), ("p99", 1)):
        rows.append(
            f"| per-job publish→receive {label}, {plan.held[-1]:,} open, {plan.rate:,}/s (ms) | "
            + " | ".join(fmt(r.per_job[index], 2) if r.per_job else "—" for r in results)
            + " |"
        )
    rows.append(
        "| per-job events received / expected | "
        + " | ".join(f"{r.per_job[2]:,}/{r.per_job[3]:,}" if r.per_job else "—" for r in results)
        + " |"
    )
    for size in plan.broadcast_sizes:
        for label, index in (("p50", 0), ("p99", 1)):
            rows.append(
                f"| broadcast to {size:,} {label} (ms) | "
                + " | ".join(
                    fmt(r.broadcast[size][index], 2) if size in r.broadcast else "—"
                    for r in results
                )
                + " |"
            )
        rows.append(
            f"| broadcast to {size:,} received / expected | "
            + " | ".join(
                f"{r.broadcast[size][2]:,}/{r.broadcast[size][3]:,}"
                if size in r.broadcast
                else "—"
                for r in results
            )
            + " |"
        )
    return "\n".join(rows)


def verdicts(result: Result, plan: Plan) -> list[str]:
    out = []
    big = plan.held[-1]
    out.append(f"{big:,} concurrent streams: {'met' if result.held.get(big) else 'MISSED'}")
    slope = result.rss_slope
    if slope is not None:
        met = slope <= TARGETS["rss_kib_per_stream"]
        out.append(f"≤ 16 KiB per stream: {slope:.1f} KiB, {'met' if met else 'MISSED'}")
    if result.per_job:
        met = result.per_job[1] <= TARGETS["per_job_p99_ms"]
        out.append(
            f"per-job p99 ≤ 50 ms: {result.per_job[1]:.1f} ms, {'met' if met else 'MISSED'}"
        )
    for size, key in ((1000, "broadcast_1k_p99_ms"), (10_000, "broadcast_10k_p99_ms")):
        if size in result.broadcast:
            p99 = result.broadcast[size][1]
            met = p99 <= TARGETS[key]
            out.append(
                f"broadcast {size:,} p99 ≤ {TARGETS[key]:.0f} ms: {p99:.1f} ms, "
                f"{'met' if met else 'MISSED'}"
            )
    return out


def machine() -> str:
    free = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout
    mem = next((line.split()[1] for line in free.splitlines() if line.startswith("Mem:")), "?")
    return (
        f"{os.cpu_count()} CPUs (nproc), {mem} RAM (free -h), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sse")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--uvloop", action="store_true", help="run every server on uvloop")
    args = parser.parse_args(argv)
    plan = Plan()
    if args.quick:
        plan = Plan(
            held=(20, 60),
            rate=100,
            seconds=1.0,
            broadcasts=3,
            broadcast_sizes=(20, 60),
        )
    limit = raise_open_files()
    if limit < plan.held[-1] + 200:
        print(
            f"bench sse: open-files limit {limit} is below {plan.held[-1] + 200}", file=sys.stderr
        )
        return 2
    servers = [s for s in args.servers.split(",") if s]
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"machine: {machine()}; open-files limit {limit}; event loop {loop}")
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-sse-"))
    try:
        for kind in servers:
            port = free_port()
            with server(kind, port, workdir, use_uvloop=args.uvloop) as proc:
                print(f"== {kind} (pid {proc.pid}, port {port})", flush=True)
                results.append(asyncio.run(run_server(kind, plan, port, proc.pid)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results, plan))
    print()
    for result in results:
        if result.server == "ours":
            for line in verdicts(result, plan):
                print(f"- {line}")
        for note in result.notes:
            print(f"- {result.server}: {note}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "server": r.server,
                        "held": r.held,
                        "rss_kib": r.rss_kib,
                        "rss_kib_per_stream": r.rss_slope,
                        "per_job": r.per_job,
                        "broadcast": r.broadcast,
                        "notes": r.notes,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    ours = next((r for r in results if r.server == "ours"), None)
    return 0 if ours is None or all(ours.held.values()) else 1
