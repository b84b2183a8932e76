"""Outgoing webhooks: the endpoints, the outbox of events, and where each stands per endpoint.

Writes ``webhook_endpoints``, ``webhook_events``, ``webhook_deliveries`` and
``webhook_attempts`` (and no other table), with its part :mod:`mailer.storage.outbox`, whose
``emit`` is how the other nouns report a change, inside their own transaction.

``store.webhooks`` manages the endpoints and is what the daemon's poster uses: ``claim``
leases due deliveries to one node (``FOR UPDATE SKIP LOCKED`` where the database has it, so
each goes to one daemon; a lease that runs out, say the daemon was killed, frees it again: at
least once), ``record`` writes each attempt's outcome and disables an endpoint that failed
for too long, ``expire`` gives up on events older than the retry window.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.errors import NotFoundError
from mailer.models import DueHook, Endpoint, EventType, HookAttempt, HookLine, HookStatus
from mailer.storage import audit
from mailer.storage.database import Database
from mailer.storage.hook_tables import (
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_events,
)
from mailer.storage.outbox import event_types

_ERROR, _ANSWER = 500, 500
MAX_PAGE = 500


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: ``whsec_`` and base64 of 32 bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _bare(url: str) -> str:
    """A URL for the audit log: without its query, which may carry the receiver's token."""
    head, mark, _ = url.partition("?")
    return head + ("?..." if mark else "")


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=int(row.id),
        url=row.url,
        events=event_types(row.events),
        secret=row.secret,
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
        failing_since=row.failing_since,
        failures=int(row.failures),
    )


async def _tally(
    conn: AsyncConnection,
    attempts: Sequence[HookAttempt],
    now: datetime,
    disable_after: timedelta,
    min_failures: int,
) -> list[int]:
    """Count each endpoint's run of failures (a success ends it); disable those that failed
    for ``disable_after`` and ``min_failures`` times at least; their ids."""
    e = webhook_endpoints
    ok = {a.endpoint_id for a in attempts if a.delivered}
    bad = {a.endpoint_id for a in attempts if not a.delivered} - ok
    if ok:
        await conn.execute(update(e).where(e.c.id.in_(ok)).values(failures=0, failing_since=None))
    for endpoint_id in bad:
        count = sum(1 for a in attempts if a.endpoint_id == endpoint_id)
        await conn.execute(
            update(e)
            .where(e.c.id == endpoint_id)
            .values(
                failures=e.c.failures + count,
                failing_since=func.coalesce(e.c.failing_since, now),
            )
        )
    gone: list[int] = []
    if bad:
        disabled = await conn.execute(
            update(e)
            .where(
                e.c.id.in_(bad),
                e.c.disabled_at.is_(None),
                e.c.failures >= min_failures,
                e.c.failing_since <= now - disable_after,
            )
            .values(
                disabled_at=now,
                disabled_reason=f"every attempt failed for {disable_after} or longer",
            )
            .returning(e.c.id)
        )
        gone = [int(i) for i in disabled.scalars()]
    return gone


