"""The fallback channel (playbook scenario 6): P0/P1 alerts by e-mail and JSON webhook, and
Telegram's own outage: one message when it has failed for TELEGRAM_FALLBACK_AFTER, one when
it delivers again, whatever the severities waiting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
import aiosmtplib
from sqlalchemy import select

from services.clock import Clock
from services.config import Settings
from services.db import Database
from services.incident_types import IncidentView
from services.models import Incident, OutboxMessage, OutboxStatus
from services.notify.outbox import Doorbell

log = logging.getLogger(__name__)

# A fallback channel that failed to take an announcement is tried again after this.
ANNOUNCE_RETRY = timedelta(seconds=30)


@dataclass(frozen=True)
class ChannelResult:
    channel: str
    ok: bool
    detail: str = ""
    # `detail` as a code and its values (`sent_to`, {"to": ...}), for a chat's own words.
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        """`smtp://[user:pass@]host[:port]` (STARTTLS when offered) or `smtps://...` (TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:587 or smtps://...")
        use_tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if use_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
        )


@dataclass(frozen=True)
class Reason:
    """Why an alert goes over the fallback now: `bot_off`, `telegram_failing` (`since`) or
    `not_delivered` (`after`)."""

    code: str
    values: dict[str, Any] = field(default_factory=dict)


class FallbackWording(Protocol):
    """The fallback messages' subject and body in the team's language; the bot supplies it
    (bot/fallback_text.py), as it does the chat's renderer."""

    def alert(self, view: IncidentView, reason: Reason) -> tuple[str, str]: ...

    def telegram_down(
        self,
        since: datetime,
        now: datetime,
        pending: int,
        oldest: datetime | None,
        error: str | None,
    ) -> tuple[str, str]: ...

    def telegram_up(self, since: datetime, now: datetime) -> tuple[str, str]: ...

    def test_message(self, actor: str, now: datetime) -> tuple[str, str]: ...

    def database_down(self, instance: str, detail: str, reason: str) -> tuple[str, str]: ...


