"""`sunflow-ops serve` as a real child process: started, waited for, stopped or killed -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import free_port

SERVE = [sys.executable, "-m", "services.cli", "serve"]
READY_TIMEOUT = 60.0


def env_of(values: dict[str, Any]) -> dict[str, str]:
    """Settings as the environment `serve` reads, over a clean copy of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SMTP_"))}
    env.update({k.upper(): str(v) for k, v in values.items() if v is not None})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Served:
    """One `serve` process after another on the same port, database and log file."""

    def __init__(self, settings: dict[str, Any], log: Path, cwd: Path) -> None:
        self.port = free_port()
        self.env = env_of({**settings, "http_host": "127.0.0.1", "http_port": self.port})
        self.log = log
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.startups: list[float] = []  # seconds from exec to a healthy /api/health

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        began = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *SERVE, stdout=out, stderr=out, env=self.env, cwd=self.cwd
            )
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"serve exited {self.proc.returncode}; see {self.log}")
                try:
                    async with http.get(
                        f"{self.base}/api/health", timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status < 500:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() - began > READY_TIMEOUT:
                    raise AssertionError(f"serve not ready in {READY_TIMEOUT}s; see {self.log}")
                await asyncio.sleep(0.05)
        self.startups.append(time.monotonic() - began)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its state but runs nothing (its timers cannot fire)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a frozen process runs again, its timers long past due."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    async def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        self.proc = None

    async def stop(self) -> None:
        """SIGTERM and wait (a clean shutdown); SIGKILL if it hangs."""
        if self.proc is None or self.proc.returncode is not None:
            self.proc = None
            return
        with_cont = self.proc.pid
        os.kill(with_cont, signal.SIGCONT)
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
