"""The small frozen value objects passed between the stages: recipients, lists, events,
content, links and what one send has in common for all its recipients."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from mailer.models.vocabulary import FALLBACK_LOCALE, EventStatus


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    email: str
    name: str = ""
    locale: str | None = None
    timezone: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    smtputf8: bool = False
    # What the links name (never the row id, which a database may reuse after an erasure).
    public_id: str = ""
    # The pending sign-up a confirmation mail confirms (its link carries it).
    confirm_nonce: str | None = None


@dataclass(frozen=True, slots=True)
class ListInfo:
    id: int
    slug: str
    title: str
    default_locale: str = FALLBACK_LOCALE


@dataclass(frozen=True, slots=True)
class EventInfo:
    uid: str
    title: str
    start: datetime
    end: datetime | None
    timezone: str
    place: str = ""
    link: str | None = None
    description: str = ""
    sequence: int = 0
    status: str = EventStatus.CONFIRMED


@dataclass(frozen=True, slots=True)
class Content:
    """What staff wrote: the campaign's template kind, subject and body."""

    name: str
    kind: str  # announcement, event, newsletter: also the template name
    subject: str = ""
    body: str = ""
    body_format: str = "markdown"  # markdown, html or text
    timezone: str = "Europe/Paris"
    template: str | None = None  # another template than the kind's

    @property
    def template_name(self) -> str:
        return self.template or self.kind


@dataclass(frozen=True, slots=True)
class Links:
    unsubscribe: str
    preferences: str
    web_version: str | None = None
    confirm: str | None = None  # only in a double opt-in confirmation


@dataclass(frozen=True, slots=True)
class Rendered:
    locale: str
    subject: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class SendInfo:
    """Everything the same for every recipient of one send."""

    content: Content
    list: ListInfo
    sender_name: str
    sender_address: str
    action: str  # a SendAction: announcement, newsletter, invitation, reminder, update...
    now: datetime
    event: EventInfo | None = None
