"""A list import's new rows: one COPY on PostgreSQL (ids from the sequence first), multi-row
INSERTs on SQLite; either way every column as an INSERT would store it, the rows given back
as stored, and a constraint that fails fails the whole batch with nothing half-written."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import SubscriberRow
from mailer.storage import Store
from mailer.storage.engine import capabilities
from mailer.storage.subscribers import insert_subscribers, insert_subscriptions
from mailer.storage.tables import lists, subscribers, subscriptions

NOW = datetime(2026, 12, 4, 21, 0, 7, 123456, tzinfo=UTC)


def rows(start: int, count: int) -> list[SubscriberRow]:
    return [
        SubscriberRow(
            line=i + 2,
            email=f"Ré{i}@Exemple.fr" if i % 3 == 0 else f"r{i}@example.org",
            key=f"ré{i}@exemple.fr" if i % 3 == 0 else f"r{i}@example.org",
            smtputf8=i % 3 == 0,
            name=None if i % 4 == 0 else f"Zoé « {i} » O'Brien",
            locale=None if i % 2 else "fr",
            timezone="Europe/Paris" if i % 5 == 0 else None,
            attributes={} if i % 2 else {"org": 'Hôpital "Saint"-Louis', "n": str(i)},
        )
        for i in range(start, start + count)
    ]


async def a_list(conn: AsyncConnection) -> int:
    made = await conn.execute(
        insert(lists).values(
            slug="essai", title="Essai", default_locale="fr", opt_in="single",
            created_at=NOW, updated_at=NOW,
        ).returning(lists.c.id)
    )  # fmt: skip
    return int(made.scalar_one())


def subscribed(made: list[Any], list_id: int) -> list[dict[str, Any]]:
    return [
        {"subscriber_id": r.id, "list_id": list_id, "status": "subscribed",
         "source": "import:essai.csv", "consent_at": NOW, "confirmed_at": NOW,
         "created_at": NOW, "updated_at": NOW}
        for r in made
    ]  # fmt: skip


async def test_new_subscribers_are_stored_and_given_back_as_an_insert_would(
    store: Store, backend: str
) -> None:
    async with store.engine.begin() as conn:
        assert capabilities(conn.dialect).copy == (backend == "postgresql")
        await conn.execute(insert(subscribers), [  # one row before, by a plain INSERT
            {"email": "avant@example.org", "email_key": "avant@example.org", "status": "active",
             "created_at": NOW, "updated_at": NOW},
        ])  # fmt: skip
        given = await insert_subscribers(conn, rows(0, 120), NOW)
        stored = (await conn.execute(select(subscribers).order_by(subscribers.c.id))).all()
    first, *rest = stored
    assert sorted(tuple(r) for r in given) == [tuple(r) for r in rest]
    assert [r.id for r in rest] == list(range(first.id + 1, first.id + 121))
    by_key = {r.email_key: r for r in rest}
    for row in rows(0, 120):
        got = by_key[row.key]
        assert (got.email, got.name, got.locale, got.timezone) == (
            row.email, row.name or "", row.locale, row.timezone,
        )  # fmt: skip
        assert got.attributes == row.attributes
        assert got.smtputf8 is row.smtputf8
        assert got.status == "active"
        assert got.created_at == got.updated_at == NOW
        assert got.legacy_links is None
        assert len(got.public_id) >= 22
    assert len({r.public_id for r in stored}) == len(stored)


async def test_subscriptions_of_a_batch_are_stored_whole(store: Store) -> None:
    async with store.engine.begin() as conn:
        list_id = await a_list(conn)
        made = await insert_subscribers(conn, rows(0, 30), NOW)
        values = subscribed(made, list_id)
        await insert_subscriptions(conn, values)
        stored = (await conn.execute(select(subscriptions).order_by(subscriptions.c.id))).all()
    assert sorted(r.subscriber_id for r in stored) == sorted(r.id for r in made)
    assert {(r.status, r.source, r.consent_at, r.consent_ip) for r in stored} == {
        ("subscribed", "import:essai.csv", NOW, None)
    }


async def test_a_key_already_stored_fails_the_whole_batch(store: Store) -> None:
    async with store.engine.begin() as conn:
        await insert_subscribers(conn, rows(0, 10), NOW)
    with pytest.raises(IntegrityError):
        async with store.engine.begin() as conn:
            await insert_subscribers(conn, rows(5, 10), NOW)  # 5 to 9 are stored already
    async with store.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(subscribers))).scalar()
    assert count == 10


async def test_the_rows_are_in_the_callers_transaction_even_as_its_first_statement(
    store: Store,
) -> None:
    async with store.engine.begin() as conn:
        list_id = await a_list(conn)
        made = await insert_subscribers(conn, rows(0, 10), NOW)
    async with store.engine.connect() as conn:
        await conn.begin()
        await insert_subscriptions(conn, subscribed(made, list_id))  # its first statement
        await conn.rollback()
        count = (await conn.execute(select(func.count()).select_from(subscriptions))).scalar()
    assert count == 0


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_the_callers_plan_setting_is_put_back_after_the_copy(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        await insert_subscribers(conn, rows(0, 10), NOW)
        assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar() == "force_custom_plan"
