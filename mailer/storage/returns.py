"""What comes back after a delivery was sent, the part of ``deliveries`` that bounces write:
finding the delivery a bounce is about (by its id from a return path, by the Message-ID it
echoes, by the send and the address), and marking it ``bounced``.

Writes ``deliveries`` (only their status and reason, from ``sent`` to ``bounced``), as
``storage/deliveries.py`` does for what happens before; functions run inside the caller's
transaction (``storage/bounces.py``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, false, func, or_, select, update
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


async def by_ids(conn: AsyncConnection, ids: Collection[int]) -> dict[int, Sent]:
    """The deliveries of ``ids`` found, by id (a batch's return paths)."""
    found: dict[int, Sent] = {}
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), _CHUNK):
        rows = await conn.execute(
            _sent().where(deliveries.c.id.in_(wanted[start : start + _CHUNK]))
        )
        found.update((s.id, s) for s in map(_sent_of, rows))
    return found


def message_key(message_id: str) -> str:
    """A Message-ID as the deliveries keep it: angle brackets as sent."""
    value = message_id.strip()
    return value if value.startswith("<") else f"<{value}>"


async def by_message_id(conn: AsyncConnection, message_id: str) -> Sent | None:
    """The delivery whose message had this Message-ID (angle brackets as sent)."""
    value = message_key(message_id)
    rows = (await conn.execute(_sent().where(deliveries.c.message_id == value).limit(2))).all()
    return _sent_of(rows[0]) if len(rows) == 1 else None


async def by_message_ids(conn: AsyncConnection, message_ids: Iterable[str]) -> dict[str, Sent]:
    """:func:`by_message_id` of many, keyed by :func:`message_key`: a Message-ID that more
    than one delivery had ties none."""
    wanted = sorted({message_key(m) for m in message_ids})
    seen: dict[str, list[Sent]] = {}
    for start in range(0, len(wanted), _CHUNK):
        query = _sent().add_columns(deliveries.c.message_id)
        rows = await conn.execute(
            query.where(deliveries.c.message_id.in_(wanted[start : start + _CHUNK]))
        )
        for row in rows:
            seen.setdefault(str(row[5]), []).append(_sent_of(row))
    return {value: found[0] for value, found in seen.items() if len(found) == 1}


_TRACE = re.compile(r"c(\d{1,18})/(\S{1,100})")
_CHUNK = 500  # values in one IN (...)


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


async def by_traces(
    conn: AsyncConnection, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Sent]:
    """:func:`by_trace` of many (trace, email key) pairs, in one query per batch."""
    pairs = sorted(set(wanted))
    per_send: dict[tuple[int, str], set[str]] = {}
    for trace, key in pairs:
        found = _TRACE.fullmatch(trace.strip())
        if found is not None:
            per_send.setdefault((int(found[1]), found[2]), set()).add(key)
    if not per_send:
        return {}
    which = or_(
        false(),
        *(
            and_(
                sends.c.campaign_id == c,
                sends.c.key == k,
                subscribers.c.email_key.in_(sorted(keys)),
            )
            for (c, k), keys in per_send.items()
        ),
    )
    query = (
        _sent()
        .add_columns(sends.c.campaign_id, sends.c.key)
        .join(sends, sends.c.id == deliveries.c.send_id)
        .where(which)
    )
    rows = {(int(r[5]), str(r[6]), str(r[3])): _sent_of(r) for r in await conn.execute(query)}
    result: dict[tuple[str, str], Sent] = {}
    for trace, key in pairs:
        found = _TRACE.fullmatch(trace.strip())
        hit = rows.get((int(found[1]), found[2], key)) if found else None
        if hit is not None:
            result[(trace, key)] = hit
    return result


async def mark_bounced(conn: AsyncConnection, delivery_id: int, reason: str, now: datetime) -> bool:
    """A sent delivery's message came back: ``bounced``, the reason saying how. Only from
    ``sent`` (a delivery bounced already keeps its first reason)."""
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status == DeliveryStatus.SENT)
        .values(status=DeliveryStatus.BOUNCED.value, reason=reason[:1000], updated_at=now)
    )
    return bool(result.rowcount)


async def mark_many(conn: AsyncConnection, reasons: Mapping[int, str], now: datetime) -> set[int]:
    """:func:`mark_bounced` of many deliveries (id -> reason) in one statement; the ids it
    marked (those still ``sent``)."""
    if not reasons:
        return set()
    ids = sorted(reasons)
    reason = case({i: reasons[i][:1000] for i in ids}, value=deliveries.c.id)
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(ids), deliveries.c.status == DeliveryStatus.SENT)
        .values(status=DeliveryStatus.BOUNCED.value, reason=reason, updated_at=now)
        .returning(deliveries.c.id)
    )
    return {int(i) for i in result.scalars()}


async def sent_count(conn: AsyncConnection, send_id: int) -> int:
    """How many messages of a send the relay accepted (sent, bounced since included)."""

    query = select(func.count()).where(
        deliveries.c.send_id == send_id,
        deliveries.c.status.in_([DeliveryStatus.SENT, DeliveryStatus.BOUNCED]),
    )
    return int((await conn.execute(query)).scalar_one())