class FallbackService:
    """Sends to every configured fallback channel; a loop watches the outbox for stuck alerts."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        *,
        wording: FallbackWording,
        failing_since: Callable[[], datetime | None],
        doorbell: Doorbell | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._clock = clock
        self.wording = wording
        self._failing_since = failing_since
        self._task: asyncio.Task[None] | None = None
        # Rung by the outbox's writers: an alert may wait for a fallback channel.
        self._doorbell = doorbell or Doorbell()
        self.sent = 0
        # The outage announced (its start), and when to try again if announcing failed.
        self.outage_announced: datetime | None = None
        self._announce_after: datetime | None = None
        self.announcements: list[str] = []

    @property
    def channels(self) -> list[str]:
        names = []
        if self._settings.smtp_url and self._settings.alert_email_to:
            names.append("email")
        if self._settings.fallback_webhook_url:
            names.append("webhook")
        return names

    async def alarm_database(self, instance: str, detail: str, reason: str) -> list[ChannelResult]:
        """The database refuses writes and no incident could be recorded: say so here."""
        subject, body = self.wording.database_down(instance, detail, reason)
        data = {"component": "database", "instance": instance, "detail": detail}
        return await self.deliver(subject, body, data)

    async def deliver(self, subject: str, body: str, data: dict[str, Any]) -> list[ChannelResult]:
        """Send to every configured channel at once; each result says how it went."""
        jobs = []
        if "email" in self.channels:
            jobs.append(self._email(subject, body))
        if "webhook" in self.channels:
            jobs.append(self._webhook({"subject": subject, "text": body, **data}))
        return list(await asyncio.gather(*jobs))

    async def _email(self, subject: str, body: str) -> ChannelResult:
        settings = self._settings
        assert settings.smtp_url and settings.alert_email_to
        try:
            target = SmtpTarget.parse(settings.smtp_url)
        except ValueError as exc:
            return ChannelResult("email", False, str(exc), "error", {"error": str(exc)})
        message = EmailMessage()
        message["From"] = settings.alert_email_from
        message["To"] = settings.alert_email_to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await aiosmtplib.send(
                message,
                hostname=target.host,
                port=target.port,
                username=target.username,
                password=target.password,
                use_tls=target.use_tls,
                timeout=15,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # The exception text may hold the server's reply but never our password.
            error = type(exc).__name__
            return ChannelResult("email", False, error, "error", {"error": error})
        to = settings.alert_email_to
        return ChannelResult("email", True, f"sent to {to}", "sent_to", {"to": to})

    async def _webhook(self, data: dict[str, Any]) -> ChannelResult:
        url = self._settings.fallback_webhook_url
        assert url
        timeout = aiohttp.ClientTimeout(total=15)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(url, json=data) as response,
            ):
                if response.status >= 300:
                    status = response.status
                    return ChannelResult(
                        "webhook", False, f"HTTP {status}", "http", {"status": status}
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = type(exc).__name__
            return ChannelResult("webhook", False, error, "error", {"error": error})
        status = response.status
        return ChannelResult("webhook", True, f"HTTP {status}", "http", {"status": status})

    # -- watching the outbox ---------------------------------------------------------

    def due(self, row: OutboxMessage, now: datetime) -> Reason | None:
        """Why this alert should go over the fallback now, or None to keep waiting."""
        after: timedelta = self._settings.fallback_after
        if self._settings.telegram_bot_token is None:
            return Reason("bot_off")
        failing = self._failing_since()
        if failing is not None and now - failing >= after:
            return Reason("telegram_failing", {"since": failing})
        if now - row.created_at >= after:
            return Reason("not_delivered", {"after": self._settings.telegram_fallback_after})
        return None

    async def announce(self) -> str | None:
        """Say on the fallback channel that Telegram has been failing for
        TELEGRAM_FALLBACK_AFTER (once per outage), and that it delivers again when it does;
        "down" or "up" when one went out."""
        if not self.channels or self._settings.telegram_bot_token is None:
            return None
        now = self._clock.now()
        if self._announce_after is not None and now < self._announce_after:
            return None
        failing = self._failing_since()
        announced = self.outage_announced
        if failing is not None and announced is None:
            if now - failing < self._settings.fallback_after:
                return None
            pending, oldest, error = await self._backlog()
            kind = "down"
            subject, body = self.wording.telegram_down(failing, now, pending, oldest, error)
            data = {
                "event": "telegram_down",
                "failing_since": failing.isoformat(),
                "pending": pending,
                "last_error": error,
            }
        elif failing is None and announced is not None:
            kind = "up"
            subject, body = self.wording.telegram_up(announced, now)
            data = {"event": "telegram_up", "failing_since": announced.isoformat()}
        else:
            return None
        results = await self.deliver(subject, body, data)
        if not any(r.ok for r in results):
            log.warning("fallback announcement (%s) failed: %s", kind, results)
            self._announce_after = now + ANNOUNCE_RETRY
            return None
        self._announce_after = None
        self.outage_announced = failing if kind == "down" else None
        self.announcements.append(kind)
        log.warning("announced on the fallback channel: Telegram %s", kind)
        return kind

    async def _backlog(self) -> tuple[int, datetime | None, str | None]:
        async with self._db.read() as session:
            rows = (
                await session.execute(
                    select(OutboxMessage.created_at, OutboxMessage.last_error)
                    .where(OutboxMessage.status == OutboxStatus.PENDING.value)
                    .order_by(OutboxMessage.id)
                )
            ).all()
        errors = [r[1] for r in rows if r[1]]
        return len(rows), rows[0][0] if rows else None, errors[-1] if errors else None

    async def step(self) -> int:
        """Fall back for every stuck P0/P1 alert; return how many went out."""
        if not self.channels:
            return 0
        await self.announce()
        now = self._clock.now()
        async with self._db.read() as session:
            rows = (
                await session.scalars(
                    select(OutboxMessage)
                    .where(
                        OutboxMessage.status == OutboxStatus.PENDING.value,
                        OutboxMessage.wants_fallback.is_(True),
                        OutboxMessage.fallback_at.is_(None),
                    )
                    .order_by(OutboxMessage.priority, OutboxMessage.id)
                )
            ).all()
            work: list[tuple[int, IncidentView, Reason]] = []
            for row in rows:
                reason = self.due(row, now)
                if reason is None or row.incident_id is None:
                    continue
                incident = await session.get(Incident, row.incident_id)
                if incident is not None and incident.is_open:
                    work.append((row.id, IncidentView.of(incident), reason))
        count = 0
        for row_id, view, reason in work:
            subject, body = self.wording.alert(view, reason)
            results = await self.deliver(subject, body, {"incident": view.to_json()})
            if not any(r.ok for r in results):
                log.warning("fallback failed for incident #%s: %s", view.id, results)
                continue
            async with self._db.write() as session:
                stuck = await session.get(OutboxMessage, row_id)
                if stuck is not None:
                    stuck.fallback_at = self._clock.now()
            count += 1
            self.sent += 1
        return count

    def wake(self) -> None:
        self._doorbell.ring()

    def start(self) -> None:
        if self._task is None and self.channels:
            self._task = asyncio.create_task(self._run(), name="notify-fallback")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            seen = self._doorbell.rings
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fallback step failed")
            await self._doorbell.wait(seen, 1.0)
