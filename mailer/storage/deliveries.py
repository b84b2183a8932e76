"""Deliveries: one row per recipient of a send, from materialised to sent, failed or skipped.

Writes ``deliveries`` (and no other table; a hard bounce's suppression goes through
``suppressions``). Every state change that matters for "never lose, never double" is a
conditional statement: deliveries are materialised with ``INSERT ... SELECT ... ON CONFLICT
DO NOTHING`` on the unique (send, subscriber) key; results are written in small batches,
each its own commit; where the database shares leases, a batch is leased to one node.

The skip rule ("suppressed > unsubscribed > inactive") is written once, in
:func:`~.due.skip_reason`, and both the materialisation and :meth:`Deliveries.due` use it;
the queries that pick the due deliveries are built in :mod:`~.due`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import (
    CONFIRM_ACTION,
    DeliveryResult,
    DeliveryStatus,
    Due,
    Recipient,
    SendAction,
    SendSpec,
    SubscriptionStatus,
)
from mailer.storage import outbox
from mailer.storage import suppressions as suppression_writer
from mailer.storage.database import Database
from mailer.storage.due import attemptable, due_query, next_due, skip_reason
from mailer.storage.tables import deliveries, sends, subscribers, subscriptions, suppressions


class Deliveries:
    """The deliveries of sends (``store.deliveries``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def materialise(self, spec: SendSpec, *, now: datetime) -> int:
        """One delivery per subscriber of the send's lists; repeat-safe. Returns rows added.

        Unsubscribed, suppressed and inactive subscribers get a ``skipped`` delivery with the
        reason, so the record says who did not get the send and why.
        """
        statement = materialise_statement(self._db, spec, now=now)
        if statement is None:
            return 0
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(statement)
            return int(result.rowcount or 0)

    async def exist(self, send_id: int) -> bool:
        """Whether the send has any delivery (its audience was materialised)."""
        async with self._db.begin() as conn:
            found = (
                await conn.execute(
                    select(deliveries.c.id).where(deliveries.c.send_id == send_id).limit(1)
                )
            ).scalar()
        return found is not None

    async def has_due(self, send_id: int, *, now: datetime) -> bool:
        """Whether a running send has a delivery to attempt now (and, where leases are
        shared, not leased to a live node)."""
        query = select(deliveries.c.id).where(deliveries.c.send_id == send_id, attemptable(now))
        if self._db.capabilities.shares_leases:
            query = query.where(
                deliveries.c.lease_until.is_(None) | (deliveries.c.lease_until <= now)
            )
        async with self._db.begin() as conn:
            found = (await conn.execute(query.limit(1))).scalar()
        return found is not None

    async def due(
        self,
        send_id: int,
        *,
        after: int,
        limit: int,
        now: datetime,
        pending_ok: bool = False,
        node: str | None = None,
        lease: float = 0.0,
    ) -> list[Due]:
        """The next deliveries to attempt (queued, or deferred and due), by id after ``after``.

        ``pending_ok`` (the confirmation mail of a double opt-in): the subscription's status
        does not matter, its pending request does: without one (confirmed or unsubscribed
        since) the delivery is skipped, since its link could only say "not valid".

        With ``node``, the batch is leased to it for ``lease`` seconds, so that several
        daemons share a send without sending a delivery twice: where leases are shared
        (PostgreSQL) the rows are taken with ``FOR UPDATE SKIP LOCKED`` and rows leased to
        another live node are passed over (a dead node's lease expires and its rows go to
        whoever asks next). On SQLite one process sends per file (see
        ``engine.sending_lock``), so leases are written, for ``mailer status``, but never wait.
        """
        leased_ids: list[int] | None = None
        leased_until = None if node is None else now + timedelta(seconds=lease)
        if node is not None:
            assert leased_until is not None
            leased_ids = await self._lease(
                send_id, after=after, limit=limit, now=now, node=node, until=leased_until
            )
            if not leased_ids:
                return []
        ids = (
            next_due(send_id, after=after, limit=limit, now=now)
            if leased_ids is None
            else leased_ids
        )
        query = due_query(ids, now=now, pending_ok=pending_ok)
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Due(
                id=row["id"],
                attempts=row["attempts"],
                list_id=row["list_id"],
                created_at=row["created_at"],
                recipient=Recipient(
                    id=row["subscriber_id"],
                    email=row["email"],
                    name=row["name"],
                    locale=row["locale"],
                    timezone=row["timezone"],
                    attributes=dict(row["attributes"] or {}),
                    smtputf8=row["smtputf8"],
                    public_id=row["public_id"],
                    confirm_nonce=row["confirm_nonce"] if pending_ok else None,
                ),
                skip_reason=row["skip"],
                lease_until=leased_until,
            )
            for row in rows
        ]

    async def _lease(
        self, send_id: int, *, after: int, limit: int, now: datetime, node: str, until: datetime
    ) -> list[int]:
        """Lease the next ``limit`` attemptable deliveries to ``node``; their ids."""
        where: list[ColumnElement[bool]] = []
        if self._db.capabilities.shares_leases:
            where.append(
                deliveries.c.lease_until.is_(None)
                | (deliveries.c.lease_until <= now)
                | (deliveries.c.leased_by == node)
            )
        free = next_due(
            send_id, after=after, limit=limit, now=now, where=where,
            lock=self._db.capabilities.skip_locked,
        )  # fmt: skip
        async with self._db.begin(write=True) as conn:
            return sorted(
                int(i)
                for i in (
                    await conn.execute(
                        update(deliveries)
                        .where(deliveries.c.id.in_(free.scalar_subquery()))
                        .values(leased_by=node, lease_until=until)
                        .returning(deliveries.c.id)
                    )
                ).scalars()
            )

    async def record(
        self, results: Sequence[DeliveryResult], *, now: datetime, actor: str = "dispatch"
    ) -> None:
        """Write a batch of results in one commit (the group commit of dispatch).

        A result's ``suppress_key`` suppresses that address (a "no such user" reply), with
        a suppression event naming ``actor`` (``send <id>``) and the reply."""
        if not results:
            return
        async with self._db.begin(write=True) as conn:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == _bind("d_id"))
                .values(
                    status=_bind("d_status"),
                    attempts=deliveries.c.attempts + _bind("d_tried"),
                    smtp_code=_bind("d_code"),
                    smtp_reply=_bind("d_reply"),
                    reason=_bind("d_reason"),
                    message_id=func.coalesce(_bind("d_message_id"), deliveries.c.message_id),
                    next_attempt_at=_bind("d_next", deliveries.c.next_attempt_at.type),
                    sent_at=_bind("d_sent_at", deliveries.c.sent_at.type),
                    lease_until=None,  # leased_by stays: who attempted it last
                    updated_at=now,
                ),
                [
                    {
                        "d_id": o.delivery_id,
                        "d_status": o.status.value,
                        "d_tried": 0 if o.status == DeliveryStatus.SKIPPED else 1,
                        "d_code": o.code,
                        "d_reply": o.reply,
                        "d_reason": o.reason,
                        "d_message_id": o.message_id,
                        "d_next": o.next_attempt_at,
                        "d_sent_at": now if o.status == DeliveryStatus.SENT else None,
                    }
                    for o in results
                ],
            )
            replies = {
                o.suppress_key: f"{o.code or ''} {o.reply or ''}".strip()
                for o in results
                if o.suppress_key
            }
            if replies:
                await suppression_writer.add_bounced(conn, self._db, replies, actor=actor, now=now)
            await outbox.results(conn, results, now=now)

    async def renew(self, send_id: int, *, node: str, until: datetime, now: datetime) -> list[int]:
        """Extend the live leases ``node`` holds on a send (its heartbeat); return the
        deliveries renewed. A lease that ran out is not renewed: another node may have
        its delivery now.

        Where rows are locked (PostgreSQL), those another transaction holds are passed over
        (``SKIP LOCKED``): they are being recorded, their lease about to end. Waiting for
        them deadlocked with the recorder, which takes its rows one by one in its own order.
        """
        held = select(deliveries.c.id).where(
            deliveries.c.send_id == send_id,
            deliveries.c.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)),
            deliveries.c.leased_by == node,
            deliveries.c.lease_until > now,
        )
        if self._db.capabilities.skip_locked:
            held = held.with_for_update(skip_locked=True)
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(held.scalar_subquery()))
                .values(lease_until=until)
                .returning(deliveries.c.id)
            )
            return [int(i) for i in result.scalars()]

    async def release(self, send_id: int | None, *, node: str) -> int:
        """Give back what ``node`` leased and did not attempt (a stop, a pause, the end of
        a pass; ``send_id`` None: every send), so that another daemon, or the next start,
        need not wait for the expiry."""
        query = update(deliveries).where(
            deliveries.c.leased_by == node, deliveries.c.lease_until.is_not(None)
        )
        if send_id is not None:
            query = query.where(deliveries.c.send_id == send_id)
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(query.values(lease_until=None))
            return int(result.rowcount or 0)

    async def lease_holders(self, *, now: datetime) -> list[str]:
        """The nodes holding a live lease on some delivery."""
        async with self._db.begin() as conn:
            rows = await conn.execute(
                select(deliveries.c.leased_by)
                .where(deliveries.c.lease_until > now, deliveries.c.leased_by.is_not(None))
                .distinct()
            )
            return sorted(str(w) for w in rows.scalars())

    async def next_retry(self, send_id: int) -> datetime | None:
        soonest = select(func.min(deliveries.c.next_attempt_at)).where(
            deliveries.c.send_id == send_id, deliveries.c.status == DeliveryStatus.DEFERRED
        )
        async with self._db.begin() as conn:
            return (await conn.execute(soonest)).scalar()  # type: ignore[no-any-return]


