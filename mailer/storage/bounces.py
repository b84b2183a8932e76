"""Bounces: each message (or relay webhook event) stored once, each recipient's bounce with
what it did, the address's score with decay, and the suppressions that follow.

Writes ``bounce_messages`` and ``bounce_events`` (and no other table), through its part
``bounce_record`` (one message at a time, or in batches); in the same transaction, through
their writers, marks the delivery ``bounced`` (``returns``), suppresses (``suppressions``)
and, for a complaint, unsubscribes from every list (``subscribers``).

The score of an address is read from its rows of the last ``stale_days``: hard bounces
suppress at ``hard_limit``; soft bounces at ``soft_limit`` different (UTC) days; a complaint
at once. A policy bounce (5.7.x: the sender's problem) never counts against the address; an
auto-reply or an unclassified failure counts for nothing. Only a bounce tied to one of our
deliveries counts (a verified return path, the Message-ID it echoes, or the send it names
and the address); any other is kept and marked ``unmatched``: nobody's address is changed by
a message anyone could have written.

Read back for ``mailer bounces list|show`` (:meth:`Bounces.lines`, :meth:`Bounces.message`)
and the console's bounces pages (:meth:`Bounces.rows`, :meth:`Bounces.totals`,
:meth:`Bounces.detail`: keyset pages, an address prefix, the raw message cut in the database).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, func, null, select, update

from mailer.models import BounceKind, BounceLimits, BounceLine, BounceOutcome, IncomingBounce
from mailer.storage import bounce_record, returns
from mailer.storage.database import Database
from mailer.storage.engine import starts_with
from mailer.storage.tables import bounce_events, bounce_messages, campaigns, deliveries, sends
from mailer.storage.tables import subscribers as subscriber_rows

MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class BounceRow:
    """One recipient's bounce as the console lists it: :class:`BounceLine`'s fields, whether
    the message's return path was forged, and the subscriber's public id when the address is
    a subscriber's."""

    id: int
    bounce_id: int
    received_at: datetime
    source: str
    recipient: str
    kind: str
    status: str | None
    diagnostic: str
    final: bool
    action: str
    forged: bool
    delivery_id: int | None
    send_id: int | None
    campaign: str | None
    send_key: str | None
    public_id: str | None


@dataclass(frozen=True, slots=True)
class BounceRows:
    lines: list[BounceRow]
    next: int | None  # the ``before`` of the next page (None: this is the last)


@dataclass(frozen=True, slots=True)
class BounceMessage:
    """One stored bounce message for the console: how it came and was read, what it is tied
    to, its recipients, and the first bytes of the raw message (when asked and still kept)."""

    id: int
    received_at: datetime
    source: str
    report: str
    reader: str
    message_id: str | None
    mailer_send: str | None
    forged: bool
    delivery_id: int | None  # the delivery the whole message is tied to
    send_id: int | None  # that delivery's send
    campaign: str | None
    send_key: str | None
    raw_size: int | None  # None: not kept (emptied after KEEP_DAYS, or a webhook event)
    raw: bytes | None  # at most the ``raw_limit`` first bytes
    recipients: list[BounceRow]


