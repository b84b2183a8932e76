"""Consent as the subscriber pages change it: what a signed link points at, unsubscribe,
the double opt-in (sign-up request and confirmation), and the preferences.

Writes no table itself: ``subscribers`` writes the subscriber, subscription and consent
history, ``campaigns``, ``sends`` and ``deliveries`` the confirmation mail; each change is
one transaction, so a page that fails (the database went away, a race) has changed nothing.
The web path never sends mail itself: a sign-up writes a one-recipient ``confirm`` send (of
a system campaign ``confirm:<list>``, kind ``confirmation``) that the daemon delivers like
any other send.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.addresses import Address
from mailer.models import (
    CONFIRM_ACTION,
    Confirmed,
    ConsentEvent,
    LinkTarget,
    ListChoice,
    Preferences,
    PublicList,
    Requested,
    SubscriberStatus,
    SubscriptionStatus,
)
from mailer.storage import campaigns as campaign_writer
from mailer.storage import deliveries as delivery_writer
from mailer.storage import lookups
from mailer.storage import sends as send_writer
from mailer.storage import subscribers as writer
from mailer.storage.database import Database
from mailer.storage.tables import (
    consent_events,
    deliveries,
    lists,
    new_nonce,
    sends,
    subscribers,
    subscriptions,
    suppressions,
)

WEB_SOURCE = "web form"


class Consent:
    """What the subscriber pages read and change (``store.consent``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def target(
        self, public_id: str, list_id: int, *, legacy_id: int | None = None
    ) -> LinkTarget | None:
        """The subscriber (by the public id a link names) and list of a link; None if either
        is gone (an erased subscriber's links die with its row). ``legacy_id``: the row id
        a link mailed before public ids names, honoured only for a subscriber of then."""
        async with self._db.begin() as conn:
            return await _target(conn, public_id, list_id, legacy_id=legacy_id)

    async def unsubscribe(
        self, subscriber_id: int, list_id: int, *, everywhere: bool, source: str, now: datetime
    ) -> int:
        """Unsubscribe from the link's list (or every list); idempotent. Returns rows changed."""
        async with self._db.begin(write=True) as conn:
            return await writer.unsubscribe_rows(
                conn, subscriber_id, None if everywhere else list_id, source=source, now=now
            )

    async def request(
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
        source: str = WEB_SOURCE,
    ) -> tuple[Requested, int | None]:
        """A sign-up from the form (or ``source``: the API): a pending subscription and a
        confirmation send, at most one per ``interval`` for this list and ``per_day`` in 24
        hours for this address. Returns what happened and the confirmation send, if one was
        made."""
        async with self._db.begin(write=True) as conn:
            if await lookups.suppressed_keys(conn, [address.key]):
                return Requested.SUPPRESSED, None
            row = (
                await conn.execute(
                    select(subscribers.c.id, subscribers.c.status).where(
                        subscribers.c.email_key == address.key
                    )
                )
            ).one_or_none()
            if row is None:
                subscriber_id = await writer.insert_web_subscriber(
                    conn, address, name=name, locale=locale, now=now
                )
            elif row.status != SubscriberStatus.ACTIVE:
                return Requested.SUPPRESSED, None  # bounced or complained: never mailed again
            else:
                subscriber_id = int(row.id)
            current = await writer.subscription_status(conn, subscriber_id, public.id)
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
            await writer.write_subscription(
                conn, subscriber_id, public.id, exists=current is not None,
                values=_request_values(current, ip=ip, now=now, source=source), now=now,
            )  # fmt: skip
            await writer.record_consent(
                conn, subscriber_id, public.id, ConsentEvent.REQUESTED, source=source,
                ip=ip, now=now,
            )  # fmt: skip
            campaign_id = await campaign_writer.confirm_campaign(
                conn, public, timezone=timezone, now=now
            )
            send_id = await send_writer.insert_confirmation(
                conn, campaign_id, subscriber_id=subscriber_id, now=now
            )
            await delivery_writer.add_one(
                conn, send_id, subscriber_id=subscriber_id, list_id=public.id, now=now
            )
            return Requested.MAIL_QUEUED, send_id

    async def confirm(
        self, public_id: str, list_id: int, nonce: str, *, ip: str | None, now: datetime
    ) -> Confirmed:
        """Confirm the pending request whose nonce the link carries: the subscription becomes
        active and the consent is recorded; idempotent. An older request's link, or one
        whose request was confirmed already and then unsubscribed, confirms nothing."""
        async with self._db.begin(write=True) as conn:
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
                        consent_events.c.event == ConsentEvent.REQUESTED,
                    )
                    .order_by(consent_events.c.id.desc())
                    .limit(1)
                )
            ).one_or_none()
            values = {
                "status": SubscriptionStatus.SUBSCRIBED.value,
                "source": WEB_SOURCE,
                "consent_at": requested.at if requested is not None else now,
                "consent_ip": requested.ip if requested is not None else None,
                "confirmed_at": now,
                "confirmed_ip": ip,
                "confirm_nonce": None,
                "unsubscribed_at": None,
                "unsubscribe_source": None,
                "updated_at": now,
            }
            if not await writer.confirm_subscription(
                conn, target.subscriber_id, list_id, nonce, values
            ):
                return Confirmed.INVALID  # a concurrent confirmation or a newer request
            await writer.record_consent(
                conn, target.subscriber_id, list_id, ConsentEvent.CONFIRMED, source=WEB_SOURCE,
                ip=ip, now=now,
            )  # fmt: skip
            return Confirmed.CONFIRMED

    async def preferences(self, subscriber_id: int) -> Preferences | None:
        """The subscriber's address, language, and the lists they can choose from: the ones
        they are or were on, and every public list."""
        async with self._db.begin() as conn:
            row = (
                await conn.execute(
                    select(subscribers.c.email, subscribers.c.locale, subscribers.c.timezone).where(
                        subscribers.c.id == subscriber_id
                    )
                )
            ).one_or_none()
            if row is None:
                return None
            query = (
                select(lists.c.id, lists.c.slug, lists.c.title, subscriptions.c.status)
                .outerjoin(subscriptions, _subscription_of(subscriber_id))
                .where(or_(lists.c.public, subscriptions.c.id.is_not(None)))
                .order_by(lists.c.title, lists.c.id)
            )
            choices = [
                ListChoice(r.id, r.slug, r.title, r.status == SubscriptionStatus.SUBSCRIBED)
                for r in (await conn.execute(query)).all()
            ]
        return Preferences(email=row.email, locale=row.locale, lists=choices, timezone=row.timezone)

    async def save_preferences(
        self,
        subscriber_id: int,
        *,
        chosen: Collection[int],
        locale: str | None,
        source: str,
        now: datetime,
        timezone: str | None = None,
    ) -> tuple[int, int]:
        """Apply the preferences form: returns (lists joined, lists left). Only the lists the
        page offered can change; the address proved itself by the signed link. ``timezone``:
        None leaves it, "" clears it (the event's zone only), a zone name sets it."""
        joined = left = 0
        async with self._db.begin(write=True) as conn:
            changes: dict[str, str | None] = {}
            if locale is not None:
                changes["locale"] = locale
            if timezone is not None:
                changes["timezone"] = timezone or None
            if changes:
                await writer.update_subscriber(conn, subscriber_id, changes, now=now)
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
                    .outerjoin(subscriptions, _subscription_of(subscriber_id))
                    .where(or_(lists.c.public, subscriptions.c.id.is_not(None)))
                )
            ).all()
            for list_id, status in offered:
                wanted = list_id in chosen
                if wanted and status != SubscriptionStatus.SUBSCRIBED and not suppressed:
                    await writer.write_subscription(
                        conn, subscriber_id, list_id, exists=status is not None,
                        values=writer.subscribed_values(source, now), now=now,
                    )  # fmt: skip
                    joined += 1
                elif not wanted and status == SubscriptionStatus.SUBSCRIBED:
                    left += await writer.unsubscribe_rows(
                        conn, subscriber_id, list_id, source=source, now=now
                    )
        return joined, left


def _subscription_of(subscriber_id: int) -> Any:
    return and_(
        subscriptions.c.list_id == lists.c.id,
        subscriptions.c.subscriber_id == subscriber_id,
    )


def _request_values(
    current: str | None, *, ip: str | None, now: datetime, source: str
) -> dict[str, Any]:
    """What a sign-up request writes on the subscription, with its fresh nonce."""
    values: dict[str, Any]
    if current is None or current == SubscriptionStatus.PENDING:
        values = {
            "status": SubscriptionStatus.PENDING.value,
            "source": source,
            "consent_at": now,
            "consent_ip": ip,
            "confirmed_at": None,
            "confirmed_ip": None,
        }
    else:
        # Unsubscribed (or any other state): the request waits beside it. Whoever typed
        # the address, the unsubscribe stands until the new link is confirmed.
        values = {}
    return values | {"confirm_nonce": new_nonce(), "requested_at": now, "updated_at": now}


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


__all__ = ["WEB_SOURCE", "Consent"]