# --- writers inside the caller's transaction -------------------------------------------------


def materialise_statement(db: Database, spec: SendSpec, *, now: datetime) -> Any:
    """The INSERT ... SELECT that makes a send's deliveries (None: a confirmation mail, whose
    one delivery is made with the send)."""
    if spec.action == CONFIRM_ACTION:
        return None
    if spec.audience_send_id is not None:
        return _audience_statement(db, spec, now=now)
    subscribed = func.max(
        case((subscriptions.c.status == SubscriptionStatus.SUBSCRIBED, 1), else_=0)
    )
    chosen_list = func.coalesce(
        func.min(
            case(
                (
                    subscriptions.c.status == SubscriptionStatus.SUBSCRIBED,
                    subscriptions.c.list_id,
                ),
                else_=None,
            )
        ),
        func.min(subscriptions.c.list_id),
    )
    reason = skip_reason(
        suppressed=func.max(suppressions.c.reason),
        not_subscribed=subscribed == 0,
        subscriber_status=func.max(subscribers.c.status),
    )
    status = case(
        (reason.is_(None), literal(DeliveryStatus.QUEUED.value)),
        else_=literal(DeliveryStatus.SKIPPED.value),
    )
    query = (
        select(
            literal(spec.id),
            subscriptions.c.subscriber_id,
            chosen_list,
            status,
            reason,
            literal(0),
            literal(now, type_=deliveries.c.created_at.type),
            literal(now, type_=deliveries.c.updated_at.type),
        )
        .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
        .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
        .where(
            subscriptions.c.list_id.in_([li.id for li in spec.lists]),
            subscriptions.c.status.in_(
                [SubscriptionStatus.SUBSCRIBED.value, SubscriptionStatus.UNSUBSCRIBED.value]
            ),
        )
        .group_by(subscriptions.c.subscriber_id)
    )
    return (
        db.insert(deliveries)
        .from_select(
            ["send_id", "subscriber_id", "list_id", "status", "reason", "attempts",
             "created_at", "updated_at"],
            query,
        )
        .on_conflict_do_nothing(index_elements=["send_id", "subscriber_id"])
    )  # fmt: skip


