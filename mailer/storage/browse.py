"""The console's read queries about people (``store.browse``): the lists with their counts,
a list's members (search by address or name prefix, filter by status, keyset pages), one
subscriber found by their public id (lists, consent history, suppression and its history,
every delivery with its result), and the suppressions (search by address prefix, newest
first).

Writes no table: read-only (what staff change goes through ``store.subscribers``). Pages are
keyset pages on a row id (``WHERE id < :before ORDER BY id DESC LIMIT n + 1``), never
``OFFSET``; a search is a prefix (``engine.starts_with``), which an index answers on a
million rows, where a substring (``LIKE '%x%'``) reads them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select

from mailer.errors import NotFoundError
from mailer.models import ListSummary, SubscriptionStatus, SuppressionEvent
from mailer.storage import lookups
from mailer.storage import suppressions as suppression_rows
from mailer.storage.database import Database
from mailer.storage.engine import starts_with
from mailer.storage.tables import (
    campaigns,
    consent_events,
    deliveries,
    lists,
    sends,
    subscribers,
    subscriptions,
    suppressions,
)

MAX_PAGE = 200
FEW_NAMED = 2000  # a search naming at most this many subscribers looks each one up
CONSENT_SHOWN = 100  # the consent events a subscriber's page shows (newest first)
SUPPRESSED = "suppressed"  # the members filter: subscribed, but their address is suppressed
MEMBER_FILTERS = (*(s.value for s in SubscriptionStatus), SUPPRESSED)


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a list, as the list's page shows them."""

    subscription_id: int  # the cursor of the pages
    public_id: str
    email: str
    name: str
    status: str  # the subscription's (SubscriptionStatus)
    since: datetime  # when they consented (else when the subscription was made)
    suppressed: str | None  # the reason their address is suppressed, if it is


@dataclass(frozen=True, slots=True)
class MemberPage:
    members: list[Member]
    next: int | None  # the ``before`` of the next page (None: this is the last)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One of a subscriber's lists, with its consent record."""

    slug: str
    title: str
    status: str
    source: str
    consent_at: datetime | None
    consent_ip: str | None
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    unsubscribe_source: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ConsentLine:
    """One entry of the consent history (``ConsentEvent``), with the list it was about."""

    at: datetime
    event: str
    list_slug: str | None
    source: str
    ip: str | None


@dataclass(frozen=True, slots=True)
class Suppression:
    """An address suppressed now, and the subscriber who has it (if one does)."""

    id: int
    email_key: str
    reason: str  # a SuppressionReason
    detail: str
    created_at: datetime
    public_id: str | None


@dataclass(frozen=True, slots=True)
class Person:
    """A subscriber as their console page shows them. ``id`` is the row id, for this
    process's next queries only: a URL names ``public_id``."""

    id: int
    public_id: str
    email: str
    email_key: str
    name: str
    locale: str | None
    timezone: str | None
    attributes: dict[str, Any]
    status: str  # a SubscriberStatus
    created_at: datetime
    subscriptions: list[Subscription]
    consent: list[ConsentLine]  # newest first, at most CONSENT_SHOWN
    more_consent: bool  # older events exist beyond those
    suppression: Suppression | None
    suppression_history: list[SuppressionEvent]  # oldest first


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    """One delivery of a subscriber: which send, and what became of it."""

    id: int
    send_id: int
    campaign: str
    send_key: str
    action: str  # a SendAction
    list_slug: str
    status: str  # a DeliveryStatus
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None
    reason: str | None
    sent_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    lines: list[DeliveryLine]
    next: int | None


@dataclass(frozen=True, slots=True)
class SuppressionPage:
    lines: list[Suppression]
    next: int | None


