"""SSE job streams under load: ours against minimal aiohttp-sse and sse-starlette peers.

`python -m bench sse [--quick] [--rounds N] [--servers ours,aiohttp-sse,sse-starlette]
[--heartbeat S] [--busy DUTY] [--no-pin]`. Each server runs in its own process on 127.0.0.1,
pinned to the first CPU (the load to the second) and limited to the open files the shipped
systemd unit allows (`LimitNOFILE`); this process is the load: it holds the streams,
publishes over HTTP and times every event from the publish call to its arrival on each stream.
A probe in each server (bench/_looptime.py) times every event-loop turn in each per-job
window; `--busy` runs a CPU hog at a fixed duty cycle on the servers' CPU.

A round is a fresh server process: the ramp to each held size (RSS after each), the most
held (round 1), then a per-job window at each held size on the way down (10,000, 5,000, 1,000 open:
the streams beyond the size are closed first). The per-job figures at each size are the
median of N rounds, interleaved (ours, aiohttp-sse, sse-starlette, ours, ...): on a shared
VM the host takes CPU in bursts (`steal` in /proc/stat), and one window per server says
more about the host at that moment than about the server (the load process cannot hold
three servers' streams at once within its open-files limit); broadcast runs in round 1.
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
import signal
import socket
import statistics
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

from bench import _looptime

STAMP = re.compile(rb'"t":\s*(\d+)[,}]')
SERVERS = ("ours", "aiohttp-sse", "sse-starlette")
# The checkout this file belongs to: ours runs its code (see `server`).
CHECKOUT = Path(__file__).resolve().parent.parent
UNIT = CHECKOUT / "deploy" / "systemd" / "sunflow-ops@.service"
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
    "rss_kib_per_stream": 8.0,
    "per_job_p99_ms": 50.0,
    "per_job_max_ms": 20.0,
    "broadcast_1k_p99_ms": 100.0,
    "broadcast_10k_p99_ms": 500.0,
}


@dataclass
class Plan:
    held: tuple[int, ...] = (1000, 5000, 10_000)
    hold_max: int = 20_000  # held once after the ramp, RSS recorded
    streams_per_job: int = 5
    rate: int = 1000  # per-job events per second, in total
    seconds: float = 5.0
    broadcasts: int = 10
    broadcast_sizes: tuple[int, ...] = (1000, 5000, 10_000)


# The per-job figures of one round, in ms, and what they are the median of in a report.
FIGURES = ("p50", "p99", "p99.9", "max")


@dataclass
class Round:
    """One per-job window: latency figures (ms), deliveries, and what the host took."""

    number: int
    streams: int  # open while the window ran
    figures: dict[str, float]
    received: int
    expected: int
    rate: float  # publishes per second reached
    steal: float | None  # CPU seconds stolen by the host in the window, all CPUs
    load: float  # 1-minute load average when the round's server started
    loop: dict[str, Any] | None = None  # the server's loop turns (bench/_looptime.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.number,
            "streams": self.streams,
            **self.figures,
            "received": self.received,
            "expected": self.expected,
            "events_per_s": self.rate,
            "steal_s": self.steal,
            "load": self.load,
            "loop": self.loop,
        }


@dataclass
class Result:
    server: str
    held: dict[int, bool] = field(default_factory=dict)  # in every round
    rss_samples: dict[int, list[float]] = field(default_factory=dict)  # KiB, one per round
    hold_max_rss: list[float] = field(default_factory=list)  # KiB at Plan.hold_max, per round
    # Server CPU (user + system) over a broadcast window per delivery, µs; the window's idle
    # time counts too (a few ms per second for any of the three).
    broadcast_cpu_us: dict[int, float] = field(default_factory=dict)
    rounds: list[Round] = field(default_factory=list)
    broadcast: dict[int, tuple[float, float, int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def rss_kib(self) -> dict[int, float]:
        return {size: statistics.median(kib) for size, kib in self.rss_samples.items()}

    @property
    def rss_slope(self) -> float | None:
        rss = self.rss_kib
        sizes = sorted(rss)
        if len(sizes) < 2:
            return None
        low, high = sizes[0], sizes[-1]
        return (rss[high] - rss[low]) / (high - low)

    def sizes(self) -> list[int]:
        """The numbers of open streams per-job windows ran with, fewest first."""
        return sorted({r.streams for r in self.rounds})

    def loop_at(self, streams: int) -> dict[str, Any] | None:
        """The server's loop turns over every round's window with `streams` open: the
        longest, and how many were over 5 ms and over 2 ms."""
        windows = [r.loop for r in self.rounds if r.loop is not None and r.streams == streams]
        if not windows:
            return None
        return {
            "max_ms": max(w["max_ms"] for w in windows),
            "over_5ms": sum(_looptime.over(w, 5.0) for w in windows),
            "over_2ms": sum(_looptime.over(w, 2.0) for w in windows),
            "turns": sum(w["turns"] for w in windows),
            "busy_s": sum(w["busy_s"] for w in windows),
        }

    def per_job_at(self, streams: int) -> dict[str, Any] | None:
        """Each figure's median over the rounds' windows with `streams` open; deliveries
        summed."""
        rounds = [r for r in self.rounds if r.streams == streams]
        if not rounds:
            return None
        steals = [r.steal for r in rounds if r.steal is not None]
        return {
            **{f: statistics.median(r.figures[f] for r in rounds) for f in FIGURES},
            "steal_s": statistics.median(steals) if steals else None,
            "received": sum(r.received for r in rounds),
            "expected": sum(r.expected for r in rounds),
            "rounds": len(rounds),
        }


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

    def close_last(self, count: int) -> None:
        """Close the `count` streams opened last (the server sees them reset)."""
        for _ in range(max(0, count)):
            stream = self.streams.pop()
            if stream.transport is not None:
                stream.transport.abort()

    def close_all(self) -> None:
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.abort()
        self.streams.clear()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def steal_seconds() -> float | None:
    """CPU time the hypervisor has taken from this machine since boot, all CPUs (Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
        # cpu user nice system idle iowait irq softirq steal ...
        return int(fields[8]) / os.sysconf("SC_CLK_TCK") if fields[0] == "cpu" else None
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used, from /proc (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def quiet(pid: int, *, timeout: float = 20.0) -> None:
    """Until the server has used under 5 % of a CPU for half a second (done with what came
    before, e.g. freeing the streams just closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if cpu_seconds(pid) - before < 0.025:
            return


async def settle(load: Load, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(load.latencies) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def per_job_window(
    result: Result,
    plan: Plan,
    session: aiohttp.ClientSession,
    load: Load,
    pid: int,
    *,
    number: int,
    load_average: float,
    loop_file: str | None,
) -> None:
    """Per-job events at `rate`/s to the jobs of the streams open now (`streams_per_job` each);
    the server's loop turns are timed over the window (heartbeats, the service's own timers)."""
    kind = result.server
    base = f"http://127.0.0.1:{load.port}"
    streams = len(load.streams)
    jobs = max(1, streams // plan.streams_per_job)
    if loop_file:
        os.kill(pid, signal.SIGUSR1)
    load.latencies.clear()
    total = int(plan.rate * plan.seconds)
    expected = total * plan.streams_per_job
    with timed_window():
        steal_before = steal_seconds()
        started = time.monotonic()
        tasks = []
        for n in range(total):
            delay = started + n / plan.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(publish(session, base, job_name(n % jobs), n)))
        await asyncio.gather(*tasks)
        await settle(load, expected, 10)
        achieved = total / (time.monotonic() - started)
        steal_after = steal_seconds()
    lat = [v / 1e6 for v in load.latencies]
    steal = None if steal_before is None or steal_after is None else steal_after - steal_before
    turns = None
    if loop_file:
        os.kill(pid, signal.SIGUSR2)
        turns = _looptime.read(loop_file)
    if lat:
        figures = {
            "p50": percentile(lat, 0.5),
            "p99": percentile(lat, 0.99),
            "p99.9": percentile(lat, 0.999),
            "max": max(lat),
        }
        result.rounds.append(
            Round(
                number, streams, figures, len(lat), expected, achieved, steal, load_average, turns
            )
        )
    print(
        f"  {kind}: per-job, {streams:,} open: {len(lat)}/{expected} received, "
        f"~{achieved:.0f} events/s; "
        + ", ".join(f"p{q * 100:g} {percentile(lat, q):.2f}" for q in (0.5, 0.99, 0.999))
        + (f", max {max(lat):.1f} ms" if lat else "")
        + f"; steal {steal_text(steal)}"
        + (
            f"; loop turns > 5 ms: {_looptime.over(turns, 5.0)}, longest {turns['max_ms']:.1f} ms"
            if turns
            else ""
        )
    )


def job_name(job: int) -> str:
    return f"j{job}"


async def run_round(  # noqa: PLR0914, PLR0915
    result: Result,
    plan: Plan,
    port: int,
    pid: int,
    *,
    number: int,
    broadcast: bool,
    loop_file: str | None,
) -> None:
    """One fresh server process: the held ramp, then (if asked, round 1) the most held, a
    per-job window at each held size on the way down, then (if asked, round 1) broadcast."""
    kind = result.server
    load_average = os.getloadavg()[0]
    base = f"http://127.0.0.1:{port}"
    per_job = plan.streams_per_job
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Our service knows a job from its first event. Stream i follows job i // per_job,
        # so the first n streams are n / per_job jobs of per_job streams each.
        jobs = max(1, plan.hold_max // per_job + 1)
        for first in range(0, jobs, 64):
            await asyncio.gather(
                *(
                    publish(session, base, job_name(job), -1)
                    for job in range(first, min(jobs, first + 64))
                )
            )
        await publish(session, base, "all", -1)
        load = Load(port)

        def follow(index: int) -> str:
            return job_name(index // per_job)

        # 1. Held streams, and memory per stream (measured on the way up, before any event
        # is kept in our history: the slope is the streams' alone).
        ok = False
        for size in plan.held:
            failed = await load.open(size - len(load.streams), follow)
            await asyncio.sleep(2)
            ok = failed == 0 and load.alive() == size
            result.held[size] = result.held.get(size, True) and ok
            result.rss_samples.setdefault(size, []).append(rss_kib(pid))
            print(
                f"  {kind}: {load.alive()}/{size} streams held, RSS {rss_kib(pid) / 1024:.1f} MiB"
            )
            if not ok:
                result.notes.append(
                    f"round {number}: {failed} of {size} streams failed to open or dropped"
                )
                break
        if ok and broadcast:
            # 2. The most streams one process is to hold (in the first round, with broadcast).
            failed = await load.open(plan.hold_max - len(load.streams), follow)
            await asyncio.sleep(2)
            held = failed == 0 and load.alive() == plan.hold_max
            result.held[plan.hold_max] = result.held.get(plan.hold_max, True) and held
            result.hold_max_rss.append(rss_kib(pid))
            print(
                f"  {kind}: {load.alive()}/{plan.hold_max} streams held, "
                f"RSS {rss_kib(pid) / 1024:.1f} MiB"
            )
            if not held:
                result.notes.append(
                    f"round {number}: {failed} of {plan.hold_max} streams failed to open "
                    "or dropped"
                )
        if ok:
            # 3. Per-job windows at each held size, largest first: the streams beyond it
            # are closed (the server frees them) and the window follows the rest.
            for size in sorted(plan.held, reverse=True):
                load.close_last(len(load.streams) - size)
                await asyncio.sleep(2)
                await quiet(pid)
                await per_job_window(
                    result,
                    plan,
                    session,
                    load,
                    pid,
                    number=number,
                    load_average=load_average,
                    loop_file=loop_file,
                )
        load.close_all()
        if not broadcast:
            return
        await asyncio.sleep(1)
        # 4. Broadcast: every stream follows one job.
        for size in plan.broadcast_sizes:
            failed = await load.open(size - len(load.streams), lambda _i: "all")
            if failed or load.alive() < size:
                result.notes.append(f"broadcast at {size}: {failed} streams failed to open")
                break
            await asyncio.sleep(1)
            load.latencies.clear()
            expected = plan.broadcasts * size
            with timed_window():
                cpu = cpu_seconds(pid)
                for n in range(plan.broadcasts):
                    await publish(session, base, "all", n)
                    await asyncio.sleep(max(0.2, size / 10_000))
                await settle(load, expected, 15)
                cpu = cpu_seconds(pid) - cpu
            lat = [v / 1e6 for v in load.latencies]
            if lat:
                result.broadcast_cpu_us[size] = cpu / len(lat) * 1e6
            if lat:
                result.broadcast[size] = (
                    percentile(lat, 0.5),
                    percentile(lat, 0.99),
                    len(lat),
                    expected,
                )
            print(f"  {kind}: broadcast to {size}: {len(lat)}/{expected} received")
        load.close_all()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HOG = """\
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])}) if sys.argv[1] != "-" else None
busy, idle = float(sys.argv[2]), float(sys.argv[3])
while True:
    end = time.perf_counter() + busy
    while time.perf_counter() < end:
        pass
    time.sleep(idle)
