"""Escalation ladders, step firings and on-call overrides.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "escalation_ladders",
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shift_seconds", sa.Integer(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline_missed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "escalation_firings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step_name", sa.String(40), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("late_seconds", sa.Integer(), nullable=False),
    )
    op.create_index("ix_escalation_firings_incident_id", "escalation_firings", ["incident_id"])
    op.create_index(
        "uq_escalation_firings_step",
        "escalation_firings",
        ["incident_id", "epoch", "step_index", "seq"],
        unique=True,
    )
    op.create_table(
        "oncall_overrides",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("set_by", sa.String(200), nullable=False),
    )
    op.create_index("ix_oncall_overrides_ends_at", "oncall_overrides", ["ends_at"])


def downgrade() -> None:
    op.drop_index("ix_oncall_overrides_ends_at", table_name="oncall_overrides")
    op.drop_table("oncall_overrides")
    op.drop_index("uq_escalation_firings_step", table_name="escalation_firings")
    op.drop_index("ix_escalation_firings_incident_id", table_name="escalation_firings")
    op.drop_table("escalation_firings")
    op.drop_table("escalation_ladders")
