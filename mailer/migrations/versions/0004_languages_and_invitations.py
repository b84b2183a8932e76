"""A campaign's words per language, and an event's words per language, invitation mode and
the details before its last update.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable JSON added in place: a campaign stored before has no texts and keeps its one
    # subject and body for every language, as it was sent then; an event without details is
    # sent as before the upgrade (PUBLISH), not turned into an invitation.
    op.add_column("campaigns", sa.Column("texts", sa.JSON(), nullable=True))
    op.add_column("events", sa.Column("details", sa.JSON(), nullable=True))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place (no table rebuild, so no cascade).
    op.drop_column("events", "details")
    op.drop_column("campaigns", "texts")