"""


@contextmanager
def hog(duty: float | None, slice_ms: float, cpu: int | None) -> Iterator[None]:
    """`--busy`: a process on the servers' CPU that spins `slice_ms` then sleeps, `duty` of
    the time: other work on the same core, the same for every server."""
    if duty is None:
        yield
        return
    busy = slice_ms / 1000
    idle = busy * (1 - duty) / duty
    proc = subprocess.Popen(
        [sys.executable, "-c", HOG, "-" if cpu is None else str(cpu), str(busy), str(idle)]
    )
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def unit_nofile() -> int:
    """`LimitNOFILE` of the shipped systemd unit: the open files a deployed server has."""
    for line in UNIT.read_text().splitlines():
        if line.startswith("LimitNOFILE="):
            return int(line.split("=", 1)[1])
    raise RuntimeError(f"{UNIT} sets no LimitNOFILE")


@dataclass(frozen=True)
class Setup:
    """How every server of a run is started: the same for all three."""

    use_uvloop: bool = False
    heartbeat: float = 30.0
    nofile: int | None = None  # the servers' RLIMIT_NOFILE (the unit's LimitNOFILE)
    cpu: int | None = None  # the CPU the servers (and the hog) are pinned to
    loop_dir: Path | None = None  # where the loop-turn probe's sitecustomize is


def _confine(setup: Setup) -> None:
    """In the server's process, before it starts: its CPU and its open-files limit."""
    if setup.cpu is not None:
        os.sched_setaffinity(0, {setup.cpu})
    if setup.nofile is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (setup.nofile, setup.nofile))


