"""The REST API's keys and idempotent answers, and the outgoing webhooks: endpoints, the
outbox of events, one delivery per event and endpoint, and every attempt made.

New tables only; nothing existing changes. The downgrade drops them (the keys, endpoints and
any event not yet delivered are lost with them: deliver or note them first).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_AT = sa.DateTime(timezone=True)


def _pk(table: str) -> list[sa.Column[int] | sa.PrimaryKeyConstraint]:
    return [
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
    ]


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "api_keys",
        *_pk("api_keys"),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("last_used_at", _AT, nullable=True),
        sa.Column("revoked_at", _AT, nullable=True),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_table(
        "api_idempotency",
        *_pk("api_idempotency"),
        sa.Column("key_id", _ID, nullable=False),
        sa.Column("idem_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        _fk("api_idempotency", "key_id", "api_keys"),
        sa.UniqueConstraint("key_id", "idem_key", name="uq_api_idempotency_key_id_idem_key"),
    )
    op.create_index("ix_api_idempotency_created_at", "api_idempotency", ["created_at"])
    op.create_table(
        "webhook_endpoints",
        *_pk("webhook_endpoints"),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("disabled_at", _AT, nullable=True),
        sa.Column("disabled_reason", sa.String(300), nullable=True),
        sa.Column("failing_since", _AT, nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
    )
    op.create_table(
        "webhook_events",
        *_pk("webhook_events"),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.UniqueConstraint("event_id", name="uq_webhook_events_event_id"),
    )
    op.create_index("ix_webhook_events_created_at", "webhook_events", ["created_at"])
    op.create_table(
        "webhook_deliveries",
        *_pk("webhook_deliveries"),
        sa.Column("event_row", _ID, nullable=False),
        sa.Column("endpoint_id", _ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", _AT, nullable=True),
        sa.Column("leased_by", sa.String(200), nullable=True),
        sa.Column("lease_until", _AT, nullable=True),
        sa.Column("last_at", _AT, nullable=True),
        sa.Column("last_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        _fk("webhook_deliveries", "event_row", "webhook_events"),
        _fk("webhook_deliveries", "endpoint_id", "webhook_endpoints"),
        sa.UniqueConstraint(
            "event_row", "endpoint_id", name="uq_webhook_deliveries_event_row_endpoint_id"
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next_at", "webhook_deliveries", ["status", "next_at"]
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint_id_id", "webhook_deliveries", ["endpoint_id", "id"]
    )
    op.create_table(
        "webhook_attempts",
        *_pk("webhook_attempts"),
        sa.Column("delivery_id", _ID, nullable=False),
        sa.Column("at", _AT, nullable=False),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("took_ms", sa.Integer(), nullable=False),
        sa.Column("answer", sa.String(500), nullable=False),
        _fk("webhook_attempts", "delivery_id", "webhook_deliveries"),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])


def downgrade() -> None:
    for table in (
        "webhook_attempts", "webhook_deliveries", "webhook_events", "webhook_endpoints",
        "api_idempotency", "api_keys",
    ):  # fmt: skip
        op.drop_table(table)
