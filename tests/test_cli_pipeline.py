import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from aiohttp.test_utils import TestServer

from services.web.app import create_app
from tests.conftest import ADMIN, free_port
from tests.fakes.cloudinary import API_SECRET
from tests.fakes.fal import PNG
from tests.fakes.world import BOT_TOKEN, TOKEN, World, pipeline_world

SECRETS = (TOKEN, API_SECRET, BOT_TOKEN, ADMIN)
CLOSED_PORT = free_port()


def env_for(world: World, **extra: str) -> dict[str, str]:
    s = world.settings
    values = {
        "DATABASE_URL": s.database_url,
        "ADMIN_TOKEN": ADMIN,
        "INSTAGRAM_ACCESS_TOKEN": TOKEN,
        "INSTAGRAM_API_BASE": s.instagram_api_base,
        "INSTAGRAM_GRAPH_VERSION": s.instagram_graph_version,
        "INSTAGRAM_USER_ID": str(s.instagram_user_id),
        "CLOUDINARY_URL": world.cloudinary.url(),
        "FAL_KEY": "unused-in-cli-tests",
        "FAL_API_BASE": s.fal_api_base,
        "CONTENT_DIR": str(s.content_dir),
        "STATS_FILE": str(s.stats_file),
        "BACKUP_DIR": str(s.backup_dir),
        "LOG_DIR": str(s.log_dir),
        "ENV_FILE_PATH": str(s.env_file_path),
        # Nothing listens there unless a test serves it: commands that ask the running
        # service (token status, stats restart) must never reach another one on this host.
        "HTTP_PORT": str(CLOSED_PORT),
        **extra,
    }
    return {**os.environ, **values}


