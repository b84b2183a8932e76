"""The queries that pick a send's due deliveries, and the skip rule they apply.

Built here, run by :mod:`~.deliveries` (the pre-flight's and the pass's keyset batches, the
leases) and, for the skip rule, by the materialisation. Nothing here executes a statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, case, literal, select, union_all

from mailer.models import DeliveryStatus, SubscriberStatus, SubscriptionStatus
from mailer.storage.tables import deliveries, subscribers, subscriptions, suppressions

UNSUBSCRIBED = "unsubscribed"
NO_PENDING_SIGNUP = "no pending sign-up"


def skip_reason(
    *,
    suppressed: ColumnElement[Any],
    not_subscribed: ColumnElement[bool],
    subscriber_status: ColumnElement[Any],
    unsubscribed: str = UNSUBSCRIBED,
) -> ColumnElement[Any]:
    """Why a recipient gets no mail (NULL: they get it), first reason first: suppressed
    (``suppressed`` holds the reason), then not subscribed (said as ``unsubscribed``), then
    a subscriber no longer active. The one definition of the skip rule."""
    return case(
        (suppressed.is_not(None), literal("suppressed: ") + suppressed),
        (not_subscribed, literal(unsubscribed)),
        (subscriber_status != SubscriberStatus.ACTIVE, literal("subscriber ") + subscriber_status),
        else_=None,
    )


def attemptable(now: datetime) -> ColumnElement[bool]:
    return (deliveries.c.status == DeliveryStatus.QUEUED) | (
        (deliveries.c.status == DeliveryStatus.DEFERRED) & (deliveries.c.next_attempt_at <= now)
    )


def next_due(
    send_id: int,
    *,
    after: int,
    limit: int,
    now: datetime,
    where: Sequence[ColumnElement[bool]] = (),
    lock: bool = False,
) -> Select[Any]:
    """The ids of the next ``limit`` deliveries to attempt after ``after``, by id.

    The queued ones and the deferred ones whose time has come are each read in id order
    from the (send, status, id) index, ``limit`` at most, and the two merged: asked with one
    ``OR`` (:func:`attemptable`), SQLite collected every due row after ``after`` (the rest
    of the send), joined and sorted them to keep the first ``limit``, so that each batch of
    a million-recipient send cost more than the one before. ``lock``: each branch's rows
    are taken ``FOR UPDATE SKIP LOCKED`` (PostgreSQL's leases).
    """

    def branch(*conditions: ColumnElement[bool]) -> Select[Any]:
        rows = (
            select(deliveries.c.id)
            .where(deliveries.c.send_id == send_id, *conditions, deliveries.c.id > after, *where)
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        if lock:
            rows = rows.with_for_update(skip_locked=True)
        return select(rows.subquery().c.id)

    both = union_all(
        branch(deliveries.c.status == DeliveryStatus.QUEUED),
        branch(deliveries.c.status == DeliveryStatus.DEFERRED, deliveries.c.next_attempt_at <= now),
    ).subquery()
    return select(both.c.id).order_by(both.c.id).limit(limit)


def due_query(ids: Select[Any] | list[int], *, now: datetime, pending_ok: bool) -> Any:
    """The deliveries ``ids`` (of :func:`next_due`, or leased) still to attempt, by id,
    with their recipients as they are now and why to skip each (the skip rule; for a
    confirmation mail, the pending request stands for the subscription)."""
    not_subscribed = (
        subscriptions.c.confirm_nonce.is_(None)
        if pending_ok
        else subscriptions.c.status.is_distinct_from(SubscriptionStatus.SUBSCRIBED.value)
    )
    skip = skip_reason(
        suppressed=suppressions.c.reason,
        not_subscribed=not_subscribed,
        subscriber_status=subscribers.c.status,
        unsubscribed=NO_PENDING_SIGNUP if pending_ok else UNSUBSCRIBED,
    )
    return (
        select(
            deliveries.c.id,
            deliveries.c.attempts,
            deliveries.c.list_id,
            deliveries.c.created_at,
            deliveries.c.subscriber_id,
            subscribers.c.email,
            subscribers.c.name,
            subscribers.c.locale,
            subscribers.c.timezone,
            subscribers.c.attributes,
            subscribers.c.smtputf8,
            subscribers.c.public_id,
            subscriptions.c.confirm_nonce,
            skip.label("skip"),
        )
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .outerjoin(
            subscriptions,
            (subscriptions.c.subscriber_id == deliveries.c.subscriber_id)
            & (subscriptions.c.list_id == deliveries.c.list_id),
        )
        .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
        .where(deliveries.c.id.in_(ids), attemptable(now))
        .order_by(deliveries.c.id)
    )
