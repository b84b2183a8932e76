"""One function from the bytes of a message to what it says about which recipient:
:func:`parse`, and :func:`split_messages` for a file holding an mbox of a few.

The order of the readers: a DSN's delivery-status parts (RFC 3464/6533), an ARF report, a
mail system's own bounce (pasted DSN fields, flufl.bounce, our rules), an RFC 3834
auto-reply; else the message is ``unknown`` and reports nothing. A message that only looks
like a bounce (from a person, with no failure in it) gives no finding.

Hostile input is expected: any bytes give a :class:`Report`, never an exception. A message
over :data:`PARSE_LIMIT` bytes is read only up to it (a bounce says what it has to say in its
first kilobytes; the rest is the returned message).
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass, replace
from email import policy
from email.message import Message

from mailer.bounces.classify import Words
from mailer.bounces.mime import (
    HEADER_TYPES,
    RETURNED_TYPES,
    addresses_in,
    decoded_text,
    header_addresses,
    header_text,
    quoted_headers,
    returned_headers,
    typed_parts,
)
from mailer.bounces.model import BounceKind, Finding, Report, ReportKind
from mailer.bounces.reports import is_arf, read_arf, read_dsn, read_pasted_dsn
from mailer.bounces.rules import (
    bounce_text,
    finding_for,
    flufl_recipients,
    noise,
    rule_recipients,
)

PARSE_LIMIT = 2 * 1024 * 1024

_DAEMON = Words(
    r"mailer-daemon|mail-daemon|postmaster|post_master|mail delivery|mailer daemon|\bmmsc\b|"
    r"\bndr\b|\bbounces?\b|double-bounce|mdaemon|mail administrator|mail system|sysadmin",
)
_BOUNCE_SUBJECT = Words(
    r"undeliver|undelivered|returned mail|failure|failed|delivery status|delivery problem|"
    r"not delivered|non remis|unzustellbar|nicht zustellbar|error|rejected|non-delivery|"
    r"returned to sender|could not be delivered|エラー|不達",
)
_BOUNCE_WORDS = Words(
    r"could not be delivered|was not delivered|not be delivered|undeliverable|"
    r"delivery (has )?failed|delivery to the following|permanent (fatal )?error|"
    r"following (addresses|recipients?)|unable to deliver|invalid user address|"
    r"user unknown|unknown user|no such user",
)
_AUTO_SUBJECT = Words(
    r"out of (the )?office|auto(matic)?[ -]?(reply|response|answer)|^auto:|\baway\b|"
    r"\bvacation\b|\babsen(ce|t)\b|abwesen|réponse automatique|respuesta automática|"
    r"risposta automatica|automatische antwort|\bon leave\b|\bcongés\b",
)
_ADDRESS_LIKE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MBOX_FROM = re.compile(
    rb"^From \S+ +\w{3} \w{3} [ \d]?\d \d\d:\d\d(:\d\d)? (\S+ )?\d{4}\s*$", re.MULTILINE
)


def split_messages(raw: bytes) -> list[bytes]:
    """The messages of ``raw``: one, unless it is an mbox (a ``From `` line first) of more."""
    if not raw.startswith(b"From "):
        return [raw]
    starts = [m.start() for m in _MBOX_FROM.finditer(raw)]
    if not starts or starts[0] != 0:
        return [raw]
    ends = [*starts[1:], len(raw)]
    return [raw[s:e] for s, e in zip(starts, ends, strict=True)]


def parse(raw: bytes) -> Report:
    """What the message ``raw`` says about which recipient, read as a bounce, a complaint or
    an auto-reply."""
    try:
        msg = email.message_from_bytes(raw[:PARSE_LIMIT], policy=policy.compat32)
        return _read(msg)
    except Exception:  # the stdlib's parser on hostile bytes: nothing we can read
        return Report(kind=ReportKind.UNKNOWN, findings=(), reader="none")


def _read(msg: Message, *, depth: int = 0) -> Report:
    parts = typed_parts(msg)
    returned = returned_headers(parts)
    texts = [decoded_text(p) for p, kind in parts if _is_text(p, kind)]
    quoted = quoted_headers("\n".join(texts))
    returned_to = header_addresses(returned, "To", "Cc") if returned is not None else []
    if not returned_to and "to" in quoted:
        returned_to = addresses_in(quoted["to"])
    ids = {
        "message_id": _header(returned, "Message-ID") or quoted.get("message-id"),
        "mailer_send": _header(returned, "X-Mailer-Send") or quoted.get("x-mailer-send"),
        "bounce_to": next(iter(header_addresses(msg, "X-Original-To", "Delivered-To", "To")), None),
    }
    findings, named, utf8 = read_dsn(parts)
    if findings or named:  # a DSN of delivered, relayed or expanded only: no bounce
        reader = "rfc6533" if utf8 else "rfc3464"
        return Report(ReportKind.DSN, _unique(findings), reader, **ids)
    if depth == 0 and (inner := _forwarded_bounce(parts)) is not None:
        report = _read(inner, depth=1)
        if report.findings:  # a bounce forwarded as an attachment: the inner one speaks
            return replace(report, bounce_to=ids["bounce_to"] or report.bounce_to)
    if is_arf(parts):
        return Report(ReportKind.ARF, _unique(read_arf(parts, returned_to)), "arf", **ids)
    subject = _subject(msg)
    # RFC 3834 asks auto-replies for a null return path: only the sender's name counts here
    if not _DAEMON.search(header_text(msg.get("From", ""))) and _auto_reply(msg, subject):
        sender = header_addresses(msg, "From")[:1]
        found = [
            Finding(r, None, BounceKind.AUTO_REPLY, subject[:200] or "auto-reply") for r in sender
        ]
        return Report(ReportKind.AUTO_REPLY, tuple(found), "rfc3834", **ids)
    text = bounce_text(texts)
    if _from_daemon(msg) or _BOUNCE_SUBJECT.search(subject) or _BOUNCE_WORDS.search(text[:8000]):
        if pasted := read_pasted_dsn("\n\n".join(texts)):
            return Report(ReportKind.DSN, _unique(pasted), "text", **ids)
        seen = _Seen(msg, parts, texts, returned, returned_to)
        if found := _by_rules(seen, text, subject):
            return Report(ReportKind.DSN, _unique(found), "rules", **ids)
    return Report(ReportKind.UNKNOWN, (), "none", **ids)


@dataclass(frozen=True, slots=True)
class _Seen:
    """What :func:`_read` has already taken from a message, for the rules to use again."""

    msg: Message
    parts: list[tuple[Message, str]]
    texts: list[str]  # the text of its own parts
    returned: Message | None
    returned_to: list[str]


def _by_rules(seen: _Seen, text: str, subject: str) -> list[Finding]:
    """A non-standard bounce's findings: flufl.bounce's recipients, else our rules', else the
    returned message's addressees; each read from the lines about it."""
    msg, returned, returned_to = seen.msg, seen.returned, seen.returned_to
    excluded = set(header_addresses(msg, *_OWN_HEADERS)) | noise("\n".join(_all_text(seen)))
    if returned is not None:
        excluded |= set(header_addresses(returned, "From", "Sender", "Reply-To", "Return-Path"))
    excluded -= set(returned_to)  # what the returned message was sent to is never noise
    flufl, temporary = flufl_recipients(msg)
    flufl = [a for a in flufl if _ADDRESS_LIKE.match(a)]
    recipients = header_addresses(msg, "X-Failed-Recipients")  # Exim's, Google's
    lowered = text.lower()
    recipients = recipients or [a for a in flufl if a not in excluded and a in lowered]
    recipients = recipients or [a for a in flufl if a not in excluded and a in returned_to]
    if not recipients:
        recipients = rule_recipients(text, excluded)
        if len(recipients) > 1 and (named := [a for a in recipients if a in returned_to]):
            recipients = named
    if not recipients:
        recipients = [a for a in returned_to if a not in excluded][:1]
    return [finding_for(r, text, temporary=r in temporary, subject=subject) for r in recipients]


