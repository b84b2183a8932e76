"""Approvals: a campaign's spec and version, who saved, submitted and approved it, who
wrote it since its last approval, and the snapshot approval froze.

Every campaign stored before is approved in the upgrade (``approved_by`` = "operator (before
approvals)", ``approved_at`` = its ``created_at``; a confirmation campaign's approver is
"system"): what was scheduled keeps sending, since the daemon now sends nothing of a campaign
whose ``approved_at`` is NULL. Columns added in place (nullable, or with a server default):
no table is rebuilt. The downgrade drops them (SQLite 3.35+ in place).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None

BEFORE_APPROVALS = "operator (before approvals)"
CONFIRM_KIND = "confirmation"  # mailer.models.CONFIRM_KIND when this migration was written


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("spec", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("updated_by", sa.String(length=320), nullable=True),
        sa.Column("submitted_by", sa.String(length=320), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_by", sa.String(length=320), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approval", sa.JSON(), nullable=True),
        sa.Column("contributors", sa.JSON(), nullable=True),
    ]


def upgrade() -> None:
    for column in _columns():
        op.add_column("campaigns", column)
    campaigns = sa.table(
        "campaigns",
        sa.column("kind", sa.String()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("approved_by", sa.String()),
        sa.column("approved_at", sa.DateTime(timezone=True)),
    )
    system = sa.case((campaigns.c.kind == CONFIRM_KIND, "system"), else_=BEFORE_APPROVALS)
    op.execute(
        campaigns.update()
        .where(campaigns.c.approved_at.is_(None))
        .values(approved_by=system, approved_at=campaigns.c.created_at)
    )


def downgrade() -> None:
    for column in reversed(_columns()):
        op.drop_column("campaigns", column.name)
