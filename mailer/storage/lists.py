"""Lists: their rows, their members as the CLI and a send see them, the public ones.

Writes ``lists`` (and no other table); a list import (:meth:`Lists.import_list`) opens the
transaction in which ``imports`` has ``subscribers`` write the members (and, for a dry run,
rolls it back).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import (
    ExportRow,
    ListInfo,
    ListMeta,
    ListSummary,
    OptInMode,
    PublicList,
    Recipient,
    SubscriberStatus,
    SubscriptionStatus,
)
from mailer.storage import lookups
from mailer.storage.database import Database
from mailer.storage.imports import IMPORT_SOURCE_PREFIX, ListImport
from mailer.storage.tables import lists, subscribers, subscriptions, suppressions


class Lists:
    """The lists (``store.lists``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, meta: ListMeta, *, now: datetime) -> int:
        async with self._db.begin() as conn:
            return await _upsert(conn, meta, now)

    async def id_of(self, slug: str) -> int:
        async with self._db.begin() as conn:
            return await lookups.list_id(conn, slug)

    async def summaries(self, slug: str | None = None) -> list[ListSummary]:
        async with self._db.begin() as conn:
            query = select(lists).order_by(lists.c.slug)
            if slug is not None:
                await lookups.list_id(conn, slug)
                query = query.where(lists.c.slug == slug)
            rows = (await conn.execute(query)).all()
            counts_query = select(
                subscriptions.c.list_id, subscriptions.c.status, func.count()
            ).group_by(subscriptions.c.list_id, subscriptions.c.status)
            counts: dict[int, dict[str, int]] = {}
            for list_id, status, n in (await conn.execute(counts_query)).all():
                counts.setdefault(list_id, {})[status] = n
            suppressed_query = (
                select(subscriptions.c.list_id, func.count())
                .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
                .join(suppressions, suppressions.c.email_key == subscribers.c.email_key)
                .where(subscriptions.c.status == SubscriptionStatus.SUBSCRIBED)
                .group_by(subscriptions.c.list_id)
            )
            suppressed: dict[int, int] = dict((await conn.execute(suppressed_query)).all())
        return [
            ListSummary(
                slug=r.slug,
                title=r.title,
                default_locale=r.default_locale,
                opt_in=r.opt_in,
                counts={s.value: counts.get(r.id, {}).get(s.value, 0) for s in SubscriptionStatus},
                suppressed=suppressed.get(r.id, 0),
            )
            for r in rows
        ]

    async def info(self, slug: str) -> ListInfo:
        async with self._db.begin() as conn:
            list_id = await lookups.list_id(conn, slug)
            row = (await conn.execute(select(lists).where(lists.c.id == list_id))).one()
        return ListInfo(
            id=row.id, slug=row.slug, title=row.title, default_locale=row.default_locale
        )

    async def meta(self, slug: str) -> ListMeta | None:
        """The list as stored (title, default locale, opt-in, public); None when unknown.

        What an import into an existing list passes as its ``meta`` to keep them as they are.
        """
        async with self._db.begin() as conn:
            row = (await conn.execute(select(lists).where(lists.c.slug == slug))).one_or_none()
        if row is None:
            return None
        return ListMeta(
            slug=row.slug,
            title=row.title,
            default_locale=row.default_locale,
            opt_in=OptInMode(row.opt_in),
            public=bool(row.public),
        )

    async def public_list(self, slug: str) -> PublicList | None:
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(lists).where(lists.c.slug == slug, lists.c.public))
            ).one_or_none()
        if row is None:
            return None
        return PublicList(row.id, row.slug, row.title, row.default_locale)

    async def public_lists(self) -> list[PublicList]:
        async with self._db.begin() as conn:
            rows = (
                await conn.execute(select(lists).where(lists.c.public).order_by(lists.c.title))
            ).all()
        return [PublicList(r.id, r.slug, r.title, r.default_locale) for r in rows]

    async def recipients(
        self, slug: str, *, email_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[Recipient]:
        """Members who would get mail: subscribed, active, not suppressed; streamed."""
        async with self._db.begin() as conn:
            list_id = await lookups.list_id(conn, slug)
            query = (
                select(subscribers)
                .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
                .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
                .where(
                    subscriptions.c.list_id == list_id,
                    subscriptions.c.status == SubscriptionStatus.SUBSCRIBED,
                    subscribers.c.status == SubscriberStatus.ACTIVE,
                    suppressions.c.id.is_(None),
                )
                .order_by(subscribers.c.id)
                .limit(limit)
            )
            if email_key is not None:
                query = query.where(subscribers.c.email_key == email_key)
            async for row in await conn.stream(query):
                yield Recipient(
                    id=row.id,
                    email=row.email,
                    name=row.name,
                    locale=row.locale,
                    timezone=row.timezone,
                    attributes=dict(row.attributes or {}),
                    smtputf8=row.smtputf8,
                    public_id=row.public_id,
                )

    async def audience(self, slugs: Sequence[str]) -> tuple[dict[str, int], int]:
        """How many members of each list would get mail now (the rule of :meth:`recipients`:
        subscribed, active, not suppressed), and how many people that is across the lists
        (someone on two lists gets one mail); counted in the database. NotFoundError for a
        list that does not exist (any more)."""
        async with self._db.begin() as conn:
            ids = {slug: await lookups.list_id(conn, slug) for slug in slugs}
            counts: dict[str, int] = {}
            for slug, list_id in ids.items():
                query = _would_get([list_id], func.count())
                counts[slug] = int((await conn.execute(query)).scalar() or 0)
            if len(set(ids.values())) <= 1:
                return counts, sum(counts.values()) if ids else 0
            people = _would_get(list(ids.values()), func.count(subscribers.c.id.distinct()))
            return counts, int((await conn.execute(people)).scalar() or 0)

    async def export_rows(self, slug: str) -> AsyncIterator[ExportRow]:
        """Subscribed members of a list, in address order, streamed."""
        async with self._db.begin() as conn:
            list_id = await lookups.list_id(conn, slug)
            query = (
                select(
                    subscribers.c.email,
                    subscribers.c.name,
                    subscribers.c.locale,
                    subscribers.c.timezone,
                    subscribers.c.attributes,
                )
                .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
                .where(
                    subscriptions.c.list_id == list_id,
                    subscriptions.c.status == SubscriptionStatus.SUBSCRIBED,
                )
                .order_by(subscribers.c.email_key)
            )
            result = await conn.stream(query)
            async for email, name, locale, timezone, attributes in result:
                yield ExportRow(email, name, locale, timezone, dict(attributes or {}))

    @asynccontextmanager
    async def import_list(
        self, meta: ListMeta, *, source: str, now: datetime, dry_run: bool = False
    ) -> AsyncIterator[ListImport]:
        """One transaction for one list file: feed it batches, then :meth:`ListImport.finish`.

        ``source`` is the consent source written on the subscriptions it makes (cut to the
        column's 200 characters); it starts with ``import:``, which is how a later import
        knows the members that left its file. ``dry_run``: everything is done as it would be
        (the list upserted, members written, the tally counted), then rolled back when the
        block ends, so the tally is what applying would do and nothing is stored.
        """
        if not source.startswith(IMPORT_SOURCE_PREFIX):
            raise ValueError(f"an import's source starts with {IMPORT_SOURCE_PREFIX!r}: {source!r}")
        # A write turn: in the daemon (a console import), this process's other writers (the
        # sends' results, sign-ins) queue behind the import instead of failing on SQLite's
        # busy timeout while it holds the write lock.
        async with self._db.begin(write=True) as conn:
            if self._db.capabilities.plan_cache_mode:
                # asyncpg prepares statements; a generic plan made while the tables were
                # small turns the per-batch look-ups quadratic on a large first import.
                await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            list_id = await _upsert(conn, meta, now)
            yield ListImport(conn, list_id=list_id, source=source[:200], now=now)
            if dry_run:
                # The block ended without an error: undo it all. The transaction is then
                # closed, and leaving ``begin`` has nothing left to commit.
                await conn.rollback()


async def _upsert(conn: AsyncConnection, meta: ListMeta, now: datetime) -> int:
    found = (await conn.execute(select(lists).where(lists.c.slug == meta.slug))).one_or_none()
    values = {
        "title": meta.title,
        "default_locale": meta.default_locale,
        "opt_in": meta.opt_in.value,
        "public": meta.public,
    }
    if found is None:
        result = await conn.execute(
            insert(lists).values(slug=meta.slug, created_at=now, updated_at=now, **values)
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]
    if any(getattr(found, k) != v for k, v in values.items()):
        await conn.execute(
            update(lists).where(lists.c.id == found.id).values(updated_at=now, **values)
        )
    return int(found.id)


def _would_get(list_ids: list[int], counted: Any) -> Any:
    """``counted`` over the members of ``list_ids`` who would get mail now."""
    return (
        select(counted)
        .select_from(subscriptions)
        .join(subscribers, subscriptions.c.subscriber_id == subscribers.c.id)
        .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
        .where(
            subscriptions.c.list_id.in_(list_ids),
            subscriptions.c.status == SubscriptionStatus.SUBSCRIBED,
            subscribers.c.status == SubscriberStatus.ACTIVE,
            suppressions.c.id.is_(None),
        )
    )
