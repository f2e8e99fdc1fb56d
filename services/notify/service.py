"""`NotifyService`: the sender's lifecycle, the fallback and the test (the outbox's writers
are services/notify/outbox.py `Outbox`)."""

from __future__ import annotations

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
from services.notify.delivery import Delivery, DeliveryError
from services.notify.fallback import ChannelResult, FallbackService, FallbackWording
from services.notify.outbox import Outbox
from services.notify.sender import CardFacts, OutboxSender, Renderer, SenderStats
from services.notify.storm import StormDigests
from services.scheduler import Gate


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_at: datetime | None


class NotifyService:
    """Owns outgoing notifications: the sender that drains the outbox (its writers are
    `Outbox`) through the chat's `Delivery` (None: the bot is off, rows wait), the fallback
    and the test."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        *,
        outbox: Outbox,
        delivery: Delivery | None = None,
        renderer: Renderer | None = None,
        fallback_wording: FallbackWording,
        card_facts: CardFacts | None = None,
        gate: Gate | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._clock = clock
        # The chat's client: the sender's, the health check's and the test message's; its
        # pacing is the budget the bot's own replies share.
        self.delivery = delivery
        # The writers (built before the incidents, whose hook they give) ring its doorbell.
        self.outbox = outbox
        self.fallback = FallbackService(
            settings,
            db,
            clock,
            wording=fallback_wording,
            failing_since=self._failing_since,
            doorbell=outbox.doorbell,
        )
        # The storm digests: what the sender folds, what the bot's digest list shows.
        self.storms = StormDigests(
            db, clock, edit_every=timedelta(seconds=settings.telegram_digest_edit_seconds)
        )
        # Kept here, not in the sender, so the counters survive a bot restart.
        self.stats = SenderStats()
        # Several instances (services/leader.py): only the leader drains the outbox and runs
        # the fallback, so each chat has one sender and nothing goes out twice.
        self.sender: OutboxSender | None = None
        if delivery is not None:
            if renderer is None:
                raise ValueError("the outbox sender needs a renderer with its delivery")
            self.sender = OutboxSender(
                db,
                clock,
                delivery,
                renderer,
                max_backoff=settings.telegram_retry_max_seconds,
                stats=self.stats,
                card_facts=card_facts,
                gate=gate,
                storms=self.storms,
                doorbell=outbox.doorbell,
            )
        self._leading = True
        if registry is not None:
            registry.register(_Collector(self))

    def _failing_since(self) -> datetime | None:
        return self.sender.failing_since if self.sender is not None else None

    @property
    def telegram_on(self) -> bool:
        return self.sender is not None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        if self._leading:
            self._start_sending()

    async def stop(self) -> None:
        if self.sender is not None:
            await self.sender.stop()
        await self.fallback.stop()

    async def lead(self, leading: bool) -> None:
        """Start (or stop) sending: called as this instance gains (or loses) leadership."""
        self._leading = leading
        if leading:
            self._start_sending()
            if self.sender is not None:
                self.sender.wake()
        else:
            await self.stop()

    def _start_sending(self) -> None:
        if self.sender is not None:
            self.sender.start()
        self.fallback.start()

    def wake(self) -> None:
        """Rows were queued (here or by another instance): the sender and the fallback look
        now instead of at the next poll."""
        self.outbox.doorbell.ring()

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
        if self.delivery is None:
            return ComponentHealth(
                "telegram",
                Status.DEGRADED,
                "bot off (TELEGRAM_BOT_TOKEN unset)",
                figures,
                reason="telegram_off",
            )
        try:
            me = await self.delivery.identify()
        except DeliveryError as exc:
            return ComponentHealth(
                "telegram",
                Status.DOWN,
                f"getMe failed: {exc}",
                figures,
                reason="telegram_getme",
                params={"error": str(exc)},
            )
        figures["bot"] = me
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
                    reason="telegram_failing",
                    params={
                        "since": self.sender.failing_since.isoformat(),
                        "error": self.sender.last_error or "",
                    },
                )
        return ComponentHealth(
            "telegram",
            Status.HEALTHY,
            f"{me}, {backlog.pending} queued",
            figures,
            reason="telegram_ok",
            params={"bot": me, "queued": backlog.pending},
        )

    # -- storm digests ------------------------------------------------------------------------

    async def open_folded(self, incident_id: int) -> bool:
        """Post a folded incident's own card (asked for from its digest's list); False when
        it is not folded."""
        opened = await self.storms.open(incident_id)
        if opened:
            self.wake()
        return opened

    # -- the playbook's test message ----------------------------------------------------

    async def send_test(self, *, actor: str) -> list[ChannelResult]:
        """Send a test message, in the chat's language, through every configured channel;
        one result each."""
        subject, text = self.fallback.wording.test_message(actor, self._clock.now())
        results: list[ChannelResult] = []
        if self.delivery is not None:
            results.append(await self._telegram_test(self.delivery, text))
        results += await self.fallback.deliver(subject, text, {"test": True, "actor": actor})
        return results

    async def _telegram_test(self, delivery: Delivery, text: str) -> ChannelResult:
        settings = self._settings
        if settings.telegram_team_chat_id is None:
            return ChannelResult(
                "telegram",
                False,
                "TELEGRAM_TEAM_CHAT_ID is not set",
                "not_set",
                {"setting": "TELEGRAM_TEAM_CHAT_ID"},
            )
        try:
            await delivery.send_message(
                settings.telegram_team_chat_id,
                text,
                html=False,
                thread_id=settings.telegram_team_thread_id,
            )
        except DeliveryError as exc:
            return ChannelResult("telegram", False, str(exc), "error", {"error": str(exc)})
        chat = settings.telegram_team_chat_id
        return ChannelResult("telegram", True, f"sent to chat {chat}", "sent_to", {"to": chat})


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