@contextmanager
def server(kind: str, port: int, workdir: Path, setup: Setup) -> Iterator[subprocess.Popen[bytes]]:
    use_uvloop = setup.use_uvloop
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SSE_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        p
        for p in (
            str(setup.loop_dir) if setup.loop_dir else "",
            # Every server imports `bench` (the probe) and ours `services` from this checkout
            # (a worktree benchmarks its own code, not the editable install's).
            str(CHECKOUT),
            os.environ.get("PYTHONPATH", ""),
        )
        if p
    )
    env["BENCH_PING_SECONDS"] = f"{setup.heartbeat:g}"
    if kind == "ours":
        env.update(
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(port),
            DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
            INTAKE_TOKEN="b",
            ADMIN_TOKEN="b",
            MAX_SSE_CONNECTIONS="20000",
            SSE_HEARTBEAT_SECONDS=f"{setup.heartbeat:g}",
            SSE_CLEANUP_INTERVAL_SECONDS=f"{setup.heartbeat:g}",
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
    if setup.loop_dir is not None:
        env["BENCH_LOOP_TIME"] = str(workdir / "loop.json")
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=workdir if kind == "ours" else CHECKOUT,
        preexec_fn=lambda: _confine(setup),  # noqa: PLW1509 (two system calls, then exec)
    )
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


