"""Storing bounces, the part of :mod:`mailer.storage.bounces` that writes: one message at a
time (:func:`record`, the listener's and the relay webhooks' way) and in batches
(:func:`record_many`, an IMAP fetch or ``mailer bounces import``).

Both do the same to the same sequence of messages, outcome for outcome and row for row
(``tests/test_bounce_batch.py`` feeds both and compares): the batch reads what decides
(the deliveries tied, the addresses suppressed, the score window of bounce events) once per
batch, decides each recipient in order in memory (an earlier bounce of the same address in
the batch counts as if it had been stored), and writes in a few multi-row statements. A
complaint (rare) goes through the one-at-a-time code, after what came before it is written.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import (
    BounceAction,
    BounceKind,
    BounceLimits,
    BounceNote,
    BounceOutcome,
    DeliveryStatus,
    EventType,
    IncomingBounce,
    NoteOutcome,
    SuppressionReason,
)
from mailer.storage import lookups, outbox, returns, subscribers, suppressions
from mailer.storage.database import Database
from mailer.storage.returns import Sent
from mailer.storage.tables import bounce_events, bounce_messages

ACTOR = "bounces"  # who the suppressions made here are by, in their history
MARKS = frozenset({BounceKind.HARD, BounceKind.SOFT, BounceKind.POLICY, BounceKind.UNKNOWN})
MAX_BATCH = 500  # messages in one transaction of record_many
_SCORED = (BounceKind.HARD, BounceKind.SOFT)
_CHUNK = 500  # values in one IN (...)


def _message_row(incoming: IncomingBounce, tied: Sent | None, now: datetime) -> dict[str, Any]:
    return {
        "fingerprint": incoming.fingerprint, "source": incoming.source[:32],
        "report": incoming.report.value, "reader": incoming.reader[:32], "received_at": now,
        "raw": incoming.raw, "delivery_id": tied.id if tied else None,
        "message_id": (incoming.message_id or "")[:255] or None,
        "mailer_send": (incoming.mailer_send or "")[:200] or None, "forged": incoming.forged,
    }  # fmt: skip


def _event_row(
    bounce_id: int, key: str, note: BounceNote, sent: Sent | None, action: BounceAction,
    now: datetime,
) -> dict[str, Any]:  # fmt: skip
    return {
        "bounce_id": bounce_id, "email_key": key[:320], "kind": note.kind.value,
        "status": note.status, "diagnostic": note.diagnostic[:2000], "final": note.final,
        "action": action.value, "delivery_id": sent.id if sent else None,
        "send_id": sent.send_id if sent else None, "day": now.date().isoformat(), "at": now,
    }  # fmt: skip


def _marking(note: BounceNote) -> str:
    """The reason a bounced delivery is given."""
    return " ".join(f"bounced {note.status or ''} {note.kind.value}: {note.diagnostic}".split())


def _detail(note: BounceNote) -> str:
    """A bounce suppression's detail in the history."""
    words = f"{note.kind.value} bounce {note.status or ''}: {note.diagnostic}"
    return " ".join(words.split())[:1000]


# --- one at a time ------------------------------------------------------------------------


async def record(
    db: Database, incoming: IncomingBounce, limits: BounceLimits, *, now: datetime
) -> BounceOutcome:
    """Store one bounce and do what it calls for, in one transaction; a bounce whose
    fingerprint is stored already changes nothing (``duplicate``)."""
    async with db.begin(write=True) as conn:
        tied = None if incoming.forged else await _tie(conn, incoming)
        inserted = await conn.execute(
            db.insert(bounce_messages)
            .values(_message_row(incoming, tied, now))
            .on_conflict_do_nothing(index_elements=["fingerprint"])
            .returning(bounce_messages.c.id)
        )
        bounce_id = inserted.scalar()
        if bounce_id is None:
            first = await conn.execute(
                select(bounce_messages.c.id).where(
                    bounce_messages.c.fingerprint == incoming.fingerprint
                )
            )
            return BounceOutcome(bounce_id=int(first.scalar_one()), duplicate=True)
        outcomes = []
        seen: set[str] = set()
        for note in incoming.notes:
            sent = tied or await _tie_note(conn, incoming, note)
            key = sent.email_key if sent else note.recipient
            if key in seen:
                continue
            seen.add(key)
            outcomes.append(await note_one(conn, db, int(bounce_id), note, sent, limits, now))
        return BounceOutcome(bounce_id=int(bounce_id), duplicate=False, notes=tuple(outcomes))


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


