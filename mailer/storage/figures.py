"""Figures: counts and rates of sends and deliveries, who works on a send, the report of a
send, and ``/metrics``: what ``mailer status``, ``mailer send report``, the progress of a
send and ``/metrics`` show (read from storage, so every daemon reports the same truth).

Writes no table: read-only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import (
    DeliveryCounts,
    DeliveryStatus,
    Metrics,
    ReportRow,
    SendFigures,
    SendStatus,
)
from mailer.storage.database import Database
from mailer.storage.tables import campaigns, deliveries, lists, sends, subscribers

# Accepted by the relay: sent, and sent then bounced (rates count both).
ACCEPTED = (DeliveryStatus.SENT.value, DeliveryStatus.BOUNCED.value)


class Figures:
    """Counts and rates (``store.figures``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def counts(self, send_id: int) -> DeliveryCounts:
        """A send's deliveries by status."""
        async with self._db.begin() as conn:
            rows = await conn.execute(
                select(deliveries.c.status, func.count())
                .where(deliveries.c.send_id == send_id)
                .group_by(deliveries.c.status)
            )
            return DeliveryCounts.of({str(s): int(n) for s, n in rows.all()})

    async def rate(self, send_id: int, *, now: datetime) -> float:
        """Messages sent per second over the last minute."""
        async with self._db.begin() as conn:
            count = (
                await conn.execute(
                    select(func.count()).where(
                        deliveries.c.send_id == send_id,
                        deliveries.c.status.in_(ACCEPTED),
                        deliveries.c.sent_at >= now - timedelta(minutes=1),
                    )
                )
            ).scalar()
        return float(count or 0) / 60.0

    async def holders(self, send_id: int, *, now: datetime) -> list[tuple[str, int, float]]:
        """Who works on a send: (node, deliveries leased now, messages sent per second over
        the last minute), busiest first."""
        async with self._db.begin() as conn:
            leased: dict[str, int] = dict(
                (
                    await conn.execute(
                        select(deliveries.c.leased_by, func.count())
                        .where(deliveries.c.send_id == send_id, deliveries.c.lease_until > now)
                        .group_by(deliveries.c.leased_by)
                    )
                ).all()
            )
            sent: dict[str, int] = dict(
                (
                    await conn.execute(
                        select(deliveries.c.leased_by, func.count())
                        .where(
                            deliveries.c.send_id == send_id,
                            deliveries.c.status.in_(ACCEPTED),
                            deliveries.c.sent_at >= now - timedelta(minutes=1),
                            deliveries.c.leased_by.is_not(None),
                        )
                        .group_by(deliveries.c.leased_by)
                    )
                ).all()
            )
        nodes = sorted(set(leased) | set(sent), key=lambda w: (-sent.get(w, 0), str(w)))
        return [(str(w), int(leased.get(w, 0)), sent.get(w, 0) / 60.0) for w in nodes]

    async def report(self, send_id: int) -> AsyncIterator[ReportRow]:
        """Every recipient of a send with what happened, by address."""
        query = (
            select(
                subscribers.c.email,
                lists.c.slug.label("list"),
                deliveries.c.status,
                deliveries.c.attempts,
                deliveries.c.smtp_code,
                deliveries.c.smtp_reply,
                deliveries.c.reason,
                deliveries.c.message_id,
                deliveries.c.sent_at,
            )
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .join(lists, lists.c.id == deliveries.c.list_id)
            .where(deliveries.c.send_id == send_id)
            .order_by(subscribers.c.email_key)
        )
        async with self._db.begin() as conn:
            async for row in await conn.stream(query):
                yield ReportRow(**row._mapping)

    async def metrics(self, *, now: datetime, recent: timedelta) -> Metrics:
        """Counts for ``/metrics``: sends running, paused or finished within ``recent``."""
        active = or_(
            sends.c.status.in_([SendStatus.RUNNING.value, SendStatus.PAUSED.value]),
            sends.c.finished_at >= now - recent,
        )
        async with self._db.begin() as conn:
            shown = (
                await conn.execute(
                    select(sends.c.id, campaigns.c.name, sends.c.action, sends.c.status)
                    .join(campaigns, campaigns.c.id == sends.c.campaign_id)
                    .where(active)
                    .order_by(sends.c.id)
                )
            ).all()
            ids = [r.id for r in shown]
            counts, replies, rates = await _of_sends(conn, ids, now=now) if ids else ({}, {}, {})
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
        return Metrics(
            sends=[
                SendFigures(
                    send_id=r.id,
                    campaign=r.name,
                    action=r.action,
                    status=r.status,
                    counts=DeliveryCounts.of(counts.get(r.id, {})),
                    rate=rates.get(r.id, 0) / 60.0,
                )
                for r in shown
            ],
            replies=replies,
            queue_depth=int(depth or 0),
            sends_by_status={s.value: by_status.get(s.value, 0) for s in SendStatus},
        )


async def _of_sends(
    conn: AsyncConnection, ids: list[int], *, now: datetime
) -> tuple[dict[int, dict[str, int]], dict[int, int], dict[int, int]]:
    """For the sends ``ids``: deliveries by status, SMTP reply codes, and sent in the last
    minute."""
    counts: dict[int, dict[str, int]] = {}
    for send_id, status, n in (
        await conn.execute(
            select(deliveries.c.send_id, deliveries.c.status, func.count())
            .where(deliveries.c.send_id.in_(ids))
            .group_by(deliveries.c.send_id, deliveries.c.status)
        )
    ).all():
        counts.setdefault(send_id, {})[status] = int(n)
    replies: dict[int, int] = {}
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
                    deliveries.c.status.in_(ACCEPTED),
                    deliveries.c.sent_at >= now - timedelta(minutes=1),
                )
                .group_by(deliveries.c.send_id)
            )
        ).all()
    }
    return counts, replies, rates
