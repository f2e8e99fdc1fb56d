"""ORM models: incidents and their append-only timeline."""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# The largest id an Integer primary key holds on every database (PostgreSQL's int4); ids
# from users are checked against it so a bigger number is a 400, not a database error.
MAX_ID = 2**31 - 1


def parse_id(text: str) -> int | None:
    """An incident or job number as people write it ("42", "#42"); None when it is not one
    (not digits, zero, or past what the database's integer column holds)."""
    raw = text.strip().lstrip("#")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or not 1 <= int(raw) <= MAX_ID:
        return None
    return int(raw)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always hands back an aware datetime (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, straight to the stored text in one step: the same text as the
        `process_bind_param` + `DATETIME` chain (tested), at half the cost per value on
        intake's bulk inserts, where it is a few percent of all the work."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # The last value and its text, as one tuple (read and replaced whole, so threads
        # never mix them): a group's rows mostly carry one timestamp, its `now`.
        last: list[tuple[datetime, str]] = [(datetime.min.replace(tzinfo=UTC), "")]

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            seen, text = last[0]
            if value is seen:
                return text
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the database; use aware UTC")
            v = value.astimezone(UTC)
            text = (
                f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
                f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
            )
            last[0] = (value, text)
            return text

        return process


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class IncidentState(enum.StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(2))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(100), default="api")
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=IncidentState.TRIGGERED.value)
    occurrence_count: Mapped[int] = mapped_column(Integer, default=1)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    response_deadline: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200), default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    resolved_by: Mapped[str | None] = mapped_column(String(200), default=None)
    # An acknowledgement given for a while (`/ack 42 30m`) lapses at this time.
    ack_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # Escalation holds still until this time (`/snooze 42 1h`).
    snoozed_until: Mapped[datetime | None] = mapped_column(default=None)
    # An Alertmanager group's incident: the group's alerts and their states
    # (services/alert_groups.py); None for every other incident.
    alert_group: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # What our own services meant by the description, as a reason and its values
    # (`Wording`), so that the chat words it in its language; None for an alert's own.
    wording: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    timeline: Mapped[list[TimelineEvent]] = relationship(
        back_populates="incident",
        order_by="TimelineEvent.id",
        cascade="all, delete-orphan",
        lazy="raise",
    )

    __table_args__ = (
        # At most one open incident per dedup key: the database enforces deduplication.
        Index(
            "uq_incidents_open_dedup_key",
            "dedup_key",
            unique=True,
            sqlite_where=text("state != 'resolved'"),
            postgresql_where=text("state != 'resolved'"),
        ),
        Index("ix_incidents_state_severity", "state", "severity"),
    )

    @property
    def is_open(self) -> bool:
        return self.state != IncidentState.RESOLVED


class TimelineEvent(Base):
    __tablename__ = "timeline_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    incident: Mapped[Incident] = relationship(back_populates="timeline", lazy="raise")


class EscalationLadder(Base):
    """One incident's run through its policy's ladder; a reopen starts a new epoch."""

    __tablename__ = "escalation_ladders"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime]
    # Time the ladder stood still (timed acknowledgements, snoozes): later steps move on by it.
    shift_seconds: Mapped[int] = mapped_column(Integer, default=0)
    paused_at: Mapped[datetime | None] = mapped_column(default=None)
    deadline_missed_at: Mapped[datetime | None] = mapped_column(default=None)
    # When the incident next needs the escalation timer (next step, response deadline, end
    # of a timed acknowledgement), as `services.ladder.next_wakeup` says; None: never.
    # Kept current by every incident write; the timer fires what is due by this column.
    next_wake_at: Mapped[datetime | None] = mapped_column(default=None, index=True)


class EscalationFiring(Base):
    """A step claimed for firing; the unique key is what makes a step fire at most once."""

    __tablename__ = "escalation_firings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Looked up through the unique step key below, which starts with it.
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    step_name: Mapped[str] = mapped_column(String(40))
    due_at: Mapped[datetime]
    fired_at: Mapped[datetime]
    late_seconds: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index(
            "uq_escalation_firings_step",
            "incident_id",
            "epoch",
            "step_index",
            "seq",
            unique=True,
        ),
    )


class OncallOverride(Base):
    """`/oncall set USER 8h`: this person is on call instead of the rotation for a while."""

    __tablename__ = "oncall_overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Telegram ids need 64 bits.
    user_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(200))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime] = mapped_column(index=True)
    set_by: Mapped[str] = mapped_column(String(200))


