"""Escalation wake-ups kept in the database (`escalation_ladders.next_wake_at`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

Existing ladders start with no wake-up; the leader re-derives every open incident's from
the database when it takes the lead (`EscalationService.rewake_all`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("escalation_ladders") as batch:
        batch.add_column(sa.Column("next_wake_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_escalation_ladders_next_wake_at", "escalation_ladders", ["next_wake_at"])


def downgrade() -> None:
    op.drop_index("ix_escalation_ladders_next_wake_at", table_name="escalation_ladders")
    with op.batch_alter_table("escalation_ladders") as batch:
        batch.drop_column("next_wake_at")
