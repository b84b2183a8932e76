"""What a relay's webhook event becomes (:class:`ProviderEvent`, one finding in a
:class:`Report`), the one refusal (:class:`HookRefused`), and reading the relays' JSON without
trusting it: a missing field or a wrong type is a refusal, never a traceback. What each relay's
bounce type means, read with :func:`classify` (:func:`kind_of`).

Pure: values in, values out (``providers`` verifies and reads each relay's calls with it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from enum import StrEnum
from typing import Any

from mailer.bounces.classify import best_status, classify, clean_diagnostic, find_reply
from mailer.bounces.model import BounceKind, Finding, Report, ReportKind


class Refusal(StrEnum):
    """Why a webhook call is refused: the route answers 400, 401 or 403."""

    MALFORMED = "malformed"  # not the JSON the relay sends, a field missing or of a wrong type
    UNAUTHENTICATED = "unauthenticated"  # no or wrong credentials (Postmark's basic auth)
    FORBIDDEN = "forbidden"  # a signature, topic, certificate URL or timestamp that fails


class HookRefused(Exception):
    """A webhook call not taken: ``reason`` says what was wrong (never a secret)."""

    def __init__(self, reason: str, refusal: Refusal = Refusal.FORBIDDEN) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One recipient's bounce or complaint as a relay reported it, verified."""

    provider: str  # "ses", "mailgun", "postmark", "sendgrid"
    event_id: str  # the relay's unique id for it: what makes a second post a duplicate
    report: Report  # kind DSN or ARF, exactly one finding


# --- reading JSON without trusting it --------------------------------------------------------


def malformed(reason: str) -> HookRefused:
    return HookRefused(reason, Refusal.MALFORMED)


def read_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise malformed("the body is not JSON") from None


def as_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise malformed(f"{where} is not a JSON object")
    return value


def member(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """An optional object field: empty when absent or not an object."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def as_array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise malformed(f"{where} is not a JSON array")
    return value


def field(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise malformed(f"{where}.{key} is missing or not a string")
    return str(value)


def optional(data: Mapping[str, Any], key: str) -> str | None:
    """An optional text field: None when absent, empty or not a string."""
    value = data.get(key)
    return value if isinstance(value, str) and value.strip() else None


def recipient_of(value: Any, where: str) -> str:
    """A recipient's address, lower-cased (``Name <a@b>`` read as ``a@b``)."""
    short = isinstance(value, str) and len(value) <= 1000  # no parser fed a megabyte
    address = parseaddr(value)[1].strip().lower() if short else ""
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or len(address) > 320 or not address.isprintable():
        raise malformed(f"{where} is not an email address")
    return address


def message_id_of(value: Any) -> str | None:
    """A Message-ID with its angle brackets (added when the relay dropped them)."""
    if not isinstance(value, str) or not (found := value.strip().strip("<>").strip()):
        return None
    if len(found) > 250 or not found.isprintable() or " " in found:
        return None
    return f"<{found}>"


def trace_of(values: Mapping[str, Any] | None) -> str | None:
    """Our X-Mailer-Send among headers or custom values the relay echoes, any case."""
    for key, value in (values or {}).items():
        if isinstance(key, str) and key.lower() in _TRACE_KEYS and isinstance(value, str):
            return clean_diagnostic(value)[:200] or None
    return None


def headers_of(headers: Any, name: str = "name", value: str = "value") -> dict[str, Any]:
    """A list of ``{"name": ..., "value": ...}`` headers as a dict by lower-case name."""
    found: dict[str, Any] = {}
    for item in headers if isinstance(headers, list) else ():
        if isinstance(item, dict) and isinstance(item.get(name), str):
            found.setdefault(item[name].lower(), item.get(value))
    return found


_TRACE_KEYS = frozenset({"x-mailer-send", "mailer_send", "mailer-send"})


# --- what an event means ---------------------------------------------------------------------


class Hint(StrEnum):
    """What a relay says of a failure, before our classifier reads its code and words."""

    PERMANENT = "permanent"
    TEMPORARY = "temporary"
    UNDETERMINED = "undetermined"
    POLICY = "policy"
    COMPLAINT = "complaint"


def kind_of(hint: str, status: str | None, diagnostic: str) -> BounceKind:
    """The kind of a relay's event: its hint (permanent, temporary, undetermined, policy,
    complaint) read with :func:`classify` of the code and words."""
    if hint == Hint.COMPLAINT:
        return BounceKind.COMPLAINT
    found = classify(status, diagnostic)
    if found is BounceKind.POLICY or hint == Hint.POLICY:
        return BounceKind.POLICY
    if hint == Hint.TEMPORARY:
        return BounceKind.SOFT
    if hint == Hint.PERMANENT and found is BounceKind.UNKNOWN:
        return BounceKind.HARD  # the relay stops mailing the address itself
    return found


@dataclass(frozen=True, slots=True)
class Ties:
    """What a relay echoes of the message that bounced, to tie the event to its delivery."""

    message_id: str | None = None  # its Message-ID, angle brackets kept
    mailer_send: str | None = None  # our X-Mailer-Send, as a header or a custom value
    bounce_to: str | None = None  # its return path (envelope sender)


def event_of(
    provider: str,
    event_id: str,
    recipient: str,
    hint: Hint,
    *,
    status: str | None = None,
    words: str = "",
    final: bool = True,
    ties: Ties = Ties(),
) -> ProviderEvent:
    """One recipient's event, its finding's kind from ``hint`` and :func:`classify`."""
    diagnostic = clean_diagnostic(_SMTP_TYPE.sub("", words))  # "smtp; 550 ..." as "550 ..."
    status = best_status(_status(status), diagnostic) if hint != Hint.COMPLAINT else None
    kind = kind_of(hint, status, diagnostic)
    finding = Finding(
        recipient=recipient, status=status, kind=kind, diagnostic=diagnostic,
        reply_code=find_reply(diagnostic), final=final,
    )  # fmt: skip
    report = Report(
        kind=ReportKind.ARF if kind is BounceKind.COMPLAINT else ReportKind.DSN,
        findings=(finding,), reader=provider, message_id=ties.message_id,
        mailer_send=ties.mailer_send, bounce_to=_bounce_to(ties.bounce_to),
    )  # fmt: skip
    return ProviderEvent(provider=provider, event_id=clean_diagnostic(event_id), report=report)


def _status(value: str | None) -> str | None:
    found = _STATUS.fullmatch((value or "").strip())
    return found[0] if found else None


def _bounce_to(value: str | None) -> str | None:
    address = parseaddr(value)[1].strip() if value and len(value) <= 1000 else ""
    return address if address and len(address) <= 320 and address.isprintable() else None


_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_SMTP_TYPE = re.compile(r"^\s*smtp\s*;\s*", re.IGNORECASE)  # a DSN's diagnostic-type


__all__ = [
    "Hint",
    "HookRefused",
    "ProviderEvent",
    "Refusal",
    "Ties",
    "as_array",
    "as_object",
    "event_of",
    "field",
    "headers_of",
    "kind_of",
    "malformed",
    "member",
    "message_id_of",
    "optional",
    "read_json",
    "recipient_of",
    "trace_of",
]
