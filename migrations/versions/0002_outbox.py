"""Notifications: the outbox, each incident's alert message, refused bot requests.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("telegram_message_id", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("wants_fallback", sa.Boolean(), nullable=False),
        sa.Column("fallback_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_outbox_messages_incident_id", "outbox_messages", ["incident_id"])
    op.create_index(
        "ix_outbox_messages_status_priority", "outbox_messages", ["status", "priority", "id"]
    )
    op.create_table(
        "incident_messages",
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "bot_refusals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("username", sa.String(200), nullable=True),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("user_role", sa.String(16), nullable=False),
        sa.Column("required_role", sa.String(16), nullable=False),
    )
    op.create_index("ix_bot_refusals_user_id", "bot_refusals", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_bot_refusals_user_id", table_name="bot_refusals")
    op.drop_table("bot_refusals")
    op.drop_table("incident_messages")
    op.drop_index("ix_outbox_messages_status_priority", table_name="outbox_messages")
    op.drop_index("ix_outbox_messages_incident_id", table_name="outbox_messages")
    op.drop_table("outbox_messages")
