"""Subscribers, their subscriptions and their consent history.

Writes ``subscribers``, ``subscriptions`` and ``consent_events`` (and no other table): the
CLI's add / remove / unsubscribe / suppress / unsuppress / show (:class:`Subscribers`,
``store.subscribers``), and, as functions inside the caller's transaction, what a list
import (``imports``) and the subscriber pages (``consent``) change. Suppressions are written
by ``suppressions``.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.addresses import Address
from mailer.errors import NotFoundError, StateError
from mailer.models import (
    ConsentEvent,
    EventType,
    SubscriberRow,
    SubscriberStatus,
    SubscriberView,
    SubscriptionStatus,
    SuppressionReason,
)
from mailer.storage import bulk, lookups, outbox, suppressions
from mailer.storage.database import Database
from mailer.storage.engine import capabilities
from mailer.storage.tables import (
    consent_events,
    lists,
    new_public_id,
    subscribers,
    subscriptions,
)


class Subscribers:
    """One subscriber at a time, as staff change them (``store.subscribers``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self, row: SubscriberRow, *, slug: str, source: str, now: datetime, force: bool = False
    ) -> str:
        """Subscribe one address to a list; return what happened in a few words."""
        async with self._db.begin(write=True) as conn:
            list_id = await lookups.list_id(conn, slug)
            if await lookups.suppressed_keys(conn, [row.key]):
                raise StateError(
                    f"{row.email} is suppressed and is never mailed again; it cannot be subscribed"
                )
            sub_id = await lookups.subscriber_id(conn, row.key)
            if sub_id is None:
                sub_id = await insert_subscriber(conn, row, now)
            current = await subscription_status(conn, sub_id, list_id)
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

    async def remove(self, key: str, *, slug: str | None) -> str:
        """Remove from one list, or erase the subscriber and their history everywhere."""
        async with self._db.begin(write=True) as conn:
            sub_id = await lookups.require_subscriber(conn, key)
            if slug is None:
                await conn.execute(
                    delete(subscriptions).where(subscriptions.c.subscriber_id == sub_id)
                )
                await conn.execute(delete(subscribers).where(subscribers.c.id == sub_id))
                return "erased the subscriber and their subscriptions"
            list_id = await lookups.list_id(conn, slug)
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
        async with self._db.begin(write=True) as conn:
            sub_id = await lookups.require_subscriber(conn, key)
            list_id = None if slug is None else await lookups.list_id(conn, slug)
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
        async with self._db.begin(write=True) as conn:
            if await lookups.suppressed_keys(conn, [key]):
                return False
            await suppressions.add(conn, key, reason=reason, detail=detail, actor=actor, now=now)
            return True

    async def unsuppress(self, key: str, *, why: str, actor: str, now: datetime) -> str:
        """Lift a suppression: the address may be mailed again (its subscriptions decide).
        The history keeps the suppression and this lift, with who, when and why. Returns
        the reason it was suppressed for; StateError if it is not suppressed."""
        async with self._db.begin(write=True) as conn:
            reason = await lookups.suppression_reason(conn, key)
            if reason is None:
                raise StateError(f"{key} is not suppressed; nothing to lift")
            await suppressions.lift(conn, key, why=why, actor=actor, now=now)
            return reason

    async def show(self, key: str) -> SubscriberView:
        async with self._db.begin() as conn:
            sub_id = await lookups.require_subscriber(conn, key)
            row = (await conn.execute(select(subscribers).where(subscribers.c.id == sub_id))).one()
            subs = (
                await conn.execute(
                    select(lists.c.slug, subscriptions.c.status, subscriptions.c.source)
                    .join(lists, lists.c.id == subscriptions.c.list_id)
                    .where(subscriptions.c.subscriber_id == sub_id)
                    .order_by(lists.c.slug)
                )
            ).all()
            reason = await lookups.suppression_reason(conn, key)
            history = await suppressions.history(conn, key)
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
                suppression_history=history,
            )


# --- writers inside the caller's transaction -------------------------------------------------