def raise_open_files(wanted: int = 65536) -> int:
    """This process's open-files limit, raised as far as allowed towards `wanted` (the
    hard limit too, where the process may: it holds every stream's client end)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def steal_text(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


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
        f"| streams held: {plan.hold_max:,} | "
        + " | ".join(
            ("yes" if r.held.get(plan.hold_max) else "no")
            + (
                f" ({statistics.median(r.hold_max_rss) / 1024:.0f} MiB RSS)"
                if r.hold_max_rss
                else ""
            )
            for r in results
        )
        + " |"
    )
    rows.append(
        f"| RSS per stream, slope {plan.held[0]:,}→{plan.held[-1]:,} (KiB) | "
        + " | ".join(fmt(r.rss_slope) for r in results)
        + " |"
    )
    for streams in plan.held:
        per_job = [r.per_job_at(streams) for r in results]
        rounds = max((p["rounds"] for p in per_job if p), default=0)
        for label in FIGURES:
            rows.append(
                f"| per-job publish→receive {label}, {streams:,} open, {plan.rate:,}/s, "
                f"median of {rounds} (ms) | "
                + " | ".join(fmt(p[label], 2) if p else "—" for p in per_job)
                + " |"
            )
        rows.append(
            f"| per-job window, {streams:,} open: CPU stolen by the host, median of {rounds} | "
            + " | ".join(steal_text(p["steal_s"]) if p else "—" for p in per_job)
            + " |"
        )
        loops = [r.loop_at(streams) for r in results]
        rows.append(
            f"| loop turns over 5 ms / over 2 ms, {streams:,} open, all rounds | "
            + " | ".join(f"{lp['over_5ms']} / {lp['over_2ms']}" if lp else "—" for lp in loops)
            + " |"
        )
        rows.append(
            f"| longest loop turn, {streams:,} open, all rounds (ms) | "
            + " | ".join(fmt(lp["max_ms"], 2) if lp else "—" for lp in loops)
            + " |"
        )
        rows.append(
            f"| per-job events received / expected, {streams:,} open, all rounds | "
            + " | ".join(f"{p['received']:,}/{p['expected']:,}" if p else "—" for p in per_job)
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
            f"| broadcast to {size:,}: server CPU per delivery (µs) | "
            + " | ".join(
                fmt(r.broadcast_cpu_us[size], 1) if size in r.broadcast_cpu_us else "—"
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


def round_table(results: list[Result]) -> str:
    """Every per-job window, in the order they ran: p50 / p99 / p99.9 / max (ms), steal."""
    rows = [
        "| round | open | " + " | ".join(r.server for r in results) + " |",
        "| --- | --- | " + " | ".join("---" for _ in results) + " |",
    ]
    numbers = sorted({n.number for r in results for n in r.rounds})
    sizes = sorted({n.streams for r in results for n in r.rounds}, reverse=True)
    for number in numbers:
        for streams in sizes:
            cells = []
            for result in results:
                got = next(
                    (n for n in result.rounds if (n.number, n.streams) == (number, streams)),
                    None,
                )
                cells.append(
                    "—"
                    if got is None
                    else " / ".join(fmt(got.figures[f], 2) for f in FIGURES)
                    + f", steal {steal_text(got.steal)}, load {got.load:.2f}"
                    + (f", longest turn {got.loop['max_ms']:.2f}" if got.loop else "")
                )
            rows.append(f"| {number} | {streams:,} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def lower_is_better(result: Result, plan: Plan) -> dict[str, float | None]:
    """The figures compared between servers, each one where less is better."""
    out: dict[str, float | None] = {"RSS per stream": result.rss_slope}
    for streams in plan.held:
        per_job = result.per_job_at(streams)
        for label in FIGURES:
            out[f"per-job {label} at {streams:,}"] = per_job[label] if per_job else None
        loop = result.loop_at(streams)
        out[f"longest loop turn at {streams:,}"] = loop["max_ms"] if loop else None
    for size in plan.broadcast_sizes:
        got = result.broadcast.get(size)
        out[f"broadcast to {size:,} p50"] = got[0] if got else None
        out[f"broadcast to {size:,} p99"] = got[1] if got else None
        out[f"broadcast to {size:,} CPU per delivery"] = result.broadcast_cpu_us.get(size)
    return out


def behind(results: list[Result], plan: Plan) -> list[str]:
    """The figures where ours is not ahead of every peer (a tie is not ahead)."""
    ours = next((r for r in results if r.server == "ours"), None)
    peers = [lower_is_better(r, plan) for r in results if r.server != "ours"]
    if ours is None or not peers:
        return []
    out = []
    for name, mine in lower_is_better(ours, plan).items():
        theirs = [p[name] for p in peers]
        if mine is None and all(t is None for t in theirs):  # not measured (uvloop: no probe)
            continue
        if mine is None or any(t is not None and t <= mine for t in theirs):
            out.append(name)
    return out


def verdicts(result: Result, plan: Plan) -> list[str]:
    out = []
    big = plan.held[-1]
    out.append(f"{big:,} concurrent streams: {'met' if result.held.get(big) else 'MISSED'}")
    most = plan.hold_max
    out.append(f"{most:,} concurrent streams: {'met' if result.held.get(most) else 'MISSED'}")
    slope = result.rss_slope
    if slope is not None:
        met = slope <= TARGETS["rss_kib_per_stream"]
        out.append(f"≤ 8 KiB per stream: {slope:.1f} KiB, {'met' if met else 'MISSED'}")
    loop = result.loop_at(big)
    if loop is not None:
        met = loop["over_5ms"] == 0
        out.append(
            f"no loop turn over 5 ms with {big:,} open: {loop['over_5ms']} over, "
            f"longest {loop['max_ms']:.1f} ms, {'met' if met else 'MISSED'}"
        )
    per_job = result.per_job_at(big)
    if per_job:
        met = per_job["p99"] <= TARGETS["per_job_p99_ms"]
        out.append(
            f"per-job p99 ≤ 50 ms with {big:,} open (median of {per_job['rounds']}): "
            f"{per_job['p99']:.1f} ms, {'met' if met else 'MISSED'}"
        )
        met = per_job["max"] <= TARGETS["per_job_max_ms"]
        out.append(
            f"per-job max ≤ 20 ms with {big:,} open (median of {per_job['rounds']}): "
            f"{per_job['max']:.1f} ms, {'met' if met else 'MISSED'}"
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
    parser.add_argument(
        "--rounds",
        type=int,
        help="per-job rounds per server, interleaved (default 3, 1 with --quick)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=30.0,
        help="every server's heartbeat (ping) period in s; ours' tidy-up runs as often "
        "(default 30, as deployed; 5 puts heartbeat rounds into the timed window)",
    )
    parser.add_argument(
        "--busy",
        type=float,
        metavar="DUTY",
        help="a CPU hog on the servers' CPU, busy this share of the time (0-1), e.g. 0.5",
    )
    parser.add_argument(
        "--busy-slice-ms", type=float, default=1.0, help="the hog's busy slice (default 1 ms)"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the servers to the first CPU and the load to the second",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.busy is not None and not 0 < args.busy < 1:
        parser.error("--busy is a share of the time between 0 and 1, e.g. 0.5")
    plan = Plan()
    if args.quick:
        plan = Plan(
            held=(20, 60),
            hold_max=100,
            rate=100,
            seconds=1.0,
            broadcasts=3,
            broadcast_sizes=(20, 60),
        )
    limit = raise_open_files()
    # The servers get the unit's LimitNOFILE, or as much of it as this machine allows; the
    # most streams held is what fits (a process also needs a few dozen other descriptors).
    nofile = min(unit_nofile(), limit)
    plan.hold_max = min(plan.hold_max, nofile - 200)
    if plan.hold_max < plan.held[-1]:
        print(
            f"bench sse: open-files limit {limit} is below {plan.held[-1] + 200}", file=sys.stderr
        )
        return 2
    servers = [s for s in args.servers.split(",") if s]
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-sse-"))
    (workdir / "sitecustomize.py").write_text(_looptime.SITECUSTOMIZE)
    setup = Setup(
        use_uvloop=args.uvloop,
        heartbeat=args.heartbeat,
        nofile=nofile,
        cpu=cpus[0] if pin else None,
        loop_dir=None if args.uvloop else workdir,
    )
    if pin:
        os.sched_setaffinity(0, {cpus[1]})
    print(
        f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}; load's open-files "
        f"limit {limit}, servers' {setup.nofile} (LimitNOFILE of {UNIT.name}: "
        f"{unit_nofile()}, as far as this machine allows); event loop "
        f"{'uvloop' if args.uvloop else 'asyncio'}; "
        + (f"servers on CPU {cpus[0]}, load on CPU {cpus[1]}; " if pin else "not pinned; ")
        + f"heartbeat {args.heartbeat:g} s; "
        + (
            f"busy: a hog on the servers' CPU {args.busy:.0%} of the time in "
            f"{args.busy_slice_ms:g} ms slices; "
            if args.busy is not None
            else ""
        )
        + f"{rounds} per-job round(s) per server"
    )
    results = [Result(kind) for kind in servers]
    try:
        for number in range(1, rounds + 1):
            for result in results:
                port = free_port()
                rundir = workdir / f"{result.server}-{number}"  # ours: a fresh database
                rundir.mkdir()
                with (
                    server(result.server, port, rundir, setup) as proc,
                    hog(args.busy, args.busy_slice_ms, setup.cpu),
                ):
                    print(
                        f"== {result.server} round {number}/{rounds} "
                        f"(pid {proc.pid}, port {port}, {time.strftime('%H:%M:%S')})",
                        flush=True,
                    )
                    asyncio.run(
                        run_round(
                            result,
                            plan,
                            port,
                            proc.pid,
                            number=number,
                            broadcast=number == 1,
                            loop_file=(
                                None if setup.loop_dir is None else str(rundir / "loop.json")
                            ),
                        )
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results, plan))
    print()
    print("Per-job rounds in the order they ran: p50 / p99 / p99.9 / max (ms), host steal in")
    print("the window (both CPUs), 1-minute load average when the server started:")
    print()
    print(round_table(results))
    print()
    late = behind(results, plan)
    print(
        "- ours ahead of every peer on every figure"
        if not late
        else f"- ours NOT ahead of every peer on: {', '.join(late)}"
    )
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
                        "hold_max_rss_kib": r.hold_max_rss,
                        "loop": {n: r.loop_at(n) for n in r.sizes()},
                        "per_job": {n: r.per_job_at(n) for n in r.sizes()},
                        "rounds": [n.to_json() for n in r.rounds],
                        "broadcast": r.broadcast,
                        "broadcast_cpu_us": r.broadcast_cpu_us,
                        "notes": r.notes,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    ours = next((r for r in results if r.server == "ours"), None)
    return 0 if ours is None or all(ours.held.values()) else 1
