"""Migration 0007 (approvals) on a database of the previous release: every campaign stored
before is approved by the upgrade ("operator (before approvals)" at its creation time, a
confirmation campaign by "system"), so its scheduled sends still reach the scheduler; the rows
are kept; the downgrade takes the columns away again. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, text

from mailer.storage import Store
from mailer.storage import engine as _engine
from mailer.storage.engine import head_revision

pytestmark = pytest.mark.timeout(60)
CREATED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DUE = datetime(2026, 12, 24, 9, 0, tzinfo=UTC)
NEW_COLUMNS = {
    "spec", "version", "updated_by", "submitted_by", "submitted_at", "approved_by",
    "approved_at", "approval", "contributors",
}  # fmt: skip


async def _columns(store: Store) -> set[str]:
    def _names(connection: Connection) -> set[str]:
        return {str(c["name"]) for c in inspect(connection).get_columns("campaigns")}

    async with store.engine.connect() as conn:
        return await conn.run_sync(_names)


async def _downgrade(store: Store, revision: str) -> None:
    def _run(connection: Connection) -> None:
        config = _engine._alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with store.engine.begin() as conn:
        await conn.run_sync(_run)


async def _seed(store: Store) -> None:
    """A list, a scheduled announcement with its send due later, and a list's confirmation
    campaign (raw SQL: the 0006 schema)."""
    t = {"t": CREATED.replace(tzinfo=None), "due": DUE.replace(tzinfo=None)}
    statements = [
        "INSERT INTO lists (slug, title, default_locale, opt_in, public, created_at, updated_at)"
        " VALUES ('r', 'R', 'fr', 'double', true, :t, :t)",
        "INSERT INTO campaigns (name, kind, status, template, subject, body, body_format,"
        " timezone, options, created_at, updated_at) VALUES ('c', 'announcement', 'scheduled',"
        " 'announcement', 'S', 'B', 'markdown', 'Europe/Paris', '{}', :t, :t)",
        "INSERT INTO campaigns (name, kind, status, template, subject, body, body_format,"
        " timezone, options, created_at, updated_at) VALUES ('confirm:r', 'confirmation',"
        " 'scheduled', 'confirm', '', '', 'markdown', 'Europe/Paris', '{}', :t, :t)",
        "INSERT INTO campaign_lists (campaign_id, list_id) VALUES (1, 1)",
        "INSERT INTO sends (campaign_id, key, action, due_at, status, total, sent, failed,"
        " skipped, deferred, created_at, updated_at) VALUES (1, 'announce', 'announcement',"
        " :due, 'scheduled', 0, 0, 0, 0, 0, :t, :t)",
    ]
    async with store.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement), t)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_upgrade_from_0006_approves_what_was_stored_and_downgrade_removes_the_columns(
    store: Store, backend: str
) -> None:
    """0006 -> 0007: the campaigns keep their rows, are approved (confirmation by "system"),
    at version 1, and their scheduled send is still one the scheduler gets; 0007 -> 0006
    drops only the new columns; upgrading again works."""
    await _downgrade(store, "0006")
    before = await _columns(store)
    assert not NEW_COLUMNS & before
    await _seed(store)
    assert await store.upgrade() == ("0006", head_revision())
    assert await _columns(store) == before | NEW_COLUMNS
    news = await store.campaigns.record("c")
    assert (news.status, news.version, news.lists, news.spec) == ("scheduled", 1, ("r",), None)
    assert (news.approved_by, news.approved_at, news.approval) == (
        "operator (before approvals)", CREATED, None,
    )  # fmt: skip
    assert (news.submitted_by, news.updated_by, news.started) == (None, None, False)
    confirm = await store.campaigns.record("confirm:r")
    assert (confirm.approved_by, confirm.approved_at) == ("system", CREATED)
    (send,) = await store.sends.of_campaign(news.id)
    assert await store.sends.scheduled() == [(send.id, DUE)]
    await _downgrade(store, "0006")
    assert await _columns(store) == before
    assert [c.name for c in await store.campaigns.summaries()] == ["c", "confirm:r"]
    assert await store.upgrade() == ("0006", head_revision())
    assert (await store.campaigns.record("c")).approved_by == "operator (before approvals)"