class IncidentGrant(Base):
    """Someone paged for an incident may acknowledge, snooze and resolve it: recorded when
    the page is written, ended when the incident resolves."""

    __tablename__ = "incident_grants"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    # Telegram ids need 64 bits.
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # The escalation step that paged them (`pd`, `oncall`, ...).
    step: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[datetime]
    ended_at: Mapped[datetime | None] = mapped_column(default=None)


class ChecklistTick(Base):
    """The state of one item of an incident's checklist, with who last changed it."""

    __tablename__ = "checklist_ticks"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    checklist: Mapped[str] = mapped_column(String(20), primary_key=True)
    item: Mapped[str] = mapped_column(String(40), primary_key=True)
    done: Mapped[bool]
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))


class PostmortemField(Base):
    """What only people know for the post-mortem: impact, root cause, prevention, summary."""

    __tablename__ = "postmortem_fields"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    field: Mapped[str] = mapped_column(String(20), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))


# -- notifications: the outbox, each incident's alert message, bot refusals ----------


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    # Telegram refused it for good (chat gone, bot blocked); kept for the record.
    DEAD = "dead"
    # Not sent: its incident is folded into a storm digest, which shows the change instead.
    FOLDED = "folded"


class OutboxMessage(Base):
    """One message to Telegram, written in the transaction that caused it, sent later."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Unique: a change that is recorded twice (retry, restart) never queues a second message.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # 0 (P0) is sent first.
    priority: Mapped[int] = mapped_column(Integer)
    incident_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    # card (post or edit the incident's alert), reply (in its thread), direct, text, document
    op: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(12), default=OutboxStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    # A P0/P1 alert that goes to e-mail/webhook too when Telegram cannot take it in time.
    wants_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    fallback_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        Index("ix_outbox_messages_status_priority", "status", "priority", "id"),
        # A reply to one of our messages names its incident (reply to act).
        Index("ix_outbox_messages_chat_message", "chat_id", "telegram_message_id"),
    )


class IncidentMessage(Base):
    """Where an incident's alert message lives in Telegram, so changes edit or reply to it."""

    __tablename__ = "incident_messages"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    posted_at: Mapped[datetime]
    edited_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_incident_messages_chat_message", "chat_id", "message_id"),)


class StormDigest(Base):
    """One storm in one chat: the message that stands for the new cards the chat's limits
    could not carry, edited in place while the storm lasts and closed when its queue drains."""

    __tablename__ = "storm_digests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Set once Telegram has the message; edits go to it from then on.
    message_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None] = mapped_column(default=None)
    # When what it shows last changed, and when the state it shows was rendered: it is due
    # for an edit while the first is later (its edits are spaced: services/notify/storm.py).
    changed_at: Mapped[datetime]
    sent_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_storm_digests_chat_closed", "chat_id", "closed_at"),)


class StormEntry(Base):
    """An incident folded into a storm digest instead of a card of its own; `opened_at` is
    when it got its card after all (opened from the digest, a person's action, or P0/P1)."""

    __tablename__ = "storm_entries"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    digest_id: Mapped[int] = mapped_column(
        ForeignKey("storm_digests.id", ondelete="CASCADE"), index=True
    )
    folded_at: Mapped[datetime]
    opened_at: Mapped[datetime | None] = mapped_column(default=None)


class BotRefusal(Base):
    """Audit: a Telegram user asked for something their role does not allow."""

    __tablename__ = "bot_refusals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    username: Mapped[str | None] = mapped_column(String(200), default=None)
    chat_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    command: Mapped[str] = mapped_column(String(64))
    user_role: Mapped[str] = mapped_column(String(16))
    required_role: Mapped[str] = mapped_column(String(16))


# -- Pipeline operations: jobs and retries, traces, token expiry, stats ---------------------


class JobState(enum.StrEnum):
    FAILED = "failed"  # waiting for its next automatic retry
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    EXHAUSTED = "exhausted"  # the automatic retries are spent; a person retries it


class PipelineJob(Base):
    """A failed pipeline run (publish, generate_images, upload, collect_stats) and its retries."""

    __tablename__ = "pipeline_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    topic: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[str] = mapped_column(String(16))
    # Automatic and manual retries run so far (the failed first run is not counted).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    last_error: Mapped[str] = mapped_column(Text, default="")
    trace_id: Mapped[str | None] = mapped_column(String(40), default=None)
    next_retry_at: Mapped[datetime | None] = mapped_column(default=None)
    incident_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_pipeline_jobs_state_next_retry_at", "state", "next_retry_at"),)


