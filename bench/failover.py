"""Failover: how long two `sunflow-ops serve` instances on one PostgreSQL database go without
a leader when the leader is killed (SIGKILL) or stopped (SIGTERM).

Each round kills (or stops) whichever instance leads and times, by polling the other's
`/api/health` every 50 ms, until it reports itself leader; the stopped instance is then
started again (as a follower) for the next round. The lease lasts LEADER_LEASE_SECONDS and
is renewed every third of it, so after a SIGKILL the wait is 2/3 to 1 lease plus the
follower's one-second retry; after a SIGTERM the lease is released and the wait is at most
about one retry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import PYTHON, free_port, machine, median

DEFAULT_PG = os.environ.get("TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")


class Instance:
    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name, self.env, self.workdir = name, env, workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "services.cli", "serve"],
            env={**self.env, "INSTANCE_ID": self.name, "HTTP_PORT": str(self.port)},
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self) -> None:
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def leader(self, session: aiohttp.ClientSession) -> bool | None:
        """True leading, False following, None not answering."""
        try:
            async with session.get(
                f"http://127.0.0.1:{self.port}/api/health",
                timeout=aiohttp.ClientTimeout(total=2),
            ) as resp:
                data: dict[str, Any] = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return bool(data.get("components", {}).get("leader", {}).get("leader"))


async def _until(check: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {what}")
        await asyncio.sleep(every)


async def _round(
    session: aiohttp.ClientSession, pair: list[Instance], sig: signal.Signals
) -> float:
    states = [await i.leader(session) for i in pair]
    if states.count(True) != 1:
        raise RuntimeError(f"expected one leader, got {states}")
    leader = pair[states.index(True)]
    other = pair[1 - states.index(True)]
    leader.signal(sig)
    stopped = time.monotonic()

    async def other_leads() -> bool:
        return await other.leader(session) is True

    await _until(other_leads, 60, f"{other.name} to take over")
    elapsed = time.monotonic() - stopped
    await asyncio.to_thread(leader.wait)
    leader.start()

    async def back() -> bool:
        return await leader.leader(session) is False

    await _until(back, 120, f"{leader.name} to come back as a follower", every=0.2)
    return elapsed


async def run(rounds: int, lease: float, pg: str) -> None:
    import asyncpg

    from services import db

    name = f"sunflow_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base = pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    pair: list[Instance] = []
    try:
        await asyncio.to_thread(db.upgrade, url)
        workdir = Path(tempfile.mkdtemp(prefix="bench-failover-"))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TELEGRAM_", "HTTP_", "DATABASE_", "INSTANCE_", "LEADER_"))
        }
        env.update(DATABASE_URL=url, LEADER_LEASE_SECONDS=str(lease), LOG_LEVEL="WARNING")
        pair = [Instance("bench-a", env, workdir), Instance("bench-b", env, workdir)]
        for instance in pair:
            instance.start()
        async with aiohttp.ClientSession() as session:

            async def up() -> bool:
                states = [await i.leader(session) for i in pair]
                return None not in states and states.count(True) == 1

            await _until(up, 120, "both instances up, one leading", every=0.2)
            killed = [await _round(session, pair, signal.SIGKILL) for _ in range(rounds)]
            stopped = [await _round(session, pair, signal.SIGTERM) for _ in range(rounds)]
        print(f"machine: {machine()}")
        print(f"lease {lease:g} s, renewed every {lease / 3:g} s; {rounds} rounds each")
        print("| leader | failover median | min | max |")
        print("| --- | --- | --- | --- |")
        for label, times in (("killed (SIGKILL)", killed), ("stopped (SIGTERM)", stopped)):
            print(f"| {label} | {median(times):.2f} s | {min(times):.2f} s | {max(times):.2f} s |")
        print(f"(logs in {workdir})")
    finally:
        for instance in pair:
            instance.stop()
        admin = await asyncpg.connect(pg)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench failover")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lease", type=float, default=15.0, help="LEADER_LEASE_SECONDS")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL admin URL")
    args = parser.parse_args(argv)
    asyncio.run(run(args.rounds, args.lease, args.pg))
    return 0
