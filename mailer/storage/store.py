"""The Store: every SQL statement about lists, subscribers, subscriptions and suppressions.

A list import runs in one transaction (:meth:`Store.import_list`): the caller streams
batches of already-validated rows in, and either everything lands or nothing does.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Container, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Row, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailer.errors import NotFoundError, StateError, StorageError, StorageUnavailable
from mailer.models import (
    ListInfo,
    OptInMode,
    Recipient,
    SubscriberStatus,
    SubscriptionStatus,
    SuppressionReason,
)
from mailer.settings import Settings
from mailer.storage import engine as _engine
from mailer.storage.pages import (
    Pages,
    subscribed_values,
    unsubscribe_rows,
    write_subscription,
)
from mailer.storage.sending import Sending
from mailer.storage.tables import (
    lists,
    subscribers,
    subscriptions,
    suppression_events,
    suppressions,
)

IMPORT_SOURCE_PREFIX = "import:"


@dataclass(frozen=True, slots=True)
class ListMeta:
    slug: str
    title: str
    default_locale: str = "fr"
    opt_in: OptInMode = OptInMode.SINGLE
    public: bool = False


@dataclass(frozen=True, slots=True)
class ListSummary:
    slug: str
    title: str
    default_locale: str
    opt_in: str
    counts: dict[str, int]
    suppressed: int


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    """A validated row to import: ``email`` normalised, ``key`` its comparison key."""

    line: int
    email: str
    key: str
    smtputf8: bool
    name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExportRow:
    email: str
    name: str
    locale: str | None
    timezone: str | None
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SuppressionEvent:
    """One entry of an address's suppression history (append-only)."""

    at: datetime
    action: str  # suppress, unsuppress
    reason: str
    detail: str
    actor: str  # who: "cli:<unix user>", "send <id>", "web"...


@dataclass(frozen=True, slots=True)
class SubscriberView:
    id: int
    email: str
    name: str
    locale: str | None
    timezone: str | None
    attributes: dict[str, Any]
    status: str
    created_at: datetime
    subscriptions: list[tuple[str, str, str]]  # (list slug, status, source)
    suppression: str | None
    suppression_history: list[SuppressionEvent] = field(default_factory=list)


@dataclass(slots=True)
class ImportTally:
    """What one import did to the database (filled in by :class:`ListImport`)."""

    added: int = 0
    subscribed_existing: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_unsubscribed: list[tuple[int, str]] = field(default_factory=list)
    suppressed: list[tuple[int, str]] = field(default_factory=list)
    merged: list[tuple[int, str, str]] = field(default_factory=list)  # line, file, stored
    vanished: list[str] = field(default_factory=list)
    pruned: int = 0


class _Turns:
    """One SQLite writer of this process at a time: first come, first served, urgent first.

    SQLite has one writer. Without this, writers wait in SQLite's busy handler, whose sleeps
    grow to 100 ms and favour no one, so a small send's claim could lose to a large send's
    group commits again and again. Here they queue in order, and a claim (``urgent``: the
    first message of a send waits for it) goes ahead of results waiting to be recorded.
    """

    def __init__(self) -> None:
        self._busy = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def turn(self, *, urgent: bool = False) -> AsyncIterator[None]:
        if self._busy:
            waiter = asyncio.get_running_loop().create_future()
            (self._urgent if urgent else self._normal).append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._next()  # the turn came with the cancellation: pass it on
                raise
        self._busy = True
        try:
            yield
        finally:
            self._next()

    def _next(self) -> None:
        """Hand the turn to the next waiter (it stays busy), or free it."""
        for queue in (self._urgent, self._normal):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():  # a cancelled waiter is skipped
                    waiter.set_result(None)
                    return
        self._busy = False


