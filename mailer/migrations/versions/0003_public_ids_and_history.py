"""Links name random public ids; pending sign-ups carry a nonce; consent and suppression
histories are kept, append-only.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN and CREATE INDEX: on SQLite a batch rebuild of
    # `subscribers` would cascade-delete every subscription (foreign keys are on).
    op.add_column("subscribers", sa.Column("public_id", sa.String(length=32), nullable=True))
    op.add_column("subscribers", sa.Column("legacy_links", sa.Boolean(), nullable=True))
    # Every existing subscriber gets its own random id; the unsubscribe and preference links
    # already mailed to them name their row id, and keep working for them alone.
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE subscribers SET legacy_links = :t"), {"t": True})
    ids = [row[0] for row in conn.execute(sa.text("SELECT id FROM subscribers"))]
    for subscriber_id in ids:
        conn.execute(
            sa.text("UPDATE subscribers SET public_id = :p WHERE id = :i"),
            {"p": secrets.token_urlsafe(16), "i": subscriber_id},
        )
    op.create_index("ix_subscribers_public_id", "subscribers", ["public_id"], unique=True)
    op.add_column("subscriptions", sa.Column("confirm_nonce", sa.String(length=32), nullable=True))
    op.add_column(
        "subscriptions", sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "consent_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("subscriber_id", _ID, nullable=False),
        sa.Column("list_id", _ID, nullable=True),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name="fk_consent_events_subscriber_id_subscribers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"], ["lists.id"], name="fk_consent_events_list_id_lists", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_consent_events"),
    )
    op.create_index("ix_consent_events_subscriber_id_at", "consent_events", ["subscriber_id", "at"])
    op.create_table(
        "suppression_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("email_key", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_suppression_events"),
    )
    op.create_index("ix_suppression_events_email_key_at", "suppression_events", ["email_key", "at"])
    # The suppressions made before this upgrade start their history.
    conn.execute(
        sa.text(
            "INSERT INTO suppression_events (email_key, action, reason, detail, actor, at) "
            "SELECT email_key, 'suppress', reason, detail, '', created_at FROM suppressions"
        )
    )


def downgrade() -> None:
    op.drop_index("ix_suppression_events_email_key_at", table_name="suppression_events")
    op.drop_table("suppression_events")
    op.drop_index("ix_consent_events_subscriber_id_at", table_name="consent_events")
    op.drop_table("consent_events")
    op.drop_index("ix_subscribers_public_id", table_name="subscribers")
    # SQLite 3.35+ drops a column in place (no table rebuild, so no cascade).
    op.drop_column("subscriptions", "requested_at")
    op.drop_column("subscriptions", "confirm_nonce")
    op.drop_column("subscribers", "legacy_links")
    op.drop_column("subscribers", "public_id")
