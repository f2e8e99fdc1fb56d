"""escalation_firings loses its index on incident_id alone: the unique step key
(incident_id, epoch, step_index, seq) starts with it and serves the same lookups and the
cascade, so every firing kept one index more than it needed.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_escalation_firings_incident_id", table_name="escalation_firings")


def downgrade() -> None:
    op.create_index(
        "ix_escalation_firings_incident_id", "escalation_firings", ["incident_id"], unique=False
    )
