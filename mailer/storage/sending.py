"""The SQL of sending: campaigns, sends, deliveries and their results.

Every state change that matters for "never lose, never double" is a conditional statement
here: a send is claimed with ``UPDATE ... WHERE status = 'scheduled'``; deliveries are
materialised with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` on the unique
(send, subscriber) key; results are written in small batches, each its own commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, case, delete, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mailer.errors import NotFoundError, StateError
from mailer.models import (
    CONFIRM_ACTION,
    CampaignStatus,
    Content,
    DeliveryStatus,
    EventInfo,
    EventStatus,
    ListInfo,
    Recipient,
    SendStatus,
    SubscriberStatus,
    SubscriptionStatus,
    SuppressionReason,
)
from mailer.storage.tables import (
    campaign_lists,
    campaigns,
    deliveries,
    events,
    lists,
    sends,
    subscribers,
    subscriptions,
    suppression_events,
    suppressions,
)


@dataclass(frozen=True, slots=True)
class SendSpec:
    """Everything dispatch needs to know about a send, read once when it starts."""

    id: int
    campaign_id: int
    key: str
    action: str
    status: str
    due_at: datetime
    content: Content
    lists: list[ListInfo]
    event: EventInfo | None
    sender_name: str | None
    sender_address: str | None
    reason: str | None
    audience_send_id: int | None = None


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery to attempt now, with its recipient as the database has them now."""

    id: int
    attempts: int
    list_id: int
    created_at: datetime
    recipient: Recipient
    skip_reason: str | None  # unsubscribed or suppressed since the send started
    lease_until: datetime | None = None  # when leased: the worker owns it until then


@dataclass(frozen=True, slots=True)
class Outcome:
    """The recorded result of one attempt."""

    delivery_id: int
    status: DeliveryStatus
    code: int | None = None
    reply: str | None = None
    reason: str | None = None
    message_id: str | None = None
    next_attempt_at: datetime | None = None
    suppress_key: str | None = None  # add this address to the suppressions (5.1.x)


def _insert(dialect: str, table: Any) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


