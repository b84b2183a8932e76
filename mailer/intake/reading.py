"""A bounce as storage takes it (:func:`incoming`): the report read from its bytes, the
fingerprint that makes a second copy a duplicate, and the delivery its return path names,
checked against the keys. Pure: no storage, no clock."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from mailer.bounces import Finding, Report
from mailer.models import BounceNote, IncomingBounce
from mailer.tokens import VERP_PREFIX, Signer, read_return_path


def fingerprint(raw: bytes) -> str:
    """The same bounce has the same fingerprint however it came: its own Message-ID when
    it has one, else its body (the headers above differ with each hop that relayed it)."""
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    found = _MESSAGE_ID.search(head)
    if found:
        return hashlib.sha256(b"message-id:" + found[1].strip()).hexdigest()
    return hashlib.sha256(b"body:" + body).hexdigest()


def event_fingerprint(provider: str, event_id: str) -> str:
    """A relay webhook event's fingerprint: its provider's id for it."""
    return hashlib.sha256(f"{provider}:{event_id}".encode()).hexdigest()


def incoming(
    report: Report,
    *,
    fingerprint: str,
    source: str,
    raw: bytes | None,
    envelope_to: Sequence[str] = (),
    domain: str | None,
    signer: Signer,
) -> IncomingBounce:
    """``report`` as storage records it. The return path is the bounce's envelope recipient
    (the listener's RCPT TO) or, for a message read from a file or a mailbox, the address it
    was delivered to; one of our domain whose signature does not check out makes the bounce
    ``forged`` (kept, tied to nothing)."""
    delivery_id, forged = None, False
    if domain is not None:
        for address in (*envelope_to, report.bounce_to or ""):
            if not _ours(address, domain):
                continue
            delivery_id = read_return_path(signer, address, domain)
            forged = delivery_id is None
            break
    return IncomingBounce(
        fingerprint=fingerprint, source=source, report=report.kind, reader=report.reader,
        notes=tuple(note(f) for f in report.findings), raw=raw, delivery_id=delivery_id,
        message_id=report.message_id, mailer_send=report.mailer_send, forged=forged,
    )  # fmt: skip


def note(finding: Finding) -> BounceNote:
    return BounceNote(
        recipient=finding.recipient, kind=finding.kind, status=finding.status,
        diagnostic=finding.diagnostic, final=finding.final,
    )  # fmt: skip


def _ours(address: str, domain: str) -> bool:
    local, at, host = address.strip().strip("<>").rpartition("@")
    return bool(at) and host.lower().rstrip(".") == domain and local.lower().startswith(VERP_PREFIX)


_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]{1,250}>)")
