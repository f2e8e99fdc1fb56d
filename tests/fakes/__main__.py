"""`python -m tests.fakes`: the scenario kit. Serves the fakes the tests use on 127.0.0.1 (the
Instagram Graph API, Cloudinary, fal.ai, the Telegram Bot API, an SMTP server and a fallback
webhook), prints the settings that point `sunflow-ops` at them, and takes faults over HTTP, so
that each of the playbook's six scenarios can be rehearsed against `make run` in minutes.

docs/operations.md walks every scenario with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.cloudinary import FakeCloudinary
from tests.fakes.fal import KEY, MODEL, FakeFal
from tests.fakes.instagram import APP_ID, APP_SECRET, USER_ID, VERSION, FakeInstagram
from tests.fakes.smtp import FakeSmtp
from tests.fakes.telegram import FakeTelegram
from tests.fakes.world import BOT_TOKEN, TOKEN

TEAM_CHAT = -1001234567890
ADMIN_USER, RESPONDER_USER, PD_USER = 1004, 1003, 1005
# Rehearsal timings: the playbook's clock divided by 30 (5/15/30 min -> 10/30/60 s, the
# ladder's 30 min / 1 h / 4 h -> 1 / 2 / 8 min), so a scenario plays out in minutes.
REHEARSAL = {
    "RETRY_DELAYS": "10s,30s,60s",
    "TELEGRAM_FALLBACK_AFTER": "10s",
    "HEALTH_INTERVAL_SECONDS": "15",
    "ESCALATION_POLICY_FILE": "deploy/escalation.rehearsal.toml",
}
FAULTS = {
    "instagram": "401 (every call), expire (the token stops working), 429, 403, 500, "
    "lost (media_publish posts, its answer never comes in time)",
    "cloudinary": "500, 401",
    "fal": "500, stuck (never completes)",
    "telegram": "down (every call 502), 429 (every call, with Retry-After)",
}

DESCRIPTION = """\
Serve the fakes of every external API on 127.0.0.1 for rehearsing the playbook's scenarios
against `sunflow-ops serve`. Prints the settings for .env (or writes them with --env-file).

Faults, on the control port (CTL = http://127.0.0.1:PORT):
  curl -X POST $CTL/fault/instagram/429              # Retry-After: --retry-after seconds
  curl -X POST "$CTL/fault/instagram/429?retry_after=20"
  curl -X POST $CTL/fault/instagram/expire           # the token stops working (scenario 1)
  curl -X POST $CTL/instagram/renew                  # a new valid token, for .env
  curl -X POST $CTL/fault/cloudinary/500             # scenario 2
  curl -X POST $CTL/fault/fal/500                    # scenario 3
  curl -X POST $CTL/fault/telegram/down              # scenario 6
  curl -X DELETE $CTL/fault/NAME                     # the fake works again
  curl $CTL/state                                    # posts, uploads, chat, webhook, mail
  curl "$CTL/say?user=1003&text=/retry"              # a responder writes in the team chat
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=0, help="control port (default: any free)")
    parser.add_argument(
        "--retry-after",
        type=int,
        default=30,
        metavar="SECONDS",
        help="the Retry-After of the 429 faults (default 30; the real API says up to an hour)",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="also write the settings to this file (e.g. .env; it is overwritten)",
    )
    parser.add_argument(
        "--no-rehearsal",
        action="store_true",
        help="leave out the shortened timings (retries 10/30/60 s, the ladder in minutes)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port takes 0 to 65535")
    if not 1 <= args.retry_after <= 86400:
        parser.error("--retry-after takes 1 to 86400 seconds")
    return args