class Store:
    """Owns the engine; use as ``async with Store.open(settings) as store``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sending = Sending(self)
        self.pages = Pages(self)
        self._write_turns = _Turns()

    @classmethod
    def open(cls, settings: Settings) -> Store:
        return cls(_engine.create_engine(settings))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def _begin(
        self, *, write: bool = False, urgent: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """A transaction; driver errors become StorageError / StorageUnavailable.

        ``write``: the transaction writes; on SQLite it takes its turn among this process's
        writers first (see :class:`_Turns`), ahead of the others when ``urgent``. Other
        processes still meet SQLite's busy timeout.
        """
        if write and self.dialect == "sqlite":
            async with self._write_turns.turn(urgent=urgent), self._begin() as conn:
                yield conn
            return
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (NotFoundError, StateError):
            raise
        except IntegrityError as exc:
            raise StorageError(f"the database refused the change: {exc.orig}") from None
        except (SQLAlchemyError, OSError) as exc:
            raise StorageUnavailable(_engine.describe_failure(self.engine, exc)) from None

    @asynccontextmanager
    async def once_across_daemons(self, name: str) -> AsyncIterator[bool]:
        """Whether this process may do the periodic job ``name`` now: on PostgreSQL, a
        session advisory lock that one daemon of the cluster holds while it works (the others
        get False and skip the job); on SQLite always True (one daemon per file)."""
        if self.dialect != "postgresql":
            yield True
            return
        key = int.from_bytes(
            hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
        )
        try:
            async with self.engine.connect() as conn:
                got = bool(
                    (
                        await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
                    ).scalar()
                )
                await conn.commit()
                try:
                    yield got
                finally:
                    if got:
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        await conn.commit()
        except (SQLAlchemyError, OSError) as exc:
            raise StorageUnavailable(_engine.describe_failure(self.engine, exc)) from None

    async def ping(self) -> None:
        async with self._begin() as conn:
            await conn.execute(text("SELECT 1"))

    async def upgrade(self) -> tuple[str | None, str | None]:
        return await _engine.upgrade(self.engine)

    async def revision(self) -> str | None:
        return await _engine.current_revision(self.engine)

    # --- lists ------------------------------------------------------------------------

    async def upsert_list(self, meta: ListMeta, *, now: datetime) -> int:
        async with self._begin() as conn:
            return await _upsert_list(conn, meta, now)

    async def list_id(self, slug: str) -> int:
        async with self._begin() as conn:
            return await _list_id(conn, slug)

    async def list_summaries(self, slug: str | None = None) -> list[ListSummary]:
        async with self._begin() as conn:
            query = select(lists).order_by(lists.c.slug)
            if slug is not None:
                await _list_id(conn, slug)
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

    async def list_info(self, slug: str) -> ListInfo:
        async with self._begin() as conn:
            list_id = await _list_id(conn, slug)
            row = (await conn.execute(select(lists).where(lists.c.id == list_id))).one()
        return ListInfo(
            id=row.id, slug=row.slug, title=row.title, default_locale=row.default_locale
        )

    async def recipients(
        self, slug: str, *, email_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[Recipient]:
        """Members who would get mail: subscribed, active, not suppressed; streamed."""
        async with self._begin() as conn:
            list_id = await _list_id(conn, slug)
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

    async def export_rows(self, slug: str) -> AsyncIterator[ExportRow]:
        """Subscribed members of a list, in address order, streamed."""
        async with self._begin() as conn:
            list_id = await _list_id(conn, slug)
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

    # --- import -----------------------------------------------------------------------

    @asynccontextmanager
    async def import_list(
        self, meta: ListMeta, *, source: str, now: datetime
    ) -> AsyncIterator[ListImport]:
        """One transaction for one list file: feed it batches, then :meth:`ListImport.finish`."""
        async with self._begin() as conn:
            if self.dialect == "postgresql":
                # asyncpg prepares statements; a generic plan made while the tables were
                # small turns the per-batch look-ups quadratic on a large first import.
                await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            list_id = await _upsert_list(conn, meta, now)
            yield ListImport(conn, list_id=list_id, source=source, now=now)

    # --- subscribers ------------------------------------------------------------------

    async def add_subscriber(
        self, row: SubscriberRow, *, slug: str, source: str, now: datetime, force: bool = False
    ) -> str:
        """Subscribe one address to a list; return what happened in a few words."""
        async with self._begin() as conn:
            list_id = await _list_id(conn, slug)
            if await _suppressed_keys(conn, [row.key]):
                raise StateError(
                    f"{row.email} is suppressed and is never mailed again; it cannot be subscribed"
                )
            sub_id = await _subscriber_id(conn, row.key)
            if sub_id is None:
                sub_id = await _insert_subscriber(conn, row, now)
            current = (
                await conn.execute(
                    select(subscriptions.c.status).where(
                        subscriptions.c.subscriber_id == sub_id, subscriptions.c.list_id == list_id
                    )
                )
            ).scalar()
            if current == SubscriptionStatus.SUBSCRIBED:
                return f"{row.email} is already subscribed to {slug}"
            if current == SubscriptionStatus.UNSUBSCRIBED and not force:
                raise StateError(
                    f"{row.email} unsubscribed from {slug}; re-subscribe only at their request, "
                    "with --force"
                )
            await write_subscription(
                conn, sub_id, list_id, exists=current is not None,
                values=subscribed_values(source, now), now=now,
            )  # fmt: skip
            return f"{row.email} subscribed to {slug}"

    async def remove_subscriber(self, key: str, *, slug: str | None) -> str:
        """Remove from one list, or erase the subscriber and their history everywhere."""
        async with self._begin() as conn:
            sub_id = await _require_subscriber(conn, key)
            if slug is None:
                await conn.execute(
                    delete(subscriptions).where(subscriptions.c.subscriber_id == sub_id)
                )
                await conn.execute(delete(subscribers).where(subscribers.c.id == sub_id))
                return "erased the subscriber and their subscriptions"
            list_id = await _list_id(conn, slug)
            result = await conn.execute(
                delete(subscriptions).where(
                    subscriptions.c.subscriber_id == sub_id, subscriptions.c.list_id == list_id
                )
            )
            if not result.rowcount:
                raise NotFoundError(f"the subscriber is not on the list {slug!r}")
            return f"removed from {slug}"

    async def unsubscribe(self, key: str, *, slug: str | None, source: str, now: datetime) -> int:
        """Mark subscriptions unsubscribed (one list or all); return how many changed."""
        async with self._begin() as conn:
            sub_id = await _require_subscriber(conn, key)
            list_id = None if slug is None else await _list_id(conn, slug)
            return await unsubscribe_rows(conn, sub_id, list_id, source=source, now=now)

    async def suppress(
        self,
        key: str,
        *,
        reason: SuppressionReason,
        detail: str,
        now: datetime,
        actor: str = "system",
    ) -> bool:
        """Add a suppression, with its event in the history (who, when, why); return False
        (and write nothing) if the address was already suppressed."""
        async with self._begin() as conn:
            if await _suppressed_keys(conn, [key]):
                return False
            await conn.execute(
                insert(suppressions).values(
                    email_key=key, reason=reason.value, detail=detail, created_at=now
                )
            )
            await conn.execute(
                insert(suppression_events).values(
                    email_key=key, action="suppress", reason=reason.value, detail=detail,
                    actor=actor, at=now,
                )
            )  # fmt: skip
            return True

    async def unsuppress(self, key: str, *, why: str, actor: str, now: datetime) -> str:
        """Lift a suppression: the address may be mailed again (its subscriptions decide).
        The history keeps the suppression and this lift, with who, when and why. Returns
        the reason it was suppressed for; StateError if it is not suppressed."""
        async with self._begin() as conn:
            reason = (
                await conn.execute(
                    select(suppressions.c.reason).where(suppressions.c.email_key == key)
                )
            ).scalar()
            if reason is None:
                raise StateError(f"{key} is not suppressed; nothing to lift")
            await conn.execute(delete(suppressions).where(suppressions.c.email_key == key))
            await conn.execute(
                insert(suppression_events).values(
                    email_key=key, action="unsuppress", reason=SuppressionReason.MANUAL.value,
                    detail=why, actor=actor, at=now,
                )
            )  # fmt: skip
            return str(reason)

    async def show_subscriber(self, key: str) -> SubscriberView:
        async with self._begin() as conn:
            sub_id = await _require_subscriber(conn, key)
            row = (await conn.execute(select(subscribers).where(subscribers.c.id == sub_id))).one()
            subs = (
                await conn.execute(
                    select(lists.c.slug, subscriptions.c.status, subscriptions.c.source)
                    .join(lists, lists.c.id == subscriptions.c.list_id)
                    .where(subscriptions.c.subscriber_id == sub_id)
                    .order_by(lists.c.slug)
                )
            ).all()
            reason = (
                await conn.execute(
                    select(suppressions.c.reason).where(suppressions.c.email_key == key)
                )
            ).scalar()
            history = (
                await conn.execute(
                    select(suppression_events)
                    .where(suppression_events.c.email_key == key)
                    .order_by(suppression_events.c.at, suppression_events.c.id)
                )
            ).all()
            return SubscriberView(
                id=row.id,
                email=row.email,
                name=row.name,
                locale=row.locale,
                timezone=row.timezone,
                attributes=dict(row.attributes or {}),
                status=row.status,
                created_at=row.created_at,
                subscriptions=[(r[0], r[1], r[2]) for r in subs],
                suppression=reason,
                suppression_history=[
                    SuppressionEvent(
                        at=h.at, action=h.action, reason=h.reason, detail=h.detail,
                        actor=h.actor,
                    )
                    for h in history
                ],
            )  # fmt: skip


class ListImport:
    """The database side of one list import, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection, *, list_id: int, source: str, now: datetime) -> None:
        self._conn = conn
        self._list_id = list_id
        self._source = source
        self._now = now
        self.tally = ImportTally()

    async def add(self, batch: Sequence[SubscriberRow]) -> None:
        """Merge a batch of rows whose keys are unique within the file."""
        if not batch:
            return
        conn, tally = self._conn, self.tally
        keys = [r.key for r in batch]
        suppressed = await _suppressed_keys(conn, keys)
        existing = {
            r.email_key: r
            for r in (
                await conn.execute(select(subscribers).where(subscribers.c.email_key.in_(keys)))
            ).all()
        }
        new_rows = [r for r in batch if r.key not in existing and r.key not in suppressed]
        if new_rows:
            await conn.execute(
                insert(subscribers), [_subscriber_values(r, self._now) for r in new_rows]
            )
            for r in (
                await conn.execute(
                    select(subscribers).where(
                        subscribers.c.email_key.in_([r.key for r in new_rows])
                    )
                )
            ).all():
                existing[r.email_key] = r
        fresh = {r.key for r in new_rows}
        # Only subscribers that existed before this batch can have a subscription already.
        ids = [existing[r.key].id for r in batch if r.key in existing and r.key not in fresh]
        current: dict[int, str] = {}
        if ids:
            query = select(subscriptions.c.subscriber_id, subscriptions.c.status).where(
                subscriptions.c.list_id == self._list_id,
                subscriptions.c.subscriber_id.in_(ids),
            )
            current = dict((await conn.execute(query)).all())
        to_subscribe: list[dict[str, Any]] = []
        for row in batch:
            if row.key in suppressed:
                tally.suppressed.append((row.line, row.email))
                continue
            stored = existing[row.key]
            if row.key not in fresh:
                if stored.email != row.email:
                    tally.merged.append((row.line, row.email, stored.email))
                changes = _changes(stored, row)
                if changes:
                    await conn.execute(
                        update(subscribers)
                        .where(subscribers.c.id == stored.id)
                        .values(updated_at=self._now, **changes)
                    )
                    tally.updated += 1
            status = current.get(stored.id)
            if status == SubscriptionStatus.UNSUBSCRIBED:
                tally.kept_unsubscribed.append((row.line, row.email))
            elif status is None:
                to_subscribe.append(
                    {
                        "subscriber_id": stored.id,
                        "list_id": self._list_id,
                        "status": SubscriptionStatus.SUBSCRIBED.value,
                        "source": self._source,
                        "consent_at": self._now,
                        "confirmed_at": self._now,
                        "created_at": self._now,
                        "updated_at": self._now,
                    }
                )
                if row.key in fresh:
                    tally.added += 1
                else:
                    tally.subscribed_existing += 1
            elif row.key not in fresh and not _changes(stored, row):
                tally.unchanged += 1
        if to_subscribe:
            await conn.execute(insert(subscriptions), to_subscribe)

    async def finish(self, seen: Container[str], *, prune: bool) -> ImportTally:
        """Report (and with ``prune`` remove) imported members absent from the file."""
        query = (
            select(subscriptions.c.id, subscribers.c.email, subscribers.c.email_key)
            .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
            .where(
                subscriptions.c.list_id == self._list_id,
                subscriptions.c.status != SubscriptionStatus.UNSUBSCRIBED,
                subscriptions.c.source.startswith(IMPORT_SOURCE_PREFIX),
            )
            .order_by(subscribers.c.email_key)
        )
        gone: list[int] = []
        async for sub_id, email, key in await self._conn.stream(query):
            if key not in seen:
                self.tally.vanished.append(email)
                gone.append(sub_id)
        if prune:
            for start in range(0, len(gone), 500):
                chunk = gone[start : start + 500]
                await self._conn.execute(delete(subscriptions).where(subscriptions.c.id.in_(chunk)))
            self.tally.pruned = len(gone)
        return self.tally


