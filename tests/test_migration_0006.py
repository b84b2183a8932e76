"""Migration 0006 (the console's indexes) on a database of the previous release: the indexes
arrive beside the rows already there, the console's query shapes they were made for read them
(a list's members newest first and a subscriber's deliveries newest first with no sort, a name
prefix with ASCII letters folded), and the downgrade takes them away again. SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Connection, Select, inspect, select, text

from mailer.storage import Store
from mailer.storage import engine as _engine
from mailer.storage.engine import head_revision
from mailer.storage.tables import deliveries, subscriptions

pytestmark = pytest.mark.timeout(60)
NEW = {
    "subscriptions": "ix_subscriptions_list_id_id",
    "subscribers": "ix_subscribers_name_folded",
    "deliveries": "ix_deliveries_subscriber_id_id",
}


async def _indexes(store: Store) -> dict[str, set[str]]:
    def _names(connection: Connection) -> dict[str, set[str]]:
        found = inspect(connection)
        return {t: {str(i["name"]) for i in found.get_indexes(t)} for t in NEW}

    async with store.engine.connect() as conn:
        return await conn.run_sync(_names)


async def _downgrade(store: Store, revision: str) -> None:
    def _run(connection: Connection) -> None:
        config = _engine._alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with store.engine.begin() as conn:
        await conn.run_sync(_run)


async def _upgrade_to(store: Store, revision: str) -> None:
    """Up to ``revision`` only: what later migrations add is theirs to test."""

    def _run(connection: Connection) -> None:
        config = _engine._alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with store.engine.begin() as conn:
        await conn.run_sync(_run)


async def _seed(store: Store) -> None:
    """A list, a subscriber in it, a campaign, a send and its delivery (raw SQL: 0005)."""
    t = {"t": datetime(2026, 12, 2, 9, 0, tzinfo=UTC).replace(tzinfo=None)}
    statements = [
        "INSERT INTO lists (slug, title, default_locale, opt_in, public, created_at, updated_at)"
        " VALUES ('r', 'R', 'fr', 'single', false, :t, :t)",
        "INSERT INTO subscribers (email, public_id, email_key, name, attributes, status,"
        " smtputf8, created_at, updated_at) VALUES ('a@example.org', 'p1', 'a@example.org', 'A',"
        " '{}', 'active', false, :t, :t)",
        "INSERT INTO subscriptions (subscriber_id, list_id, status, source, created_at,"
        " updated_at) VALUES (1, 1, 'subscribed', 'test', :t, :t)",
        "INSERT INTO campaigns (name, kind, status, template, subject, body, body_format,"
        " timezone, options, created_at, updated_at) VALUES ('c', 'announcement', 'scheduled',"
        " 'announcement', 'S', 'B', 'markdown', 'Europe/Paris', '{}', :t, :t)",
        "INSERT INTO sends (campaign_id, key, action, due_at, status, total, sent, failed,"
        " skipped, deferred, created_at, updated_at) VALUES (1, 'announce', 'announcement', :t,"
        " 'done', 1, 1, 0, 0, 0, :t, :t)",
        "INSERT INTO deliveries (send_id, subscriber_id, list_id, status, attempts, created_at,"
        " updated_at) VALUES (1, 1, 1, 'sent', 1, :t, :t)",
    ]
    async with store.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement), t)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_upgrade_from_0005_adds_the_indexes_and_downgrade_removes_them(
    store: Store, backend: str
) -> None:
    """0005 -> 0006 adds the two indexes and keeps the rows; 0006 -> 0005 drops only them."""
    await _downgrade(store, "0005")
    before = await _indexes(store)
    assert not any(NEW[t] in names for t, names in before.items())
    await _seed(store)
    await _upgrade_to(store, "0006")
    after = await _indexes(store)
    assert {t: after[t] - before[t] for t in NEW} == {t: {name} for t, name in NEW.items()}
    await _downgrade(store, "0005")
    assert await _indexes(store) == before
    assert await store.upgrade() == ("0005", head_revision())
    assert {t: NEW[t] in names for t, names in (await _indexes(store)).items()} == dict.fromkeys(
        NEW, True
    )
    assert [s.counts["subscribed"] for s in await store.lists.summaries()] == [1]


def _compiled(store: Store, query: Select[tuple[int]]) -> str:
    return str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))


def _members_page(store: Store) -> str:
    """A list's first page of members: newest subscriptions first."""
    return _compiled(
        store,
        select(subscriptions.c.id)
        .where(subscriptions.c.list_id == 1)
        .order_by(subscriptions.c.id.desc())
        .limit(51),
    )


def _deliveries_page(store: Store) -> str:
    """A subscriber's deliveries: newest first, keyset before an id."""
    return _compiled(
        store,
        select(deliveries.c.id)
        .where(deliveries.c.subscriber_id == 1, deliveries.c.id < 1000)
        .order_by(deliveries.c.id.desc())
        .limit(51),
    )


def _name_prefix(store: Store) -> str:
    """The subscribers whose name begins with "ga", ASCII letters folded, as each database
    reads it from the index (see the comment on the index in tables.py)."""
    if store.engine.dialect.name == "postgresql":
        return "SELECT id FROM subscribers WHERE lower(name) LIKE 'ga%'"
    return (
        "SELECT id FROM subscribers"
        " WHERE name COLLATE NOCASE >= 'ga' AND name COLLATE NOCASE < 'gb'"
    )


async def _plan(store: Store, sql: str) -> str:
    async with store.engine.begin() as conn:
        if store.engine.dialect.name == "postgresql":
            # A test database is tiny: a sequential scan or a sort would win on cost alone.
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            await conn.execute(text("SET LOCAL enable_sort = off"))
            rows = (await conn.execute(text("EXPLAIN " + sql))).scalars().all()
        else:
            rows = [r[3] for r in (await conn.execute(text("EXPLAIN QUERY PLAN " + sql))).all()]
    return "\n".join(str(r) for r in rows)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("shape", "index"),
    [
        (_members_page, NEW["subscriptions"]),
        (_deliveries_page, NEW["deliveries"]),
        (_name_prefix, NEW["subscribers"]),
    ],
    ids=["members", "deliveries", "name"],
)
async def test_the_pages_read_their_index_in_order(
    store: Store, backend: str, shape: Callable[[Store], str], index: str
) -> None:
    """Each query shape is answered from its index, in the index's order: no sort step."""
    await _seed(store)
    plan = await _plan(store, shape(store))
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # SQLite's sort
    assert "Sort" not in plan, plan  # PostgreSQL's