async def insert_subscriber(conn: AsyncConnection, row: SubscriberRow, now: datetime) -> int:
    result = await conn.execute(insert(subscribers).values(**subscriber_values(row, now)))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def insert_subscribers(
    conn: AsyncConnection, rows: Sequence[SubscriberRow], now: datetime
) -> list[Any]:
    """Insert new subscribers (keys not stored yet); return their rows as stored (in any
    order), each with the columns as attributes. On PostgreSQL they go in one COPY, their
    ids taken from the sequence first (:mod:`~mailer.storage.bulk`); elsewhere, with
    RETURNING, in a few multi-row INSERTs ("insertmanyvalues"), where asyncpg's executemany
    ran one INSERT per row, and no second query reads them back."""
    values = [subscriber_values(r, now) for r in rows]
    if not capabilities(conn.dialect).copy:
        statement = insert(subscribers).returning(*subscribers.c)
        return list((await conn.execute(statement, values)).all())
    ids = await bulk.next_ids(conn, subscribers, len(values))
    for value, new_id in zip(values, ids, strict=True):
        value.update(id=new_id, public_id=new_public_id(), legacy_links=None)
    await bulk.insert_rows(conn, subscribers, values)
    return [_Stored(**value) for value in values]


_Stored = namedtuple("_Stored", [c.name for c in subscribers.c])  # type: ignore[misc]


async def insert_web_subscriber(
    conn: AsyncConnection, address: Address, *, name: str, locale: str, now: datetime
) -> int:
    """A subscriber made by the sign-up form (no time zone, no attributes yet)."""
    result = await conn.execute(
        insert(subscribers).values(
            email=address.email, email_key=address.key, name=name, locale=locale,
            timezone=None, attributes={}, status=SubscriberStatus.ACTIVE.value,
            smtputf8=address.smtputf8, created_at=now, updated_at=now,
        )
    )  # fmt: skip
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def update_subscriber(
    conn: AsyncConnection, subscriber_id: int, changes: dict[str, Any], *, now: datetime
) -> None:
    """Change some fields of a subscriber (name, locale, time zone, attributes)."""
    await conn.execute(
        update(subscribers)
        .where(subscribers.c.id == subscriber_id)
        .values(updated_at=now, **changes)
    )


def subscriber_values(row: SubscriberRow, now: datetime) -> dict[str, Any]:
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


async def subscription_status(conn: AsyncConnection, subscriber_id: int, list_id: int) -> Any:
    """The status of the (subscriber, list) subscription; None when there is none."""
    return (
        await conn.execute(
            select(subscriptions.c.status).where(
                subscriptions.c.subscriber_id == subscriber_id, subscriptions.c.list_id == list_id
            )
        )
    ).scalar()


async def insert_subscriptions(conn: AsyncConnection, values: list[dict[str, Any]]) -> None:
    """Insert new subscriptions (a list import's batch): one COPY on PostgreSQL, a few
    multi-row INSERTs elsewhere (see :func:`insert_subscribers`)."""
    await bulk.insert_rows(conn, subscriptions, values)


async def delete_subscriptions(conn: AsyncConnection, ids: Sequence[int]) -> None:
    """Remove subscriptions by id, 500 at a time (a list import's prune)."""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        await conn.execute(delete(subscriptions).where(subscriptions.c.id.in_(chunk)))


async def write_subscription(
    conn: AsyncConnection,
    subscriber_id: int,
    list_id: int,
    *,
    exists: bool,
    values: dict[str, Any],
    now: datetime,
) -> None:
    """Insert the (subscriber, list) subscription, or update the one that ``exists``. A
    subscription made active here is written to the consent history too."""
    if values.get("status") == SubscriptionStatus.SUBSCRIBED:
        await record_consent(
            conn, subscriber_id, list_id, ConsentEvent.SUBSCRIBED,
            source=str(values.get("source", "")), ip=values.get("consent_ip"), now=now,
        )  # fmt: skip
    if exists:
        await conn.execute(
            update(subscriptions)
            .where(
                subscriptions.c.subscriber_id == subscriber_id,
                subscriptions.c.list_id == list_id,
            )
            .values(**values)
        )
    else:
        await conn.execute(
            insert(subscriptions).values(
                subscriber_id=subscriber_id, list_id=list_id, created_at=now, **values
            )
        )


