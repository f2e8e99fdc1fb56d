"""`NotifyService`: the outbox hook, the Telegram sender's lifecycle, fallback and the test."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from services.clock import Clock
from services.config import Settings
from services.db import Database
from services.health import ComponentHealth, Status
from services.models import IncidentMessage, OutboxMessage, OutboxStatus
from services.notify.fallback import ChannelResult, FallbackService
from services.notify.limits import TelegramLimits
from services.notify.outbox import Op, OutboxHook, Target, add_row, unique_key
from services.notify.sender import CardFacts, OutboxSender, Renderer, SenderStats
from services.notify.storm import StormDigests
from services.notify.telegram import TelegramClient, TelegramError
from services.scheduler import Gate
from services.severity import Severity


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_at: datetime | None


class NotifyService:
    """Owns outgoing notifications; the bot attaches a Telegram client and a renderer."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._clock = clock
        self.sender: OutboxSender | None = None
        # One budget for everything this process sends to Telegram (the bot's replies too).
        self.limits = self.make_limits()
        target = (
            Target(settings.telegram_team_chat_id, settings.telegram_team_thread_id)
            if settings.telegram_team_chat_id is not None
            else None
        )
        self._target = target
        # The incidents' hook that puts each change's messages in the outbox (the
        # composition root gives it to IncidentService).
        self.hook = OutboxHook(target, self._wake)
        self.fallback = FallbackService(settings, db, clock, failing_since=self._failing_since)
        # The storm digests: what the sender folds, what the bot's digest list shows.
        self.storms = StormDigests(
            db, clock, edit_every=timedelta(seconds=settings.telegram_digest_edit_seconds)
        )
        # Kept here, not in the sender, so the counters survive a bot restart.
        self.stats = SenderStats()
        # Several instances (services/leader.py): only the leader drains the outbox and runs
        # the fallback, so each chat has one sender and nothing goes out twice.
        self.gate: Gate | None = None
        self._leading = True
        if registry is not None:
            registry.register(_Collector(self))

    def _wake(self) -> None:
        if self.sender is not None:
            self.sender.wake()
        self.fallback.wake()

    def _failing_since(self) -> datetime | None:
        return self.sender.failing_since if self.sender is not None else None

    @property
    def telegram_on(self) -> bool:
        return self.sender is not None

    # -- lifecycle ----------------------------------------------------------------

    def make_limits(self) -> TelegramLimits:
        s = self._settings
        return TelegramLimits(
            global_per_second=s.telegram_rate_global_per_second,
            chat_per_second=s.telegram_rate_chat_per_second,
            group_per_minute=s.telegram_rate_group_per_minute,
        )

    def start_telegram(
        self, client: TelegramClient, renderer: Renderer, card_facts: CardFacts | None = None
    ) -> OutboxSender:
        """Start draining the outbox to Telegram (called by the bot when it starts)."""
        if self.sender is not None:
            raise RuntimeError("the Telegram sender is already running")
        self.sender = OutboxSender(
            self._db,
            self._clock,
            client,
            renderer,
            self.limits,
            max_backoff=self._settings.telegram_retry_max_seconds,
            stats=self.stats,
            card_facts=card_facts,
            gate=self.gate,
            storms=self.storms,
        )
        if self._leading:
            self.sender.start()
        return self.sender

    async def stop_telegram(self) -> None:
        if self.sender is not None:
            await self.sender.stop()
            self.sender = None

    def start(self) -> None:
        if self._leading:
            self.fallback.start()

    async def stop(self) -> None:
        await self.fallback.stop()

    async def lead(self, leading: bool) -> None:
        """Start (or stop) sending: called as this instance gains (or loses) leadership."""
        self._leading = leading
        if leading:
            if self.sender is not None:
                self.sender.start()
                self.sender.wake()
            self.fallback.start()
        else:
            if self.sender is not None:
                await self.sender.stop()
            await self.fallback.stop()

    def wake(self) -> None:
        """Another instance queued rows: look now instead of at the next poll."""
        self._wake()

    # -- reads ----------------------------------------------------------------------

    async def backlog(self) -> Backlog:
        async with self._db.read() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(OutboxMessage.created_at)).where(
                        OutboxMessage.status == OutboxStatus.PENDING.value
                    )
                )
            ).one()
        if isinstance(oldest, str):  # SQLite hands aggregate datetimes back as text
            from datetime import UTC

            oldest = datetime.fromisoformat(oldest).replace(tzinfo=UTC)
        return Backlog(int(count), oldest)

    async def incident_of_message(self, chat_id: int, message_id: int) -> int | None:
        """The incident a message of ours is about (its card, a reply under it, a page), so
        that a reply to it can act on that incident; None for anything else."""
        async with self._db.read() as session:
            found = await session.scalar(
                select(IncidentMessage.incident_id).where(
                    IncidentMessage.chat_id == chat_id, IncidentMessage.message_id == message_id
                )
            )
            if found is not None:
                return int(found)
            row = (
                await session.execute(
                    select(OutboxMessage.incident_id, OutboxMessage.payload)
                    .where(
                        OutboxMessage.chat_id == chat_id,
                        OutboxMessage.telegram_message_id == message_id,
                    )
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        incident_id, payload = row
        if incident_id is None and isinstance(payload, dict):
            incident_id = payload.get("incident_id")
        return int(incident_id) if isinstance(incident_id, int) else None

    async def check(self) -> ComponentHealth:
        """The `telegram` health component: the Bot API answers getMe with our token, and
        delivery is not failing; with the outbox backlog as its figure."""
        backlog = await self.backlog()
        figures: dict[str, Any] = {
            "outbox_pending": backlog.pending,
            "fallback_channels": self.fallback.channels,
        }
        settings = self._settings
        if settings.telegram_bot_token is None:
            return ComponentHealth(
                "telegram", Status.DEGRADED, "bot off (TELEGRAM_BOT_TOKEN unset)", figures
            )
        client = TelegramClient(settings.telegram_api_base, settings.telegram_bot_token)
        try:
            me = await client.get_me()
        except TelegramError as exc:
            return ComponentHealth("telegram", Status.DOWN, f"getMe failed: {exc}", figures)
        finally:
            await client.close()
        figures["bot"] = f"@{me.get('username', '?')}"
        if self.sender is not None:
            figures.update(sent=self.sender.stats.sent, retry_after=self.sender.stats.retry_after)
            if self.sender.failing_since is not None:
                return ComponentHealth(
                    "telegram",
                    Status.DEGRADED,
                    f"sending failing since "
                    f"{self.sender.failing_since.isoformat(timespec='seconds')}: "
                    f"{self.sender.last_error or ''}".strip(),
                    figures,
                )
        return ComponentHealth(
            "telegram",
            Status.HEALTHY,
            f"@{me.get('username', '?')}, {backlog.pending} queued",
            figures,
        )

    # -- storm digests ------------------------------------------------------------------------

    async def open_folded(self, incident_id: int) -> bool:
        """Post a folded incident's own card (asked for from its digest's list); False when
        it is not folded."""
        opened = await self.storms.open(incident_id)
        if opened:
            self._wake()
        return opened

    # -- plain posts to the team chat ------------------------------------------------------

    async def post_text(self, text: str, *, key: str = "text") -> bool:
        """Queue a plain message to the team chat (e.g. the weekly token status); False when
        there is no team chat. It goes through the outbox, so it survives an outage."""
        if self._target is None:
            return False
        now = self._clock.now()
        async with self._db.write() as session:
            add_row(
                session,
                key=await unique_key(session, f"{key}:{now.isoformat()}"),
                target=self._target,
                priority=Severity.P3.rank,
                incident_id=None,
                op=Op.TEXT,
                payload={"text": text},
                now=now,
            )
        self._wake()
        return True

    # -- the playbook's test message ----------------------------------------------------

    async def send_test(self, *, actor: str) -> list[ChannelResult]:
        """Send a test message through every configured channel; one result each."""
        now = self._clock.now().isoformat(timespec="seconds")
        text = f"SunFlow Ops test message from {actor} at {now}"
        results: list[ChannelResult] = []
        if self._settings.telegram_bot_token is not None:
            results.append(await self._telegram_test(text))
        results += await self.fallback.deliver(
            "SunFlow Ops test message", text, {"test": True, "actor": actor}
        )
        return results

    async def _telegram_test(self, text: str) -> ChannelResult:
        settings = self._settings
        assert settings.telegram_bot_token is not None
        if settings.telegram_team_chat_id is None:
            return ChannelResult("telegram", False, "TELEGRAM_TEAM_CHAT_ID is not set")
        client = TelegramClient(settings.telegram_api_base, settings.telegram_bot_token)
        try:
            await client.send_message(
                settings.telegram_team_chat_id,
                text,
                parse_mode=None,
                thread_id=settings.telegram_team_thread_id,
            )
        except TelegramError as exc:
            return ChannelResult("telegram", False, str(exc))
        finally:
            await client.close()
        return ChannelResult("telegram", True, f"sent to chat {settings.telegram_team_chat_id}")

    # -- files for the team chat (the weekly report) ----------------------------------------

    async def queue_to_team(
        self, key: str, text: str, *, file: tuple[str, bytes] | None = None
    ) -> bool:
        """Queue `text` (and a file after it) for the team chat through the outbox; False
        when there is no team chat. `key` makes a repeat of the same report queue nothing."""
        settings = self._settings
        if settings.telegram_team_chat_id is None:
            return False
        target = Target(settings.telegram_team_chat_id, settings.telegram_team_thread_id)
        now = self._clock.now()
        async with self._db.write() as session:
            exists = await session.scalar(
                select(OutboxMessage.id).where(OutboxMessage.idempotency_key == f"{key}:text")
            )
            if exists is not None:
                return True
            add_row(
                session,
                key=f"{key}:text",
                target=target,
                priority=3,
                incident_id=None,
                op=Op.TEXT,
                payload={"text": text},
                now=now,
            )
            if file is not None:
                add_row(
                    session,
                    key=await unique_key(session, f"{key}:file"),
                    target=target,
                    priority=3,
                    incident_id=None,
                    op=Op.FILE,
                    payload={
                        "filename": file[0],
                        "content": base64.b64encode(file[1]).decode(),
                        "text": "",
                    },
                    now=now,
                )
        self._wake()
        return True


class _Collector(Collector):
    """Prometheus view of the sender's counters (read at scrape time)."""

    def __init__(self, notify: NotifyService) -> None:
        self._notify = notify

    def collect(self) -> Iterator[Metric]:
        stats = self._notify.stats
        rows = [
            ("telegram_messages_sent", "Messages and edits Telegram accepted.", stats.sent),
            ("telegram_retry_after", "429 answers (retry_after honoured).", stats.retry_after),
            ("telegram_send_failures", "Network errors and 5xx, retried.", stats.failures),
            ("telegram_messages_dead", "Messages Telegram refused for good.", stats.dead),
            ("telegram_plain_resends", "Sent again as plain text.", stats.plain_resends),
            (
                "notify_fallback_alerts",
                "Alerts sent over the fallback.",
                self._notify.fallback.sent,
            ),
        ]
        for name, text, value in rows:
            yield CounterMetricFamily(name, text, value=value)
