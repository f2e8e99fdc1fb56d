"""Paged means empowered: per-incident grants; replies to our messages name their incident.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "incident_grants",
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.BigInteger(), primary_key=True),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_outbox_messages_chat_message", "outbox_messages", ["chat_id", "telegram_message_id"]
    )
    op.create_index(
        "ix_incident_messages_chat_message", "incident_messages", ["chat_id", "message_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_incident_messages_chat_message", table_name="incident_messages")
    op.drop_index("ix_outbox_messages_chat_message", table_name="outbox_messages")
    op.drop_table("incident_grants")