async def note_one(
    conn: AsyncConnection,
    db: Database,
    bounce_id: int,
    note: BounceNote,
    sent: Sent | None,
    limits: BounceLimits,
    now: datetime,
) -> NoteOutcome:
    """One recipient's bounce stored, and what it calls for done."""
    key = sent.email_key if sent else note.recipient
    action = BounceAction.UNMATCHED
    if sent is not None:
        action = await _decide(conn, db, key, sent, note, limits, now)
        marked = False
        if note.kind in MARKS and note.final:
            marked = await returns.mark_bounced(conn, sent.id, _marking(note), now)
        await outbox.bounce_event(conn, sent.id, note, action=action, marked=marked, now=now)
    await conn.execute(bounce_events.insert().values(_event_row(bounce_id, key, note, sent,
                                                                action, now)))  # fmt: skip
    return NoteOutcome(
        recipient=key, kind=note.kind, action=action,
        delivery_id=sent.id if sent else None, send_id=sent.send_id if sent else None,
    )  # fmt: skip


async def _decide(
    conn: AsyncConnection,
    db: Database,
    key: str,
    sent: Sent,
    note: BounceNote,
    limits: BounceLimits,
    now: datetime,
) -> BounceAction:
    """What this bounce does to the address (the event itself not stored yet). Suppressing
    skips an address suppressed already (by anyone, concurrently too): then ``already``."""
    if note.kind is BounceKind.POLICY:
        return BounceAction.POLICY
    if note.kind not in (*_SCORED, BounceKind.COMPLAINT):
        return BounceAction.IGNORED
    if note.kind is BounceKind.COMPLAINT:
        detail = f"complaint: {note.diagnostic}"[:1000]
        wanted = {key: (SuppressionReason.COMPLAINT, detail)}
        await suppressions.add_many(conn, db, wanted, actor=ACTOR, now=now)
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
    wanted = {key: (reason, _detail(note))}
    if await suppressions.add_many(conn, db, wanted, actor=ACTOR, now=now):
        return BounceAction.SUPPRESSED
    return BounceAction.ALREADY


# --- in batches ---------------------------------------------------------------------------


async def record_many(
    db: Database, incomings: Sequence[IncomingBounce], limits: BounceLimits, *, now: datetime
) -> list[BounceOutcome]:
    """Store bounces as :func:`record` would one after another (the same outcomes, the same
    rows, the same webhook events), in one transaction per :data:`MAX_BATCH` messages."""
    outcomes: list[BounceOutcome] = []
    for start in range(0, len(incomings), MAX_BATCH):
        async with db.begin(write=True) as conn:
            chunk = incomings[start : start + MAX_BATCH]
            outcomes += await _Batch(conn, db, limits, now).run(chunk)
    return outcomes


# What one recipient of a batch gave: its outcome (a complaint's, stored already), or its
# address, kind and bounce_events row, the outcome read from the row once it is written.
_Pending = NoteOutcome | tuple[str, BounceKind, dict[str, Any]]