EVENT_MAILS = (SendAction.INVITATION, SendAction.REMINDER, SendAction.UPDATE)  # in calendars


def _audience_statement(db: Database, spec: SendSpec, *, now: datetime) -> Any:
    """Deliveries for an event's update or cancellation: everyone one of the event's mails
    reached (each put the event in their calendar: a reminder to a newcomer too), once."""
    reached = (
        select(
            literal(spec.id),
            deliveries.c.subscriber_id,
            func.min(deliveries.c.list_id),
            literal(DeliveryStatus.QUEUED.value),
            literal(0),
            literal(now, type_=deliveries.c.created_at.type),
            literal(now, type_=deliveries.c.updated_at.type),
        )
        .join(sends, sends.c.id == deliveries.c.send_id)
        .where(
            sends.c.campaign_id == spec.campaign_id,
            sends.c.id != spec.id,
            sends.c.action.in_([a.value for a in EVENT_MAILS]),
            deliveries.c.status == DeliveryStatus.SENT,
        )
        .group_by(deliveries.c.subscriber_id)
    )
    return (
        db.insert(deliveries)
        .from_select(
            ["send_id", "subscriber_id", "list_id", "status", "attempts", "created_at",
             "updated_at"],
            reached,
        )
        .on_conflict_do_nothing(index_elements=["send_id", "subscriber_id"])
    )  # fmt: skip


async def add_one(
    conn: AsyncConnection, send_id: int, *, subscriber_id: int, list_id: int, now: datetime
) -> None:
    """The one delivery of a confirmation mail, made with its send."""
    await conn.execute(
        insert(deliveries).values(
            send_id=send_id, subscriber_id=subscriber_id, list_id=list_id,
            status=DeliveryStatus.QUEUED.value, attempts=0, created_at=now, updated_at=now,
        )
    )  # fmt: skip


async def skip_rest(conn: AsyncConnection, send_ids: list[int], reason: str, now: datetime) -> None:
    """A cancelled or missed send's deliveries not yet attempted end skipped, with the reason:
    every recipient of a send ends sent, failed or skipped."""
    if not send_ids:
        return
    await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.send_id.in_(send_ids),
            deliveries.c.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED]),
        )
        .values(status=DeliveryStatus.SKIPPED.value, reason=reason, updated_at=now)
    )


async def requeue_failed(conn: AsyncConnection, send_id: int, *, now: datetime) -> int:
    """Queue again a send's failed deliveries, and those skipped for a suppression lifted
    since; returns how many."""
    lifted = (
        select(deliveries.c.id)
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
        .where(
            deliveries.c.send_id == send_id,
            deliveries.c.status == DeliveryStatus.SKIPPED,
            deliveries.c.reason.startswith("suppressed:"),
            suppressions.c.id.is_(None),
        )
    )
    result = await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.send_id == send_id,
            (deliveries.c.status == DeliveryStatus.FAILED)
            | deliveries.c.id.in_(lifted.scalar_subquery()),
        )
        .values(
            status=DeliveryStatus.QUEUED.value, next_attempt_at=None, reason=None, updated_at=now
        )
    )
    return int(result.rowcount or 0)


def _bind(name: str, type_: Any = None) -> Any:
    return bindparam(name, type_=type_)
