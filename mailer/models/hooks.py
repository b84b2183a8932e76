"""What storage takes and returns about the REST API's keys and the outgoing webhooks.

``Scope`` names what an API key may do; ``EventType`` the events a webhook endpoint can
subscribe to (Standard Webhooks ``type``). No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Scope(StrEnum):
    """What an API key may do (stored as text in ``api_keys.scopes``)."""

    LISTS_READ = "lists:read"
    SUBSCRIBERS_READ = "subscribers:read"
    SUBSCRIBERS_WRITE = "subscribers:write"
    CAMPAIGNS_READ = "campaigns:read"
    CAMPAIGNS_WRITE = "campaigns:write"
    CAMPAIGNS_SEND = "campaigns:send"
    SENDS_READ = "sends:read"
    SUPPRESSIONS_WRITE = "suppressions:write"
    WEBHOOKS_MANAGE = "webhooks:manage"


class EventType(StrEnum):
    """An event a webhook endpoint may subscribe to."""

    SUBSCRIBED = "subscriber.subscribed"
    CONFIRMED = "subscriber.confirmed"
    UNSUBSCRIBED = "subscriber.unsubscribed"
    DELIVERY_SENT = "delivery.sent"  # one per message: high volume, never subscribed by default
    DELIVERY_FAILED = "delivery.failed"
    DELIVERY_BOUNCED = "delivery.bounced"
    COMPLAINT = "complaint.received"
    SEND_STARTED = "send.started"
    SEND_FINISHED = "send.finished"
    SEND_PAUSED = "send.paused"


# What ``mailer webhooks add`` subscribes to when no --events is given: all but delivery.sent.
DEFAULT_EVENTS: tuple[EventType, ...] = tuple(e for e in EventType if e != EventType.DELIVERY_SENT)


class HookStatus(StrEnum):
    """Where one event stands for one endpoint (``webhook_deliveries.status``)."""

    PENDING = "pending"  # to be attempted at ``next_at``
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # given up: too old (MAILER_WEBHOOKS__MAX_AGE), or the endpoint removed


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never the key itself, only its SHA-256 and its first characters."""

    id: int
    name: str
    prefix: str  # "mlr_" and the next 8 characters, to tell keys apart in a listing
    scopes: frozenset[Scope]
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class IdempotentAnswer:
    """The first answer given to a POST with an ``Idempotency-Key``, kept for 24 h."""

    fingerprint: str  # SHA-256 of method, path and body: a different body is refused
    status: int  # 0 while the first request is still being answered
    body: str
    headers: dict[str, str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A webhook endpoint: where events are posted, which ones, signed with ``secret``."""

    id: int
    url: str
    events: frozenset[EventType]
    secret: str  # "whsec_" + base64 of 32 random bytes (Standard Webhooks)
    description: str
    created_by: str
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None  # the first failure of the current run of failures
    failures: int  # failed attempts in a row

    @property
    def active(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True, slots=True)
class DueHook:
    """One event to post to one endpoint now (leased to the daemon that claimed it)."""

    delivery_id: int
    endpoint_id: int
    url: str
    secret: str
    event_id: str  # the ``webhook-id``: the same on every retry, for the receiver to dedupe
    type: EventType
    payload: dict[str, Any]  # {"type", "timestamp", "data"}, serialised as is
    created_at: datetime
    attempts: int  # attempts made before this one


@dataclass(frozen=True, slots=True)
class HookAttempt:
    """What one POST of an event got: the answer's status code, or the error, and when next."""

    delivery_id: int
    endpoint_id: int
    code: int | None  # the HTTP status; None when no answer came (refused, timeout...)
    error: str | None  # one line: why it failed; None when delivered
    took_ms: int
    answer: str  # the start of the answer's body
    next_at: datetime | None  # the next attempt; None: delivered, or given up

    @property
    def delivered(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


@dataclass(frozen=True, slots=True)
class HookLine:
    """One event for one endpoint as ``mailer webhooks deliveries`` lists it."""

    delivery_id: int
    endpoint_id: int
    url: str
    event_id: str
    type: EventType
    status: HookStatus
    attempts: int
    created_at: datetime
    next_at: datetime | None
    last_at: datetime | None
    last_code: int | None
    last_error: str | None
