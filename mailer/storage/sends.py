"""Sends: one mail of a campaign to its audience, from scheduled to done, cancelled or missed.

Writes ``sends`` (and no other table; the deliveries a move starts or ends go through
``deliveries``). Every move is a conditional ``UPDATE ... WHERE status IN (...)`` whose
statuses come from the table of ``mailer.lifecycle``: a send is claimed once, a move that
lost a race changes nothing and says so (False).

THE GATE: a send of a campaign that is not approved (``campaigns.approved_at`` NULL: a draft,
a submitted campaign, one edited since its approval), or approved but not scheduled since
(status ``approved``: an edited campaign's old plan waits for its new one), is held:
:meth:`Sends.scheduled` leaves it out, so no job is made for it, and a claim of it changes
nothing (defence in depth).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.errors import NotFoundError, StateError
from mailer.lifecycle import RELEASED, SendMove, send_sources, send_target
from mailer.models import (
    CONFIRM_ACTION,
    Content,
    DeliveryCounts,
    DeliveryStatus,
    EventInfo,
    EventType,
    ListInfo,
    PlannedSend,
    Send,
    SendAction,
    SendListing,
    SendSpec,
    SendStatus,
)
from mailer.storage import deliveries as delivery_writer
from mailer.storage import outbox
from mailer.storage.database import Database
from mailer.storage.tables import campaign_lists, campaigns, deliveries, events, lists, sends
from mailer.storage.words import event_of, texts_of


class Sends:
    """The sends of campaigns (``store.sends``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        campaign_id: int,
        *,
        key: str,
        action: str,
        due_at: datetime,
        now: datetime,
        audience_send_id: int | None = None,
    ) -> tuple[int, bool]:
        """The send with this key, created if new; returns (id, created)."""
        async with self._db.begin(write=True) as conn:
            found = (
                await conn.execute(
                    select(sends.c.id).where(sends.c.campaign_id == campaign_id, sends.c.key == key)
                )
            ).scalar()
            if found is not None:
                return int(found), False
            send_id = await _insert(
                conn, campaign_id, key=key, action=SendAction(action), due_at=due_at, now=now,
                audience_send_id=audience_send_id,
            )  # fmt: skip
            return send_id, True

    async def spec(self, send_id: int) -> SendSpec:
        async with self._db.begin() as conn:
            row = (
                (
                    await conn.execute(
                        select(sends, campaigns.c.name.label("campaign_name"), campaigns)
                        .join(campaigns, campaigns.c.id == sends.c.campaign_id)
                        .where(sends.c.id == send_id)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFoundError(f"no send {send_id}; `mailer send list` shows them")
            list_rows = (
                await conn.execute(
                    select(lists)
                    .join(campaign_lists, campaign_lists.c.list_id == lists.c.id)
                    .where(campaign_lists.c.campaign_id == row["campaign_id"])
                    .order_by(lists.c.slug)
                )
            ).all()
            event = await _event(conn, row["campaign_id"])
        return SendSpec(
            id=send_id,
            campaign_id=row["campaign_id"],
            key=row["key"],
            action=SendAction(row["action"]),
            status=SendStatus(row["status"]),
            due_at=row["due_at"],
            content=Content(
                name=row["campaign_name"],
                kind=row["kind"],
                subject=row["subject"],
                body=row["body"],
                body_format=row["body_format"],
                timezone=row["timezone"],
                template=row["template"] if row["template"] != row["kind"] else None,
                texts=texts_of(row["texts"]),
            ),
            lists=[
                ListInfo(id=r.id, slug=r.slug, title=r.title, default_locale=r.default_locale)
                for r in list_rows
            ],
            event=event,
            sender_name=row["sender_name"],
            sender_address=row["sender_address"],
            reason=row["reason"],
            audience_send_id=row["audience_send_id"],
        )

    async def status(self, send_id: int) -> str:
        async with self._db.begin() as conn:
            found = (
                await conn.execute(select(sends.c.status).where(sends.c.id == send_id))
            ).scalar()
        if found is None:
            raise NotFoundError(f"no send {send_id}")
        return str(found)

    async def overview(self) -> list[SendListing]:
        """Every send with its campaign's name and time zone, by due time."""
        async with self._db.begin() as conn:
            rows = (
                await conn.execute(
                    select(
                        sends.c.id, campaigns.c.name.label("campaign"), sends.c.key,
                        sends.c.action, sends.c.status, sends.c.due_at, sends.c.reason,
                        campaigns.c.timezone,
                    )
                    .join(campaigns, campaigns.c.id == sends.c.campaign_id)
                    .order_by(sends.c.due_at, sends.c.id)
                )
            ).mappings().all()  # fmt: skip
        return [SendListing(**r) for r in rows]

    async def of_campaign(self, campaign_id: int) -> list[Send]:
        async with self._db.begin() as conn:
            rows = await conn.execute(
                select(*(sends.c[f] for f in _SEND_FIELDS))
                .where(sends.c.campaign_id == campaign_id)
                .order_by(sends.c.due_at, sends.c.id)
            )
            return [Send(**r) for r in rows.mappings().all()]

    async def claim(self, send_id: int, *, node: str, now: datetime) -> bool:
        """scheduled -> running, once: a second claimer (or a repeat) gets False."""
        async with self._db.begin(write=True) as conn:
            return await _claim(conn, send_id, node=node, now=now)

    async def start(self, spec: SendSpec, *, node: str, now: datetime) -> bool:
        """Claim a scheduled send and materialise its deliveries in ONE transaction.

        The claim and the audience land together or not at all, in a single write: a small
        send that falls due while a large one records its results waits for the writer once
        instead of twice. False (and nothing written) when another claimer won.
        """
        async with self._db.begin(write=True, urgent=True) as conn:
            if not await _claim(conn, spec.id, node=node, now=now):
                return False
            statement = delivery_writer.materialise_statement(self._db, spec, now=now)
            if statement is not None:
                await conn.execute(statement)
            return True

    async def move(
        self, send_id: int, move: SendMove, *, now: datetime, reason: str | None = None
    ) -> bool:
        """Make ``move`` if the send is in one of its statuses (``mailer.lifecycle``); False
        (and nothing written) if it is not. A cancelled or missed send's deliveries not yet
        attempted end skipped, with the reason."""
        target = send_target(move)
        async with self._db.begin(write=True) as conn:
            values: dict[str, Any] = {"status": target.value, "reason": reason, "updated_at": now}
            if target in (SendStatus.DONE, SendStatus.CANCELLED):
                values["finished_at"] = now
            result = await conn.execute(
                update(sends)
                .where(sends.c.id == send_id, sends.c.status.in_(send_sources(move)))
                .values(**values)
            )
            if result.rowcount and target in (SendStatus.CANCELLED, SendStatus.MISSED):
                await delivery_writer.skip_rest(conn, [send_id], reason or target.value, now)
            if result.rowcount and target == SendStatus.PAUSED:
                await outbox.send_event(
                    conn, EventType.SEND_PAUSED, send_id, now=now, reason=reason
                )
            return bool(result.rowcount)

    async def running(self) -> list[int]:
        async with self._db.begin() as conn:
            rows = await conn.execute(
                select(sends.c.id).where(sends.c.status == SendStatus.RUNNING).order_by(sends.c.id)
            )
            return [int(r) for r in rows.scalars()]

    async def scheduled(self) -> list[tuple[int, datetime]]:
        """Every scheduled send of an approved campaign with its due time: what the
        scheduler's jobs are built from (the gate: a held send gets no job)."""
        async with self._db.begin() as conn:
            rows = await conn.execute(
                select(sends.c.id, sends.c.due_at)
                .join(campaigns, campaigns.c.id == sends.c.campaign_id)
                .where(sends.c.status == SendStatus.SCHEDULED, *_released())
            )
            return [(int(i), due) for i, due in rows.all()]

    async def reschedule(self, send_id: int, due_at: datetime, *, now: datetime) -> bool:
        """A scheduled send due at another time; False if it is no longer scheduled."""
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(
                update(sends)
                .where(sends.c.id == send_id, sends.c.status == SendStatus.SCHEDULED)
                .values(due_at=due_at, updated_at=now)
            )
            return bool(result.rowcount)

    async def finish(self, send_id: int, *, now: datetime) -> DeliveryCounts:
        """Store the counters; mark the send done when nothing is left to attempt."""
        async with self._db.begin(write=True) as conn:
            rows = await conn.execute(
                select(deliveries.c.status, func.count())
                .where(deliveries.c.send_id == send_id)
                .group_by(deliveries.c.status)
            )
            counts = DeliveryCounts.of({str(s): int(n) for s, n in rows.all()})
            values: dict[str, Any] = {
                "total": counts.total,
                "sent": counts.sent,
                "failed": counts.failed,
                "skipped": counts.skipped,
                "deferred": counts.deferred,
                "updated_at": now,
            }
            query = update(sends).where(sends.c.id == send_id)
            if counts.pending == 0:
                values.update(
                    status=send_target(SendMove.FINISH).value, finished_at=now, reason=None
                )
                query = query.where(sends.c.status.in_(send_sources(SendMove.FINISH)))
            done = await conn.execute(query.values(**values))
            if counts.pending == 0 and done.rowcount:
                await outbox.send_event(
                    conn, EventType.SEND_FINISHED, send_id, now=now, reason=None
                )
        return counts

    async def standing(self, send_id: int) -> tuple[str, str | None, datetime | None]:
        """Status, reason and next retry of a send, in one read (the end of a run)."""
        next_retry = (
            select(func.min(deliveries.c.next_attempt_at))
            .where(deliveries.c.send_id == send_id, deliveries.c.status == DeliveryStatus.DEFERRED)
            .scalar_subquery()
        )
        async with self._db.begin() as conn:
            row = (
                await conn.execute(
                    select(sends.c.status, sends.c.reason, next_retry).where(sends.c.id == send_id)
                )
            ).one_or_none()
        if row is None:
            raise NotFoundError(f"no send {send_id}")
        return str(row[0]), row[1], row[2]

    async def retry_failed(self, send_id: int, *, now: datetime) -> int:
        """Queue the failed deliveries of a send again, and those skipped because their
        address was suppressed when the suppression has been lifted since; a finished send
        runs again. Returns how many were queued. (Who is still suppressed, or unsubscribed,
        is skipped again when their turn comes.)"""
        async with self._db.begin(write=True) as conn:
            status = (
                await conn.execute(select(sends.c.status).where(sends.c.id == send_id))
            ).scalar()
            if status is None:
                raise NotFoundError(f"no send {send_id}")
            if status in (SendStatus.CANCELLED, SendStatus.MISSED):
                raise StateError(f"send {send_id} is {status}; it cannot be retried")
            count = await delivery_writer.requeue_failed(conn, send_id, now=now)
            if count and status in send_sources(SendMove.RETRY):
                await conn.execute(
                    update(sends)
                    .where(sends.c.id == send_id)
                    .values(
                        status=send_target(SendMove.RETRY).value, finished_at=None,
                        updated_at=now,
                    )
                )  # fmt: skip
            return count


_SEND_FIELDS = (
    "id", "campaign_id", "key", "action", "status", "due_at", "reason", "audience_send_id",
    "claimed_by", "started_at", "finished_at",
)  # fmt: skip


async def _event(conn: AsyncConnection, campaign_id: int) -> EventInfo | None:
    row = (
        await conn.execute(select(events).where(events.c.campaign_id == campaign_id))
    ).one_or_none()
    return None if row is None else event_of(row)


def _released() -> tuple[Any, Any]:
    """The gate on ``campaigns``: approved, and scheduled by a sender since (an approval of
    an edited version does not release the sends its old plan left)."""
    return (
        campaigns.c.approved_at.is_not(None),
        campaigns.c.status.in_([s.value for s in RELEASED]),
    )


def _approved() -> Any:
    """The send's campaign passes the gate (inside a statement on ``sends``)."""
    return (
        select(campaigns.c.id).where(campaigns.c.id == sends.c.campaign_id, *_released()).exists()
    )


async def _claim(conn: AsyncConnection, send_id: int, *, node: str, now: datetime) -> bool:
    """scheduled -> running, once, and only when its campaign is approved (the gate).

    The campaign's row is read under a share lock first (PostgreSQL): an edit of it under
    way (``drafts._update_draft`` locks it) finishes before the gate is read, so an edit
    and a claim never both go through."""
    owner = select(sends.c.campaign_id).where(sends.c.id == send_id).scalar_subquery()
    await conn.execute(
        select(campaigns.c.id).where(campaigns.c.id == owner).with_for_update(read=True)
    )
    result = await conn.execute(
        update(sends)
        .where(sends.c.id == send_id, sends.c.status.in_(send_sources(SendMove.CLAIM)), _approved())
        .values(
            status=send_target(SendMove.CLAIM).value,
            claimed_by=node,
            started_at=func.coalesce(sends.c.started_at, now),
            reason=None,
            updated_at=now,
        )
    )
    if result.rowcount:
        await outbox.send_event(conn, EventType.SEND_STARTED, send_id, now=now, reason=None)
    return bool(result.rowcount)


async def _insert(
    conn: AsyncConnection,
    campaign_id: int,
    *,
    key: str,
    action: SendAction,
    due_at: datetime,
    now: datetime,
    audience_send_id: int | None = None,
) -> int:
    result = await conn.execute(
        insert(sends).values(
            campaign_id=campaign_id, key=key, action=action.value,
            audience_send_id=audience_send_id, due_at=due_at,
            status=SendStatus.SCHEDULED.value, created_at=now, updated_at=now,
        )
    )  # fmt: skip
    return int(result.inserted_primary_key[0])  # type: ignore[index]


# --- writers inside the caller's transaction -------------------------------------------------


async def insert_confirmation(
    conn: AsyncConnection, campaign_id: int, *, subscriber_id: int, now: datetime
) -> int:
    """A double opt-in's confirmation send, due now (its one delivery: ``deliveries``)."""
    return await _insert(
        conn, campaign_id, key=f"confirm:{subscriber_id}:{now.timestamp():.6f}",
        action=CONFIRM_ACTION, due_at=now, now=now,
    )  # fmt: skip


async def move_of_campaign(
    conn: AsyncConnection,
    campaign_id: int,
    move: SendMove,
    *,
    now: datetime,
    reason: str | None,
    started: bool | None = None,
    action: str | None = None,
) -> list[int]:
    """Make ``move`` for every send of a campaign in one of its statuses (only those that
    ``started`` or not, only one ``action``); returns the sends moved."""
    target = send_target(move)
    where = [sends.c.campaign_id == campaign_id, sends.c.status.in_(send_sources(move))]
    if started is not None:
        where.append(sends.c.started_at.is_not(None) if started else sends.c.started_at.is_(None))
    if action is not None:
        where.append(sends.c.action == action)
    values: dict[str, Any] = {"status": target.value, "reason": reason, "updated_at": now}
    if target in (SendStatus.DONE, SendStatus.CANCELLED):
        values["finished_at"] = now
    result = await conn.execute(update(sends).where(*where).values(**values).returning(sends.c.id))
    ids = [int(i) for i in result.scalars()]
    if target in (SendStatus.CANCELLED, SendStatus.MISSED):
        await delivery_writer.skip_rest(conn, ids, reason or target.value, now)
    for moved in ids if target == SendStatus.PAUSED else ():
        await outbox.send_event(conn, EventType.SEND_PAUSED, moved, now=now, reason=reason)
    return ids


async def plan_of_campaign(
    conn: AsyncConnection,
    campaign_id: int,
    planned: Sequence[PlannedSend],
    *,
    now: datetime,
    reason: str,
    only_missing: bool = False,
) -> tuple[list[str], list[str], list[str]]:
    """Make the campaign's sends what ``planned`` says, by key; returns the keys (created,
    moved, dropped). A scheduled send moves to its planned time; one that ran, or ended,
    stays; a missing one is made; a scheduled send no longer planned is cancelled with
    ``reason`` (move DROP). With ``only_missing``, only the missing ones are made."""
    rows = await conn.execute(
        select(sends.c.id, sends.c.key, sends.c.status, sends.c.due_at).where(
            sends.c.campaign_id == campaign_id
        )
    )
    stored = {row.key: row for row in rows.all()}
    created: list[str] = []
    moved: list[str] = []
    for p in planned:
        row = stored.get(p.key)
        if row is None:
            await _insert(conn, campaign_id, key=p.key, action=SendAction(p.action),
                          due_at=p.due, now=now)  # fmt: skip
            created.append(p.key)
        elif not only_missing and row.status == SendStatus.SCHEDULED and row.due_at != p.due:
            result = await conn.execute(
                update(sends)
                .where(sends.c.id == row.id, sends.c.status == SendStatus.SCHEDULED)
                .values(due_at=p.due, updated_at=now)
            )
            if result.rowcount:
                moved.append(p.key)
    keys = {p.key for p in planned}
    left = sorted(
        (
            row
            for key, row in stored.items()
            if key not in keys and row.status == SendStatus.SCHEDULED
        ),
        key=lambda row: row.key,
    )
    dropped: list[str] = []
    if left and not only_missing:
        result = await conn.execute(
            update(sends)
            .where(
                sends.c.id.in_([row.id for row in left]),
                sends.c.status.in_(send_sources(SendMove.DROP)),
            )
            .values(status=send_target(SendMove.DROP).value, reason=reason, finished_at=now,
                    updated_at=now)
            .returning(sends.c.id, sends.c.key)
        )  # fmt: skip
        gone = result.all()
        await delivery_writer.skip_rest(conn, [int(r.id) for r in gone], reason, now)
        dropped = sorted(str(r.key) for r in gone)
    return created, moved, dropped
