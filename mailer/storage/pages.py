"""What the subscriber pages read and write (``store.pages``): unsubscribe, double opt-in,
preferences, and the figures behind ``/healthz`` and ``/metrics``.

Every change is one transaction, so a page that fails (the database went away, a race) has
changed nothing. The web path never sends mail itself: a sign-up writes a one-recipient
``confirm`` send (of a system campaign ``confirm:<list>``, kind ``confirmation``) that the
daemon delivers like any other send.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.addresses import Address
from mailer.models import (
    CONFIRM_ACTION,
    CampaignStatus,
    DeliveryStatus,
    SendStatus,
    SubscriberStatus,
    SubscriptionStatus,
)
from mailer.storage.tables import (
    campaign_lists,
    campaigns,
    consent_events,
    deliveries,
    lists,
    new_nonce,
    sends,
    subscribers,
    subscriptions,
    suppressions,
)

if TYPE_CHECKING:
    from mailer.storage.store import Store

CONFIRM_KIND = "confirmation"
CONFIRM_TEMPLATE = "confirm"
WEB_SOURCE = "web form"


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """The subscriber and list a signed link points at, as they are now."""

    subscriber_id: int
    public_id: str
    email: str
    name: str
    locale: str | None
    list_id: int
    list_slug: str
    list_title: str
    list_locale: str
    status: str | None  # the subscription's status; None: not (or no longer) on the list
    suppressed: bool
    confirm_nonce: str | None = None  # the pending sign-up request's, if any


@dataclass(frozen=True, slots=True)
class PublicList:
    id: int
    slug: str
    title: str
    default_locale: str


@dataclass(frozen=True, slots=True)
class ListChoice:
    id: int
    slug: str
    title: str
    subscribed: bool


@dataclass(frozen=True, slots=True)
class Preferences:
    email: str
    locale: str | None
    lists: list[ListChoice]


class Requested(StrEnum):
    """What a sign-up did. The page says the same thing for all of them."""

    MAIL_QUEUED = "mail queued"
    ALREADY_SUBSCRIBED = "already subscribed"
    SUPPRESSED = "suppressed"
    RATE_LIMITED = "rate limited"


class Confirmed(StrEnum):
    CONFIRMED = "confirmed"
    ALREADY = "already subscribed"
    INVALID = "invalid"  # unsubscribed since, removed, suppressed, or an older request's link


@dataclass(frozen=True, slots=True)
class SendFigures:
    send_id: int
    campaign: str
    action: str
    status: str
    counts: dict[str, int]
    rate: float  # messages sent per second over the last minute


@dataclass(frozen=True, slots=True)
class Figures:
    """What ``/metrics`` exposes, read from storage so every daemon reports the same truth."""

    sends: list[SendFigures]
    replies: dict[int, int]  # SMTP reply code -> deliveries
    queue_depth: int
    sends_by_status: dict[str, int]


class Pages:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def target(
        self, public_id: str, list_id: int, *, legacy_id: int | None = None
    ) -> LinkTarget | None:
        """The subscriber (by the public id a link names) and list of a link; None if either
        is gone (an erased subscriber's links die with its row). ``legacy_id``: the row id
        a link mailed before public ids names, honoured only for a subscriber of then."""
        async with self._store._begin() as conn:
            return await _target(conn, public_id, list_id, legacy_id=legacy_id)

    async def unsubscribe(
        self, subscriber_id: int, list_id: int, *, everywhere: bool, source: str, now: datetime
    ) -> int:
        """Unsubscribe from the link's list (or every list); idempotent. Returns rows changed."""
        async with self._store._begin(write=True) as conn:
            return await unsubscribe_rows(
                conn, subscriber_id, None if everywhere else list_id, source=source, now=now
            )

    async def public_list(self, slug: str) -> PublicList | None:
        async with self._store._begin() as conn:
            row = (
                await conn.execute(select(lists).where(lists.c.slug == slug, lists.c.public))
            ).one_or_none()
        if row is None:
            return None
        return PublicList(row.id, row.slug, row.title, row.default_locale)

    async def public_lists(self) -> list[PublicList]:
        async with self._store._begin() as conn:
            rows = (
                await conn.execute(select(lists).where(lists.c.public).order_by(lists.c.title))
            ).all()
        return [PublicList(r.id, r.slug, r.title, r.default_locale) for r in rows]

    async def request_subscription(
        self,
        public: PublicList,
        address: Address,
        *,
        name: str,
        locale: str,
        ip: str | None,
        timezone: str,
        now: datetime,
        interval: timedelta,
        per_day: int,
    ) -> tuple[Requested, int | None]:
        """A sign-up from the form: a pending subscription and a confirmation send, at most
        one per ``interval`` for this list and ``per_day`` in 24 hours for this address.
        Returns what happened and the confirmation send, if one was made."""
        async with self._store._begin(write=True) as conn:
            if (
                await conn.execute(
                    select(suppressions.c.id).where(suppressions.c.email_key == address.key)
                )
            ).first() is not None:
                return Requested.SUPPRESSED, None
            row = (
                await conn.execute(
                    select(subscribers.c.id, subscribers.c.status).where(
                        subscribers.c.email_key == address.key
                    )
                )
            ).one_or_none()
            if row is None:
                result = await conn.execute(
                    insert(subscribers).values(
                        email=address.email,
                        email_key=address.key,
                        name=name,
                        locale=locale,
                        timezone=None,
                        attributes={},
                        status=SubscriberStatus.ACTIVE.value,
                        smtputf8=address.smtputf8,
                        created_at=now,
                        updated_at=now,
                    )
                )
                subscriber_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            elif row.status != SubscriberStatus.ACTIVE:
                return Requested.SUPPRESSED, None  # bounced or complained: never mailed again
            else:
                subscriber_id = int(row.id)
            current = (
                await conn.execute(
                    select(subscriptions.c.status).where(
                        subscriptions.c.subscriber_id == subscriber_id,
                        subscriptions.c.list_id == public.id,
                    )
                )
            ).scalar()
            if current == SubscriptionStatus.SUBSCRIBED:
                return Requested.ALREADY_SUBSCRIBED, None
            if (
                await _recent_confirmations(
                    conn, subscriber_id, list_id=public.id, since=now - interval
                )
                or await _recent_confirmations(
                    conn, subscriber_id, list_id=None, since=now - timedelta(days=1)
                )
                >= per_day
            ):
                return Requested.RATE_LIMITED, None
            nonce = new_nonce()
            if current is None or current == SubscriptionStatus.PENDING:
                values: dict[str, Any] = {
                    "status": SubscriptionStatus.PENDING.value,
                    "source": WEB_SOURCE,
                    "consent_at": now,
                    "consent_ip": ip,
                    "confirmed_at": None,
                    "confirmed_ip": None,
                }
            else:
                # Unsubscribed (or any other state): the request waits beside it. Whoever
                # typed the address, the unsubscribe stands until the new link is confirmed.
                values = {}
            values |= {"confirm_nonce": nonce, "requested_at": now, "updated_at": now}
            await write_subscription(
                conn, subscriber_id, public.id, exists=current is not None, values=values, now=now
            )
            await record_consent(
                conn, subscriber_id, public.id, "requested", source=WEB_SOURCE, ip=ip, now=now
            )
            campaign_id = await _confirm_campaign(conn, public, timezone=timezone, now=now)
            result = await conn.execute(
                insert(sends).values(
                    campaign_id=campaign_id,
                    key=f"confirm:{subscriber_id}:{now.timestamp():.6f}",
                    action=CONFIRM_ACTION,
                    due_at=now,
                    status=SendStatus.SCHEDULED.value,
                    created_at=now,
                    updated_at=now,
                )
            )
            send_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            await conn.execute(
                insert(deliveries).values(
                    send_id=send_id,
                    subscriber_id=subscriber_id,
                    list_id=public.id,
                    status=DeliveryStatus.QUEUED.value,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            return Requested.MAIL_QUEUED, send_id

    async def confirm(
        self, public_id: str, list_id: int, nonce: str, *, ip: str | None, now: datetime
    ) -> Confirmed:
        """Confirm the pending request whose nonce the link carries: the subscription becomes
        active and the consent is recorded; idempotent. An older request's link, or one
        whose request was confirmed already and then unsubscribed, confirms nothing."""
        async with self._store._begin(write=True) as conn:
            target = await _target(conn, public_id, list_id)
            if target is None or target.suppressed:
                return Confirmed.INVALID
            if target.confirm_nonce is None or target.confirm_nonce != nonce:
                if target.status == SubscriptionStatus.SUBSCRIBED:
                    return Confirmed.ALREADY
                return Confirmed.INVALID
            requested = (
                await conn.execute(
                    select(consent_events.c.at, consent_events.c.ip)
                    .where(
                        consent_events.c.subscriber_id == target.subscriber_id,
                        consent_events.c.list_id == list_id,
                        consent_events.c.event == "requested",
                    )
                    .order_by(consent_events.c.id.desc())
                    .limit(1)
                )
            ).one_or_none()
            changed = await conn.execute(
                update(subscriptions)
                .where(
                    subscriptions.c.subscriber_id == target.subscriber_id,
                    subscriptions.c.list_id == list_id,
                    subscriptions.c.confirm_nonce == nonce,
                )
                .values(
                    status=SubscriptionStatus.SUBSCRIBED.value,
                    source=WEB_SOURCE,
                    consent_at=requested.at if requested is not None else now,
                    consent_ip=requested.ip if requested is not None else None,
                    confirmed_at=now,
                    confirmed_ip=ip,
                    confirm_nonce=None,
                    unsubscribed_at=None,
                    unsubscribe_source=None,
                    updated_at=now,
                )
            )
            if not changed.rowcount:
                return Confirmed.INVALID  # a concurrent confirmation or a newer request
            await record_consent(
                conn, target.subscriber_id, list_id, "confirmed", source=WEB_SOURCE, ip=ip, now=now
            )
            return Confirmed.CONFIRMED

    async def preferences(self, subscriber_id: int) -> Preferences | None:
        """The subscriber's address, language, and the lists they can choose from: the ones
        they are or were on, and every public list."""
        async with self._store._begin() as conn:
            row = (
                await conn.execute(
                    select(subscribers.c.email, subscribers.c.locale).where(
                        subscribers.c.id == subscriber_id
                    )
                )
            ).one_or_none()
            if row is None:
                return None
            query = (
                select(lists.c.id, lists.c.slug, lists.c.title, subscriptions.c.status)
                .outerjoin(
                    subscriptions,
                    and_(
                        subscriptions.c.list_id == lists.c.id,
                        subscriptions.c.subscriber_id == subscriber_id,
                    ),
                )
                .where(or_(lists.c.public, subscriptions.c.id.is_not(None)))
                .order_by(lists.c.title, lists.c.id)
            )
            choices = [
                ListChoice(r.id, r.slug, r.title, r.status == SubscriptionStatus.SUBSCRIBED)
                for r in (await conn.execute(query)).all()
            ]
        return Preferences(email=row.email, locale=row.locale, lists=choices)

    async def save_preferences(
        self,
        subscriber_id: int,
        *,
        chosen: Collection[int],
        locale: str | None,
        source: str,
        now: datetime,
    ) -> tuple[int, int]:
        """Apply the preferences form: returns (lists joined, lists left). Only the lists the
        page offered can change; the address proved itself by the signed link."""
        joined = left = 0
        async with self._store._begin(write=True) as conn:
            if locale is not None:
                await conn.execute(
                    update(subscribers)
                    .where(subscribers.c.id == subscriber_id)
                    .values(locale=locale, updated_at=now)
                )
            suppressed = (
                await conn.execute(
                    select(suppressions.c.id)
                    .join(subscribers, subscribers.c.email_key == suppressions.c.email_key)
                    .where(subscribers.c.id == subscriber_id)
                )
            ).first() is not None
            offered = (
                await conn.execute(
                    select(lists.c.id, subscriptions.c.status)
                    .outerjoin(
                        subscriptions,
                        and_(
                            subscriptions.c.list_id == lists.c.id,
                            subscriptions.c.subscriber_id == subscriber_id,
                        ),
                    )
                    .where(or_(lists.c.public, subscriptions.c.id.is_not(None)))
                )
            ).all()
            for list_id, status in offered:
                wanted = list_id in chosen
                if wanted and status != SubscriptionStatus.SUBSCRIBED and not suppressed:
                    await write_subscription(
                        conn, subscriber_id, list_id, exists=status is not None,
                        values=subscribed_values(source, now), now=now,
                    )  # fmt: skip
                    joined += 1
                elif not wanted and status == SubscriptionStatus.SUBSCRIBED:
                    left += await unsubscribe_rows(
                        conn, subscriber_id, list_id, source=source, now=now
                    )
        return joined, left

    async def figures(self, *, now: datetime, recent: timedelta) -> Figures:
        """Counts for ``/metrics``: sends running, paused or finished within ``recent``."""
        active = or_(
            sends.c.status.in_([SendStatus.RUNNING.value, SendStatus.PAUSED.value]),
            sends.c.finished_at >= now - recent,
        )
        async with self._store._begin() as conn:
            shown = (
                await conn.execute(
                    select(sends.c.id, campaigns.c.name, sends.c.action, sends.c.status)
                    .join(campaigns, campaigns.c.id == sends.c.campaign_id)
                    .where(active)
                    .order_by(sends.c.id)
                )
            ).all()
            counts: dict[int, dict[str, int]] = {}
            replies: dict[int, int] = {}
            rates: dict[int, int] = {}
            if shown:
                ids = [r.id for r in shown]
                for send_id, status, n in (
                    await conn.execute(
                        select(deliveries.c.send_id, deliveries.c.status, func.count())
                        .where(deliveries.c.send_id.in_(ids))
                        .group_by(deliveries.c.send_id, deliveries.c.status)
                    )
                ).all():
                    counts.setdefault(send_id, {})[status] = int(n)
                for code, n in (
                    await conn.execute(
                        select(deliveries.c.smtp_code, func.count())
                        .where(deliveries.c.send_id.in_(ids), deliveries.c.smtp_code.is_not(None))
                        .group_by(deliveries.c.smtp_code)
                    )
                ).all():
                    replies[int(code)] = int(n)
                rates = {
                    int(send_id): int(n)
                    for send_id, n in (
                        await conn.execute(
                            select(deliveries.c.send_id, func.count())
                            .where(
                                deliveries.c.send_id.in_(ids),
                                deliveries.c.status == DeliveryStatus.SENT,
                                deliveries.c.sent_at >= now - timedelta(minutes=1),
                            )
                            .group_by(deliveries.c.send_id)
                        )
                    ).all()
                }
            depth = (
                await conn.execute(
                    select(func.count())
                    .select_from(deliveries.join(sends, sends.c.id == deliveries.c.send_id))
                    .where(
                        sends.c.status.in_([SendStatus.RUNNING.value, SendStatus.PAUSED.value]),
                        deliveries.c.status.in_(
                            [DeliveryStatus.QUEUED.value, DeliveryStatus.DEFERRED.value]
                        ),
                    )
                )
            ).scalar()
            by_status = {
                str(status): int(n)
                for status, n in (
                    await conn.execute(
                        select(sends.c.status, func.count()).group_by(sends.c.status)
                    )
                ).all()
            }
        return Figures(
            sends=[
                SendFigures(
                    send_id=r.id,
                    campaign=r.name,
                    action=r.action,
                    status=r.status,
                    counts={s.value: counts.get(r.id, {}).get(s.value, 0) for s in DeliveryStatus},
                    rate=rates.get(r.id, 0) / 60.0,
                )
                for r in shown
            ],
            replies=replies,
            queue_depth=int(depth or 0),
            sends_by_status={s.value: by_status.get(s.value, 0) for s in SendStatus},
        )


# --- helpers (inside a transaction) ---------------------------------------------------------


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
            conn, subscriber_id, list_id, "subscribed", source=str(values.get("source", "")),
            ip=values.get("consent_ip"), now=now,
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
            conn, subscriber_id, int(changed_list), "unsubscribed", source=source, ip=None, now=now
        )
    return len(changed)


async def record_consent(
    conn: AsyncConnection,
    subscriber_id: int,
    list_id: int | None,
    event: str,
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
            event=event,
            source=source[:200],
            ip=ip[:64] if ip else None,
            at=now,
        )
    )


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


async def _target(
    conn: AsyncConnection, public_id: str, list_id: int, *, legacy_id: int | None = None
) -> LinkTarget | None:
    who = (
        subscribers.c.public_id == public_id
        if legacy_id is None
        else (subscribers.c.id == legacy_id) & subscribers.c.legacy_links.is_(True)
    )
    row = (
        await conn.execute(
            select(
                subscribers.c.id,
                subscribers.c.public_id,
                subscribers.c.email,
                subscribers.c.name,
                subscribers.c.locale,
                lists.c.id.label("list_id"),
                lists.c.slug,
                lists.c.title,
                lists.c.default_locale,
                subscriptions.c.status,
                subscriptions.c.confirm_nonce,
                suppressions.c.id.label("suppression"),
            )
            .select_from(subscribers)
            .join(lists, lists.c.id == list_id)
            .outerjoin(
                subscriptions,
                and_(
                    subscriptions.c.subscriber_id == subscribers.c.id,
                    subscriptions.c.list_id == lists.c.id,
                ),
            )
            .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
            .where(who)
        )
    ).one_or_none()
    if row is None:
        return None
    return LinkTarget(
        subscriber_id=row.id,
        public_id=row.public_id,
        email=row.email,
        name=row.name,
        locale=row.locale,
        list_id=row.list_id,
        list_slug=row.slug,
        list_title=row.title,
        list_locale=row.default_locale,
        status=row.status,
        suppressed=row.suppression is not None,
        confirm_nonce=row.confirm_nonce,
    )


async def _recent_confirmations(
    conn: AsyncConnection,
    subscriber_id: int,
    *,
    list_id: int | None,
    since: datetime,
) -> int:
    query = (
        select(func.count())
        .select_from(deliveries.join(sends, sends.c.id == deliveries.c.send_id))
        .where(
            sends.c.action == CONFIRM_ACTION,
            sends.c.created_at >= since,
            deliveries.c.subscriber_id == subscriber_id,
        )
    )
    if list_id is not None:
        query = query.where(deliveries.c.list_id == list_id)
    return int((await conn.execute(query)).scalar() or 0)


async def _confirm_campaign(
    conn: AsyncConnection, public: PublicList, *, timezone: str, now: datetime
) -> int:
    """The system campaign that carries a list's confirmation mails, made on first use."""
    name = f"confirm:{public.slug}"
    found = (await conn.execute(select(campaigns.c.id).where(campaigns.c.name == name))).scalar()
    if found is not None:
        return int(found)
    result = await conn.execute(
        insert(campaigns).values(
            name=name,
            kind=CONFIRM_KIND,
            status=CampaignStatus.SCHEDULED.value,
            template=CONFIRM_TEMPLATE,
            subject="",
            body="",
            body_format="markdown",
            sender_name=None,
            sender_address=None,
            timezone=timezone,
            options={},
            created_at=now,
            updated_at=now,
        )
    )
    campaign_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    await conn.execute(insert(campaign_lists).values(campaign_id=campaign_id, list_id=public.id))
    return campaign_id
