"""Bounces: the messages (and relay webhook events) received, one row each by fingerprint,
and one row per recipient with what it did; an index on ``deliveries.message_id`` so a bounce
is tied to its delivery by the Message-ID it echoes back.

New tables, and one index built on ``deliveries`` (about 1 s per million rows here, its
writes held meanwhile: upgrade with the daemon stopped, as for every migration). Nothing
existing changes: a delivery's new status ``bounced`` is text in the same column. The
downgrade turns ``bounced`` back into ``sent`` and a ``soft_bounce`` suppression into
``hard_bounce``, the words the previous release reads.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_index("ix_deliveries_message_id", "deliveries", ["message_id"])
    op.create_table(
        "bounce_messages",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("report", sa.String(16), nullable=False),
        sa.Column("reader", sa.String(32), nullable=False),
        sa.Column("received_at", _AT, nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("delivery_id", _ID, nullable=True),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("mailer_send", sa.String(200), nullable=True),
        sa.Column("forged", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name="fk_bounce_messages_delivery_id_deliveries",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_bounce_messages"),
        sa.UniqueConstraint("fingerprint", name="uq_bounce_messages_fingerprint"),
    )
    op.create_index("ix_bounce_messages_received_at", "bounce_messages", ["received_at"])
    op.create_table(
        "bounce_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("bounce_id", _ID, nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("delivery_id", _ID, nullable=True),
        sa.Column("send_id", _ID, nullable=True),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("at", _AT, nullable=False),
        sa.ForeignKeyConstraint(
            ["bounce_id"],
            ["bounce_messages.id"],
            name="fk_bounce_events_bounce_id_bounce_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name="fk_bounce_events_delivery_id_deliveries",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["send_id"], ["sends.id"], name="fk_bounce_events_send_id_sends", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_bounce_events"),
        sa.UniqueConstraint("bounce_id", "email_key", name="uq_bounce_events_bounce_id_email_key"),
    )
    op.create_index("ix_bounce_events_email_key_at", "bounce_events", ["email_key", "at"])
    op.create_index("ix_bounce_events_send_id_kind", "bounce_events", ["send_id", "kind"])
    op.create_index("ix_bounce_events_at", "bounce_events", ["at"])


def downgrade() -> None:
    # What the previous release cannot read goes back to its nearest word: a bounced delivery
    # was sent; a suppression after soft bounces stays a suppression, of the one bounce reason
    # it knows. The addresses stay suppressed; the bounces themselves go.
    op.execute("UPDATE deliveries SET status = 'sent' WHERE status = 'bounced'")
    op.execute("UPDATE suppressions SET reason = 'hard_bounce' WHERE reason = 'soft_bounce'")
    op.execute("UPDATE suppression_events SET reason = 'hard_bounce' WHERE reason = 'soft_bounce'")
    op.drop_table("bounce_events")
    op.drop_table("bounce_messages")
    op.drop_index("ix_deliveries_message_id", table_name="deliveries")