class Sending:
    """Queries for sends; one per Store (``store.sending``)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    # --- campaigns and sends ------------------------------------------------------------

    async def save_campaign(
        self,
        content: Content,
        *,
        list_slugs: Sequence[str],
        sender_name: str | None,
        sender_address: str | None,
        event: EventInfo | None,
        now: datetime,
        options: dict[str, Any] | None = None,
    ) -> int:
        """Create or update a campaign by name; return its id."""
        async with self._store._begin(write=True) as conn:
            list_ids = []
            for slug in list_slugs:
                found = (
                    await conn.execute(select(lists.c.id).where(lists.c.slug == slug))
                ).scalar()
                if found is None:
                    raise NotFoundError(f"unknown list {slug!r} in campaign {content.name!r}")
                list_ids.append(int(found))
            values = {
                "kind": content.kind,
                "template": content.template_name,
                "subject": content.subject,
                "body": content.body,
                "body_format": content.body_format,
                "timezone": content.timezone,
                "sender_name": sender_name,
                "sender_address": sender_address,
                "options": options or {},
                "updated_at": now,
            }
            existing = (
                await conn.execute(select(campaigns.c.id).where(campaigns.c.name == content.name))
            ).scalar()
            if existing is None:
                result = await conn.execute(
                    campaigns.insert().values(
                        name=content.name,
                        status=CampaignStatus.SCHEDULED.value,
                        created_at=now,
                        **values,
                    )
                )
                campaign_id = int(result.inserted_primary_key[0])
            else:
                campaign_id = int(existing)
                await conn.execute(
                    update(campaigns).where(campaigns.c.id == campaign_id).values(**values)
                )
            await conn.execute(
                delete(campaign_lists).where(campaign_lists.c.campaign_id == campaign_id)
            )
            await conn.execute(
                campaign_lists.insert(),
                [{"campaign_id": campaign_id, "list_id": list_id} for list_id in list_ids],
            )
            if event is not None:
                event_values = {
                    "uid": event.uid,
                    "title": event.title,
                    "starts_at": event.start,
                    "ends_at": event.end,
                    "timezone": event.timezone,
                    "place": event.place,
                    "link": event.link,
                    "description": event.description,
                    "updated_at": now,
                }
                found_event = (
                    await conn.execute(
                        select(events.c.id).where(events.c.campaign_id == campaign_id)
                    )
                ).scalar()
                if found_event is None:
                    await conn.execute(
                        events.insert().values(
                            campaign_id=campaign_id,
                            sequence=event.sequence,
                            status=EventStatus.CONFIRMED.value,
                            created_at=now,
                            **event_values,
                        )
                    )
            return campaign_id

    async def create_send(
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
        async with self._store._begin(write=True) as conn:
            found = (
                await conn.execute(
                    select(sends.c.id).where(sends.c.campaign_id == campaign_id, sends.c.key == key)
                )
            ).scalar()
            if found is not None:
                return int(found), False
            result = await conn.execute(
                sends.insert().values(
                    campaign_id=campaign_id,
                    key=key,
                    action=action,
                    audience_send_id=audience_send_id,
                    due_at=due_at,
                    status=SendStatus.SCHEDULED.value,
                    created_at=now,
                    updated_at=now,
                )
            )
            return int(result.inserted_primary_key[0]), True

    async def spec(self, send_id: int) -> SendSpec:
        async with self._store._begin() as conn:
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
            event_row = (
                await conn.execute(select(events).where(events.c.campaign_id == row["campaign_id"]))
            ).one_or_none()
        content = Content(
            name=row["campaign_name"],
            kind=row["kind"],
            subject=row["subject"],
            body=row["body"],
            body_format=row["body_format"],
            timezone=row["timezone"],
            template=row["template"] if row["template"] != row["kind"] else None,
        )
        event = None
        if event_row is not None:
            event = EventInfo(
                uid=event_row.uid,
                title=event_row.title,
                start=event_row.starts_at,
                end=event_row.ends_at,
                timezone=event_row.timezone,
                place=event_row.place,
                link=event_row.link,
                description=event_row.description,
                sequence=event_row.sequence,
                status=event_row.status,
            )
        return SendSpec(
            id=send_id,
            campaign_id=row["campaign_id"],
            key=row["key"],
            action=row["action"],
            status=row["status"],
            due_at=row["due_at"],
            content=content,
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
        async with self._store._begin() as conn:
            found = (
                await conn.execute(select(sends.c.status).where(sends.c.id == send_id))
            ).scalar()
        if found is None:
            raise NotFoundError(f"no send {send_id}")
        return str(found)

    async def list_sends(self) -> list[dict[str, Any]]:
        async with self._store._begin() as conn:
            rows = (
                (
                    await conn.execute(
                        select(
                            sends.c.id,
                            campaigns.c.name,
                            sends.c.key,
                            sends.c.action,
                            sends.c.status,
                            sends.c.due_at,
                            sends.c.reason,
                            campaigns.c.timezone,
                        )
                        .join(campaigns, campaigns.c.id == sends.c.campaign_id)
                        .order_by(sends.c.due_at, sends.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    # --- state transitions ----------------------------------------------------------------

    async def claim(self, send_id: int, *, worker: str, now: datetime) -> bool:
        """scheduled -> running, once: a second claimer (or a repeat) gets False."""
        async with self._store._begin(write=True) as conn:
            return await _claim(conn, send_id, worker=worker, now=now)

    async def start(self, spec: SendSpec, *, worker: str, now: datetime) -> bool:
        """Claim a scheduled send and materialise its deliveries in ONE transaction.

        The claim and the audience land together or not at all, in a single write: a small
        send that falls due while a large one records its results waits for the writer once
        instead of twice. False (and nothing written) when another claimer won.
        """
        async with self._store._begin(write=True, urgent=True) as conn:
            if not await _claim(conn, spec.id, worker=worker, now=now):
                return False
            statement = self._materialise_statement(spec, now=now)
            if statement is not None:
                await conn.execute(statement)
            return True

    async def set_status(
        self,
        send_id: int,
        status: SendStatus,
        *,
        now: datetime,
        reason: str | None = None,
        only_from: Sequence[SendStatus] | None = None,
    ) -> bool:
        async with self._store._begin(write=True) as conn:
            query = update(sends).where(sends.c.id == send_id)
            if only_from is not None:
                query = query.where(sends.c.status.in_([s.value for s in only_from]))
            values: dict[str, Any] = {"status": status.value, "reason": reason, "updated_at": now}
            if status in (SendStatus.DONE, SendStatus.CANCELLED):
                values["finished_at"] = now
            result = await conn.execute(query.values(**values))
            if result.rowcount and status in (SendStatus.CANCELLED, SendStatus.MISSED):
                await _skip_rest(conn, [send_id], reason or status.value, now)
            return bool(result.rowcount)

    async def running_sends(self) -> list[int]:
        async with self._store._begin() as conn:
            rows = await conn.execute(
                select(sends.c.id).where(sends.c.status == SendStatus.RUNNING).order_by(sends.c.id)
            )
            return [int(r) for r in rows.scalars()]

    # --- deliveries -----------------------------------------------------------------------

    async def materialise(self, spec: SendSpec, *, now: datetime) -> int:
        """One delivery per subscriber of the send's lists; repeat-safe. Returns rows added.

        Unsubscribed, suppressed and inactive subscribers get a ``skipped`` delivery with the
        reason, so the record says who did not get the send and why.
        """
        statement = self._materialise_statement(spec, now=now)
        if statement is None:
            return 0
        async with self._store._begin(write=True) as conn:
            result = await conn.execute(statement)
            return int(result.rowcount or 0)

    def _materialise_statement(self, spec: SendSpec, *, now: datetime) -> Any:
        if spec.action == CONFIRM_ACTION:
            return None  # a double opt-in confirmation: its one delivery is made with the send
        if spec.audience_send_id is not None:
            return self._audience_statement(spec, now=now)
        list_ids = [li.id for li in spec.lists]
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
        reason = case(
            (func.max(suppressions.c.reason).is_not(None),
             literal("suppressed: ") + func.max(suppressions.c.reason)),
            (subscribed == 0, literal("unsubscribed")),
            (func.max(subscribers.c.status) != SubscriberStatus.ACTIVE,
             literal("subscriber ") + func.max(subscribers.c.status)),
            else_=None,
        )  # fmt: skip
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
                subscriptions.c.list_id.in_(list_ids),
                subscriptions.c.status.in_(
                    [SubscriptionStatus.SUBSCRIBED.value, SubscriptionStatus.UNSUBSCRIBED.value]
                ),
            )
            .group_by(subscriptions.c.subscriber_id)
        )
        statement = (
            _insert(self._store.dialect, deliveries)
            .from_select(
                ["send_id", "subscriber_id", "list_id", "status", "reason", "attempts",
                 "created_at", "updated_at"],
                query,
            )
            .on_conflict_do_nothing(index_elements=["send_id", "subscriber_id"])
        )  # fmt: skip
        return statement

    def _audience_statement(self, spec: SendSpec, *, now: datetime) -> Any:
        """Deliveries for those another send reached (an event's update or cancellation)."""
        query = select(
            literal(spec.id),
            deliveries.c.subscriber_id,
            deliveries.c.list_id,
            literal(DeliveryStatus.QUEUED.value),
            literal(0),
            literal(now, type_=deliveries.c.created_at.type),
            literal(now, type_=deliveries.c.updated_at.type),
        ).where(
            deliveries.c.send_id == spec.audience_send_id,
            deliveries.c.status == DeliveryStatus.SENT,
        )
        statement = (
            _insert(self._store.dialect, deliveries)
            .from_select(
                ["send_id", "subscriber_id", "list_id", "status", "attempts", "created_at",
                 "updated_at"],
                query,
            )
            .on_conflict_do_nothing(index_elements=["send_id", "subscriber_id"])
        )  # fmt: skip
        return statement

    # --- campaigns as staff see them --------------------------------------------------------

    async def campaign(self, name: str) -> dict[str, Any]:
        async with self._store._begin() as conn:
            row = (
                (await conn.execute(select(campaigns).where(campaigns.c.name == name)))
                .mappings()
                .one_or_none()
            )
            if row is None:
                known = (
                    (await conn.execute(select(campaigns.c.name).order_by(campaigns.c.name)))
                    .scalars()
                    .all()
                )
                hint = f"; known: {', '.join(known)}" if known else "; none is stored yet"
                raise NotFoundError(f"no campaign named {name!r}{hint}")
            return dict(row)

    async def campaigns(self) -> list[dict[str, Any]]:
        async with self._store._begin() as conn:
            next_due = (
                select(sends.c.campaign_id, func.min(sends.c.due_at).label("next_due"))
                .where(sends.c.status == SendStatus.SCHEDULED)
                .group_by(sends.c.campaign_id)
                .subquery()
            )
            rows = await conn.execute(
                select(campaigns.c.name, campaigns.c.kind, campaigns.c.status, next_due.c.next_due)
                .outerjoin(next_due, next_due.c.campaign_id == campaigns.c.id)
                .order_by(campaigns.c.name)
            )
            return [dict(r) for r in rows.mappings().all()]

    async def sends_of(self, campaign_id: int) -> list[dict[str, Any]]:
        async with self._store._begin() as conn:
            rows = await conn.execute(
                select(sends)
                .where(sends.c.campaign_id == campaign_id)
                .order_by(sends.c.due_at, sends.c.id)
            )
            return [dict(r) for r in rows.mappings().all()]

    async def pause_campaign(self, campaign_id: int, *, now: datetime) -> int:
        """Pause every send that has not ended; return how many."""
        async with self._store._begin(write=True) as conn:
            result = await conn.execute(
                update(sends)
                .where(
                    sends.c.campaign_id == campaign_id,
                    sends.c.status.in_([SendStatus.SCHEDULED, SendStatus.RUNNING]),
                )
                .values(status=SendStatus.PAUSED.value, reason="campaign paused", updated_at=now)
            )
            await conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(status=CampaignStatus.PAUSED.value, updated_at=now)
            )
            return int(result.rowcount or 0)

    async def resume_campaign(self, campaign_id: int, *, now: datetime) -> int:
        """Paused sends go back: scheduled if they never started, running if they had."""
        async with self._store._begin(write=True) as conn:
            resumed = 0
            for started, status in ((True, SendStatus.RUNNING), (False, SendStatus.SCHEDULED)):
                started_clause = (
                    sends.c.started_at.is_not(None) if started else sends.c.started_at.is_(None)
                )
                result = await conn.execute(
                    update(sends)
                    .where(
                        sends.c.campaign_id == campaign_id,
                        sends.c.status == SendStatus.PAUSED,
                        started_clause,
                    )
                    .values(status=status.value, reason=None, updated_at=now)
                )
                resumed += int(result.rowcount or 0)
            await conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(status=CampaignStatus.SCHEDULED.value, updated_at=now)
            )
            return resumed

    async def cancel_sends(
        self, campaign_id: int, *, now: datetime, reason: str, action: str | None = None
    ) -> int:
        """Cancel the sends that have not ended (only reminders, say, with ``action``)."""
        async with self._store._begin(write=True) as conn:
            query = update(sends).where(
                sends.c.campaign_id == campaign_id,
                sends.c.status.in_([SendStatus.SCHEDULED, SendStatus.RUNNING, SendStatus.PAUSED]),
            )
            if action is not None:
                query = query.where(sends.c.action == action)
            ids = [
                int(i)
                for i in (
                    await conn.execute(select(sends.c.id).where(query.whereclause))  # type: ignore[arg-type]
                ).scalars()
            ]
            result = await conn.execute(
                query.values(
                    status=SendStatus.CANCELLED.value, reason=reason, finished_at=now,
                    updated_at=now,
                )
            )  # fmt: skip
            await _skip_rest(conn, ids, reason, now)
            if action is None:
                await conn.execute(
                    update(campaigns)
                    .where(campaigns.c.id == campaign_id)
                    .values(status=CampaignStatus.CANCELLED.value, updated_at=now)
                )
            return int(result.rowcount or 0)

    async def reschedule(self, send_id: int, due_at: datetime, *, now: datetime) -> bool:
        async with self._store._begin(write=True) as conn:
            result = await conn.execute(
                update(sends)
                .where(sends.c.id == send_id, sends.c.status == SendStatus.SCHEDULED)
                .values(due_at=due_at, updated_at=now)
            )
            return bool(result.rowcount)

    async def update_event(
        self, campaign_id: int, event: EventInfo, *, status: EventStatus, now: datetime
    ) -> int:
        """New details for an event; SEQUENCE grows by one. Returns the new sequence."""
        async with self._store._begin(write=True) as conn:
            current = (
                await conn.execute(
                    select(events.c.sequence).where(events.c.campaign_id == campaign_id)
                )
            ).scalar()
            if current is None:
                raise NotFoundError("this campaign has no event")
            sequence = int(current) + 1
            await conn.execute(
                update(events)
                .where(events.c.campaign_id == campaign_id)
                .values(
                    title=event.title, starts_at=event.start, ends_at=event.end,
                    timezone=event.timezone, place=event.place, link=event.link,
                    description=event.description, sequence=sequence, status=status.value,
                    updated_at=now,
                )
            )  # fmt: skip
            return sequence

    async def newsletter_campaigns(self) -> list[dict[str, Any]]:
        """Active recurring newsletters with their cron, zone and end."""
        async with self._store._begin() as conn:
            rows = await conn.execute(
                select(
                    campaigns.c.id, campaigns.c.name, campaigns.c.timezone, campaigns.c.options
                ).where(
                    campaigns.c.kind == "newsletter",
                    campaigns.c.status == CampaignStatus.SCHEDULED,
                )
            )
            out = []
            for row in rows.all():
                options = row.options or {}
                if "cron" not in options:
                    continue
                until = options.get("until")
                out.append(
                    {
                        "id": row.id,
                        "name": row.name,
                        "cron": options["cron"],
                        "zone": ZoneInfo(row.timezone),
                        "until": datetime.fromisoformat(until) if until else None,
                    }
                )
            return out

    async def scheduled(self) -> list[tuple[int, datetime]]:
        """Every scheduled send with its due time: what the scheduler's jobs are built from."""
        async with self._store._begin() as conn:
            rows = await conn.execute(
                select(sends.c.id, sends.c.due_at).where(sends.c.status == SendStatus.SCHEDULED)
            )
            return [(int(i), due) for i, due in rows.all()]

    async def due(
        self,
        send_id: int,
        *,
        after: int,
        limit: int,
        now: datetime,
        pending_ok: bool = False,
        worker: str | None = None,
        lease: float = 0.0,
    ) -> list[Due]:
        """The next deliveries to attempt (queued, or deferred and due), by id after ``after``.

        ``pending_ok`` (the confirmation mail of a double opt-in): the subscription's status
        does not matter, its pending request does: without one (confirmed or unsubscribed
        since) the delivery is skipped, since its link could only say "not valid".

        With ``worker``, the batch is leased to it for ``lease`` seconds, so that several
        daemons share a send without sending a delivery twice: on PostgreSQL the rows are
        taken with ``FOR UPDATE SKIP LOCKED`` and rows leased to another live worker are
        passed over (a dead worker's lease expires and its rows go to whoever asks next). On
        SQLite one process sends per file (see ``engine.sending_lock``), so leases are
        written, for ``mailer status``, but never wait.
        """
        attemptable = (deliveries.c.status == DeliveryStatus.QUEUED) | (
            (deliveries.c.status == DeliveryStatus.DEFERRED) & (deliveries.c.next_attempt_at <= now)
        )
        leased_ids: list[int] | None = None
        leased_until = None if worker is None else now + timedelta(seconds=lease)
        if worker is not None:
            free = select(deliveries.c.id).where(
                deliveries.c.send_id == send_id, deliveries.c.id > after, attemptable
            )
            if self._store.dialect == "postgresql":
                free = free.where(
                    deliveries.c.lease_until.is_(None)
                    | (deliveries.c.lease_until <= now)
                    | (deliveries.c.leased_by == worker)
                ).with_for_update(skip_locked=True)
            free = free.order_by(deliveries.c.id).limit(limit)
            async with self._store._begin(write=True) as conn:
                leased_ids = sorted(
                    int(i)
                    for i in (
                        await conn.execute(
                            update(deliveries)
                            .where(deliveries.c.id.in_(free.scalar_subquery()))
                            .values(leased_by=worker, lease_until=leased_until)
                            .returning(deliveries.c.id)
                        )
                    ).scalars()
                )
            if not leased_ids:
                return []
        query = (
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
                subscribers.c.status.label("subscriber_status"),
                subscriptions.c.status.label("subscription_status"),
                subscriptions.c.confirm_nonce,
                suppressions.c.reason.label("suppressed"),
            )
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .outerjoin(
                subscriptions,
                (subscriptions.c.subscriber_id == deliveries.c.subscriber_id)
                & (subscriptions.c.list_id == deliveries.c.list_id),
            )
            .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
            .where(deliveries.c.send_id == send_id, deliveries.c.id > after, attemptable)
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        if leased_ids is not None:
            query = query.where(deliveries.c.id.in_(leased_ids))
        async with self._store._begin() as conn:
            rows = (await conn.execute(query)).mappings().all()
        out = []
        for row in rows:
            skip = None
            if row["suppressed"] is not None:
                skip = f"suppressed: {row['suppressed']}"
            elif pending_ok and row["confirm_nonce"] is None:
                # a confirmation mail with no request left to confirm (confirmed meanwhile,
                # or unsubscribed since): its link could only show "not valid"
                skip = "no pending sign-up"
            elif not pending_ok and row["subscription_status"] != SubscriptionStatus.SUBSCRIBED:
                skip = "unsubscribed"
            elif row["subscriber_status"] != SubscriberStatus.ACTIVE:
                skip = f"subscriber {row['subscriber_status']}"
            out.append(
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
                    skip_reason=skip,
                    lease_until=leased_until,
                )
            )
        return out

    async def record(
        self, outcomes: Sequence[Outcome], *, now: datetime, actor: str = "dispatch"
    ) -> None:
        """Write a batch of results in one commit (the group commit of dispatch).

        An outcome's ``suppress_key`` suppresses that address (a "no such user" reply), with
        a suppression event naming ``actor`` (``send <id>``) and the reply."""
        if not outcomes:
            return
        async with self._store._begin(write=True) as conn:
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
                    for o in outcomes
                ],
            )
            replies = {
                o.suppress_key: f"{o.code or ''} {o.reply or ''}".strip()
                for o in outcomes
                if o.suppress_key
            }
            if not replies:
                return
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
                _insert(self._store.dialect, suppressions)
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
                    {"email_key": k, "action": "suppress",
                     "reason": SuppressionReason.HARD_BOUNCE.value,
                     "detail": replies[k][:1000], "actor": actor, "at": now}
                    for k in fresh
                ],
            )  # fmt: skip

    async def counts(self, send_id: int) -> dict[str, int]:
        async with self._store._begin() as conn:
            rows = await conn.execute(
                select(deliveries.c.status, func.count())
                .where(deliveries.c.send_id == send_id)
                .group_by(deliveries.c.status)
            )
            found = {status: int(n) for status, n in rows.all()}
        return {s.value: found.get(s.value, 0) for s in DeliveryStatus}

    async def rate(self, send_id: int, *, now: datetime) -> float:
        """Messages sent per second over the last minute."""
        async with self._store._begin() as conn:
            count = (
                await conn.execute(
                    select(func.count()).where(
                        deliveries.c.send_id == send_id,
                        deliveries.c.status == DeliveryStatus.SENT,
                        deliveries.c.sent_at >= now - timedelta(minutes=1),
                    )
                )
            ).scalar()
        return float(count or 0) / 60.0

    async def has_deliveries(self, send_id: int) -> bool:
        async with self._store._begin() as conn:
            found = (
                await conn.execute(
                    select(deliveries.c.id).where(deliveries.c.send_id == send_id).limit(1)
                )
            ).scalar()
        return found is not None

    async def has_due(self, send_id: int, *, now: datetime) -> bool:
        """Whether a running send has a delivery to attempt now (and, on PostgreSQL, not
        leased to a live worker)."""
        query = select(deliveries.c.id).where(
            deliveries.c.send_id == send_id,
            (deliveries.c.status == DeliveryStatus.QUEUED)
            | (
                (deliveries.c.status == DeliveryStatus.DEFERRED)
                & (deliveries.c.next_attempt_at <= now)
            ),
        )
        if self._store.dialect == "postgresql":
            query = query.where(
                deliveries.c.lease_until.is_(None) | (deliveries.c.lease_until <= now)
            )
        async with self._store._begin() as conn:
            found = (await conn.execute(query.limit(1))).scalar()
        return found is not None

    async def renew(
        self, send_id: int, *, worker: str, until: datetime, now: datetime
    ) -> list[int]:
        """Extend the live leases ``worker`` holds on a send (its heartbeat); return the
        deliveries renewed. A lease that ran out is not renewed: another worker may have
        its delivery now."""
        async with self._store._begin(write=True) as conn:
            result = await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.send_id == send_id,
                    deliveries.c.leased_by == worker,
                    deliveries.c.lease_until > now,
                )
                .values(lease_until=until)
                .returning(deliveries.c.id)
            )
            return [int(i) for i in result.scalars()]

    async def release(self, send_id: int | None, *, worker: str) -> int:
        """Give back what ``worker`` leased and did not attempt (a stop, a pause, the end of
        a pass; ``send_id`` None: every send), so that another daemon, or the next start,
        need not wait for the expiry."""
        query = update(deliveries).where(
            deliveries.c.leased_by == worker, deliveries.c.lease_until.is_not(None)
        )
        if send_id is not None:
            query = query.where(deliveries.c.send_id == send_id)
        async with self._store._begin(write=True) as conn:
            result = await conn.execute(query.values(lease_until=None))
            return int(result.rowcount or 0)

    async def lease_holders(self, *, now: datetime) -> list[str]:
        """The workers holding a live lease on some delivery."""
        async with self._store._begin() as conn:
            rows = await conn.execute(
                select(deliveries.c.leased_by)
                .where(deliveries.c.lease_until > now, deliveries.c.leased_by.is_not(None))
                .distinct()
            )
            return sorted(str(w) for w in rows.scalars())

    async def holders(self, send_id: int, *, now: datetime) -> list[tuple[str, int, float]]:
        """Who works on a send: (worker, deliveries leased now, messages sent per second over
        the last minute), busiest first."""
        async with self._store._begin() as conn:
            leased = dict(
                (
                    await conn.execute(
                        select(deliveries.c.leased_by, func.count())
                        .where(deliveries.c.send_id == send_id, deliveries.c.lease_until > now)
                        .group_by(deliveries.c.leased_by)
                    )
                ).all()
            )
            sent = dict(
                (
                    await conn.execute(
                        select(deliveries.c.leased_by, func.count())
                        .where(
                            deliveries.c.send_id == send_id,
                            deliveries.c.status == DeliveryStatus.SENT,
                            deliveries.c.sent_at >= now - timedelta(minutes=1),
                            deliveries.c.leased_by.is_not(None),
                        )
                        .group_by(deliveries.c.leased_by)
                    )
                ).all()
            )
        workers = sorted(set(leased) | set(sent), key=lambda w: (-sent.get(w, 0), str(w)))
        return [(str(w), int(leased.get(w, 0)), sent.get(w, 0) / 60.0) for w in workers]

    async def next_retry(self, send_id: int) -> datetime | None:
        async with self._store._begin() as conn:
            value = (
                await conn.execute(
                    select(func.min(deliveries.c.next_attempt_at)).where(
                        deliveries.c.send_id == send_id,
                        deliveries.c.status == DeliveryStatus.DEFERRED,
                    )
                )
            ).scalar()
        return value  # type: ignore[no-any-return]

    async def finish(self, send_id: int, *, now: datetime) -> dict[str, int]:
        """Store the counters; mark the send done when nothing is left to attempt."""
        async with self._store._begin(write=True) as conn:
            rows = await conn.execute(
                select(deliveries.c.status, func.count())
                .where(deliveries.c.send_id == send_id)
                .group_by(deliveries.c.status)
            )
            found = {status: int(n) for status, n in rows.all()}
            counts = {s.value: found.get(s.value, 0) for s in DeliveryStatus}
            values: dict[str, Any] = {
                "total": sum(counts.values()),
                "sent": counts["sent"],
                "failed": counts["failed"],
                "skipped": counts["skipped"],
                "deferred": counts["deferred"],
                "updated_at": now,
            }
            if counts["queued"] == 0 and counts["deferred"] == 0:
                values.update(status=SendStatus.DONE.value, finished_at=now, reason=None)
                await conn.execute(
                    update(sends)
                    .where(sends.c.id == send_id, sends.c.status == SendStatus.RUNNING)
                    .values(**values)
                )
            else:
                await conn.execute(update(sends).where(sends.c.id == send_id).values(**values))
        return counts

    async def standing(self, send_id: int) -> tuple[str, str | None, datetime | None]:
        """Status, reason and next retry of a send, in one read (the end of a run)."""
        next_retry = (
            select(func.min(deliveries.c.next_attempt_at))
            .where(deliveries.c.send_id == send_id, deliveries.c.status == DeliveryStatus.DEFERRED)
            .scalar_subquery()
        )
        async with self._store._begin() as conn:
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
        address was suppressed when the suppression has been lifted since; the send runs
        again. Returns how many were queued. (Who is still suppressed, or unsubscribed, is
        skipped again when their turn comes.)"""
        async with self._store._begin(write=True) as conn:
            status = (
                await conn.execute(select(sends.c.status).where(sends.c.id == send_id))
            ).scalar()
            if status is None:
                raise NotFoundError(f"no send {send_id}")
            if status in (SendStatus.CANCELLED, SendStatus.MISSED):
                raise StateError(f"send {send_id} is {status}; it cannot be retried")
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
                    status=DeliveryStatus.QUEUED.value, next_attempt_at=None, reason=None,
                    updated_at=now,
                )
            )  # fmt: skip
            if result.rowcount and status == SendStatus.DONE:
                await conn.execute(
                    update(sends)
                    .where(sends.c.id == send_id)
                    .values(status=SendStatus.RUNNING.value, finished_at=None, updated_at=now)
                )
            return int(result.rowcount or 0)

    async def report(self, send_id: int) -> AsyncIterator[dict[str, Any]]:
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
        async with self._store._begin() as conn:
            async for row in await conn.stream(query):
                yield dict(row._mapping)


async def _claim(conn: Any, send_id: int, *, worker: str, now: datetime) -> bool:
    result = await conn.execute(
        update(sends)
        .where(sends.c.id == send_id, sends.c.status == SendStatus.SCHEDULED)
        .values(
            status=SendStatus.RUNNING.value,
            claimed_by=worker,
            started_at=func.coalesce(sends.c.started_at, now),
            reason=None,
            updated_at=now,
        )
    )
    return bool(result.rowcount)


async def _skip_rest(conn: Any, send_ids: list[int], reason: str, now: datetime) -> None:
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


def _bind(name: str, type_: Any = None) -> Any:
    return bindparam(name, type_=type_)
