"""The playbook's guards: publications (one post per topic and day) and provider calls.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "publications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("media_id", sa.String(64), nullable=True),
        sa.Column("trace_id", sa.String(40), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_publications_topic", "publications", ["topic"])
    op.create_index("ix_publications_day", "publications", ["day"])
    op.create_index(
        "uq_publications_posting",
        "publications",
        ["state"],
        unique=True,
        sqlite_where=sa.text("state = 'posting'"),
        postgresql_where=sa.text("state = 'posting'"),
    )
    op.create_table(
        "provider_calls",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("last_ok_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("trace_id", sa.String(40), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
    )
    # One row per provider from the start: every call is then a plain UPDATE.
    op.bulk_insert(
        sa.table(
            "provider_calls",
            sa.column("provider", sa.String),
            sa.column("operation", sa.String),
            sa.column("error", sa.Text),
            sa.column("failures", sa.Integer),
        ),
        [
            {"provider": name, "operation": "", "error": "", "failures": 0}
            for name in ("instagram", "cloudinary", "fal")
        ],
    )


def downgrade() -> None:
    op.drop_table("provider_calls")
    op.drop_index("uq_publications_posting", table_name="publications")
    op.drop_index("ix_publications_day", table_name="publications")
    op.drop_index("ix_publications_topic", table_name="publications")
    op.drop_table("publications")
