"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the three headers an
event is posted with, pure.

``webhook-id`` is the event's id (the same on every retry, for the receiver to drop
duplicates), ``webhook-timestamp`` the attempt's time in unix seconds, and
``webhook-signature`` ``v1,`` and the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``
keyed with the bytes of the secret after ``whsec_`` (base64). The body is signed as the exact
bytes posted: :func:`body` makes them once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

PREFIX = "whsec_"


def body(payload: Mapping[str, Any]) -> bytes:
    """The JSON bytes posted (and signed) for an event's payload: compact, UTF-8."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret; ``ValueError`` if it is not one (the message
    never repeats the secret)."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        raw = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ and base64") from None
    if len(raw) < 16:
        raise ValueError("a webhook secret holds 16 bytes at least")
    return raw


def signature(secret: str, event_id: str, timestamp: int, data: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{event_id}.{timestamp}.{data}``."""
    signed = f"{event_id}.{timestamp}.".encode() + data
    digest = hmac.new(key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, event_id: str, when: datetime, data: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt at ``when``."""
    timestamp = int(when.timestamp())
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, event_id, timestamp, data),
    }


def verify(secret: str, got: Mapping[str, str], data: bytes) -> bool:
    """Whether ``got`` (headers, any case) carries a valid v1 signature of ``data``; the
    timestamp's age is the receiver's business and is not checked here."""
    lower = {k.lower(): v for k, v in got.items()}
    event_id, stamp = lower.get("webhook-id", ""), lower.get("webhook-timestamp", "")
    if not event_id or not stamp.isdigit():
        return False
    expected = signature(secret, event_id, int(stamp), data)
    offered = lower.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, one) for one in offered)