class _Batch:
    """One transaction of :func:`record_many`: what was read, decided and is to be written."""

    def __init__(
        self, conn: AsyncConnection, db: Database, limits: BounceLimits, now: datetime
    ) -> None:
        self.conn, self.db, self.limits, self.now = conn, db, limits, now
        self.today = now.date().isoformat()
        self.traces: dict[tuple[str, str], Sent] = {}
        self.status: dict[int, str] = {}  # delivery id -> its status as the batch goes
        self.suppressed: set[str] = set()
        self.hard: Counter[str] = Counter()  # hard bounces in the window, by address
        self.soft: defaultdict[str, set[str]] = defaultdict(set)  # days of soft bounces
        # to write at the next flush:
        self.rows: list[dict[str, Any]] = []
        self.suppress: dict[str, tuple[SuppressionReason, str]] = {}
        self.suppressing: dict[str, dict[str, Any]] = {}  # address -> the row that suppressed
        self.reasons: dict[int, str] = {}  # delivery id -> why it bounced
        self.events: list[tuple[int, BounceNote, dict[str, Any]]] = []

    async def run(self, incomings: Sequence[IncomingBounce]) -> list[BounceOutcome]:
        firsts: dict[str, IncomingBounce] = {}
        for incoming in incomings:
            firsts.setdefault(incoming.fingerprint, incoming)
        ties = await _ties(self.conn, list(firsts.values()))
        ids, fresh = await self._insert(list(firsts.values()), ties)
        await self._read([(m, ties.get(m.fingerprint)) for m in fresh.values()])
        done: list[tuple[int, list[_Pending]] | BounceOutcome] = []
        for incoming in incomings:
            bounce_id = ids[incoming.fingerprint]
            if incoming.fingerprint not in fresh:
                done.append(BounceOutcome(bounce_id=bounce_id, duplicate=True))
                continue
            del fresh[incoming.fingerprint]  # a later copy in the batch is a duplicate
            pending = await self._message(incoming, bounce_id, ties.get(incoming.fingerprint))
            done.append((bounce_id, pending))
        await self.flush()
        return [
            d if isinstance(d, BounceOutcome)
            else BounceOutcome(bounce_id=d[0], duplicate=False, notes=tuple(map(_finished, d[1])))
            for d in done
        ]  # fmt: skip

    async def _insert(
        self, unique: list[IncomingBounce], ties: dict[str, Sent]
    ) -> tuple[dict[str, int], dict[str, IncomingBounce]]:
        """The messages' rows (those stored before skipped); every fingerprint's bounce id,
        and the messages stored now by fingerprint."""
        inserted = await self.conn.execute(
            self.db.insert(bounce_messages)
            .on_conflict_do_nothing(index_elements=["fingerprint"])
            .returning(bounce_messages.c.id, bounce_messages.c.fingerprint),
            [_message_row(m, ties.get(m.fingerprint), self.now) for m in unique],
        )  # executemany: SQLAlchemy's "insertmanyvalues", a multi-row INSERT compiled once
        ids = {str(fp): int(i) for i, fp in inserted.all()}
        fresh = {m.fingerprint: m for m in unique if m.fingerprint in ids}
        before = [m.fingerprint for m in unique if m.fingerprint not in ids]
        if before:
            rows = await self.conn.execute(
                select(bounce_messages.c.id, bounce_messages.c.fingerprint).where(
                    bounce_messages.c.fingerprint.in_(before)
                )
            )
            ids.update({str(fp): int(i) for i, fp in rows.all()})
        return ids, fresh

    async def _read(self, messages: list[tuple[IncomingBounce, Sent | None]]) -> None:
        """What decides: the deliveries named by send and address, the addresses suppressed,
        their bounces in the score window."""
        pairs = [
            (m.mailer_send, n.recipient) for m, tied in messages
            if tied is None and not m.forged and m.mailer_send for n in m.notes
        ]  # fmt: skip
        if pairs:
            self.traces = await returns.by_traces(self.conn, pairs)
        scored: set[str] = set()
        for m, tied in messages:
            if tied is not None:
                self.status.setdefault(tied.id, tied.status)
            for note in m.notes:
                sent = tied or self._traced(m, note)
                if sent is not None:
                    self.status.setdefault(sent.id, sent.status)
                    if note.kind in _SCORED:
                        scored.add(sent.email_key)
        keys = sorted(scored)
        since = self.now - timedelta(days=self.limits.stale_days)
        e = bounce_events.c
        window = (e.at >= since) & (e.action != BounceAction.UNMATCHED.value)
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            self.suppressed |= await lookups.suppressed_keys(self.conn, chunk)
            # the window in FILTER, not WHERE: only the index on (email_key, at) is of use,
            # whatever the planner guesses of a young table (PostgreSQL chose a scan of the
            # whole window by ``at`` and ``kind``, slower as the table grew)
            rows = await self.conn.execute(
                select(e.email_key, e.kind, e.day, func.count().filter(window))
                .where(e.email_key.in_(chunk))
                .group_by(e.email_key, e.kind, e.day)
            )
            for key, kind, day, count in rows.all():
                if not count:
                    continue
                if kind == BounceKind.HARD.value:
                    self.hard[str(key)] += int(count)
                elif kind == BounceKind.SOFT.value:
                    self.soft[str(key)].add(str(day))

    def _traced(self, incoming: IncomingBounce, note: BounceNote) -> Sent | None:
        if incoming.forged or not incoming.mailer_send:
            return None
        return self.traces.get((incoming.mailer_send, note.recipient))

    async def _message(
        self, incoming: IncomingBounce, bounce_id: int, tied: Sent | None
    ) -> list[_Pending]:
        pending: list[_Pending] = []
        seen: set[str] = set()
        for note in incoming.notes:
            sent = tied or self._traced(incoming, note)
            key = sent.email_key if sent else note.recipient
            if key in seen:
                continue
            seen.add(key)
            if sent is not None and note.kind is BounceKind.COMPLAINT:
                await self.flush()  # what came before, written: as one at a time
                args = (self.conn, self.db, bounce_id, note, sent, self.limits, self.now)
                pending.append(await note_one(*args))
                self.suppressed.add(key)
                continue
            action = BounceAction.UNMATCHED if sent is None else self._decide(key, note)
            row = _event_row(bounce_id, key, note, sent, action, self.now)
            self.rows.append(row)
            if action is BounceAction.SUPPRESSED:
                self.suppressing[key] = row
            if sent is not None and note.kind in MARKS and note.final and self._marks(sent.id):
                self.reasons[sent.id] = _marking(note)
                self.events.append((sent.id, note, row))
            pending.append((key, note.kind, row))
        return pending

    def _marks(self, delivery_id: int) -> bool:
        """Whether this bounce marks the delivery bounced: the first final one while sent."""
        if self.status.get(delivery_id) != DeliveryStatus.SENT.value:
            return False
        self.status[delivery_id] = DeliveryStatus.BOUNCED.value
        return True

    def _decide(self, key: str, note: BounceNote) -> BounceAction:
        """:func:`_decide` from what was read and what the batch decided before."""
        if note.kind is BounceKind.POLICY:
            return BounceAction.POLICY
        if note.kind not in _SCORED:
            return BounceAction.IGNORED
        if note.kind is BounceKind.HARD:
            reached = self.hard[key] + 1 >= self.limits.hard_limit
            reason = SuppressionReason.HARD_BOUNCE
            self.hard[key] += 1
        else:
            reached = len(self.soft[key] | {self.today}) >= self.limits.soft_limit
            reason = SuppressionReason.SOFT_BOUNCE
            self.soft[key].add(self.today)
        if not reached:
            return BounceAction.COUNTED
        if key in self.suppressed:
            return BounceAction.ALREADY
        self.suppressed.add(key)
        self.suppress[key] = (reason, _detail(note))
        return BounceAction.SUPPRESSED

    async def flush(self) -> None:
        """Write what was decided: suppressions, deliveries bounced, bounce events, and the
        webhook events of the deliveries bounced (one call)."""
        conn, now = self.conn, self.now
        fresh = await suppressions.add_many(conn, self.db, self.suppress, actor=ACTOR, now=now)
        for key in set(self.suppress) - fresh:  # suppressed meanwhile by another writer
            self.suppressing[key]["action"] = BounceAction.ALREADY.value
        marked = await returns.mark_many(conn, self.reasons, now)
        if self.rows:
            await conn.execute(bounce_events.insert(), self.rows)
        await outbox.delivery_events(conn, list(_bounced(self.events, marked)), now=now)
        self.rows, self.suppress, self.suppressing, self.reasons, self.events = [], {}, {}, {}, []


