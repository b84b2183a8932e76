"""The small frozen value objects passed between the stages: recipients, lists, events,
content, links and what one send has in common for all its recipients."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
class EventText:
    """An event's words in one language (an empty field: the event's own)."""

    locale: str
    title: str = ""
    place: str = ""
    description: str = ""


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
    texts: tuple[EventText, ...] = ()  # the title, place, description in other languages
    invite: str = "request"  # an InviteMode: iTIP REQUEST with the recipient as ATTENDEE
    rsvp: bool = False  # ask calendars to answer (RSVP=TRUE)
    day_seconds: int = 86400  # how long a day of reminder offset lasts (shorter in a rehearsal)
    previous: EventInfo | None = None  # the details before the last update (what changed)

    def localized(self, locale: str) -> EventInfo:
        """The event with its words in ``locale`` where given (else its own)."""
        for text in self.texts:
            if text.locale == locale:
                return replace(
                    self,
                    title=text.title or self.title,
                    place=text.place or self.place,
                    description=text.description or self.description,
                    texts=(),
                    previous=self.previous.localized(locale) if self.previous else None,
                )
        return self


@dataclass(frozen=True, slots=True)
class LocaleText:
    """What staff wrote in one language: subject (empty: the template's), body, preheader."""

    locale: str
    subject: str = ""
    body: str = ""
    preheader: str = ""


@dataclass(frozen=True, slots=True)
class Content:
    """What staff wrote: the campaign's template kind and its words, per language.

    ``texts`` are the campaign's languages in order (the first is the fallback). Without
    texts (a campaign stored before languages, a confirmation mail), ``subject`` and ``body``
    go into the template of every recipient's language, as they did then.
    """

    name: str
    kind: str  # announcement, event, newsletter: also the template name
    subject: str = ""
    body: str = ""
    body_format: str = "markdown"  # markdown, html or text
    timezone: str = "Europe/Paris"
    template: str | None = None  # another template than the kind's
    texts: tuple[LocaleText, ...] = ()

    @property
    def template_name(self) -> str:
        return self.template or self.kind

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the campaign is written in, first the fallback; () if neutral."""
        return tuple(text.locale for text in self.texts)

    def text(self, locale: str) -> LocaleText:
        """The words for ``locale`` (one of :attr:`languages`), or the neutral ones."""
        for text in self.texts:
            if text.locale == locale:
                return text
        return LocaleText(locale, subject=self.subject, body=self.body)


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
    key: str = ""  # the send's key in its campaign ("issue:2026-12-01" names a newsletter issue)
