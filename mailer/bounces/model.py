"""What reading a bounce gives: a :class:`Report` per message, a :class:`Finding` per recipient.

Plain values: the parser returns them, and the later ways in (the listener, IMAP, ``bounces
import``) and storage take them as they are. ``BounceKind`` and ``ReportKind`` are stored as
text: they live in ``models.vocabulary`` with the other vocabularies and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailer.models.vocabulary import BounceKind, ReportKind

SUPPRESSING = frozenset({BounceKind.HARD, BounceKind.COMPLAINT})


@dataclass(frozen=True, slots=True)
class Finding:
    """One recipient a bounce reports on."""

    recipient: str  # the address, lower-cased
    status: str | None  # the enhanced status code (RFC 3463), "5.1.1"
    kind: BounceKind
    diagnostic: str  # one line, no control character, at most DIAGNOSTIC_LIMIT characters
    reply_code: str | None = None  # the SMTP reply code ("550") when the bounce gives one
    final: bool = True  # False for a DSN's "Action: delayed" (the message may still arrive)

    @property
    def suppress(self) -> bool:
        """Whether the address should no longer be mailed: a hard bounce or a complaint."""
        return self.kind in SUPPRESSING


@dataclass(frozen=True, slots=True)
class Report:
    """One message read: its kind, its findings, and what ties it to the delivery it is about."""

    kind: ReportKind
    findings: tuple[Finding, ...]
    reader: str  # how it was read: "rfc3464", "rfc6533", "arf", "rfc3834", "text", "rules"...
    # the returned message's headers (from message/rfc822, text/rfc822-headers or quoted text):
    message_id: str | None = None  # Message-ID, angle brackets kept
    mailer_send: str | None = None  # our X-Mailer-Send, "c12/reminder:P7D"
    # where the bounce itself was sent (X-Original-To, else Delivered-To, else To): the
    # return path, which carries the delivery's token once VERP exists
    bounce_to: str | None = None


__all__ = ["SUPPRESSING", "BounceKind", "Finding", "Report", "ReportKind"]
