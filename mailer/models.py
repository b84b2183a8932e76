"""Closed vocabularies (stored as text) and small frozen value objects shared by the stages."""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    ACTIVE = "active"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    ERASED = "erased"


class SubscriptionStatus(StrEnum):
    PENDING = "pending"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


class OptInMode(StrEnum):
    SINGLE = "single"
    DOUBLE = "double"


class SuppressionReason(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


class CampaignKind(StrEnum):
    ANNOUNCEMENT = "announcement"
    EVENT = "event"
    NEWSLETTER = "newsletter"


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


class EventStatus(StrEnum):
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


class SendStatus(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"
    MISSED = "missed"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"
