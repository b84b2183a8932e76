"""The closed vocabularies of mailer: ``StrEnum`` s stored as text in the database.

Each value is what a row holds (``sends.action``, ``sends.status``, ``consent_events.event``...);
a member compares equal to its text, so rows read back compare without converting.
"""

from __future__ import annotations

from enum import StrEnum

FALLBACK_LOCALE = "fr"


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
    SOFT_BOUNCE = "soft_bounce"  # soft bounces on MAILER_BOUNCES__SOFT_LIMIT different days
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


class SuppressionAction(StrEnum):
    """What one entry of the suppression history (``suppression_events.action``) did."""

    SUPPRESS = "suppress"
    UNSUPPRESS = "unsuppress"


class ConsentEvent(StrEnum):
    """One entry of the consent history (``consent_events.event``)."""

    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


class CampaignKind(StrEnum):
    ANNOUNCEMENT = "announcement"
    EVENT = "event"
    NEWSLETTER = "newsletter"


class CampaignStatus(StrEnum):
    """Where a campaign stands: written (draft), awaiting a second person (submitted),
    approved (a snapshot frozen, nothing planned yet), then sending (``mailer.lifecycle``)."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


class EventStatus(StrEnum):
    """The status of a campaign's event (``events.status``), its iCalendar STATUS."""

    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


class InviteMode(StrEnum):
    """How an event's calendar file is sent: an iTIP invitation to each recipient (REQUEST,
    the recipient as ATTENDEE: Outlook and Gmail offer the invitation card and apply a later
    CANCEL), or an entry to add by hand (PUBLISH, no attendee)."""

    REQUEST = "request"
    PUBLISH = "publish"


class SendAction(StrEnum):
    """What the mail of a send is (``sends.action``): the template's ``action``."""

    ANNOUNCEMENT = "announcement"
    NEWSLETTER = "newsletter"
    INVITATION = "invitation"
    REMINDER = "reminder"
    UPDATE = "update"
    CANCELLATION = "cancellation"
    CONFIRM = "confirm"  # the confirmation mail of a double opt-in


# The actions of an event campaign, in the order a campaign file names them (as text: the
# CLI offers them as choices).
EVENT_ACTIONS: tuple[str, ...] = (
    SendAction.INVITATION.value,
    SendAction.REMINDER.value,
    SendAction.UPDATE.value,
    SendAction.CANCELLATION.value,
)
CONFIRM_ACTION = SendAction.CONFIRM  # the send action of a double opt-in confirmation mail
CONFIRM_KIND = "confirmation"  # the campaign kind (and template) of the confirmation mails


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
    BOUNCED = "bounced"  # sent (the relay said 250), then a bounce came back for it


class BounceKind(StrEnum):
    """What one recipient's bounce means for the address (``bounce_events.kind``)."""

    HARD = "hard"  # the address is dead: user unknown, no such domain, moved
    SOFT = "soft"  # temporary: mailbox full, suspended, expired, network, delayed
    COMPLAINT = "complaint"  # the recipient reported the mail as spam (ARF)
    POLICY = "policy"  # the *sender's* problem (5.7.x, blocks, DMARC): never the address's
    AUTO_REPLY = "auto-reply"  # out of office and other RFC 3834 answers: ignored
    UNKNOWN = "unknown"  # a failure we cannot classify: counted, never suppressing


class ReportKind(StrEnum):
    """What kind of message was read (``bounce_messages.report``)."""

    DSN = "dsn"  # a delivery failure report, RFC 3464/6533 or a server's own form
    ARF = "arf"  # an abuse feedback report (RFC 5965)
    AUTO_REPLY = "auto-reply"  # an RFC 3834 automatic answer
    UNKNOWN = "unknown"  # nothing we recognise: no finding


class BounceAction(StrEnum):
    """What storing one recipient's bounce did (``bounce_events.action``)."""

    SUPPRESSED = "suppressed"  # the address reached its limit: suppressed now
    UNSUBSCRIBED = "unsubscribed"  # a complaint: suppressed and unsubscribed from every list
    COUNTED = "counted"  # counted against the address, under its limit
    ALREADY = "already suppressed"  # counted, the address was suppressed already
    POLICY = "policy"  # the sender's problem: counted for the send, never the address
    IGNORED = "ignored"  # auto-reply or unknown: kept, counted for nothing
    UNMATCHED = "unmatched"  # tied to no delivery of ours: kept, counted for nothing


class Requested(StrEnum):
    """What a sign-up did. The page says the same thing for all of them."""

    MAIL_QUEUED = "mail queued"
    ALREADY_SUBSCRIBED = "already subscribed"
    SUPPRESSED = "suppressed"
    RATE_LIMITED = "rate limited"


class Confirmed(StrEnum):
    """What following a confirmation link did."""

    CONFIRMED = "confirmed"
    ALREADY = "already subscribed"
    INVALID = "invalid"  # unsubscribed since, removed, suppressed, or an older request's link