# --- helpers (inside a transaction) -------------------------------------------------------


async def _upsert_list(conn: AsyncConnection, meta: ListMeta, now: datetime) -> int:
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


async def _list_id(conn: AsyncConnection, slug: str) -> int:
    found = (await conn.execute(select(lists.c.id).where(lists.c.slug == slug))).scalar()
    if found is None:
        known = (await conn.execute(select(lists.c.slug).order_by(lists.c.slug))).scalars().all()
        hint = f"; known lists: {', '.join(known)}" if known else "; no list is loaded yet"
        raise NotFoundError(f"unknown list {slug!r}{hint}")
    return int(found)


async def _subscriber_id(conn: AsyncConnection, key: str) -> int | None:
    found = (
        await conn.execute(select(subscribers.c.id).where(subscribers.c.email_key == key))
    ).scalar()
    return None if found is None else int(found)


async def _require_subscriber(conn: AsyncConnection, key: str) -> int:
    found = await _subscriber_id(conn, key)
    if found is None:
        raise NotFoundError(f"no subscriber with the address {key}")
    return found


async def _suppressed_keys(conn: AsyncConnection, keys: Iterable[str]) -> set[str]:
    keys = list(keys)
    if not keys:
        return set()
    query = select(suppressions.c.email_key).where(suppressions.c.email_key.in_(keys))
    return set((await conn.execute(query)).scalars())


