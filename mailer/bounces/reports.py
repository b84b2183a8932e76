"""The standard reports, read with the standard library: RFC 3464 delivery status
notifications, their RFC 6533 form (``message/global-delivery-status``, UTF-8 addresses), the
same fields pasted into a text part, and RFC 5965 abuse feedback reports (ARF).

A DSN's per-recipient blocks decide: ``Action: failed`` is classified, ``delayed`` is soft and
not final (the server still tries: the message may yet arrive), ``delivered``, ``relayed`` and
``expanded`` are no bounce at all and give no finding. Pure: messages in, findings out; nothing
here reads a file or a clock. The messages come with their parts' content types read once
(:func:`~mailer.bounces.mime.typed_parts`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import Message

from mailer.bounces.classify import best_status, classify, clean_diagnostic, find_reply
from mailer.bounces.mime import header_text, part_text
from mailer.bounces.model import BounceKind, Finding

DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_NOT_BOUNCES = frozenset({"delivered", "relayed", "expanded"})
_STATUS_FIELD = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_XTEXT = re.compile(r"\+([0-9A-F]{2})")
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
# the fields of a pasted DSN: a block must hold a recipient to count
_DSN_FIELDS = frozenset(
    {"final-recipient", "original-recipient", "action", "status", "diagnostic-code",
     "remote-mta", "last-attempt-date", "x-actual-recipient", "will-retry-until"}
)  # fmt: skip


def blocks(text: str) -> list[dict[str, str]]:
    """The header blocks of a delivery-status body, split at blank lines, fields lower-cased,
    folded lines joined."""
    found: list[dict[str, str]] = []
    block: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if block:
                found.append(block)
            block, last = {}, None
        elif (match := _FIELD.match(line)) and line[:1] not in " \t":
            last = match.group(1).lower()
            block.setdefault(last, match.group(2).strip())
        elif last is not None:  # a folded line, or a reply's next line left unfolded
            block[last] += " " + line.strip()
    if block:
        found.append(block)
    return found


def address_of(field: str) -> str | None:
    """The address of a ``Final-Recipient``/``Original-Recipient`` value (``rfc822; a@b``,
    ``utf-8; j\\x{E9}r\\u00f4me@b``), lower-cased; None when it holds none."""
    kind, _, value = field.partition(";")
    if not value:
        kind, value = "rfc822", kind
    value = value.strip().strip("<>").strip()
    kind = kind.strip().lower()
    if kind == "utf-8":
        value = _UTF8_ESCAPE.sub(lambda m: _char(m.group(1)), value)
    elif kind == "rfc822" and "+" in value and _XTEXT.search(value.split("@")[0]):
        value = _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)
    if "@" not in value or any(c.isspace() for c in value) or len(value) > 320:
        return None
    return value.lower()


def _char(hex_digits: str) -> str:
    code = int(hex_digits, 16)
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


def recipient_of(block: dict[str, str]) -> str | None:
    """The address a per-recipient block is about: the original recipient (the address we
    mailed) when it gives one, else the final one."""
    for name in ("original-recipient", "final-recipient", "x-actual-recipient"):
        if name in block and (recipient := address_of(block[name])):
            return recipient
    return None


def finding_of(block: dict[str, str]) -> Finding | None:
    """The finding of one per-recipient block, or None when it reports no bounce."""
    if (recipient := recipient_of(block)) is None:
        return None
    action = block.get("action", "").split()[0].lower() if block.get("action") else ""
    match = _STATUS_FIELD.match(block.get("status", ""))
    declared = match.group(1) if match else None
    if action in _NOT_BOUNCES or (not action and declared and declared.startswith("2.")):
        return None
    diagnostic = block.get("diagnostic-code", "")
    kind_part, sep, rest = diagnostic.partition(";")
    diagnostic_type = ""
    if sep and " " not in kind_part.strip():  # "smtp; 550 5.1.1 ...": the type goes
        diagnostic, diagnostic_type = rest, kind_part.strip().lower()
    diagnostic = clean_diagnostic(diagnostic)
    status = best_status(declared, diagnostic)
    kind = BounceKind.SOFT if action == "delayed" else classify(status, diagnostic)
    if diagnostic_type == "x-unix" and kind is BounceKind.HARD:
        # a local program's failure (procmail, a script): its exit code became 5.1.1, which
        # says nothing of the address (sisimai: mailererror)
        kind = BounceKind.UNKNOWN
    return Finding(
        recipient=recipient,
        status=status,
        kind=kind,
        diagnostic=diagnostic or clean_diagnostic(f"{action} {declared or ''}"),
        reply_code=find_reply(diagnostic),
        final=action != "delayed",
    )


def dsn_parts(parts: list[tuple[Message, str]]) -> Iterator[tuple[Message, str]]:
    """The delivery-status parts of a message's ``parts`` (not those of a message it
    returns)."""
    for part, kind in parts:
        if kind in DSN_TYPES:
            yield part, kind


def read_dsn(parts: list[tuple[Message, str]]) -> tuple[list[Finding], bool, bool]:
    """The findings of the delivery-status parts of a message's ``parts``; whether they name
    a recipient at all (a DSN of deliveries only names some and reports no bounce), and
    whether one of them is the RFC 6533 (UTF-8) form."""
    findings: list[Finding] = []
    named = utf8 = False
    for part, kind in dsn_parts(parts):
        utf8 = utf8 or kind == "message/global-delivery-status"
        for block in blocks(part_text(part)):
            block = {name: header_text(value) for name, value in block.items()}
            named = named or recipient_of(block) is not None
            if finding := finding_of(block):
                findings.append(finding)
    return findings, named, utf8


def read_pasted_dsn(text: str) -> list[Finding]:
    """The findings of DSN fields pasted into a text part (Amazon WorkMail, some gateways)."""
    found: list[Finding] = []
    for block in blocks(text):
        if _DSN_FIELDS.issuperset(block) and (f := finding_of(block)):
            found.append(f)
    if not found:  # the fields may sit in one block with others, or spread over several
        merged: dict[str, str] = {}
        for block in blocks(text):
            for name, value in block.items():
                if name in _DSN_FIELDS:
                    merged.setdefault(name, value)
        if "final-recipient" in merged and (f := finding_of(merged)):
            found.append(f)
    return found


def is_arf(parts: list[tuple[Message, str]]) -> bool:
    """Whether the message of ``parts`` (itself first) is an abuse feedback report (RFC
    5965)."""
    msg, kind = parts[0]
    if kind == "multipart/report":
        report_type = str(msg.get_param("report-type", "") or "").lower()
        if report_type == "feedback-report":
            return True
    return any(kind == "message/feedback-report" for _, kind in parts)


def read_arf(parts: list[tuple[Message, str]], returned_to: list[str]) -> list[Finding]:
    """The complaint of an ARF report (``parts``: its parts): its ``Original-Rcpt-To``, else
    the returned message's ``To``."""
    fields: dict[str, str] = {}
    for part, kind in parts:
        if kind == "message/feedback-report":
            for block in blocks(part_text(part)):
                for name, value in block.items():
                    fields.setdefault(name, value)
    recipients = [a for v in fields.get("original-rcpt-to", "").split(",") if (a := address_of(v))]
    if not recipients:
        recipients = returned_to
    feedback = fields.get("feedback-type", "abuse")
    diagnostic = clean_diagnostic(f"feedback-type {feedback}")
    return [
        Finding(recipient=r, status=None, kind=BounceKind.COMPLAINT, diagnostic=diagnostic)
        for r in dict.fromkeys(recipients)
    ]


__all__ = [
    "DSN_TYPES",
    "address_of",
    "blocks",
    "dsn_parts",
    "finding_of",
    "is_arf",
    "read_arf",
    "read_dsn",
    "read_pasted_dsn",
    "recipient_of",
]
