"""The console's read queries about sends (``store.overview``): the dashboard (sends coming
up with their audience, running sends with their progress, the last sends, what needs
attention), one send's live progress, and a page of its per-recipient report.

Writes no table: read-only. Every count of deliveries reads one send at a time through the
``(send_id, status, id)`` index (one range per status); the rate reads at most
:data:`RATE_SAMPLE` of a send's last sent rows; report pages are keyset pages, never
``OFFSET``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.errors import NotFoundError
from mailer.lifecycle import ENDED
from mailer.models import DeliveryCounts, DeliveryStatus, SendStatus, SubscriptionStatus
from mailer.storage.database import Database
from mailer.storage.deliveries import EVENT_MAILS
from mailer.storage.engine import starts_with
from mailer.storage.tables import (
    campaign_lists,
    campaigns,
    deliveries,
    lists,
    sends,
    subscribers,
    subscriptions,
)

RATE_WINDOW = timedelta(minutes=1)
FEW_NAMED = 2000  # a search naming at most this many subscribers looks each one up
RATE_SAMPLE = 3000  # the last sent rows read for the rate: up to 50 msg/s measured over 60 s
MAX_PAGE = 200
# The reasons a staff pause stores (`send pause` and the console; `campaign pause`): any
# other reason of a paused send is the pass's own (relay refusing, failure streak, pre-flight).
STAFF_PAUSE = "paused by staff"
STAFF_PAUSES = frozenset({STAFF_PAUSE, "campaign paused"})


@dataclass(frozen=True, slots=True)
class SendLine:
    """One send as the console lists it."""

    id: int
    campaign: str
    key: str
    action: str  # a SendAction
    status: str  # a SendStatus
    due_at: datetime
    timezone: str  # the campaign's
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @property
    def halted(self) -> bool:
        """Paused by the pass itself (the relay, a failure streak, the pre-flight)."""
        return self.status == SendStatus.PAUSED and (self.reason or "") not in STAFF_PAUSES


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a send stands now: its deliveries by status, and messages sent per second over
    the last minute."""

    send_id: int
    status: str
    reason: str | None
    counts: DeliveryCounts
    rate: float
    at: datetime

    @property
    def done(self) -> int:
        """Deliveries that reached their end: sent (bounced since included), failed or
        skipped."""
        return self.counts.total - self.counts.pending

    @property
    def eta(self) -> timedelta | None:
        """Time left at the current rate (None: not running, or nothing sent lately)."""
        if self.status != SendStatus.RUNNING or self.rate <= 0 or not self.counts.pending:
            return None
        return timedelta(seconds=round(self.counts.pending / self.rate))


@dataclass(frozen=True, slots=True)
class Upcoming:
    line: SendLine
    audience: int | None  # subscribed members of its lists (or whom its event's mails reached)


@dataclass(frozen=True, slots=True)
class Ended:
    """A finished, cancelled or missed send, with the counts its last pass stored."""

    line: SendLine
    total: int
    sent: int
    failed: int

    @property
    def skipped(self) -> int:
        """Every delivery of an ended send is sent, failed or skipped."""
        return max(0, self.total - self.sent - self.failed)


@dataclass(frozen=True, slots=True)
class Trouble:
    """A running or paused send whose deliveries wait on the relay, or that the pass halted."""

    line: SendLine
    deferred: int
    last_code: int | None  # the reply of its latest deferred delivery
    last_reply: str | None


@dataclass(frozen=True, slots=True)
class Dashboard:
    upcoming: list[Upcoming]
    running: list[tuple[SendLine, Progress | None]]
    recent: list[Ended]
    paused: list[SendLine]
    missed: list[SendLine]
    troubles: list[Trouble]


@dataclass(frozen=True, slots=True)
class ReportLine:
    """One recipient of a send in the console's report."""

    id: int  # the delivery's
    email: str
    email_key: str
    list: str  # the list's slug
    status: str
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None
    reason: str | None
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReportPage:
    lines: list[ReportLine]
    next: str | None  # the cursor of the next page (None: this is the last)