class Bounces:
    """``store.bounces``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self, incoming: IncomingBounce, limits: BounceLimits, *, now: datetime
    ) -> BounceOutcome:
        """Store one bounce and do what it calls for, in one transaction; a bounce whose
        fingerprint is stored already changes nothing (``duplicate``)."""
        return await bounce_record.record(self._db, incoming, limits, now=now)

    async def record_many(
        self, incomings: Sequence[IncomingBounce], limits: BounceLimits, *, now: datetime
    ) -> list[BounceOutcome]:
        """Store bounces as :meth:`record` would one after another, in batches: one
        transaction of a few statements per 500 messages (``storage/bounce_record.py``)."""
        return await bounce_record.record_many(self._db, incomings, limits, now=now)

    async def policy_share(self, send_id: int, *, since: datetime) -> tuple[int, int]:
        """A send's policy bounces stored since ``since``, and its messages sent."""
        async with self._db.begin() as conn:
            policy = await conn.execute(
                select(func.count()).where(
                    bounce_events.c.send_id == send_id,
                    bounce_events.c.kind == BounceKind.POLICY,
                    bounce_events.c.at >= since,
                )
            )
            return int(policy.scalar_one()), await returns.sent_count(conn, send_id)

    async def counts(self, send_id: int | None = None) -> dict[str, int]:
        """Bounces by kind (of one send, or of all), recipients of messages tied to us."""
        query = select(bounce_events.c.kind, func.count()).group_by(bounce_events.c.kind)
        if send_id is not None:
            query = query.where(bounce_events.c.send_id == send_id)
        async with self._db.begin() as conn:
            return {str(k): int(n) for k, n in (await conn.execute(query)).all()}

    async def forged(self) -> int:
        """Bounce messages whose return path's signature did not check out."""
        query = select(func.count()).where(bounce_messages.c.forged.is_(True))
        async with self._db.begin() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def lines(
        self,
        *,
        kind: str | None = None,
        email_key: str | None = None,
        send_id: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[BounceLine]:
        """Stored bounces, newest first (``before``: an id, for the next page)."""
        query = _lines().order_by(bounce_events.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(bounce_events.c.kind == kind)
        if email_key is not None:
            query = query.where(bounce_events.c.email_key == email_key)
        if send_id is not None:
            query = query.where(bounce_events.c.send_id == send_id)
        if before is not None:
            query = query.where(bounce_events.c.id < before)
        async with self._db.begin() as conn:
            return [BounceLine(*row) for row in (await conn.execute(query)).all()]

    async def message(self, bounce_id: int) -> tuple[list[BounceLine], bytes | None] | None:
        """A stored bounce message's recipients and its raw bytes (None once purged)."""
        async with self._db.begin() as conn:
            raw = (
                await conn.execute(
                    select(bounce_messages.c.raw).where(bounce_messages.c.id == bounce_id)
                )
            ).first()
            if raw is None:
                return None
            rows = await conn.execute(
                _lines().where(bounce_events.c.bounce_id == bounce_id).order_by(bounce_events.c.id)
            )
            return [BounceLine(*row) for row in rows.all()], raw[0]

    async def rows(
        self,
        *,
        kind: str | None = None,
        email_prefix: str = "",
        send_id: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> BounceRows:
        """A page of recipients' bounces, newest first (keyset on the event id); ``email_prefix``:
        the addresses beginning with it (case-insensitive), as the suppressions' search."""
        limit = max(1, min(limit, MAX_PAGE))
        query = _rows().order_by(bounce_events.c.id.desc()).limit(limit + 1)
        query = _filtered(query, email_prefix=email_prefix, send_id=send_id)
        if kind is not None:
            query = query.where(bounce_events.c.kind == kind)
        if before is not None:
            query = query.where(bounce_events.c.id < before)
        async with self._db.begin() as conn:
            found = [BounceRow(*row) for row in (await conn.execute(query)).all()]
        following = found[limit - 1].id if len(found) > limit else None
        return BounceRows(found[:limit], following)

    async def totals(self, *, email_prefix: str = "", send_id: int | None = None) -> dict[str, int]:
        """Recipients' bounces by kind, of the addresses beginning with ``email_prefix`` and of
        one send (or all): the console's kind filter shows them."""
        query = select(bounce_events.c.kind, func.count()).group_by(bounce_events.c.kind)
        query = _filtered(query, email_prefix=email_prefix, send_id=send_id)
        async with self._db.begin() as conn:
            return {str(k): int(n) for k, n in (await conn.execute(query)).all()}

    async def detail(self, bounce_id: int, *, raw_limit: int = 0) -> BounceMessage | None:
        """One bounce message with its recipients; the first ``raw_limit`` bytes of the raw
        message (none read when 0: the database hands over no more than asked)."""
        m = bounce_messages.c
        cut = func.substr(m.raw, 1, raw_limit, type_=LargeBinary) if raw_limit > 0 else null()
        head = select(
            m.id, m.received_at, m.source, m.report, m.reader, m.message_id, m.mailer_send,
            m.forged, m.delivery_id, deliveries.c.send_id, campaigns.c.name.label("campaign"),
            sends.c.key.label("send_key"), func.length(m.raw).label("raw_size"), cut.label("raw"),
        ).select_from(
            bounce_messages.outerjoin(deliveries, deliveries.c.id == m.delivery_id)
            .outerjoin(sends, sends.c.id == deliveries.c.send_id)
            .outerjoin(campaigns, campaigns.c.id == sends.c.campaign_id)
        ).where(m.id == bounce_id)  # fmt: skip
        async with self._db.begin() as conn:
            found = (await conn.execute(head)).mappings().first()
            if found is None:
                return None
            rows = await conn.execute(
                _rows().where(bounce_events.c.bounce_id == bounce_id).order_by(bounce_events.c.id)
            )
            recipients = [BounceRow(*row) for row in rows.all()]
        fields = dict(found)
        size, raw = fields.pop("raw_size"), fields.pop("raw")
        return BounceMessage(
            **fields, raw_size=None if size is None else int(size),
            raw=None if raw is None else bytes(raw), recipients=recipients,
        )  # fmt: skip

    async def purge(self, *, raw_before: datetime) -> int:
        """Empty the raw message of bounces received before ``raw_before``; their events
        stay (the score and the history need only them)."""
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(
                update(bounce_messages)
                .where(
                    bounce_messages.c.received_at < raw_before, bounce_messages.c.raw.is_not(None)
                )
                .values(raw=None)
            )
            return int(result.rowcount or 0)


def _lines() -> Any:
    return (
        select(
            bounce_events.c.id,
            bounce_events.c.bounce_id,
            bounce_messages.c.received_at,
            bounce_messages.c.source,
            bounce_events.c.email_key,
            bounce_events.c.kind,
            bounce_events.c.status,
            bounce_events.c.diagnostic,
            bounce_events.c.action,
            bounce_events.c.delivery_id,
            bounce_events.c.send_id,
            campaigns.c.name,
            sends.c.key,
        )
        .join(bounce_messages, bounce_messages.c.id == bounce_events.c.bounce_id)
        .outerjoin(sends, sends.c.id == bounce_events.c.send_id)
        .outerjoin(campaigns, campaigns.c.id == sends.c.campaign_id)
    )


def _rows() -> Any:
    """The console's rows: the CLI's lines with the forged flag and the subscriber's public id
    (the unique ``email_key``: one look-up a row)."""
    return (
        select(
            bounce_events.c.id, bounce_events.c.bounce_id, bounce_messages.c.received_at,
            bounce_messages.c.source, bounce_events.c.email_key, bounce_events.c.kind,
            bounce_events.c.status, bounce_events.c.diagnostic, bounce_events.c.final,
            bounce_events.c.action, bounce_messages.c.forged, bounce_events.c.delivery_id,
            bounce_events.c.send_id, campaigns.c.name, sends.c.key, subscriber_rows.c.public_id,
        )
        .join(bounce_messages, bounce_messages.c.id == bounce_events.c.bounce_id)
        .outerjoin(sends, sends.c.id == bounce_events.c.send_id)
        .outerjoin(campaigns, campaigns.c.id == sends.c.campaign_id)
        .outerjoin(subscriber_rows, subscriber_rows.c.email_key == bounce_events.c.email_key)
    )  # fmt: skip


def _filtered(query: Any, *, email_prefix: str, send_id: int | None) -> Any:
    text = email_prefix.strip().casefold()
    if text:
        query = query.where(starts_with(bounce_events.c.email_key, text))
    if send_id is not None:
        query = query.where(bounce_events.c.send_id == send_id)
    return query
