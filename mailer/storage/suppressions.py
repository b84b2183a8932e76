"""Suppressions: the addresses never mailed again, and their history.

Writes ``suppressions`` and ``suppression_events`` (and no other table): staff suppress and
lift (through ``store.subscribers``), and a "no such user" reply suppresses an address while
its result is recorded (through ``store.deliveries``). Functions run inside the caller's
transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import SuppressionAction, SuppressionEvent, SuppressionReason
from mailer.storage.database import Database
from mailer.storage.tables import suppression_events, suppressions


async def add(
    conn: AsyncConnection,
    key: str,
    *,
    reason: SuppressionReason,
    detail: str,
    actor: str,
    now: datetime,
) -> None:
    """Suppress one address (not suppressed yet), with its event in the history."""
    await conn.execute(
        insert(suppressions).values(
            email_key=key, reason=reason.value, detail=detail, created_at=now
        )
    )
    await conn.execute(
        insert(suppression_events).values(
            email_key=key, action=SuppressionAction.SUPPRESS.value, reason=reason.value,
            detail=detail, actor=actor, at=now,
        )
    )  # fmt: skip


async def add_many(
    conn: AsyncConnection,
    db: Database,
    wanted: Mapping[str, tuple[SuppressionReason, str]],
    *,
    actor: str,
    now: datetime,
) -> set[str]:
    """Suppress the addresses of ``wanted`` (address key -> reason and detail), each with its
    event in the history, skipping any suppressed already (by a concurrent writer too): the
    keys suppressed here."""
    if not wanted:
        return set()
    keys = list(wanted)  # the history in the order given
    inserted = await conn.execute(
        db.insert(suppressions)
        .on_conflict_do_nothing(index_elements=["email_key"])
        .returning(suppressions.c.email_key),
        [
            {"email_key": k, "reason": wanted[k][0].value, "detail": wanted[k][1],
             "created_at": now}
            for k in keys
        ],
    )  # fmt: skip
    fresh = {str(k) for k in inserted.scalars()}
    if fresh:
        await conn.execute(
            suppression_events.insert(),
            [
                {"email_key": k, "action": SuppressionAction.SUPPRESS.value,
                 "reason": wanted[k][0].value, "detail": wanted[k][1], "actor": actor, "at": now}
                for k in keys
                if k in fresh
            ],
        )  # fmt: skip
    return fresh


async def add_bounced(
    conn: AsyncConnection, db: Database, replies: Mapping[str, str], *, actor: str, now: datetime
) -> None:
    """Suppress the addresses of ``replies`` (address key -> the refusing reply) that are not
    suppressed yet, as hard bounces; a concurrent suppression of one of them is kept."""
    already = set(
        (
            await conn.execute(
                select(suppressions.c.email_key).where(
                    suppressions.c.email_key.in_(sorted(replies))
                )
            )
        ).scalars()
    )
    fresh = sorted(set(replies) - already)
    if not fresh:
        return
    await conn.execute(
        db.insert(suppressions)
        .values(
            [
                {"email_key": k, "reason": SuppressionReason.HARD_BOUNCE.value,
                 "detail": replies[k][:1000], "created_at": now}
                for k in fresh
            ]
        )
        .on_conflict_do_nothing(index_elements=["email_key"])
    )  # fmt: skip
    await conn.execute(
        suppression_events.insert(),
        [
            {"email_key": k, "action": SuppressionAction.SUPPRESS.value,
             "reason": SuppressionReason.HARD_BOUNCE.value,
             "detail": replies[k][:1000], "actor": actor, "at": now}
            for k in fresh
        ],
    )  # fmt: skip


async def lift(conn: AsyncConnection, key: str, *, why: str, actor: str, now: datetime) -> None:
    """Lift the suppression of ``key``; the history keeps it, with this lift."""
    await conn.execute(delete(suppressions).where(suppressions.c.email_key == key))
    await conn.execute(
        insert(suppression_events).values(
            email_key=key, action=SuppressionAction.UNSUPPRESS.value,
            reason=SuppressionReason.MANUAL.value, detail=why, actor=actor, at=now,
        )
    )  # fmt: skip


async def history(conn: AsyncConnection, key: str) -> list[SuppressionEvent]:
    rows = (
        await conn.execute(
            select(suppression_events)
            .where(suppression_events.c.email_key == key)
            .order_by(suppression_events.c.at, suppression_events.c.id)
        )
    ).all()
    return [
        SuppressionEvent(at=h.at, action=h.action, reason=h.reason, detail=h.detail, actor=h.actor)
        for h in rows
    ]
