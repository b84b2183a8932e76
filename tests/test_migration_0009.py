"""Migration 0009 (API keys, idempotency, webhooks and their outbox) on a database of the
previous release: the ledger is kept both ways; the downgrade drops only the six new tables
(the keys and endpoints go with them: 0008 has no API); upgrading again gives empty tables
the writers fill again. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.models.hooks import EventType, Scope
from mailer.storage import Store
from mailer.storage.engine import head_revision
from tests.test_bounce_intake import delivery_lines, sent
from tests.test_migration_0007 import _downgrade
from tests.test_migration_0008 import _tables

pytestmark = pytest.mark.timeout(60)
TABLES = {
    "api_keys", "api_idempotency", "webhook_endpoints", "webhook_events", "webhook_deliveries",
    "webhook_attempts",
}  # fmt: skip
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


async def test_downgrade_to_0008_drops_the_hook_tables_and_keeps_the_ledger(
    store: Store, tmp_path: Path
) -> None:
    """Head with a key, an endpoint and a send of three (events queued for the endpoint) ->
    0008: no new table, the three deliveries still sent -> head: the tables are back and
    empty, the old key unknown, and a new endpoint can be added."""
    _, raw = await store.api_keys.create(
        name="crm", scopes=[Scope.LISTS_READ], actor="admin@example.org", now=NOW
    )
    await store.webhooks.add(
        url="https://hooks.example.org/in", events=list(EventType), description="crm",
        actor="admin@example.org", now=NOW,
    )  # fmt: skip
    send_id, _ = await sent(store, tmp_path)
    assert await store.webhooks.pending() > 0
    before = await _tables(store)
    assert before >= TABLES

    await _downgrade(store, "0008")
    assert await _tables(store) == before - TABLES
    assert [line.status for line in await delivery_lines(store, send_id)] == ["sent"] * 3

    assert await store.upgrade() == ("0008", head_revision())
    assert await _tables(store) == before
    assert await store.webhooks.all() == []
    assert await store.webhooks.pending() == 0
    assert await store.api_keys.find(raw, now=NOW) is None
    added = await store.webhooks.add(
        url="https://hooks.example.org/in", events=[EventType.SEND_FINISHED], description="crm",
        actor="admin@example.org", now=NOW,
    )  # fmt: skip
    assert [e.id for e in await store.webhooks.all()] == [added.id]
    assert [line.status for line in await delivery_lines(store, send_id)] == ["sent"] * 3
