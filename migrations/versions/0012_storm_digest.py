"""Storms stay readable: the storm digest of a chat and the incidents folded into it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "storm_digests",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_storm_digests_chat_closed", "storm_digests", ["chat_id", "closed_at"])
    op.create_table(
        "storm_entries",
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "digest_id",
            sa.Integer(),
            sa.ForeignKey("storm_digests.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("folded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_storm_entries_digest_id", "storm_entries", ["digest_id"])


def downgrade() -> None:
    op.drop_index("ix_storm_entries_digest_id", table_name="storm_entries")
    op.drop_table("storm_entries")
    op.drop_index("ix_storm_digests_chat_closed", table_name="storm_digests")
    op.drop_table("storm_digests")