class Webhooks:
    """Webhook endpoints and the outbox's deliveries (``store.webhooks``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self, *, url: str, events: Iterable[EventType], description: str, actor: str, now: datetime
    ) -> Endpoint:
        """A new endpoint with a fresh secret (shown once by the caller)."""
        types = sorted({EventType(e).value for e in events})
        async with self._db.begin(write=True) as conn:
            new_id = (
                await conn.execute(
                    insert(webhook_endpoints)
                    .values(
                        url=url,
                        events=types,
                        secret=new_secret(),
                        description=description,
                        created_by=actor,
                        created_at=now,
                        failures=0,
                    )
                    .returning(webhook_endpoints.c.id)
                )
            ).scalar_one()
            await audit.record(
                conn,
                actor=actor,
                action="webhook.add",
                target=f"webhook:{new_id}",
                details={"url": _bare(url), "events": " ".join(types)},
                client=None,
                now=now,
            )
        return await self.get(int(new_id))

    async def get(self, endpoint_id: int) -> Endpoint:
        async with self._db.begin() as conn:
            row = (
                await conn.execute(
                    select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
                )
            ).first()
        if row is None:
            raise NotFoundError(f"no webhook endpoint {endpoint_id} (see `mailer webhooks list`)")
        return _endpoint(row)

    async def all(self) -> list[Endpoint]:
        async with self._db.begin() as conn:
            rows = (
                await conn.execute(select(webhook_endpoints).order_by(webhook_endpoints.c.id))
            ).all()
        return [_endpoint(r) for r in rows]

    async def remove(self, endpoint_id: int, *, actor: str, now: datetime) -> Endpoint:
        """Delete an endpoint with its deliveries (what it had not received is not sent)."""
        gone = await self.get(endpoint_id)
        async with self._db.begin(write=True) as conn:
            await conn.execute(
                delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
            )
            await audit.record(
                conn,
                actor=actor,
                action="webhook.remove",
                target=f"webhook:{endpoint_id}",
                details={"url": _bare(gone.url)},
                client=None,
                now=now,
            )
        return gone

    async def set_enabled(
        self, endpoint_id: int, enabled: bool, *, actor: str, now: datetime, reason: str = ""
    ) -> Endpoint:
        """Enable (its pending events are due again at once) or disable an endpoint."""
        await self.get(endpoint_id)
        async with self._db.begin(write=True) as conn:
            where = webhook_endpoints.c.id == endpoint_id
            if enabled:
                await conn.execute(
                    update(webhook_endpoints)
                    .where(where)
                    .values(disabled_at=None, disabled_reason=None, failing_since=None, failures=0)
                )
                await conn.execute(
                    update(webhook_deliveries)
                    .where(
                        webhook_deliveries.c.endpoint_id == endpoint_id,
                        webhook_deliveries.c.status == HookStatus.PENDING.value,
                    )
                    .values(next_at=now)
                )
            else:
                await conn.execute(
                    update(webhook_endpoints)
                    .where(where)
                    .values(disabled_at=now, disabled_reason=reason[:300] or "disabled by " + actor)
                )
            await audit.record(
                conn,
                actor=actor,
                action="webhook.enable" if enabled else "webhook.disable",
                target=f"webhook:{endpoint_id}",
                details={"reason": reason or None},
                client=None,
                now=now,
            )
        return await self.get(endpoint_id)

    async def update(
        self,
        endpoint_id: int,
        *,
        events: Iterable[EventType] | None = None,
        description: str | None = None,
        actor: str,
        now: datetime,
    ) -> Endpoint:
        """New events (for the events emitted from now on) or description; NotFoundError."""
        await self.get(endpoint_id)
        values: dict[str, Any] = {}
        if events is not None:
            values["events"] = sorted({EventType(e).value for e in events})
        if description is not None:
            values["description"] = description
        if values:
            async with self._db.begin(write=True) as conn:
                await conn.execute(
                    update(webhook_endpoints)
                    .where(webhook_endpoints.c.id == endpoint_id)
                    .values(**values)
                )
                shown = {k: " ".join(v) if k == "events" else v for k, v in values.items()}
                await audit.record(
                    conn, actor=actor, action="webhook.update", target=f"webhook:{endpoint_id}",
                    details=shown, client=None, now=now,
                )  # fmt: skip
        return await self.get(endpoint_id)

    async def claim(
        self, *, node: str, now: datetime, limit: int, lease: timedelta
    ) -> list[DueHook]:
        """Lease up to ``limit`` due deliveries of active endpoints to ``node``, oldest due
        first; each is this node's to post until ``now + lease``."""
        d, e, ev = webhook_deliveries, webhook_endpoints, webhook_events
        free = (
            select(d.c.id)
            .join(e, e.c.id == d.c.endpoint_id)
            .where(
                d.c.status == HookStatus.PENDING.value,
                d.c.next_at <= now,
                e.c.disabled_at.is_(None),
                d.c.lease_until.is_(None) | (d.c.lease_until <= now),
            )
            .order_by(d.c.next_at, d.c.id)
            .limit(limit)
        )
        if self._db.capabilities.skip_locked:
            free = free.with_for_update(skip_locked=True, of=d)
        async with self._db.begin(write=True) as conn:
            leased = (
                await conn.execute(
                    update(d)
                    .where(d.c.id.in_(free.scalar_subquery()))
                    .values(leased_by=node, lease_until=now + lease)
                    .returning(d.c.id)
                )
            ).scalars()
            ids = [int(i) for i in leased]
            if not ids:
                return []
            rows = (
                await conn.execute(
                    select(
                        d.c.id,
                        d.c.endpoint_id,
                        d.c.attempts,
                        e.c.url,
                        e.c.secret,
                        ev.c.event_id,
                        ev.c.type,
                        ev.c.payload,
                        ev.c.created_at,
                    )
                    .join(e, e.c.id == d.c.endpoint_id)
                    .join(ev, ev.c.id == d.c.event_row)
                    .where(d.c.id.in_(ids))
                    .order_by(d.c.next_at, d.c.id)
                )
            ).all()
        return [
            DueHook(
                delivery_id=int(r.id),
                endpoint_id=int(r.endpoint_id),
                url=r.url,
                secret=r.secret,
                event_id=r.event_id,
                type=EventType(r.type),
                payload=dict(r.payload),
                created_at=r.created_at,
                attempts=int(r.attempts),
            )
            for r in rows
        ]

    async def record(
        self,
        attempts: Sequence[HookAttempt],
        *,
        now: datetime,
        disable_after: timedelta,
        min_failures: int = 5,
    ) -> list[Endpoint]:
        """Write each attempt and where its delivery now stands; an endpoint that answered
        only failures for ``disable_after`` (and ``min_failures`` times at least) is disabled.
        Returns the endpoints this disabled. The attempts of a delivery removed meanwhile
        (with its endpoint) are dropped."""
        if not attempts:
            return []
        d = webhook_deliveries
        async with self._db.begin(write=True) as conn:
            # An endpoint removed while its event was being posted took its deliveries
            # with it: their attempts are dropped, not allowed to refuse everyone's.
            wanted = [a.delivery_id for a in attempts]
            alive = set((await conn.execute(select(d.c.id).where(d.c.id.in_(wanted)))).scalars())
            attempts = [a for a in attempts if a.delivery_id in alive]
            if not attempts:
                return []
            await conn.execute(
                insert(webhook_attempts),
                [
                    {
                        "delivery_id": a.delivery_id,
                        "at": now,
                        "code": a.code,
                        "error": None if a.error is None else a.error[:_ERROR],
                        "took_ms": a.took_ms,
                        "answer": a.answer[:_ANSWER],
                    }
                    for a in attempts
                ],
            )
            for a in attempts:
                status = (
                    HookStatus.DELIVERED
                    if a.delivered
                    else HookStatus.PENDING
                    if a.next_at is not None
                    else HookStatus.FAILED
                )
                await conn.execute(
                    update(d)
                    .where(d.c.id == a.delivery_id)
                    .values(
                        status=status.value,
                        attempts=d.c.attempts + 1,
                        next_at=a.next_at,
                        lease_until=None,
                        last_at=now,
                        last_code=a.code,
                        last_error=None if a.error is None else a.error[:_ERROR],
                    )
                )
            gone = await _tally(conn, attempts, now, disable_after, min_failures)
        return [await self.get(i) for i in gone]

    async def expire(self, *, now: datetime, max_age: timedelta) -> int:
        """Give up on the pending deliveries of events older than ``max_age``; how many."""
        old = select(webhook_events.c.id).where(webhook_events.c.created_at < now - max_age)
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.status == HookStatus.PENDING.value,
                    webhook_deliveries.c.event_row.in_(old.scalar_subquery()),
                )
                .values(
                    status=HookStatus.FAILED.value,
                    next_at=None,
                    lease_until=None,
                    last_error=f"given up: not delivered within {max_age}",
                )
            )
        return int(result.rowcount or 0)

    async def purge(self, *, now: datetime, keep: timedelta) -> int:
        """Delete the events older than ``keep`` that nobody is still to receive; how many."""
        waiting = select(webhook_deliveries.c.event_row).where(
            webhook_deliveries.c.status == HookStatus.PENDING.value
        )
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(
                delete(webhook_events).where(
                    webhook_events.c.created_at < now - keep,
                    webhook_events.c.id.not_in(waiting.scalar_subquery()),
                )
            )
        return int(result.rowcount or 0)

    async def lines(
        self,
        *,
        endpoint_id: int | None = None,
        status: HookStatus | None = None,
        type: EventType | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[HookLine]:
        """Deliveries, newest first (keyset: ids below ``before``), filtered as given."""
        d, e, ev = webhook_deliveries, webhook_endpoints, webhook_events
        query = (
            select(
                d.c.id,
                d.c.endpoint_id,
                e.c.url,
                ev.c.event_id,
                ev.c.type,
                d.c.status,
                d.c.attempts,
                ev.c.created_at,
                d.c.next_at,
                d.c.last_at,
                d.c.last_code,
                d.c.last_error,
            )
            .join(e, e.c.id == d.c.endpoint_id)
            .join(ev, ev.c.id == d.c.event_row)
            .order_by(d.c.id.desc())
            .limit(max(1, min(limit, MAX_PAGE)))
        )
        if endpoint_id is not None:
            query = query.where(d.c.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(d.c.status == status.value)
        if type is not None:
            query = query.where(ev.c.type == type.value)
        if before is not None:
            query = query.where(d.c.id < before)
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [
            HookLine(
                delivery_id=int(r.id),
                endpoint_id=int(r.endpoint_id),
                url=r.url,
                event_id=r.event_id,
                type=EventType(r.type),
                status=HookStatus(r.status),
                attempts=int(r.attempts),
                created_at=r.created_at,
                next_at=r.next_at,
                last_at=r.last_at,
                last_code=r.last_code,
                last_error=r.last_error,
            )
            for r in rows
        ]

    async def pending(self) -> int:
        """How many deliveries wait (for /metrics and the tests)."""
        async with self._db.begin() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).where(
                            webhook_deliveries.c.status == HookStatus.PENDING.value
                        )
                    )
                ).scalar_one()
            )