class Browse:
    """The console's read queries about people (``store.browse``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def lists(self) -> list[ListSummary]:
        """Every list with its subscriptions by status, and how many subscribed members have
        a suppressed address.

        The counts read the ``(list_id, status)`` index alone; the suppressed ones start from
        the suppressions (a few thousand), never from the subscriptions (millions).
        """
        async with self._db.begin() as conn:
            rows = (await conn.execute(select(lists).order_by(lists.c.slug))).all()
            counts: dict[int, dict[str, int]] = {}
            by_status = select(
                subscriptions.c.list_id, subscriptions.c.status, func.count()
            ).group_by(subscriptions.c.list_id, subscriptions.c.status)
            for list_id, status, n in (await conn.execute(by_status)).all():
                counts.setdefault(int(list_id), {})[str(status)] = int(n)
            # from the suppressions (a few thousand): SQLite, without statistics, follows
            # the FROM order, and starting from the subscribers read a million rows
            suppressed_ids = (
                select(subscribers.c.id)
                .select_from(suppressions)
                .join(subscribers, suppressions.c.email_key == subscribers.c.email_key)
            )
            suppressed_query = (
                select(subscriptions.c.list_id, func.count())
                .where(
                    subscriptions.c.subscriber_id.in_(suppressed_ids),
                    subscriptions.c.status == SubscriptionStatus.SUBSCRIBED,
                )
                .group_by(subscriptions.c.list_id)
            )
            suppressed = {int(i): int(n) for i, n in (await conn.execute(suppressed_query)).all()}
        return [
            ListSummary(
                slug=r.slug, title=r.title, default_locale=r.default_locale, opt_in=r.opt_in,
                counts={s.value: counts.get(r.id, {}).get(s.value, 0) for s in SubscriptionStatus},
                suppressed=suppressed.get(r.id, 0),
            )
            for r in rows
        ]  # fmt: skip

    async def members(
        self,
        slug: str,
        *,
        search: str = "",
        status: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> MemberPage:
        """A page of a list's members, newest subscription first.

        ``search``: the members whose address begins with it (case-insensitive) or whose name
        does (ASCII letters case-insensitive, accents as typed). ``status``: one of
        :data:`MEMBER_FILTERS` (``suppressed``: subscribed, their address suppressed).
        ``before``: the ``next`` of the page before. NotFoundError for an unknown list,
        ValueError for an unknown status.
        """
        if status is not None and status not in MEMBER_FILTERS:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(MEMBER_FILTERS)}")
        limit = _limit(limit)
        query = (
            select(
                subscriptions.c.id.label("subscription_id"), subscribers.c.public_id,
                subscribers.c.email, subscribers.c.name, subscriptions.c.status,
                func.coalesce(subscriptions.c.consent_at, subscriptions.c.created_at).label(
                    "since"
                ),
                suppressions.c.reason.label("suppressed"),
            )
            .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
            .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
            .order_by(subscriptions.c.id.desc())
            .limit(limit + 1)
        )  # fmt: skip
        if status == SUPPRESSED:
            query = query.where(
                subscriptions.c.status == SubscriptionStatus.SUBSCRIBED,
                suppressions.c.id.is_not(None),
            )
        elif status is not None:
            query = query.where(subscriptions.c.status == status)
        if before is not None:
            query = query.where(subscriptions.c.id < before)
        text = search.strip()
        async with self._db.begin() as conn:
            list_id = await lookups.list_id(conn, slug)
            if text:
                query = await _searched(conn, query, list_id, text)
            else:
                query = query.where(subscriptions.c.list_id == list_id)
            rows = (await conn.execute(query)).mappings().all()
        found = [Member(**r) for r in rows]
        return MemberPage(found[:limit], _next(found, limit, lambda m: m.subscription_id))

    async def person(self, public_id: str) -> Person:
        """The subscriber whose public id is ``public_id``; NotFoundError if there is none."""
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(subscribers).where(subscribers.c.public_id == public_id))
            ).one_or_none()
            if row is None:
                raise NotFoundError("no subscriber with this id (erased, or a mistyped link)")
            subs = (await conn.execute(_subscriptions_query(row.id))).mappings().all()
            consent = (
                (await conn.execute(_consent_query(row.id).limit(CONSENT_SHOWN + 1)))
                .mappings()
                .all()
            )
            found = (await conn.execute(_suppressions_query().where(
                suppressions.c.email_key == row.email_key
            ))).mappings().one_or_none()  # fmt: skip
            history = await suppression_rows.history(conn, row.email_key)
        return Person(
            id=int(row.id), public_id=row.public_id, email=row.email, email_key=row.email_key,
            name=row.name, locale=row.locale, timezone=row.timezone,
            attributes=dict(row.attributes or {}), status=row.status, created_at=row.created_at,
            subscriptions=[Subscription(**s) for s in subs],
            consent=[ConsentLine(**c) for c in consent[:CONSENT_SHOWN]],
            more_consent=len(consent) > CONSENT_SHOWN,
            suppression=None if found is None else Suppression(**found),
            suppression_history=history,
        )  # fmt: skip

    async def deliveries(
        self, subscriber_id: int, *, before: int | None = None, limit: int = 50
    ) -> DeliveryPage:
        """A page of a subscriber's deliveries, newest first (``before``: the ``next`` of
        the page before)."""
        limit = _limit(limit)
        query = (
            select(
                deliveries.c.id, deliveries.c.send_id, campaigns.c.name.label("campaign"),
                sends.c.key.label("send_key"), sends.c.action, lists.c.slug.label("list_slug"),
                deliveries.c.status, deliveries.c.attempts, deliveries.c.smtp_code,
                deliveries.c.smtp_reply, deliveries.c.reason, deliveries.c.sent_at,
                deliveries.c.updated_at,
            )
            .join(sends, sends.c.id == deliveries.c.send_id)
            .join(campaigns, campaigns.c.id == sends.c.campaign_id)
            .join(lists, lists.c.id == deliveries.c.list_id)
            .where(deliveries.c.subscriber_id == subscriber_id)
            .order_by(deliveries.c.id.desc())
            .limit(limit + 1)
        )  # fmt: skip
        if before is not None:
            query = query.where(deliveries.c.id < before)
        async with self._db.begin() as conn:
            found = [DeliveryLine(**r) for r in (await conn.execute(query)).mappings().all()]
        return DeliveryPage(found[:limit], _next(found, limit, lambda d: d.id))

    async def suppressions(
        self, *, search: str = "", before: int | None = None, limit: int = 50
    ) -> SuppressionPage:
        """A page of the suppressed addresses, newest first; ``search``: those beginning
        with it (case-insensitive)."""
        limit = _limit(limit)
        query = _suppressions_query().order_by(suppressions.c.id.desc()).limit(limit + 1)
        text = search.strip().casefold()
        if text:
            query = query.where(starts_with(suppressions.c.email_key, text))
        if before is not None:
            query = query.where(suppressions.c.id < before)
        async with self._db.begin() as conn:
            found = [Suppression(**r) for r in (await conn.execute(query)).mappings().all()]
        return SuppressionPage(found[:limit], _next(found, limit, lambda s: s.id))

    async def suppression(self, suppression_id: int) -> Suppression:
        """One suppression by id; NotFoundError once it is lifted."""
        query = _suppressions_query().where(suppressions.c.id == suppression_id)
        async with self._db.begin() as conn:
            found = (await conn.execute(query)).mappings().one_or_none()
        if found is None:
            raise NotFoundError("this suppression does not exist (any more): it was lifted")
        return Suppression(**found)

    async def history(self, email_key: str) -> list[SuppressionEvent]:
        """Every suppression and lift of an address, oldest first."""
        async with self._db.begin() as conn:
            return await suppression_rows.history(conn, email_key)


# --- queries ----------------------------------------------------------------------------------


async def _searched(conn: Any, query: Select[Any], list_id: int, text: str) -> Select[Any]:
    """``query`` kept to the members whose address or name begins with ``text``.

    First the subscribers the prefix names (the ``email_key`` index, and ``lower(name)``'s),
    at most :data:`FEW_NAMED`: each is then looked up in the list by the unique
    ``(subscriber_id, list_id)`` key, so a rare prefix costs a few look-ups however long the
    list (``+ 0`` keeps SQLite, which has no statistics, from walking the list instead, and
    PostgreSQL from guessing how many a prefix names). A prefix naming more is common enough
    that walking the list newest first meets a page of them soon.
    """
    condition = or_(
        starts_with(subscribers.c.email_key, text.casefold()),
        starts_with(subscribers.c.name, text, fold=True),
    )
    named = (
        (await conn.execute(select(subscribers.c.id).where(condition).limit(FEW_NAMED + 1)))
        .scalars()
        .all()
    )
    if len(named) > FEW_NAMED:
        return query.where(subscriptions.c.list_id == list_id, condition)
    return query.where(
        subscriptions.c.subscriber_id.in_(named), (subscriptions.c.list_id + 0) == list_id
    )


def _limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return min(limit, MAX_PAGE)


def _next(found: list[Any], limit: int, cursor: Any) -> int | None:
    """The cursor of the page after (its last row's id), if a row beyond ``limit`` exists."""
    return int(cursor(found[limit - 1])) if len(found) > limit else None


def _subscriptions_query(subscriber_id: int) -> Select[Any]:
    return (
        select(
            lists.c.slug, lists.c.title, subscriptions.c.status, subscriptions.c.source,
            subscriptions.c.consent_at, subscriptions.c.consent_ip, subscriptions.c.confirmed_at,
            subscriptions.c.unsubscribed_at, subscriptions.c.unsubscribe_source,
            subscriptions.c.created_at,
        )
        .join(lists, lists.c.id == subscriptions.c.list_id)
        .where(subscriptions.c.subscriber_id == subscriber_id)
        .order_by(lists.c.slug)
    )  # fmt: skip


def _consent_query(subscriber_id: int) -> Select[Any]:
    return (
        select(
            consent_events.c.at, consent_events.c.event, lists.c.slug.label("list_slug"),
            consent_events.c.source, consent_events.c.ip,
        )
        .outerjoin(lists, lists.c.id == consent_events.c.list_id)
        .where(consent_events.c.subscriber_id == subscriber_id)
        .order_by(consent_events.c.at.desc(), consent_events.c.id.desc())
    )  # fmt: skip


def _suppressions_query() -> Select[Any]:
    return select(
        suppressions.c.id, suppressions.c.email_key, suppressions.c.reason,
        suppressions.c.detail, suppressions.c.created_at, subscribers.c.public_id,
    ).outerjoin(subscribers, subscribers.c.email_key == suppressions.c.email_key)  # fmt: skip


__all__ = [
    "CONSENT_SHOWN",
    "MEMBER_FILTERS",
    "SUPPRESSED",
    "Browse",
    "ConsentLine",
    "DeliveryLine",
    "DeliveryPage",
    "Member",
    "MemberPage",
    "Person",
    "Subscription",
    "Suppression",
    "SuppressionPage",
]