async def _insert_subscriber(conn: AsyncConnection, row: SubscriberRow, now: datetime) -> int:
    result = await conn.execute(insert(subscribers).values(**_subscriber_values(row, now)))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def _subscriber_values(row: SubscriberRow, now: datetime) -> dict[str, Any]:
    return {
        "email": row.email,
        "email_key": row.key,
        "name": row.name or "",
        "locale": row.locale,
        "timezone": row.timezone,
        "attributes": row.attributes,
        "status": SubscriberStatus.ACTIVE.value,
        "smtputf8": row.smtputf8,
        "created_at": now,
        "updated_at": now,
    }


def _changes(stored: Row[Any], row: SubscriberRow) -> dict[str, Any]:
    """Fields the file sets differently from the database (a column left out changes nothing)."""
    changes: dict[str, Any] = {}
    if row.name is not None and row.name != stored.name:
        changes["name"] = row.name
    if row.locale is not None and row.locale != stored.locale:
        changes["locale"] = row.locale
    if row.timezone is not None and row.timezone != stored.timezone:
        changes["timezone"] = row.timezone
    if row.attributes and {**(stored.attributes or {}), **row.attributes} != (
        stored.attributes or {}
    ):
        changes["attributes"] = {**(stored.attributes or {}), **row.attributes}
    return changes


__all__ = [
    "IMPORT_SOURCE_PREFIX",
    "ImportTally",
    "ListImport",
    "ListMeta",
    "ListSummary",
    "Store",
    "SubscriberRow",
    "SubscriberView",
    "SuppressionEvent",
]
