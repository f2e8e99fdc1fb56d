"""`Services`: everything the edges (HTTP routes, the bot, the CLI, the scheduler) call into,
built by the composition root (`services/main.py`, `open_services`). A type only: the edges
import it from here, so no edge imports the module that builds them."""

from __future__ import annotations

from dataclasses import dataclass

from services.audit import AuditService
from services.board import BoardService
from services.cards import CardFacts
from services.checklists import ChecklistService
from services.clock import Clock
from services.config import Settings
from services.db import Database
from services.escalation import EscalationService
from services.grants import GrantService
from services.health import HealthService, HealthWatch
from services.heartbeats import HeartbeatService
from services.incidents import IncidentService
from services.intake import IntakeService
from services.leader import Leadership
from services.metrics import Metrics
from services.notify.service import NotifyService
from services.oncall import OncallService
from services.ops import PipelineOps
from services.pagerduty import PagerDutyService
from services.postmortem import PostmortemService
from services.probe import DatabaseProbe
from services.reports import ReportService
from services.scheduler import SchedulerService
from services.sse import SSEHub
from services.sse_redis import RedisRelay
from services.timers import Alarm, EscalationTimer
from services.updates import UpdateLog, Webhook


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    metrics: Metrics
    incidents: IncidentService
    intake: IntakeService
    health: HealthService
    health_watch: HealthWatch
    scheduler: SchedulerService
    sse: SSEHub
    escalation: EscalationService
    # The escalation timer (the leader fires; every instance watches for overdue steps),
    # and the alarm that writes use to wake it sooner.
    timer: EscalationTimer
    alarm: Alarm
    oncall: OncallService
    # Whoever is paged for an incident may ack, snooze and resolve it until it resolves.
    grants: GrantService
    checklists: ChecklistService
    postmortems: PostmortemService
    reports: ReportService
    # Pipeline operations: tokens, retries, traces, integrations, stats, backups.
    ops: PipelineOps
    notify: NotifyService
    # What a card shows beyond the incident's row (the outbox sender asks for each card).
    card_facts: CardFacts
    audit: AuditService
    # Several instances: who runs the scheduled work (one at a time, fenced), and the
    # Telegram updates taken in by any of them (webhook mode).
    leader: Leadership
    updates: UpdateLog
    # The live board (GET /): snapshots published on the SSE hub's `board` job.
    board: BoardService
    # Intake beyond the generic API: PagerDuty events and heartbeats; the database health
    # check's write probe.
    pagerduty: PagerDutyService
    heartbeats: HeartbeatService
    probe: DatabaseProbe
    # Webhook mode: where the route hands each Telegram update to the bot while it runs.
    webhook: Webhook
    # With REDIS_URL: the hub's link to the other instances (the hub's `relay`).
    sse_relay: RedisRelay | None = None