def _bounced(
    events: Iterable[tuple[int, BounceNote, dict[str, Any]]], marked: set[int]
) -> Iterable[tuple[EventType, int, dict[str, Any]]]:
    """``delivery.bounced`` of each delivery marked, with what ``outbox.bounce_event`` says of
    the bounce."""
    for delivery_id, note, row in events:
        if delivery_id in marked:
            bounce = {
                "kind": note.kind.value, "status": note.status,
                "diagnostic": note.diagnostic[:1000], "action": row["action"],
            }  # fmt: skip
            yield EventType.DELIVERY_BOUNCED, delivery_id, {"bounce": bounce}


def _finished(pending: _Pending) -> NoteOutcome:
    if isinstance(pending, NoteOutcome):
        return pending
    key, kind, row = pending
    return NoteOutcome(
        recipient=key, kind=kind, action=BounceAction(row["action"]),
        delivery_id=row["delivery_id"], send_id=row["send_id"],
    )  # fmt: skip


async def _ties(conn: AsyncConnection, unique: list[IncomingBounce]) -> dict[str, Sent]:
    """:func:`_tie` of each message not forged, by fingerprint: one look-up by id, one by
    Message-ID."""
    live = [m for m in unique if not m.forged]
    by_id = await returns.by_ids(conn, [m.delivery_id for m in live if m.delivery_id is not None])
    ties: dict[str, Sent] = {}
    rest: list[IncomingBounce] = []
    for m in live:
        found = by_id.get(m.delivery_id) if m.delivery_id is not None else None
        if found is not None:
            ties[m.fingerprint] = found
        elif m.message_id:
            rest.append(m)
    if rest:
        by_message = await returns.by_message_ids(conn, [m.message_id or "" for m in rest])
        for m in rest:
            found = by_message.get(returns.message_key(m.message_id or ""))
            if found is not None:
                ties[m.fingerprint] = found
    return ties
