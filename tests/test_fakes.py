"""`python -m tests.fakes`, the scenario kit, as an operator runs it beside `sunflow-ops serve`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.benchrun import ROOT, run_module
from tests.conftest import free_port
from tests.fakes.fal import PNG


def test_help_names_the_faults() -> None:
    done = run_module("tests.fakes", "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m tests.fakes")
    for needle in ("/fault/instagram/429", "/fault/cloudinary/500", "/fault/fal/500"):
        assert needle in done.stdout
    bad = run_module("tests.fakes", "--retry-after", "0", timeout=60)
    assert bad.returncode == 2 and "--retry-after takes 1 to 86400" in bad.stderr


@contextmanager
def process(args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> Iterator[Any]:
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@asynccontextmanager
async def kit(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """The kit running, with the settings it wrote (CTL: its control URL)."""
    env_file = tmp_path / "kit.env"
    args = [sys.executable, "-m", "tests.fakes", "--env-file", str(env_file)]
    with process(args, cwd=ROOT, env=dict(os.environ), log=tmp_path / "kit.log"):
        deadline = time.monotonic() + 30
        while not env_file.exists() or "fault control" not in env_file.read_text():
            assert time.monotonic() < deadline, (tmp_path / "kit.log").read_text()
            await asyncio.sleep(0.1)
        values = {}
        for line in env_file.read_text().splitlines():
            if line.startswith("# fault control: CTL="):
                values["CTL"] = line.split("CTL=", 1)[1].split(";")[0]
            elif "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key] = value
        yield values


async def test_the_kit_answers_as_the_apis_do(tmp_path: Path) -> None:
    async with kit(tmp_path) as env, aiohttp.ClientSession() as http:
        bot = f"{env['TELEGRAM_API_BASE']}/bot{env['TELEGRAM_BOT_TOKEN']}"
        # The Bot API's answer to sendMessage is the Message, not `true`.
        async with http.post(
            f"{bot}/sendMessage", json={"chat_id": env["TELEGRAM_TEAM_CHAT_ID"], "text": "hi"}
        ) as resp:
            body = await resp.json()
        assert body["ok"] is True and body["result"]["message_id"] == 1
        assert body["result"]["chat"]["id"] == int(env["TELEGRAM_TEAM_CHAT_ID"])
        # The 429 fault's Retry-After is short by default, and can be chosen.
        ctl, graph = env["CTL"], f"{env['INSTAGRAM_API_BASE']}/{env['INSTAGRAM_GRAPH_VERSION']}"
        me = f"{graph}/{env['INSTAGRAM_USER_ID']}?access_token={env['INSTAGRAM_ACCESS_TOKEN']}"
        for query, seconds in (("", "30"), ("?retry_after=5", "5")):
            async with http.post(f"{ctl}/fault/instagram/429{query}") as resp:
                assert resp.status == 200
            async with http.get(me) as resp:
                assert resp.status == 429 and resp.headers["Retry-After"] == seconds
        async with http.delete(f"{ctl}/fault/instagram") as resp:
            assert resp.status == 200
        async with http.get(me) as resp:
            assert resp.status == 200
        async with http.post(f"{ctl}/fault/nope/1") as resp:
            assert resp.status == 404 and (await resp.json())["error"] == "fault"
        # Scenario 1's token: it expires, and a renewed one works.
        async with http.post(f"{ctl}/fault/instagram/expire"):
            pass
        async with http.get(me) as resp:
            assert resp.status == 401
        async with http.post(f"{ctl}/instagram/renew") as resp:
            token = (await resp.json())["token"]
        async with http.get(me.replace(env["INSTAGRAM_ACCESS_TOKEN"], token)) as resp:
            assert resp.status == 200
        async with http.get(f"{ctl}/state") as resp:
            state = await resp.json()
        assert [m["text"] for m in state["telegram"]["chat"]] == ["hi"]


async def test_a_rehearsal_with_serve_brings_the_card_to_the_chat(tmp_path: Path) -> None:
    """Scenario 3 against a real `sunflow-ops serve` and the kit: the card reaches the chat
    (the Bot API fake answers sendMessage with a Message), shows the retry plan, and is
    edited as the retries run."""
    async with kit(tmp_path) as settings, aiohttp.ClientSession() as http:
        port = free_port()
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("TELEGRAM_", "INSTAGRAM_"))
            },
            **{k: v for k, v in settings.items() if k != "CTL"},
            "ESCALATION_POLICY_FILE": str(ROOT / settings["ESCALATION_POLICY_FILE"]),
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'sunflow.db'}",
            "HTTP_PORT": str(port),
            "CONTENT_DIR": str(tmp_path / "content"),
            "LOG_DIR": str(tmp_path / "logs"),
            # Shorter still than the rehearsal's 10 s: the test is about the chain, not the wait.
            "RETRY_DELAYS": "2s,4s,6s",
        }
        topic = tmp_path / "content" / "images" / "lily"
        (topic / "archive").mkdir(parents=True)
        (topic / "archive" / "old-lily.png").write_bytes(PNG)
        (tmp_path / "content" / "captions").mkdir()
        (tmp_path / "content" / "captions" / "lily.txt").write_text("Lilies. #lily")
        cli = [sys.executable, "-m", "services.cli"]
        subprocess.run([*cli, "db", "upgrade"], cwd=tmp_path, env=env, check=True, timeout=60)
        ctl = settings["CTL"]
        with process([*cli, "serve"], cwd=tmp_path, env=env, log=tmp_path / "serve.log"):
            health = f"http://127.0.0.1:{port}/api/health"
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(health) as resp:
                        if resp.status in (200, 503):
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                await asyncio.sleep(0.2)
            async with http.post(f"{ctl}/fault/fal/500"):
                pass
            failed = await asyncio.to_thread(
                subprocess.run,
                [*cli, "publish", "lily"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert failed.returncode == 1 and "incident #1; job #1" in failed.stdout

            async def chat() -> list[dict[str, Any]]:
                async with http.get(f"{ctl}/state") as resp:
                    state: dict[str, Any] = await resp.json()
                chat: list[dict[str, Any]] = state["telegram"]["chat"]
                return chat

            deadline = time.monotonic() + 60
            while not any("Retry 2/3 of job #1" in m["text"] for m in await chat()):
                assert time.monotonic() < deadline, json.dumps(await chat(), indent=1)
                await asyncio.sleep(0.5)
            [card] = [m for m in await chat() if m["reply_to"] is None]
            assert card["text"].startswith("🟠 <b>P1</b> · <b>#1 Image generation failing")
            errors = (tmp_path / "logs" / "sunflow-ops_stderr.log").read_text()
            assert "provider=fal operation=generate status=500" in errors
            assert "TypeError" not in (tmp_path / "serve.log").read_text()
