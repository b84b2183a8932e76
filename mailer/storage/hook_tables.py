"""The schema of the REST API's keys and the outgoing webhooks (migration 0009), on the same
``metadata`` as :mod:`mailer.storage.tables` (apart only to keep that module short).

``api_keys`` and ``api_idempotency`` are written by ``storage/api_keys.py``;
``webhook_endpoints``, ``webhook_events`` (the outbox), ``webhook_deliveries`` and
``webhook_attempts`` by ``storage/webhooks.py`` (the outbox rows through its ``emit``, inside the
transaction of the change they report). Writes no row.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from mailer.storage.tables import Id, UTCDateTime, metadata

# A key of the REST API: only the SHA-256 of the key is kept, and its first characters.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),  # a list of models.Scope values
    Column("created_by", String(320), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
)

# The first answer to a POST with an Idempotency-Key, per key, for 24 h (status 0: in progress).
api_idempotency = Table(
    "api_idempotency",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key_id", Id, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    Column("idem_key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("key_id", "idem_key"),
    Index(None, "created_at"),
)

# Where events are posted; ``secret`` signs them (it must be kept to sign: never shown again).
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("url", String(2000), nullable=False),
    Column("events", JSON, nullable=False),  # a list of models.EventType values
    Column("secret", String(100), nullable=False),
    Column("description", String(200), nullable=False),
    Column("created_by", String(320), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("disabled_at", UTCDateTime(), nullable=True),
    Column("disabled_reason", String(300), nullable=True),
    Column("failing_since", UTCDateTime(), nullable=True),
    Column("failures", Integer, nullable=False, default=0),
)

# The outbox: one row per event, written in the transaction of the change it reports.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(40), nullable=False, unique=True),  # the webhook-id, "msg_..."
    Column("type", String(40), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "created_at"),
)

# One event for one endpoint: pending until a 2xx answer, or given up; leased while posted.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_row", Id, ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False),
    Column(
        "endpoint_id", Id, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    ),
    Column("status", String(16), nullable=False),  # models.HookStatus
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", UTCDateTime(), nullable=True),
    Column("leased_by", String(200), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("last_at", UTCDateTime(), nullable=True),
    Column("last_code", Integer, nullable=True),
    Column("last_error", String(500), nullable=True),
    UniqueConstraint("event_row", "endpoint_id"),
    Index(None, "status", "next_at"),
    Index(None, "endpoint_id", "id"),
)

# Every POST made: when, what came back (for `mailer webhooks deliveries`).
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "delivery_id", Id, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
    ),
    Column("at", UTCDateTime(), nullable=False),
    Column("code", Integer, nullable=True),
    Column("error", String(500), nullable=True),
    Column("took_ms", Integer, nullable=False),
    Column("answer", String(500), nullable=False),
    Index(None, "delivery_id"),
)
