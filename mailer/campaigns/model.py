"""The one model of a campaign (pydantic): what a campaign file, the console and the API
describe, each field checked with an error naming it. Pure: reads no file."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailer.addresses import first_control, normalize
from mailer.errors import AddressError, MailerError
from mailer.models import FALLBACK_LOCALE, CampaignKind, InviteMode
from mailer.settings import zone_name

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?$")  # fr, en, en_GB: the templates' locales
MAX_AHEAD = timedelta(days=3653)  # ten years: a campaign time beyond is a typo in the year
EARLIEST = datetime(2000, 1, 1)  # a campaign time before is a typo in the year too


def header_text(value: str, what: str) -> str:
    """``value`` if it can go into a header as one line of text; ValueError naming the first
    control character otherwise (the rule of :func:`~mailer.addresses.first_control`: CR,
    LF, NEL, VT, FF, tab and every other C0/C1 control, U+2028, U+2029 and the
    bidirectional controls)."""
    label = first_control(value)
    if label is not None:
        raise ValueError(f"contains {label}; {what} must be one line of plain text")
    return value


def one_address(value: str) -> str:
    """One plain address, normalised; ValueError for a list, a display name or a bad one."""
    if any(c in value for c in ",;") and value.count("@") > 1:
        raise ValueError("give one address, not a list of addresses")
    if "<" in value or ">" in value:
        raise ValueError("give the plain address (name@example.org); the name goes in sender.name")
    try:
        return normalize(value).email
    except AddressError as exc:
        raise ValueError(f"{exc}: {value!r}") from None


class CampaignFileError(MailerError, ValueError):
    """A campaign file is unreadable or invalid; the message names file and field."""


class SenderOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    address: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else header_text(value, "the sender's name").strip()

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else one_address(value)


def one_line(value: str, what: str) -> str:
    """``value`` stripped, if it is one line of plain text (see :func:`header_text`)."""
    if "\n" in value or "\r" in value:  # the common mistake, said in plain words
        raise ValueError(f"{what} must be on one line")
    return header_text(value, what).strip()


class EventWords(BaseModel):
    """The event's words in one language (``[content.en.event]``); empty: the event's own."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(default="", max_length=300)
    place: str = Field(default="", max_length=500)
    description: str = Field(default="", max_length=10_000)

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return one_line(value, "the title (it goes into subjects)")


class Words(BaseModel):
    """What staff write in one language: the subject (empty: the template's), the body (or
    the file it is in) and the preheader; each checked the same wherever it is given."""

    model_config = ConfigDict(extra="forbid")
    subject: str = Field(default="", max_length=998)
    body: str = ""
    body_file: str | None = None
    preheader: str = Field(default="", max_length=300)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return one_line(value, "the subject")

    @field_validator("preheader")
    @classmethod
    def _preheader(cls, value: str) -> str:
        return one_line(value, "the preheader")

    @model_validator(mode="after")
    def _one_body(self) -> Words:
        if self.body and self.body_file:
            raise ValueError("give body or body_file, not both")
        return self


class ContentSection(Words):
    """What staff wrote in one language (``[content.fr]``), with the event's words."""

    event: EventWords | None = None


def language_code(value: str) -> str:
    """A language as the templates name it (``fr``, ``en``, ``en_GB``); ValueError else."""
    code = value.strip().replace("-", "_")
    if "_" in code:
        lang, _, region = code.partition("_")
        code = f"{lang.lower()}_{region.upper()}"
    else:
        code = code.lower()
    if not LANGUAGE.match(code):
        raise ValueError(
            f"{value!r} is not a language code: expected fr, en or en_GB (the templates' locales)"
        )
    return code


class EventSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=300)
    start: datetime
    end: datetime | None = None
    place: str = ""
    link: str | None = None
    description: str = ""
    # Scheduling (validated and used by the scheduler): when to send the invitation,
    # and reminder offsets before the start such as "7d", "1d", "2h".
    announce: str | datetime = "now"
    reminders: list[str] = Field(default_factory=list)
    # request: an iTIP invitation with the recipient as ATTENDEE; publish: an entry to add.
    invite: InviteMode = InviteMode.REQUEST
    rsvp: bool = False  # ask the calendar to answer (RSVP=TRUE); replies go to the sender

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return header_text(value, "the title (it goes into subjects)").strip()

    @model_validator(mode="after")
    def _order(self) -> EventSection:
        if self.end is not None and (self.end.tzinfo is None) != (self.start.tzinfo is None):
            raise ValueError(
                "give start and end both with a UTC offset or both without (local time in "
                "the campaign's zone)"
            )
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class NewsletterSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str = Field(min_length=9, description="minute hour day month weekday, local time")
    until: datetime | None = None


class CampaignFile(Words):
    """A campaign as staff describe it: files, and later the console and the API. Its own
    words (:class:`Words`, at the top) are those of a campaign in one language."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME.pattern)
    kind: CampaignKind
    lists: list[str] = Field(min_length=1)
    template: str | None = None  # a template kind in the templates folder, e.g. "seminar"
    # One language at the top (``language``), or one [content.<language>] table each.
    language: str | None = None
    content: dict[str, ContentSection] = Field(default_factory=dict)
    body_format: str = Field(default="markdown", pattern="^(markdown|html|text)$")
    timezone: str | None = None  # None: MAILER_SCHEDULER__TIMEZONE
    ambiguous: Literal["first", "second"] = "first"  # for a local time the autumn fold repeats
    sender: SenderOverride = SenderOverride()
    send_at: str | datetime | None = None  # announcements: local time, or "now"
    event: EventSection | None = None
    newsletter: NewsletterSection | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else zone_name(value)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and not NAME.match(value):
            raise ValueError(
                f'expected the name of a template such as "seminar" (the file '
                f"templates/email/seminar.fr.html), not a path: {value!r}"
            )
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else language_code(value)

    @field_validator("content")
    @classmethod
    def _languages(cls, value: dict[str, ContentSection]) -> dict[str, ContentSection]:
        """The tables keyed by their language as the templates name it (``EN`` -> ``en``,
        ``fr-FR`` -> ``fr_FR``), each language once."""
        out: dict[str, ContentSection] = {}
        for key, section in value.items():
            code = language_code(key)
            if code in out:
                raise ValueError(f"[content.{key}] is the language {code!r} a second time")
            out[code] = section
        return out

    @model_validator(mode="after")
    def _kind_sections(self) -> CampaignFile:
        if self.kind == CampaignKind.EVENT and self.event is None:
            raise ValueError("an event campaign needs an [event] section (title, start...)")
        if self.kind == CampaignKind.NEWSLETTER and self.newsletter is None:
            raise ValueError('a newsletter needs a [newsletter] section with cron = "0 9 1 * *"')
        if self.kind != CampaignKind.NEWSLETTER and self.newsletter is not None:
            raise ValueError('a [newsletter] section only goes with kind = "newsletter"')
        if self.kind != CampaignKind.EVENT and self.event is not None:
            raise ValueError(
                f'an [event] section only goes with kind = "event", not {self.kind.value!r}'
            )
        top = [f for f in ("subject", "body", "body_file", "preheader") if getattr(self, f)]
        if self.content and (top or self.language):
            given = ", ".join(top + (["language"] if self.language else []))
            raise ValueError(
                f"give the words either at the top ({given}: one language) or in "
                "[content.fr], [content.en]... tables, not both"
            )
        if self.kind != CampaignKind.EVENT and any(c.event for c in self.content.values()):
            raise ValueError('[content.<language>.event] only goes with kind = "event"')
        return self

    def languages(self) -> list[str]:
        """The campaign's languages, the fallback first."""
        return list(self.content) or [self.language or FALLBACK_LOCALE]

    def sections(self) -> dict[str, ContentSection]:
        """The words per language, the top-level ones as a section of :attr:`language`."""
        if self.content:
            return dict(self.content)
        return {
            self.languages()[0]: ContentSection(
                subject=self.subject, body=self.body, body_file=self.body_file,
                preheader=self.preheader,
            )
        }  # fmt: skip