class Overview:
    """The console's read queries about sends (``store.overview``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def dashboard(
        self,
        *,
        now: datetime,
        upcoming: int = 20,
        recent: int = 10,
        within: timedelta,
        counted: bool = True,
    ) -> Dashboard:
        """Everything the dashboard shows, in one read: the next ``upcoming`` scheduled sends,
        every running send with its progress, the last ``recent`` ended sends, the paused
        ones, those missed within ``within``, and the active sends with deferred deliveries
        or halted by their pass. ``counted=False``: the running sends come without their
        progress (None) and the upcoming ones without their audience (None), for a caller that
        keeps its own readings of these counts (the console's: :meth:`audiences`)."""
        async with self._db.begin() as conn:
            coming = await _lines(
                conn, sends.c.status == SendStatus.SCHEDULED, sends.c.due_at, limit=upcoming
            )
            audiences = await _audiences(conn, [line.id for line in coming]) if counted else {}
            running = await _lines(conn, sends.c.status == SendStatus.RUNNING, sends.c.id)
            progress = [
                (line, await _progress(conn, line, now) if counted else None) for line in running
            ]
            paused = await _lines(conn, sends.c.status == SendStatus.PAUSED, sends.c.updated_at)
            missed = await _lines(
                conn,
                (sends.c.status == SendStatus.MISSED) & (sends.c.updated_at >= now - within),
                sends.c.updated_at.desc(),
                limit=recent,
            )
            ended = await _ended(conn, limit=recent)
            troubles = [
                trouble
                for line in [*running, *paused]
                if (trouble := await _trouble(conn, line)).deferred or line.halted
            ]
        return Dashboard(
            upcoming=[
                Upcoming(line, audiences.get(line.id, 0) if counted else None) for line in coming
            ],
            running=progress,
            recent=ended,
            paused=paused,
            missed=missed,
            troubles=troubles,
        )

    async def audiences(self, send_ids: list[int]) -> dict[int, int]:
        """The audience of scheduled sends (what the dashboard shows beside each): the
        subscribed members of their campaign's lists, each once, or, for an event's update or
        cancellation, everyone its mails reached. Costly on large lists (a count of distinct
        members over every subscription of the lists)."""
        async with self._db.begin() as conn:
            return await _audiences(conn, send_ids)

    async def send(self, send_id: int) -> SendLine:
        """One send; NotFoundError for an unknown one."""
        async with self._db.begin() as conn:
            found = await _lines(conn, sends.c.id == send_id, sends.c.id)
        if not found:
            raise NotFoundError(f"no send {send_id}")
        return found[0]

    async def progress(self, send_id: int, *, now: datetime) -> Progress:
        """A send's progress now (what the console polls); NotFoundError for an unknown one."""
        async with self._db.begin() as conn:
            found = await _lines(conn, sends.c.id == send_id, sends.c.id)
            if not found:
                raise NotFoundError(f"no send {send_id}")
            return await _progress(conn, found[0], now)

    async def report(
        self,
        send_id: int,
        *,
        status: DeliveryStatus | None = None,
        search: str = "",
        after: str | None = None,
        limit: int = 50,
    ) -> ReportPage:
        """A page of a send's recipients, keyset-paged.

        Without ``search``: by delivery status then id (the ``(send_id, status, id)`` index),
        ``status`` keeping one. With ``search``: the recipients whose address begins with it
        (case-insensitive), by address (the subscribers' ``email_key`` index, each looked up
        in the send through its ``(send_id, subscriber_id)`` key). ``after`` is the ``next``
        cursor of the page before; a cursor that does not parse starts from the first page.
        """
        limit = max(1, min(limit, MAX_PAGE))
        key = search.strip().casefold()
        query = _report_query(send_id, status)
        async with self._db.begin() as conn:
            if key:
                query = await _searched(conn, query, send_id, key, after)
            else:
                cursor = _cursor(after)
                if cursor is not None:
                    query = query.where(
                        tuple_(deliveries.c.status, deliveries.c.id) > tuple_(*cursor)
                    )
                query = query.order_by(deliveries.c.status, deliveries.c.id)
            rows = (await conn.execute(query.limit(limit + 1))).mappings().all()
        lines = [ReportLine(**r) for r in rows[:limit]]
        if len(rows) <= limit or not lines:
            return ReportPage(lines, None)
        last = lines[-1]
        return ReportPage(lines, last.email_key if key else f"{last.status}:{last.id}")


async def _searched(
    conn: AsyncConnection, query: Select[Any], send_id: int, key: str, after: str | None
) -> Select[Any]:
    """``query`` kept to the recipients whose address begins with ``key``, by address.

    First the subscribers the prefix names (the ``email_key`` index), at most
    :data:`FEW_NAMED`: each is then looked up in the send by its unique ``(send_id,
    subscriber_id)`` key, so a rare prefix costs a few look-ups however large the send, where
    joining first walked the send's million deliveries. A prefix naming more is common enough
    that walking the addresses in order meets a page of the send's soon.
    """
    condition = starts_with(subscribers.c.email_key, key)
    if after:
        condition = condition & (subscribers.c.email_key > after)
    named = (
        (await conn.execute(select(subscribers.c.id).where(condition).limit(FEW_NAMED + 1)))
        .scalars()
        .all()
    )
    if len(named) > FEW_NAMED:
        return query.where(condition).order_by(subscribers.c.email_key)
    return query.where(deliveries.c.subscriber_id.in_(named)).order_by(subscribers.c.email_key)


def _line_query() -> Select[Any]:
    return select(
        sends.c.id, campaigns.c.name.label("campaign"), sends.c.key, sends.c.action,
        sends.c.status, sends.c.due_at, campaigns.c.timezone, sends.c.reason,
        sends.c.started_at, sends.c.finished_at, sends.c.updated_at,
    ).join(campaigns, campaigns.c.id == sends.c.campaign_id)  # fmt: skip


async def _lines(
    conn: AsyncConnection, where: ColumnElement[bool], order: Any, *, limit: int | None = None
) -> list[SendLine]:
    query = _line_query().where(where).order_by(order, sends.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [SendLine(**r) for r in (await conn.execute(query)).mappings().all()]


async def _ended(conn: AsyncConnection, *, limit: int) -> list[Ended]:
    """The last ended sends, with the counters their last pass stored (no delivery read)."""
    query = (
        _line_query()
        .add_columns(sends.c.total, sends.c.sent.label("sent_count"), sends.c.failed)
        .where(sends.c.status.in_(sorted(ENDED)))
        .order_by(func.coalesce(sends.c.finished_at, sends.c.updated_at).desc(), sends.c.id)
        .limit(limit)
    )
    found = []
    for row in (await conn.execute(query)).mappings().all():
        values = dict(row)
        total, sent, failed = values.pop("total"), values.pop("sent_count"), values.pop("failed")
        found.append(Ended(SendLine(**values), int(total), int(sent), int(failed)))
    return found


async def _counts(conn: AsyncConnection, send_id: int) -> DeliveryCounts:
    """A send's deliveries by status: one count per status, each over its own
    ``(send_id, status)`` range of the ``(send_id, status, id)`` index, in one statement
    (SQLite counts a range a third faster than it groups the send's whole range)."""
    by_status = [
        select(func.count())
        .where(deliveries.c.send_id == send_id, deliveries.c.status == status.value)
        .scalar_subquery()
        .label(status.value)
        for status in DeliveryStatus
    ]
    row = (await conn.execute(select(*by_status))).one()
    return DeliveryCounts.of(
        {s.value: int(n or 0) for s, n in zip(DeliveryStatus, row, strict=True)}
    )


async def _rate(conn: AsyncConnection, send_id: int, now: datetime) -> float:
    """Messages sent per second lately, from the send's last sent rows by id (at most
    :data:`RATE_SAMPLE`, read backwards on the index) sent within the last minute, over the
    time they span (at least 1 s): a send that began 10 s ago is measured over those 10 s. A
    retry sent late with a low id may be left out of the sample."""
    since = now - RATE_WINDOW
    last = (
        select(deliveries.c.sent_at)
        .where(deliveries.c.send_id == send_id, deliveries.c.status == DeliveryStatus.SENT)
        .order_by(deliveries.c.id.desc())
        .limit(RATE_SAMPLE)
        .subquery()
    )
    found, oldest = (
        await conn.execute(
            select(func.count(), func.min(last.c.sent_at)).where(last.c.sent_at >= since)
        )
    ).one()
    count = int(found or 0)
    if count and isinstance(oldest, datetime):
        # over the time the counted messages span (a send that began 10 s ago is measured
        # over those 10 s, not the whole minute)
        span = min(RATE_WINDOW.total_seconds(), max(1.0, (now - oldest).total_seconds()))
        return count / span
    return 0.0


async def _progress(conn: AsyncConnection, line: SendLine, now: datetime) -> Progress:
    counts = await _counts(conn, line.id)
    rate = await _rate(conn, line.id, now) if counts.sent else 0.0
    return Progress(line.id, line.status, line.reason, counts, rate, now)


async def _trouble(conn: AsyncConnection, line: SendLine) -> Trouble:
    """How many of a send's deliveries are deferred, and the reply of its latest one."""
    deferred = (deliveries.c.send_id == line.id) & (deliveries.c.status == DeliveryStatus.DEFERRED)
    count = (await conn.execute(select(func.count()).where(deferred))).scalar() or 0
    last = None
    if count:
        last = (
            await conn.execute(
                select(deliveries.c.smtp_code, deliveries.c.smtp_reply)
                .where(deferred)
                .order_by(deliveries.c.id.desc())
                .limit(1)
            )
        ).one_or_none()
    return Trouble(line, int(count), last[0] if last else None, last[1] if last else None)


async def _audiences(conn: AsyncConnection, send_ids: list[int]) -> dict[int, int]:
    """The audience of scheduled sends: the subscribed members of their campaign's lists
    (each once), or, for an event's update or cancellation, everyone its mails reached."""
    if not send_ids:
        return {}
    rows = (
        await conn.execute(
            select(sends.c.id, sends.c.campaign_id, sends.c.audience_send_id).where(
                sends.c.id.in_(send_ids)
            )
        )
    ).all()
    by_campaign: dict[tuple[int, bool], int] = {}
    found: dict[int, int] = {}
    for send_id, campaign_id, audience_send in rows:
        key = (int(campaign_id), audience_send is not None)
        if key not in by_campaign:
            by_campaign[key] = await (_reached if key[1] else _subscribed)(conn, key[0])
        found[int(send_id)] = by_campaign[key]
    return found


async def _subscribed(conn: AsyncConnection, campaign_id: int) -> int:
    list_ids = [
        int(i)
        for i in (
            await conn.execute(
                select(campaign_lists.c.list_id).where(campaign_lists.c.campaign_id == campaign_id)
            )
        ).scalars()
    ]
    if not list_ids:
        return 0
    where = (subscriptions.c.list_id.in_(list_ids)) & (
        subscriptions.c.status == SubscriptionStatus.SUBSCRIBED
    )
    # One list: a count on the (list_id, status) index alone; several: each member once.
    counted = (
        func.count() if len(list_ids) == 1 else func.count(subscriptions.c.subscriber_id.distinct())
    )
    return int((await conn.execute(select(counted).where(where))).scalar() or 0)


async def _reached(conn: AsyncConnection, campaign_id: int) -> int:
    """Everyone an event's invitation, reminders and updates were sent to, once each."""
    query = (
        select(func.count(deliveries.c.subscriber_id.distinct()))
        .join(sends, sends.c.id == deliveries.c.send_id)
        .where(
            sends.c.campaign_id == campaign_id,
            sends.c.action.in_([a.value for a in EVENT_MAILS]),
            deliveries.c.status == DeliveryStatus.SENT,
        )
    )
    return int((await conn.execute(query)).scalar() or 0)


def _report_query(send_id: int, status: DeliveryStatus | None) -> Select[Any]:
    query = (
        select(
            deliveries.c.id, subscribers.c.email, subscribers.c.email_key,
            lists.c.slug.label("list"), deliveries.c.status, deliveries.c.attempts,
            deliveries.c.smtp_code, deliveries.c.smtp_reply, deliveries.c.reason,
            deliveries.c.sent_at,
        )
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .join(lists, lists.c.id == deliveries.c.list_id)
        .where(deliveries.c.send_id == send_id)
    )  # fmt: skip
    return query if status is None else query.where(deliveries.c.status == status.value)


def _cursor(after: str | None) -> tuple[str, int] | None:
    """``status:id`` of the last line of the page before."""
    if not after or ":" not in after:
        return None
    status, _, last = after.rpartition(":")
    if (
        status not in {s.value for s in DeliveryStatus}
        or not (last.isascii() and last.isdigit())
        or len(last) > 18
    ):
        return None
    return status, int(last)


__all__ = [
    "RATE_SAMPLE",
    "STAFF_PAUSE",
    "STAFF_PAUSES",
    "Dashboard",
    "Ended",
    "Overview",
    "Progress",
    "ReportLine",
    "ReportPage",
    "SendLine",
    "Trouble",
    "Upcoming",
]
