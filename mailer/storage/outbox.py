"""The outbox: the part of :mod:`mailer.storage.webhooks` the other nouns call to report a change.

:func:`emit`, called with the caller's connection, writes each event to ``webhook_events`` and
one pending ``webhook_deliveries`` row per endpoint subscribed to its type, in the same
transaction as the change: a change that commits has its events, one that rolls back has none.
An event no endpoint wants is not written at all (one look at the endpoints per call).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import (
    BounceAction,
    BounceKind,
    BounceNote,
    DeliveryResult,
    DeliveryStatus,
    EventType,
    HookStatus,
)
from mailer.storage.hook_tables import webhook_deliveries, webhook_endpoints, webhook_events
from mailer.storage.tables import campaigns, deliveries, sends, subscribers

_CACHE = "mailer.webhook_endpoints"  # conn.info key: (transaction, endpoints)


def new_event_id() -> str:
    """A ``webhook-id``: ``msg_`` and 128 random bits, unique per event."""
    return "msg_" + secrets.token_urlsafe(16)


def event_types(values: Iterable[str]) -> frozenset[EventType]:
    """The known event types among stored values (an unknown one, from a newer release, is
    skipped)."""
    return frozenset(EventType(v) for v in values if v in EventType._value2member_map_)


async def _subscribed(conn: AsyncConnection) -> list[tuple[int, frozenset[EventType]]]:
    """The endpoints with the types each wants, read once per transaction (a list's import or
    a send's group commit asks for every row). A disabled endpoint is given its events too:
    they wait, unclaimed, until it is enabled again or they are older than the retry window
    (never lost because an endpoint was down for long)."""
    transaction = conn.get_transaction()
    cached = conn.info.get(_CACHE)
    if cached is not None and cached[0] is transaction:
        return cast(list[tuple[int, frozenset[EventType]]], cached[1])
    rows = (await conn.execute(select(webhook_endpoints.c.id, webhook_endpoints.c.events))).all()
    wanted = [(int(r.id), event_types(r.events)) for r in rows]
    conn.info[_CACHE] = (transaction, wanted)
    return wanted


async def wants(conn: AsyncConnection, kind: EventType) -> bool:
    """Whether an endpoint subscribes to ``kind``: a caller that must read more to
    describe the event asks first, and reads nothing when nobody listens."""
    return any(kind in types for _, types in await _subscribed(conn))


async def emit(
    conn: AsyncConnection,
    events: Sequence[tuple[EventType, dict[str, Any]]],
    *,
    now: datetime,
) -> int:
    """Write ``events`` (type, data) to the outbox inside the caller's transaction, each with
    one pending delivery per endpoint subscribed to its type (a disabled endpoint's wait);
    how many were written."""
    if not events:
        return 0
    wanted = await _subscribed(conn)
    if not wanted:
        return 0
    stamp = now.isoformat().replace("+00:00", "Z")
    outbox: list[dict[str, Any]] = []
    fan: dict[str, list[int]] = {}
    for kind, data in events:
        targets = [endpoint for endpoint, types in wanted if kind in types]
        if targets:
            event_id = new_event_id()
            payload = {"type": kind.value, "timestamp": stamp, "data": data}
            outbox.append(
                {"event_id": event_id, "type": kind.value, "payload": payload, "created_at": now}
            )
            fan[event_id] = targets
    if not outbox:
        return 0
    await conn.execute(insert(webhook_events), outbox)
    ids = await conn.execute(
        select(webhook_events.c.id, webhook_events.c.event_id).where(
            webhook_events.c.event_id.in_(list(fan))
        )
    )
    await conn.execute(
        insert(webhook_deliveries),
        [
            {
                "event_row": int(row.id),
                "endpoint_id": endpoint,
                "status": HookStatus.PENDING.value,
                "attempts": 0,
                "next_at": now,
            }
            for row in ids
            for endpoint in fan[row.event_id]
        ],
    )
    return len(outbox)


async def delivery_events(
    conn: AsyncConnection,
    events: Sequence[tuple[EventType, int, dict[str, Any]]],
    *,
    now: datetime,
) -> int:
    """Emit events about deliveries, each (type, delivery id, extra data): the data names the
    delivery, its send and campaign, and the subscriber (public id and address), with
    ``extra`` (the SMTP reply, the bounce...). Reads nothing when nobody listens."""
    kinds = {kind for kind, _, _ in events}
    listened = [kind for kind in kinds if await wants(conn, kind)]
    chosen = [e for e in events if e[0] in listened]
    if not chosen:
        return 0
    d, s = deliveries, subscribers
    found: dict[int, Any] = {}
    ids = sorted({delivery_id for _, delivery_id, _ in chosen})
    for start in range(0, len(ids), 500):
        rows = await conn.execute(
            select(
                d.c.id,
                d.c.send_id,
                d.c.status,
                d.c.message_id,
                s.c.public_id,
                s.c.email,
                sends.c.action,
                campaigns.c.name.label("campaign"),
            )
            .join(s, s.c.id == d.c.subscriber_id)
            .join(sends, sends.c.id == d.c.send_id)
            .join(campaigns, campaigns.c.id == sends.c.campaign_id)
            .where(d.c.id.in_(ids[start : start + 500]))
        )
        found.update({int(r.id): r for r in rows})
    described = [
        (kind, _delivery(found[delivery_id]) | extra)
        for kind, delivery_id, extra in chosen
        if delivery_id in found
    ]
    return await emit(conn, described, now=now)


def _delivery(row: Any) -> dict[str, Any]:
    return {
        "delivery": {"id": int(row.id), "status": row.status, "message_id": row.message_id},
        "send": {"id": int(row.send_id), "action": row.action, "campaign": row.campaign},
        "subscriber": {"id": row.public_id, "email": row.email},
    }


async def send_event(
    conn: AsyncConnection, kind: EventType, send_id: int, *, now: datetime, reason: str | None
) -> int:
    """Emit a send's event (started, finished, paused) with its campaign, figures and why."""
    if not await wants(conn, kind):
        return 0
    row = (
        await conn.execute(
            select(sends, campaigns.c.name.label("campaign"))
            .join(campaigns, campaigns.c.id == sends.c.campaign_id)
            .where(sends.c.id == send_id)
        )
    ).first()
    if row is None:
        return 0
    data = {
        "send": {
            "id": int(row.id), "key": row.key, "action": row.action, "campaign": row.campaign,
            "status": row.status, "due_at": row.due_at.isoformat(),
            "counts": {
                "total": int(row.total), "sent": int(row.sent), "failed": int(row.failed),
                "skipped": int(row.skipped), "deferred": int(row.deferred),
            },
        },
        "reason": reason,
    }  # fmt: skip
    return await emit(conn, [(kind, data)], now=now)


# The webhook event a delivery's result is (deferred and skipped ones are none).
_RESULTS = {
    DeliveryStatus.SENT: EventType.DELIVERY_SENT,
    DeliveryStatus.FAILED: EventType.DELIVERY_FAILED,
}


async def results(conn: AsyncConnection, done: Sequence[DeliveryResult], *, now: datetime) -> int:
    """Emit ``delivery.sent`` and ``delivery.failed`` for a group commit's results."""
    return await delivery_events(
        conn,
        [
            (_RESULTS[o.status], o.delivery_id, {"smtp": {"code": o.code, "reply": o.reply}})
            for o in done
            if o.status in _RESULTS
        ],
        now=now,
    )


async def bounce_event(
    conn: AsyncConnection,
    delivery_id: int,
    note: BounceNote,
    *,
    action: BounceAction,
    marked: bool,
    now: datetime,
) -> int:
    """Emit what a tied bounce says of a delivery: ``complaint.received`` for a complaint,
    ``delivery.bounced`` when it marked the delivery bounced (a delayed DSN, an auto-reply
    and a repeat of a bounce already counted are none)."""
    if note.kind is BounceKind.COMPLAINT:
        kind = EventType.COMPLAINT
    elif marked:
        kind = EventType.DELIVERY_BOUNCED
    else:
        return 0
    bounce = {
        "kind": note.kind.value, "status": note.status, "diagnostic": note.diagnostic[:1000],
        "action": action.value,
    }  # fmt: skip
    return await delivery_events(conn, [(kind, delivery_id, {"bounce": bounce})], now=now)