class Trace(Base):
    """One pipeline run, `SF-YYYYMMDD-HHMMSS-xxxx`, with its steps."""

    __tablename__ = "traces"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    topic: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    job_id: Mapped[int | None] = mapped_column(Integer, default=None)

    steps: Mapped[list[TraceStep]] = relationship(
        back_populates="trace",
        order_by="TraceStep.id",
        cascade="all, delete-orphan",
        lazy="raise",
    )


class TraceStep(Base):
    __tablename__ = "trace_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    trace: Mapped[Trace] = relationship(back_populates="steps", lazy="raise")


class TokenExpiry(Base):
    """When an access token runs out, as registered by `token set-expiry`."""

    __tablename__ = "token_expiries"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    expires_at: Mapped[datetime]
    set_at: Mapped[datetime]
    set_by: Mapped[str] = mapped_column(String(200))


class StatsSnapshot(Base):
    """One collection of Instagram insights."""

    __tablename__ = "stats_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collected_at: Mapped[datetime] = mapped_column(index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Lease(Base):
    """A named lease one instance holds at a time (the scheduler's leadership).

    `token` grows by one on every new acquisition: it is the fencing token that a deposed
    holder's late writes are checked against.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    token: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class TelegramUpdate(Base):
    """A Telegram update some instance took in (webhook mode): each is handled once."""

    __tablename__ = "telegram_updates"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    received_at: Mapped[datetime] = mapped_column(index=True)
    instance: Mapped[str] = mapped_column(String(200))


class Heartbeat(Base):
    """A dead-man's switch: something pings it at least every `every_seconds`; a ping
    missed by more than `grace_seconds` opens an incident, the next ping resolves it."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    every_seconds: Mapped[int] = mapped_column(Integer)
    grace_seconds: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[datetime]
    # Who added or last changed it ("sunflow-ops" for the service's own heartbeats).
    set_by: Mapped[str] = mapped_column(String(200))
    last_ping_at: Mapped[datetime | None]
    # When the checker raised the incident for the current miss; cleared by the next ping.
    down_since: Mapped[datetime | None]


class HealthProbe(Base):
    """The database health check's write: one row per instance, upserted on every check."""

    __tablename__ = "health_probes"

    instance: Mapped[str] = mapped_column(String(200), primary_key=True)
    written_at: Mapped[datetime]


# -- The playbook's guards: one post per topic and day, and each provider's last real call ---


class PublicationState(enum.StrEnum):
    POSTING = "posting"  # claimed: the Instagram calls are under way
    POSTED = "posted"
    FAILED = "failed"  # the run failed before anything was published
    # A claim left by a crashed run: whether Instagram published is unknown, so the topic
    # counts as posted until a person checks the account and publishes with --force.
    INTERRUPTED = "interrupted"


class Publication(Base):
    """A publish of a topic: claimed before the Instagram calls, settled after them."""

    __tablename__ = "publications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(64), index=True)
    # The calendar day of the claim in PUBLISH_TIMEZONE, YYYY-MM-DD: the daily limit's unit.
    day: Mapped[str] = mapped_column(String(10), index=True)
    state: Mapped[str] = mapped_column(String(16))
    claimed_at: Mapped[datetime]
    posted_at: Mapped[datetime | None] = mapped_column(default=None)
    media_id: Mapped[str | None] = mapped_column(String(64), default=None)
    trace_id: Mapped[str | None] = mapped_column(String(40), default=None)
    job_id: Mapped[int | None] = mapped_column(Integer, default=None)
    actor: Mapped[str] = mapped_column(String(200), default="")
    forced: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        # One publish in flight at a time: the daily limit and "already posted" are checked
        # and claimed in one step, so two runs racing cannot both post.
        Index(
            "uq_publications_posting",
            "state",
            unique=True,
            sqlite_where=text("state = 'posting'"),
            postgresql_where=text("state = 'posting'"),
        ),
    )


class ProviderCall(Base):
    """The last real call to a provider (fal.ai, Cloudinary, Instagram) and how it went."""

    __tablename__ = "provider_calls"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_ok_at: Mapped[datetime | None] = mapped_column(default=None)
    last_failed_at: Mapped[datetime | None] = mapped_column(default=None)
    operation: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str] = mapped_column(Text, default="")
    trace_id: Mapped[str | None] = mapped_column(String(40), default=None)
    # Failures in a row since the last success.
    failures: Mapped[int] = mapped_column(Integer, default=0)