def _forwarded_bounce(parts: list[tuple[Message, str]]) -> Message | None:
    """The bounce a message (of these ``parts``) carries as its returned message, if it
    carries one."""
    for part, kind in parts:
        if kind not in RETURNED_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload:
            inner = payload[0]
            if isinstance(inner, Message) and (
                inner.get_content_type() == "multipart/report" or _from_daemon(inner)
            ):
                return inner
    return None


_OWN_HEADERS = (
    "From", "To", "Cc", "Reply-To", "Sender", "Return-Path", "Delivered-To", "X-Original-To",
    "Envelope-To", "Errors-To",
)  # fmt: skip


def _all_text(seen: _Seen) -> list[str]:
    """The texts of every part of the message, its returned messages' included (in another
    order than the message's: what is made of them does not depend on it)."""
    inner = [
        decoded_text(p)
        for part, kind in seen.parts
        if kind in RETURNED_TYPES
        for p in part.walk()
        if _is_text(p, p.get_content_type())
    ]
    return seen.texts + inner


def _is_text(part: Message, kind: str) -> bool:
    """Whether ``part`` (of content type ``kind``) holds words: a text part, or a multipart
    whose boundary could not be read (a broken header), left as one text."""
    if part.is_multipart():
        return False
    maintype = kind.split("/")[0]
    return (maintype == "text" and kind not in HEADER_TYPES) or (
        maintype == "multipart" and isinstance(part.get_payload(), str)
    )


def _header(msg: Message | None, name: str) -> str | None:
    if msg is None or (value := msg.get(name)) is None:
        return None
    return " ".join(header_text(value).split())[:998] or None


def _subject(msg: Message) -> str:
    return " ".join(header_text(msg.get("Subject", "")).split())


def _from_daemon(msg: Message) -> bool:
    """Whether ``msg`` comes from a mail system rather than a person."""
    sender = header_text(msg.get("From", ""))
    return_path = str(msg.get("Return-Path", "x")).strip()
    return (
        bool(_DAEMON.search(sender))
        or return_path in ("<>", "")
        or ("mailer-daemon" in return_path.lower())
    )


def _auto_reply(msg: Message, subject: str) -> bool:
    """Whether ``msg`` is an automatic answer (RFC 3834 and the usual other marks)."""
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if auto.startswith("auto-replied"):
        return True
    if any(msg.get(h) is not None for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Response")):
        return True
    if str(msg.get("Precedence", "")).strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(subject))


def _unique(findings: list[Finding]) -> tuple[Finding, ...]:
    """Each recipient once: its first finding."""
    seen: dict[str, Finding] = {}
    for finding in findings:
        seen.setdefault(finding.recipient, finding)
    return tuple(seen.values())


__all__ = ["PARSE_LIMIT", "parse", "split_messages"]
