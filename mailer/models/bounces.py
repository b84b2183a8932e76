"""What storage takes and returns about bounces: a message come back (:class:`IncomingBounce`,
one :class:`BounceNote` per recipient), what storing it did (:class:`BounceOutcome`), the
limits an address is held to (:class:`BounceLimits`), and the stored lines read back
(:class:`BounceLine`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailer.models.vocabulary import BounceAction, BounceKind, ReportKind


@dataclass(frozen=True, slots=True)
class BounceLimits:
    """When bounces suppress an address (``MAILER_BOUNCES__*``)."""

    hard_limit: int = 1  # hard bounces within stale_days
    soft_limit: int = 3  # soft bounces on different days within stale_days
    stale_days: int = 30  # older bounces count for nothing
    policy_pause_rate: float = 0.02  # policy bounces / sent messages that pause a send
    policy_pause_min: int = 10  # ... once at least this many


@dataclass(frozen=True, slots=True)
class BounceNote:
    """One recipient of a bounce, as read."""

    recipient: str  # lower-cased
    kind: BounceKind
    status: str | None  # enhanced status code, "5.1.1"
    diagnostic: str
    final: bool = True  # False for a DSN's "delayed": counted, the delivery not marked


@dataclass(frozen=True, slots=True)
class IncomingBounce:
    """A bounce message (or one relay webhook event) to store, with what ties it to us."""

    fingerprint: str  # the same bounce received twice has the same one: stored once
    source: str  # smtp, imap, import, webhook:ses...
    report: ReportKind
    reader: str
    notes: tuple[BounceNote, ...]
    raw: bytes | None  # kept MAILER_BOUNCES__KEEP_DAYS
    delivery_id: int | None = None  # from a return path whose signature checked out
    message_id: str | None = None  # the returned message's Message-ID
    mailer_send: str | None = None  # the returned message's X-Mailer-Send ("c12/announce")
    forged: bool = False  # a return path of our domain whose signature did not check out


@dataclass(frozen=True, slots=True)
class NoteOutcome:
    """What storing one recipient's bounce did."""

    recipient: str
    kind: BounceKind
    action: BounceAction
    delivery_id: int | None
    send_id: int | None


@dataclass(frozen=True, slots=True)
class BounceOutcome:
    """What storing one incoming bounce did."""

    bounce_id: int  # the stored message (the first one, for a duplicate)
    duplicate: bool  # received before: nothing counted again
    notes: tuple[NoteOutcome, ...] = ()
    paused_sends: tuple[int, ...] = ()  # sends paused for their policy bounces


@dataclass(frozen=True, slots=True)
class BounceLine:
    """One stored recipient's bounce (``mailer bounces list``, the console)."""

    id: int
    bounce_id: int
    received_at: datetime
    source: str
    recipient: str
    kind: str
    status: str | None
    diagnostic: str
    action: str
    delivery_id: int | None
    send_id: int | None
    campaign: str | None
    send_key: str | None
