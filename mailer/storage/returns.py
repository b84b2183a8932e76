"""What comes back after a delivery was sent, the part of ``deliveries`` that bounces write:
finding the delivery a bounce is about (by its id from a return path, by the Message-ID it
echoes, by the send and the address), and marking it ``bounced``.

Writes ``deliveries`` (only their status and reason, from ``sent`` to ``bounced``), as
``storage/deliveries.py`` does for what happens before; functions run inside the caller's
transaction (``storage/bounces.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import DeliveryStatus
from mailer.storage.tables import deliveries, sends, subscribers


@dataclass(frozen=True, slots=True)
class Sent:
    """A delivery a bounce is tied to."""

    id: int
    send_id: int
    subscriber_id: int
    email_key: str
    status: str


def _sent() -> Select[tuple[int, int, int, str, str]]:
    return select(
        deliveries.c.id, deliveries.c.send_id, deliveries.c.subscriber_id,
        subscribers.c.email_key, deliveries.c.status,
    ).join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)  # fmt: skip


def _sent_of(row: Any) -> Sent:
    return Sent(int(row[0]), int(row[1]), int(row[2]), str(row[3]), str(row[4]))


async def by_id(conn: AsyncConnection, delivery_id: int) -> Sent | None:
    row = (await conn.execute(_sent().where(deliveries.c.id == delivery_id))).first()
    return _sent_of(row) if row else None


async def by_message_id(conn: AsyncConnection, message_id: str) -> Sent | None:
    """The delivery whose message had this Message-ID (angle brackets as sent)."""
    value = message_id.strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    rows = (await conn.execute(_sent().where(deliveries.c.message_id == value).limit(2))).all()
    return _sent_of(rows[0]) if len(rows) == 1 else None


_TRACE = re.compile(r"c(\d{1,18})/(\S{1,100})")


async def by_trace(conn: AsyncConnection, trace: str, email_key: str) -> Sent | None:
    """The delivery to ``email_key`` of the send an ``X-Mailer-Send`` value names
    ("c12/reminder:P7D": campaign 12, send key ``reminder:P7D``)."""
    found = _TRACE.fullmatch(trace.strip())
    if found is None:
        return None
    query = (
        _sent()
        .join(sends, sends.c.id == deliveries.c.send_id)
        .where(
            sends.c.campaign_id == int(found[1]),
            sends.c.key == found[2],
            subscribers.c.email_key == email_key,
        )
    )
    row = (await conn.execute(query)).first()
    return _sent_of(row) if row else None


async def mark_bounced(conn: AsyncConnection, delivery_id: int, reason: str, now: datetime) -> bool:
    """A sent delivery's message came back: ``bounced``, the reason saying how. Only from
    ``sent`` (a delivery bounced already keeps its first reason)."""
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status == DeliveryStatus.SENT)
        .values(status=DeliveryStatus.BOUNCED.value, reason=reason[:1000], updated_at=now)
    )
    return bool(result.rowcount)


async def sent_count(conn: AsyncConnection, send_id: int) -> int:
    """How many messages of a send the relay accepted (sent, bounced since included)."""

    query = select(func.count()).where(
        deliveries.c.send_id == send_id,
        deliveries.c.status.in_([DeliveryStatus.SENT, DeliveryStatus.BOUNCED]),
    )
    return int((await conn.execute(query)).scalar_one())