class Kit:
    """The running fakes and what the control port does to them."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        self.instagram = FakeInstagram(token=TOKEN)
        self.cloudinary = FakeCloudinary()
        self.fal = FakeFal()
        self.telegram = FakeTelegram(BOT_TOKEN)
        self.smtp = FakeSmtp(free_port())
        self.webhook: list[dict[str, Any]] = []
        self.tokens = itertools.count(2)
        self.admin_token = f"rehearsal-admin-{secrets.token_hex(8)}"
        self.intake_token = f"rehearsal-intake-{secrets.token_hex(8)}"

    async def start(self) -> None:
        await self.instagram.start()
        await self.cloudinary.start()
        await self.fal.start()
        await self.telegram.start(free_port())
        self.smtp.start()

    async def stop(self) -> None:
        self.smtp.stop()
        await self.telegram.stop()
        await self.fal.stop()
        await self.cloudinary.stop()
        await self.instagram.stop()

    def settings(self, control: int, *, rehearsal: bool) -> dict[str, str]:
        values = {
            "INSTAGRAM_ACCESS_TOKEN": TOKEN,
            "INSTAGRAM_API_BASE": self.instagram.base_url,
            "INSTAGRAM_GRAPH_VERSION": VERSION,
            "INSTAGRAM_USER_ID": USER_ID,
            "INSTAGRAM_APP_ID": APP_ID,
            "INSTAGRAM_APP_SECRET": APP_SECRET,
            "CLOUDINARY_URL": self.cloudinary.url(),
            "FAL_KEY": KEY,
            "FAL_API_BASE": self.fal.base_url,
            "FAL_MODEL": MODEL,
            "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
            "TELEGRAM_API_BASE": self.telegram.base,
            "TELEGRAM_TEAM_CHAT_ID": str(TEAM_CHAT),
            "TELEGRAM_ADMIN_USER_IDS": str(ADMIN_USER),
            "TELEGRAM_RESPONDER_USER_IDS": str(RESPONDER_USER),
            "TELEGRAM_PD_USER_IDS": str(PD_USER),
            "FALLBACK_WEBHOOK_URL": f"http://127.0.0.1:{control}/webhook",
            "SMTP_URL": self.smtp.url,
            "ALERT_EMAIL_TO": "oncall@example.test",
            "BOT_LANGUAGE": "en",
            # For the CLI commands that ask the running service (`stats restart`).
            "ADMIN_TOKEN": self.admin_token,
            "INTAKE_TOKEN": self.intake_token,
        }
        if rehearsal:
            values.update(REHEARSAL)
        return values

    # -- the control API ---------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/fault/{name}/{mode}", self.set_fault)
        app.router.add_delete("/fault/{name}", self.clear_fault)
        app.router.add_post("/instagram/renew", self.renew)
        app.router.add_get("/state", self.state)
        app.router.add_route("*", "/say", self.say)
        app.router.add_post("/webhook", self.take_webhook)
        return app

    async def set_fault(self, request: web.Request) -> web.Response:
        name, mode = request.match_info["name"], request.match_info["mode"]
        raw = request.query.get("retry_after", str(self.retry_after))
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 86400:
            return _error(400, "retry_after", "1 to 86400 seconds")
        retry_after = int(raw)
        if name == "instagram" and mode in {"401", "429", "403", "500", "lost"}:
            self.instagram.fault = mode
            self.instagram.retry_after = retry_after if mode == "429" else None
        elif name == "instagram" and mode == "expire":
            self.instagram.valid_tokens.clear()
        elif name == "cloudinary" and mode in {"500", "401"}:
            self.cloudinary.fault = mode
        elif name == "fal" and mode in {"500", "stuck"}:
            self.fal.fault = mode
        elif name == "telegram" and mode == "down":
            self.telegram.down = True
        elif name == "telegram" and mode == "429":
            self.telegram.faults.clear()
            self.telegram.fail(status=429, retry_after=retry_after, times=10**9)
        else:
            return _error(404, "fault", f"no fault {name}/{mode}; faults: {json.dumps(FAULTS)}")
        return web.json_response({"fake": name, "fault": mode, "retry_after": retry_after})

    async def clear_fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "instagram":
            self.instagram.fault, self.instagram.retry_after = None, None
        elif name == "cloudinary":
            self.cloudinary.fault = None
        elif name == "fal":
            self.fal.fault = None
        elif name == "telegram":
            self.telegram.down = False
            self.telegram.faults.clear()
        else:
            return _error(404, "fake", f"no fake {name}; fakes: {', '.join(FAULTS)}")
        return web.json_response({"fake": name, "fault": None})

    async def renew(self, request: web.Request) -> web.Response:
        """A new long-lived token, as the Meta developer console issues one."""
        token = f"IGQVJ-renewed-{next(self.tokens):04d}-{secrets.token_hex(4)}"
        self.instagram.valid_tokens.add(token)
        return web.json_response(
            {"token": token, "next": f'INSTAGRAM_ACCESS_TOKEN="{token}" in .env, then restart'}
        )

    async def say(self, request: web.Request) -> web.Response:
        user, text = request.query.get("user", str(RESPONDER_USER)), request.query.get("text")
        if not text or not (user.isascii() and user.isdigit()):
            return _error(400, "say", "give ?user=ID&text=/command")
        await self.telegram.send_text(int(user), TEAM_CHAT, text)
        return web.json_response({"user": int(user), "text": text})

    async def take_webhook(self, request: web.Request) -> web.Response:
        self.webhook.append(await request.json())
        return web.json_response({"ok": True})

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "instagram": {
                    "fault": self.instagram.fault,
                    "posts": len(self.instagram.published),
                    "published": self.instagram.published,
                },
                "cloudinary": {
                    "fault": self.cloudinary.fault,
                    "uploads": sorted(self.cloudinary.uploads),
                },
                "fal": {"fault": self.fal.fault, "submitted": len(self.fal.submitted)},
                "telegram": {
                    "down": self.telegram.down,
                    "chat": [
                        {
                            "id": p.message_id,
                            "edits": p.edits,
                            "reply_to": p.reply_to,
                            "text": p.text,
                        }
                        for p in self.telegram.in_chat(TEAM_CHAT)
                    ],
                    "direct": [
                        {"chat": c, "text": p.text}
                        for (c, _), p in sorted(self.telegram.messages.items())
                        if c > 0
                    ],
                },
                "webhook": self.webhook,
                "mail": [str(m["Subject"]) for m in self.smtp.messages],
            }
        )


def _error(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kit = Kit(args.retry_after)
    await kit.start()
    runner = web.AppRunner(kit.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    control = int(runner.addresses[0][1])
    values = kit.settings(control, rehearsal=not args.no_rehearsal)
    lines = [f"{k}={v}" for k, v in values.items()]
    lines.append(f"# fault control: CTL=http://127.0.0.1:{control}; python -m tests.fakes --help")
    text = "\n".join(lines) + "\n"
    if args.env_file is not None:
        args.env_file.write_text(text, "utf-8")
    sys.stdout.write(text)
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await kit.stop()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
