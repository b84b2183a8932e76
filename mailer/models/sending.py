"""What storage takes and returns about campaigns, sends and deliveries, and the figures
of ``mailer status`` and ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailer.models.values import Content, EventInfo, ListInfo, LocaleText, Recipient
from mailer.models.vocabulary import DeliveryStatus, SendAction, SendStatus


@dataclass(frozen=True, slots=True)
class Campaign:
    """A stored campaign, as staff see it."""

    id: int
    name: str
    kind: str
    status: str  # a CampaignStatus
    template: str
    subject: str
    body: str
    body_format: str
    sender_name: str | None
    sender_address: str | None
    timezone: str
    options: dict[str, Any]
    texts: tuple[LocaleText, ...] = ()  # the words per language (none: one for all)


@dataclass(frozen=True, slots=True)
class CampaignSummary:
    """One line of ``mailer campaign list``."""

    name: str
    kind: str
    status: str
    next_due: datetime | None  # the earliest scheduled send


@dataclass(frozen=True, slots=True)
class Newsletter:
    """An active recurring newsletter: what the scheduler extends."""

    id: int
    name: str
    cron: str
    zone: ZoneInfo
    until: datetime | None


@dataclass(frozen=True, slots=True)
class Send:
    """One send of a campaign, as its row stands."""

    id: int
    campaign_id: int
    key: str
    action: str  # a SendAction
    status: str  # a SendStatus
    due_at: datetime
    reason: str | None
    audience_send_id: int | None
    claimed_by: str | None  # the node that claimed it
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class SendListing:
    """One line of ``mailer send list`` and ``mailer status``."""

    id: int
    campaign: str
    key: str
    action: str
    status: str
    due_at: datetime
    reason: str | None
    timezone: str  # the campaign's


@dataclass(frozen=True, slots=True)
class SendSpec:
    """Everything dispatch needs to know about a send, read once when it starts."""

    id: int
    campaign_id: int
    key: str
    action: SendAction
    status: SendStatus
    due_at: datetime
    content: Content
    lists: list[ListInfo]
    event: EventInfo | None
    sender_name: str | None
    sender_address: str | None
    reason: str | None
    audience_send_id: int | None = None


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery to attempt now, with its recipient as the database has them now."""

    id: int
    attempts: int
    list_id: int
    created_at: datetime
    recipient: Recipient
    skip_reason: str | None  # unsubscribed or suppressed since the send started
    lease_until: datetime | None = None  # when leased: the node owns it until then


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The recorded result of one attempt (what storage writes for one delivery)."""

    delivery_id: int
    status: DeliveryStatus
    code: int | None = None
    reply: str | None = None
    reason: str | None = None
    message_id: str | None = None
    next_attempt_at: datetime | None = None
    suppress_key: str | None = None  # add this address to the suppressions (5.1.x)


@dataclass(frozen=True, slots=True, eq=False)
class DeliveryCounts(Mapping[str, int]):
    """A send's deliveries by status; also a read-only mapping ``status -> count``, in the
    order of :class:`DeliveryStatus` (so ``counts["sent"]`` and ``dict(counts)`` work)."""

    queued: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    skipped: int = 0
    bounced: int = 0  # sent, then a bounce came back

    @classmethod
    def of(cls, found: Mapping[str, int]) -> DeliveryCounts:
        """From counts by status text (a status missing counts zero)."""
        return cls(**{s.value: int(found.get(s.value, 0)) for s in DeliveryStatus})

    @property
    def total(self) -> int:
        return self.queued + self.sent + self.deferred + self.failed + self.skipped + self.bounced

    @property
    def pending(self) -> int:
        """Still to attempt: queued or deferred."""
        return self.queued + self.deferred

    def __getitem__(self, status: str) -> int:
        if status not in _STATUSES:
            raise KeyError(status)
        return int(getattr(self, status))

    def __iter__(self) -> Iterator[str]:
        return iter(_STATUSES)

    def __len__(self) -> int:
        return len(_STATUSES)

    def __repr__(self) -> str:
        return f"DeliveryCounts({', '.join(f'{k}={v}' for k, v in self.items())})"


_STATUSES = tuple(s.value for s in DeliveryStatus)


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One recipient of a send and what happened (``mailer send report``)."""

    email: str
    list: str  # the list's slug
    status: str
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None
    reason: str | None
    message_id: str | None
    sent_at: datetime | None

    def value(self, column: str) -> Any:
        """The value of one report column, by its name."""
        return getattr(self, column)


REPORT_COLUMNS = tuple(f.name for f in fields(ReportRow))


@dataclass(frozen=True, slots=True)
class SendFigures:
    send_id: int
    campaign: str
    action: str
    status: str
    counts: DeliveryCounts
    rate: float  # messages sent per second over the last minute


@dataclass(frozen=True, slots=True)
class Metrics:
    """What ``/metrics`` exposes, read from storage so every daemon reports the same truth."""

    sends: list[SendFigures]
    replies: dict[int, int]  # SMTP reply code -> deliveries
    queue_depth: int
    sends_by_status: dict[str, int]
