"""The outbox: the part of :mod:`mailer.storage.webhooks` the other nouns call to report a change.

:func:`emit`, called with the caller's connection, writes each event to ``webhook_events`` and
one pending ``webhook_deliveries`` row per active endpoint subscribed to its type, in the same
transaction as the change: a change that commits has its events, one that rolls back has none.
An event no endpoint wants is not written at all (one look at the endpoints per call).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import EventType, HookStatus
from mailer.storage.hook_tables import webhook_deliveries, webhook_endpoints, webhook_events


def new_event_id() -> str:
    """A ``webhook-id``: ``msg_`` and 128 random bits, unique per event."""
    return "msg_" + secrets.token_urlsafe(16)


def event_types(values: Iterable[str]) -> frozenset[EventType]:
    """The known event types among stored values (an unknown one, from a newer release, is
    skipped)."""
    return frozenset(EventType(v) for v in values if v in EventType._value2member_map_)


async def emit(
    conn: AsyncConnection,
    events: Sequence[tuple[EventType, dict[str, Any]]],
    *,
    now: datetime,
) -> int:
    """Write ``events`` (type, data) to the outbox inside the caller's transaction, each with
    one pending delivery per active endpoint subscribed to its type; how many were written."""
    if not events:
        return 0
    rows = (
        await conn.execute(
            select(webhook_endpoints.c.id, webhook_endpoints.c.events).where(
                webhook_endpoints.c.disabled_at.is_(None)
            )
        )
    ).all()
    if not rows:
        return 0
    wanted = [(int(r.id), event_types(r.events)) for r in rows]
    stamp = now.isoformat().replace("+00:00", "Z")
    outbox: list[dict[str, Any]] = []
    fan: dict[str, list[int]] = {}
    for kind, data in events:
        targets = [endpoint for endpoint, types in wanted if kind in types]
        if targets:
            event_id = new_event_id()
            payload = {"type": kind.value, "timestamp": stamp, "data": data}
            outbox.append({"event_id": event_id, "type": kind.value, "payload": payload})
            fan[event_id] = targets
    if not outbox:
        return 0
    await conn.execute(
        insert(webhook_events).values(
            event_id=bindparam("event_id"),
            type=bindparam("type"),
            payload=bindparam("payload", type_=webhook_events.c.payload.type),
            created_at=now,
        ),
        outbox,
    )
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