async def cli(world: World, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=env_for(world, **extra),
            cwd=world.root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = await asyncio.to_thread(run)
    for secret in SECRETS:
        assert secret not in done.stdout + done.stderr, args
    return done


async def test_publish_fail_retry_trace_and_logs(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        world.add_topic("sunflower")
        done = await cli(world, "token", "set-expiry", "60")
        assert done.returncode == 0, done.stderr
        assert "(60 days)" in done.stdout
        status = await cli(world, "token", "status")
        assert status.returncode == 0 and "Instagram token: ok" in status.stdout

        world.cloudinary.fault = "500"
        failed = await cli(world, "publish", "sunflower")
        assert failed.returncode == 1
        assert "publish sunflower: FAILED" in failed.stdout
        assert "incident #1; job #1 publish sunflower: automatic retries 0/3 done" in failed.stdout
        listing = await cli(world, "retry", "--list")
        assert listing.stdout.startswith("#1 publish sunflower failed 0/3 next in ")

        world.cloudinary.fault = None
        dry = await cli(world, "publish", "sunflower", "--dry-run")
        assert dry.returncode == 0, dry.stdout
        # Reachable again; the failed upload is named until one succeeds.
        assert "[ok] cloudinary: reachable now, but the last real call (upload at" in dry.stdout
        retried = await cli(world, "retry", "1")
        assert retried.returncode == 0, retried.stdout + retried.stderr
        assert "#1 publish sunflower succeeded 1/3" in retried.stdout
        assert len(world.instagram.published) == 1

        traces = await cli(world, "trace", "list")
        ids = [line.split()[0] for line in traces.stdout.splitlines()]
        assert len(ids) == 3  # the failed run, the dry run, the retry
        shown = await cli(world, "trace", "show", ids[-1])
        assert "upload" in shown.stdout and "error" in shown.stdout

        logs = await cli(world, "collect-logs", "1")
        assert logs.returncode == 0, logs.stderr
        assert ".tar.gz" in logs.stdout and ids[-1] in logs.stdout


async def test_backup_upload_stats_and_errors(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        world.settings.env_file_path.write_text(f"HTTP_PORT=8002\nFAL_KEY={TOKEN}\n")
        created = await cli(world, "backup", "create", "--note", "before")
        assert created.returncode == 0, created.stderr
        backup_id = created.stdout.split()[1]
        listed = await cli(world, "backup", "list")
        assert listed.stdout.startswith(backup_id)
        restored = await cli(world, "backup", "restore", backup_id)
        assert restored.returncode == 0 and f"restored {backup_id}" in restored.stdout
        unknown = await cli(world, "backup", "restore", "20200101-000000-abcd")
        assert unknown.returncode == 1
        assert unknown.stderr == (
            "sunflow-ops: no backup 20200101-000000-abcd; see `sunflow-ops backup list`\n"
        )

        image = tmp_path / "manual.png"
        image.write_bytes(PNG)
        uploaded = await cli(world, "upload", str(image), "--topic", "sunflower")
        assert uploaded.returncode == 0, uploaded.stderr
        assert world.cloudinary.uploads["sunflow/sunflower/manual"] == PNG

        stats = await cli(world, "stats", "collect", "--force")
        assert stats.returncode == 0 and "collected" in stats.stdout
        assert world.settings.stats_file.is_file()

        bad_topic = await cli(world, "publish", "../etc")
        assert bad_topic.returncode == 1 and bad_topic.stderr.count("\n") == 1
        assert "not a topic" in bad_topic.stderr
        no_args = await cli(world, "retry")
        assert no_args.returncode == 2
        assert no_args.stderr == "sunflow-ops: give a JOB_ID to retry now, or --list\n"
        bad_trace = await cli(world, "trace", "show", "x")
        assert bad_trace.returncode == 1 and "is not a trace id" in bad_trace.stderr


async def test_stats_restart_asks_the_running_service(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        server = TestServer(create_app(world.settings, world.services), host="127.0.0.1")
        await server.start_server()
        world.services.scheduler.start()
        try:
            done = await cli(world, "stats", "restart", HTTP_PORT=str(server.port))
            assert done.returncode == 0, done.stderr
            assert "stats collector restarted and collected now; next run 20" in done.stdout
            # The restart's exit status says whether collection works.
            world.instagram.fault = "500"
            failing = await cli(world, "stats", "restart", HTTP_PORT=str(server.port))
            assert failing.returncode == 1
            assert "but collecting now failed: Graph API" in failing.stderr
            refused = await cli(
                world, "stats", "restart", HTTP_PORT=str(server.port), ADMIN_TOKEN="wrong-token"
            )
            assert refused.returncode == 1
            assert refused.stderr.startswith("sunflow-ops: unauthorized:")
        finally:
            world.services.scheduler.shutdown()
            await server.close()


async def test_health_exit_codes_for_cron(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        server = TestServer(create_app(world.settings, world.services), host="127.0.0.1")
        await server.start_server()
        world.services.scheduler.start()
        world.services.timer.start()
        await world.services.sse.start()
        try:
            await world.services.ops.tokens.set_expiry(60, actor="test")
            await world.services.ops.stats.collect()
            port = str(server.port)
            healthy = await cli(world, "health", HTTP_PORT=port)
            assert healthy.returncode == 0, healthy.stdout
            # Image generation failing (P1): its probe answers, the real call does not.
            world.fal.fault = "500"
            assert not (await world.services.ops.pipeline.generate_images("x")).ok
            degraded = await cli(world, "health", "--json", HTTP_PORT=port)
            assert degraded.returncode == 1, degraded.stdout
            body = json.loads(degraded.stdout)
            assert body["components"]["fal"]["status"] == "down"
            assert "HTTP 500" in body["components"]["fal"]["detail"]
            # Cloudinary is P0 in the playbook: down is the whole service down.
            world.cloudinary.fault = "500"
            down = await cli(world, "health", "--json", HTTP_PORT=port)
            assert down.returncode == 2
            assert json.loads(down.stdout)["components"]["cloudinary"]["status"] == "down"
            world.cloudinary.fault = None
            world.instagram.valid_tokens.clear()  # the live check says the token is invalid
            down = await cli(world, "health", HTTP_PORT=port)
            assert down.returncode == 2
            assert "instagram_token down" in " ".join(down.stdout.split())
        finally:
            await world.services.sse.stop()
            await world.services.timer.stop()
            world.services.scheduler.shutdown()
            await server.close()


async def test_token_status_asks_the_running_service(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        await world.services.ops.tokens.set_expiry(60, actor="test")
        server = TestServer(create_app(world.settings, world.services), host="127.0.0.1")
        await server.start_server()
        try:
            port = str(server.port)
            ok = await cli(world, "token", "status", "--json", HTTP_PORT=port)
            assert ok.returncode == 0, ok.stderr
            assert json.loads(ok.stdout)["source"] == "service"
            # .env edited under the running service: the CLI process would read the new
            # token, but it tells what the service runs with, and that a restart is needed.
            world.instagram.valid_tokens.add("IGQVJ-renewed-0002")
            world.settings.env_file_path.write_text(
                'INSTAGRAM_ACCESS_TOKEN="IGQVJ-renewed-0002"\n'
            )
            stale = await cli(
                world,
                "token",
                "status",
                HTTP_PORT=port,
                INSTAGRAM_ACCESS_TOKEN="IGQVJ-renewed-0002",
            )
            assert stale.returncode == 1
            assert "restart needed: .env holds another INSTAGRAM_ACCESS_TOKEN" in stale.stdout
            assert "IGQVJ-renewed-0002" not in stale.stdout
            health = await cli(world, "health", HTTP_PORT=port)
            assert "restart needed" in health.stdout
        finally:
            await server.close()
        # No service: the CLI says so and reads .env itself.
        alone = await cli(world, "token", "status")
        assert "(the service is not running: this is the token .env holds)" in alone.stdout


async def test_publish_guards_on_the_command_line(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        world.add_topic("daisy")
        nothing = await cli(world, "publish", "daisy", "--retry")
        assert nothing.returncode == 1 and nothing.stdout == ""
        assert nothing.stderr.startswith("sunflow-ops: nothing to retry: no failed publish")
        assert nothing.stderr.count("\n") == 1
        first = await cli(world, "publish", "daisy")
        assert first.returncode == 0, first.stderr
        again = await cli(world, "publish", "daisy")
        assert again.returncode == 1
        assert again.stderr.startswith("sunflow-ops: daisy is already posted (media ")
        dry = await cli(world, "publish", "daisy", "--dry-run")
        assert dry.returncode == 1 and "[!!] guards: daisy is already posted" in dry.stdout
        forced = await cli(world, "publish", "daisy", "--force")
        assert forced.returncode == 0, forced.stderr
        assert len(world.instagram.published) == 2
        fresh = await cli(world, "publish", "test_topic", "--dry-run")
        assert "[ok] caption: built-in test caption (test_topic)" in fresh.stdout
        # The command's lines are in LOG_DIR beside the service's (no scheduler chatter).
        assert world.settings.log_dir is not None
        assert "published daisy" in (world.settings.log_dir / "sunflow-ops.log").read_text()
