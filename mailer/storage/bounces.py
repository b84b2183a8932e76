"""Bounces: each message (or relay webhook event) stored once, each recipient's bounce with
what it did, the address's score with decay, and the suppressions that follow.

Writes ``bounce_messages`` and ``bounce_events`` (and no other table); in the same
transaction, through their writers, marks the delivery ``bounced`` (``returns``), suppresses
(``suppressions``) and, for a complaint, unsubscribes from every list (``subscribers``).

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

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import LargeBinary, func, null, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import (
    BounceAction,
    BounceKind,
    BounceLimits,
    BounceLine,
    BounceNote,
    BounceOutcome,
    IncomingBounce,
    NoteOutcome,
    SuppressionReason,
)
from mailer.storage import lookups, outbox, returns, subscribers, suppressions
from mailer.storage.database import Database
from mailer.storage.engine import starts_with
from mailer.storage.returns import Sent
from mailer.storage.tables import bounce_events, bounce_messages, campaigns, deliveries, sends
from mailer.storage.tables import subscribers as subscriber_rows

ACTOR = "bounces"  # who the suppressions made here are by, in their history
_MARKS = frozenset({BounceKind.HARD, BounceKind.SOFT, BounceKind.POLICY, BounceKind.UNKNOWN})
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
        async with self._db.begin(write=True) as conn:
            inserted = await conn.execute(
                self._db.insert(bounce_messages)
                .values(
                    fingerprint=incoming.fingerprint, source=incoming.source[:32],
                    report=incoming.report.value, reader=incoming.reader[:32],
                    received_at=now, raw=incoming.raw, delivery_id=None,
                    message_id=(incoming.message_id or "")[:255] or None,
                    mailer_send=(incoming.mailer_send or "")[:200] or None,
                    forged=incoming.forged,
                )
                .on_conflict_do_nothing(index_elements=["fingerprint"])
                .returning(bounce_messages.c.id)
            )  # fmt: skip
            bounce_id = inserted.scalar()
            if bounce_id is None:
                first = await conn.execute(
                    select(bounce_messages.c.id).where(
                        bounce_messages.c.fingerprint == incoming.fingerprint
                    )
                )
                return BounceOutcome(bounce_id=int(first.scalar_one()), duplicate=True)
            tied = None if incoming.forged else await _tie(conn, incoming)
            if tied is not None:
                await conn.execute(
                    update(bounce_messages)
                    .where(bounce_messages.c.id == bounce_id)
                    .values(delivery_id=tied.id)
                )
            outcomes = []
            seen: set[str] = set()
            for note in incoming.notes:
                sent = tied or await _tie_note(conn, incoming, note)
                key = sent.email_key if sent else note.recipient
                if key in seen:
                    continue
                seen.add(key)
                outcomes.append(await _note(conn, int(bounce_id), note, sent, limits, now))
            return BounceOutcome(bounce_id=int(bounce_id), duplicate=False, notes=tuple(outcomes))

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


async def _tie(conn: AsyncConnection, incoming: IncomingBounce) -> Sent | None:
    """The delivery the whole message is about: its return path's, else its Message-ID's."""
    if incoming.delivery_id is not None:
        found = await returns.by_id(conn, incoming.delivery_id)
        if found is not None:
            return found
    if incoming.message_id:
        return await returns.by_message_id(conn, incoming.message_id)
    return None


async def _tie_note(
    conn: AsyncConnection, incoming: IncomingBounce, note: BounceNote
) -> Sent | None:
    """One recipient's delivery, by the send the bounce names and that recipient."""
    if incoming.forged or not incoming.mailer_send:
        return None
    return await returns.by_trace(conn, incoming.mailer_send, note.recipient)


async def _note(
    conn: AsyncConnection,
    bounce_id: int,
    note: BounceNote,
    sent: Sent | None,
    limits: BounceLimits,
    now: datetime,
) -> NoteOutcome:
    key = sent.email_key if sent else note.recipient
    action = BounceAction.UNMATCHED
    if sent is not None:
        action = await _decide(conn, key, sent, note, limits, now)
        marked = False
        if note.kind in _MARKS and note.final:
            words = f"bounced {note.status or ''} {note.kind.value}: {note.diagnostic}"
            marked = await returns.mark_bounced(conn, sent.id, " ".join(words.split()), now)
        await outbox.bounce_event(conn, sent.id, note, action=action, marked=marked, now=now)
    await conn.execute(
        bounce_events.insert().values(
            bounce_id=bounce_id, email_key=key[:320], kind=note.kind.value,
            status=note.status, diagnostic=note.diagnostic[:2000], final=note.final,
            action=action.value, delivery_id=sent.id if sent else None,
            send_id=sent.send_id if sent else None, day=now.date().isoformat(), at=now,
        )
    )  # fmt: skip
    return NoteOutcome(
        recipient=key, kind=note.kind, action=action,
        delivery_id=sent.id if sent else None, send_id=sent.send_id if sent else None,
    )  # fmt: skip


async def _decide(
    conn: AsyncConnection,
    key: str,
    sent: Sent,
    note: BounceNote,
    limits: BounceLimits,
    now: datetime,
) -> BounceAction:
    """What this bounce does to the address (the event itself not stored yet)."""
    if note.kind is BounceKind.POLICY:
        return BounceAction.POLICY
    if note.kind not in (BounceKind.HARD, BounceKind.SOFT, BounceKind.COMPLAINT):
        return BounceAction.IGNORED
    already = bool(await lookups.suppressed_keys(conn, [key]))
    detail = f"{note.kind.value} bounce {note.status or ''}: {note.diagnostic}"
    if note.kind is BounceKind.COMPLAINT:
        if not already:
            await suppressions.add(
                conn, key, reason=SuppressionReason.COMPLAINT,
                detail=f"complaint: {note.diagnostic}"[:1000], actor=ACTOR, now=now,
            )  # fmt: skip
        await subscribers.unsubscribe_rows(
            conn, sent.subscriber_id, None, source="complaint", now=now
        )
        return BounceAction.UNSUBSCRIBED
    since = now - timedelta(days=limits.stale_days)
    counted = (bounce_events.c.email_key == key) & (bounce_events.c.at >= since)
    counted &= bounce_events.c.kind == note.kind.value
    counted &= bounce_events.c.action != BounceAction.UNMATCHED.value
    if note.kind is BounceKind.HARD:
        found = await conn.execute(select(func.count()).where(counted))
        reached = int(found.scalar_one()) + 1 >= limits.hard_limit
        reason = SuppressionReason.HARD_BOUNCE
    else:
        days = await conn.execute(select(bounce_events.c.day).where(counted).distinct())
        reached = len({str(d) for d in days.scalars()} | {now.date().isoformat()}) >= (
            limits.soft_limit
        )
        reason = SuppressionReason.SOFT_BOUNCE
    if not reached:
        return BounceAction.COUNTED
    if already:
        return BounceAction.ALREADY
    await suppressions.add(
        conn, key, reason=reason, detail=" ".join(detail.split())[:1000], actor=ACTOR, now=now
    )
    return BounceAction.SUPPRESSED