async def confirm_subscription(
    conn: AsyncConnection, subscriber_id: int, list_id: int, nonce: str, values: dict[str, Any]
) -> bool:
    """Make the pending request whose nonce is ``nonce`` active; False if another request
    (or a concurrent confirmation) took its place."""
    changed = await conn.execute(
        update(subscriptions)
        .where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.list_id == list_id,
            subscriptions.c.confirm_nonce == nonce,
        )
        .values(**values)
    )
    return bool(changed.rowcount)


async def unsubscribe_rows(
    conn: AsyncConnection, subscriber_id: int, list_id: int | None, *, source: str, now: datetime
) -> int:
    """Unsubscribe from one list (``list_id`` None: every list), recording when and how;
    subscriptions already unsubscribed are left as they were. Returns rows changed."""
    query = update(subscriptions).where(
        subscriptions.c.subscriber_id == subscriber_id,
        subscriptions.c.status != SubscriptionStatus.UNSUBSCRIBED,
    )
    if list_id is not None:
        query = query.where(subscriptions.c.list_id == list_id)
    changed = (
        (
            await conn.execute(
                query.values(
                    status=SubscriptionStatus.UNSUBSCRIBED.value,
                    unsubscribed_at=now,
                    unsubscribe_source=source[:200],
                    confirm_nonce=None,  # a pending request dies with the unsubscribe
                    updated_at=now,
                ).returning(subscriptions.c.list_id)
            )
        )
        .scalars()
        .all()
    )
    for changed_list in changed:
        await record_consent(
            conn, subscriber_id, int(changed_list), ConsentEvent.UNSUBSCRIBED, source=source,
            ip=None, now=now,
        )  # fmt: skip
    return len(changed)


async def record_consent(
    conn: AsyncConnection,
    subscriber_id: int,
    list_id: int | None,
    event: ConsentEvent,
    *,
    source: str,
    ip: str | None,
    now: datetime,
) -> None:
    """Append one event to the consent history (never updated, never deleted but by an
    erasure of the subscriber)."""
    await conn.execute(
        insert(consent_events).values(
            subscriber_id=subscriber_id,
            list_id=list_id,
            event=event.value,
            source=source[:200],
            ip=ip[:64] if ip else None,
            at=now,
        )
    )
    kind = _HOOKS.get(event)
    if kind is not None and await outbox.wants(conn, kind):
        await outbox.emit(
            conn, [(kind, await _consent_data(conn, subscriber_id, list_id, source, now))], now=now
        )


# The webhook event each consent event is (a pending double opt-in request is none).
_HOOKS = {
    ConsentEvent.SUBSCRIBED: EventType.SUBSCRIBED,
    ConsentEvent.CONFIRMED: EventType.CONFIRMED,
    ConsentEvent.UNSUBSCRIBED: EventType.UNSUBSCRIBED,
}


async def _consent_data(
    conn: AsyncConnection, subscriber_id: int, list_id: int | None, source: str, now: datetime
) -> dict[str, Any]:
    """The webhook's ``data`` for a consent event: the subscriber (by public id), the list."""
    person = (
        await conn.execute(
            select(
                subscribers.c.public_id, subscribers.c.email, subscribers.c.name,
                subscribers.c.locale,
            ).where(subscribers.c.id == subscriber_id)
        )
    ).one()  # fmt: skip
    slug = None
    if list_id is not None:
        slug = (await conn.execute(select(lists.c.slug).where(lists.c.id == list_id))).scalar()
    return {
        "subscriber": {
            "id": person.public_id, "email": person.email, "name": person.name,
            "locale": person.locale,
        },
        "list": slug,
        "source": source[:200],
        "at": now.isoformat(),
    }  # fmt: skip


def subscribed_values(source: str, now: datetime) -> dict[str, Any]:
    """A subscription made active now, with its consent."""
    return {
        "status": SubscriptionStatus.SUBSCRIBED.value,
        "source": source,
        "consent_at": now,
        "confirmed_at": now,
        "unsubscribed_at": None,
        "unsubscribe_source": None,
        "confirm_nonce": None,
        "updated_at": now,
    }
