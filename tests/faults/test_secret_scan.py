"""A whole scenario with known secret values, then every log line, HTTP response, chat message,
e-mail and CLI output is searched for them: 0 found (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.botkit import ADMIN_USER, RESPONDER, TEAM, VIEWER, running_fake
from tests.conftest import ADMIN, INTAKE, free_port
from tests.fakes.cloudinary import API_SECRET, FakeCloudinary
from tests.fakes.fal import KEY as FAL_KEY
from tests.fakes.fal import MODEL, PNG, FakeFal
from tests.fakes.instagram import APP_ID, APP_SECRET, USER_ID, VERSION, FakeInstagram
from tests.fakes.telegram import FakeTelegram
from tests.faults.conftest import base_settings
from tests.faults.process import Served
from tests.faults.test_kill_escalation import bot_env

pytestmark = pytest.mark.slow

INSTAGRAM_TOKEN = "IGQVJ-secret-scan-instagram-7f3a9c"
SMTP_PASSWORD = "smtp-pass-secret-scan-51d0"


class Mailbox:
    """aiosmtpd handler and authenticator: keeps every mail, accepts only our password."""

    def __init__(self) -> None:
        self.mails: list[bytes] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.mails.append(bytes(envelope.content))
        return "250 OK"

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == SMTP_PASSWORD.encode()
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)


def answered(fake: FakeTelegram, before: int) -> bool:
    """The bot has called the API since `before` (beyond the poll that took the update)."""
    return len(fake.calls) > before + 1


async def cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return out.decode(errors="replace")


async def test_no_secret_reaches_a_log_a_response_a_message_or_a_mail(
    migrated_url: str, tmp_path: Path, served_factory: list[Served]
) -> None:
    mailbox = Mailbox()
    smtp_port = free_port()
    smtp = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=smtp_port,
        authenticator=mailbox,
        auth_require_tls=False,
    )
    smtp.start()
    policy = tmp_path / "policy.toml"
    policy.write_text('[[ladder.default]]\nname = "team"\nafter = "0s"\ntarget = "team"\n')
    content = tmp_path / "content"
    (content / "images" / "sunflower").mkdir(parents=True)
    (content / "images" / "sunflower" / "sunflower-1.png").write_bytes(PNG)
    (content / "captions").mkdir()
    (content / "captions" / "sunflower.txt").write_text("Sunflowers. #sunflower")
    seen: list[str] = []  # everything that left the service, to be searched
    try:
        async with (
            running_fake() as fake,
            FakeInstagram(token=INSTAGRAM_TOKEN) as instagram,
            FakeCloudinary() as cloudinary,
            FakeFal() as fal,
            aiohttp.ClientSession() as http,
        ):
            secrets = {
                "TELEGRAM_BOT_TOKEN": fake.token,
                "ADMIN_TOKEN": ADMIN,
                "INTAKE_TOKEN": INTAKE,
                "INSTAGRAM_ACCESS_TOKEN": INSTAGRAM_TOKEN,
                "INSTAGRAM_APP_SECRET": APP_SECRET,
                "FAL_KEY": FAL_KEY,
                "CLOUDINARY_URL secret": API_SECRET,
                "SMTP password": SMTP_PASSWORD,
            }
            settings = {
                **base_settings(migrated_url, tmp_path),
                **bot_env(fake, policy),
                "log_level": "DEBUG",  # the most a log can say
                "instagram_access_token": INSTAGRAM_TOKEN,
                "instagram_api_base": instagram.base_url,
                "instagram_graph_version": VERSION,
                "instagram_user_id": USER_ID,
                "instagram_app_id": APP_ID,
                "instagram_app_secret": APP_SECRET,
                "cloudinary_url": cloudinary.url(),
                "fal_key": FAL_KEY,
                "fal_api_base": fal.base_url,
                "fal_model": MODEL,
                "fal_timeout_seconds": 2,
                "smtp_url": f"smtp://ops:{SMTP_PASSWORD}@127.0.0.1:{smtp_port}",
                "alert_email_to": "oncall@example.test",
                "telegram_fallback_after": "2s",
                "content_dir": content,
            }
            served = Served(settings, tmp_path / "serve.log", tmp_path)
            served_factory.append(served)
            await served.start()
            base = served.base

            async def record(method: str, path: str, **kwargs: Any) -> int:
                async with http.request(method, f"{base}{path}", **kwargs) as response:
                    seen.append(json.dumps(dict(response.headers)))
                    seen.append(await response.text())
                    return response.status

            admin = {"Authorization": f"Bearer {ADMIN}"}
            intake = {"Authorization": f"Bearer {INTAKE}"}
            # HTTP, right and wrong: errors must not echo what was sent.
            alert = {"severity": "P0", "title": "Instagram token expired", "dedup_key": "tok"}
            assert await record("POST", "/api/alerts", json=alert, headers=intake) in {
                200,
                201,
                202,
            }
            assert await record("POST", "/api/alerts", json=alert, headers=admin) == 401
            assert await record("POST", "/api/incidents/1/ack", headers=intake) == 401
            for path in ("/api/health", "/api/token", "/api/incidents", "/api/incidents/1",
                         "/api/incidents/1/postmortem", "/metrics", "/api/openapi.json",
                         "/api/jobs", "/api/traces", "/api/generation/health", "/"):  # fmt: skip
                await record("GET", path, headers=admin)
            await record("GET", "/api/admin/backups", headers=admin)
            assert await record("POST", "/api/admin/backups", headers=admin) == 201
            await record("POST", "/api/admin/stats/collect?force=1", headers=admin)

            # The chat, every role, with failures behind it.
            await fake.wait_for(lambda: [p for p in fake.in_chat(TEAM) if "#1 " in p.text])
            instagram.fault = "401"  # the token "expired": Graph API answers 401
            for user, text in [
                (VIEWER, "/health"),
                (VIEWER, "/token"),
                (VIEWER, "/status"),
                (VIEWER, "/incidents"),
                (VIEWER, "/stats"),
                (RESPONDER, "/stats restart"),
                (RESPONDER, "/ack 1"),
                (ADMIN_USER, "/notify_test"),
                (ADMIN_USER, "/backup"),
                (ADMIN_USER, "/token set_expiry 60"),
                (VIEWER, "/postmortem 1"),
            ]:
                before = len(fake.calls)
                await fake.send_text(user, TEAM, text)
                await fake.wait_for(partial(answered, fake, before))
            await asyncio.sleep(2)
            # Publishing meets the failing Instagram, fal.ai and Cloudinary (CLI output too).
            fal.fault = "500"
            cloudinary.fault = "500"
            seen.append(await cli(served.env, tmp_path, "publish", "sunflower"))
            seen.append(await cli(served.env, tmp_path, "health"))
            seen.append(await cli(served.env, tmp_path, "token", "status"))

            # Telegram refuses the bot (401), then is down: a P0 goes out by e-mail instead.
            fake.fail(status=401, description="Unauthorized", times=3)
            fake.down = True
            p0 = {"severity": "P0", "title": "Publishing impossible", "dedup_key": "pub"}
            assert await record("POST", "/api/alerts", json=p0, headers=intake) in {200, 201, 202}
            for _ in range(200):
                if mailbox.mails:
                    break
                await asyncio.sleep(0.1)
            fake.down = False
            await asyncio.sleep(1)
            await served.stop()
            calls = list(fake.calls)
    finally:
        smtp.stop()

    seen.extend(json.dumps(call.params, default=repr) for call in calls)
    seen.extend(mail.decode(errors="replace") for mail in mailbox.mails)
    log = served.log_text()
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in {".json", ".log"}]
    seen.extend(p.read_text(errors="replace") for p in files)  # backups, log bundles
    everything = "\n".join([log, *seen])
    hits = {name: everything.count(value) for name, value in secrets.items()}
    print(
        f"secret scan: {len(log.splitlines())} log lines, {len(seen)} responses/messages/mails/"
        f"files ({len(calls)} Bot API calls, {len(mailbox.mails)} mails); hits {hits}"
    )
    assert len(calls) > 20 and mailbox.mails and set(mailbox.logins) == {"ops"}
    assert len(log.splitlines()) > 50
    assert hits == dict.fromkeys(secrets, 0)
