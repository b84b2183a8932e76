"""Campaign files: a small TOML file per campaign, validated with pydantic at the edge.

```toml
name = "journee-recherche-2024"
kind = "event"                      # announcement, event or newsletter
lists = ["researchers", "clinicians"]
subject = ""                        # empty: the template's subject
body_file = "journee-recherche-2024.md"   # or body = "Markdown text"
timezone = "Europe/Paris"

[event]
title = "8e journée de recherche CRI-IMIDIATE / FAI²R"
start = 2024-01-15T09:00:00         # local time in the campaign's zone
end = 2024-01-15T17:30:00
place = "Hôpital Pitié-Salpêtrière, Paris"
```

Every error names the file, the field and what is expected. Today the file drives
``mailer preview``; storing and scheduling campaigns comes with the scheduler.
"""

from __future__ import annotations

import re
import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailer import schedule
from mailer.addresses import first_control, normalize
from mailer.errors import AddressError, MailerError
from mailer.models import CampaignKind, Content, EventInfo
from mailer.settings import zone_name

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
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


class CampaignFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME.pattern)
    kind: CampaignKind
    lists: list[str] = Field(min_length=1)
    template: str | None = None  # a template kind in the templates folder, e.g. "seminar"
    subject: str = Field(default="", max_length=998)
    body: str = ""
    body_file: str | None = None
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

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:  # the common mistake, said in plain words
            raise ValueError("the subject must be on one line")
        return header_text(value, "the subject").strip()

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
        if self.body and self.body_file:
            raise ValueError("give body or body_file, not both")
        return self


class Campaign:
    """A validated campaign file, with its body loaded and its times made aware."""

    def __init__(self, path: Path, data: CampaignFile, body: str, *, zone: str) -> None:
        self.path = path
        self.data = data
        self.zone = ZoneInfo(data.timezone or zone)
        self.content = Content(
            name=data.name,
            kind=data.kind.value,
            subject=data.subject,
            body=body,
            body_format=data.body_format,
            timezone=self.zone.key,
            template=data.template,
        )

    @property
    def name(self) -> str:
        return self.data.name

    def local(self, value: datetime, what: str) -> tuple[datetime, str]:
        """A time from the file as UTC (naive means the campaign's zone); DST-checked."""
        if value.replace(tzinfo=None) < EARLIEST:
            raise CampaignFileError(
                f"{self.path}: {what}: {value:%Y-%m-%d} has passed long ago; check the year"
            )
        try:
            return schedule.resolve(value, self.zone, ambiguous=self.data.ambiguous, what=what)
        except schedule.ScheduleError as exc:
            raise CampaignFileError(f"{self.path}: {exc}") from None
        except OverflowError:
            raise CampaignFileError(
                f"{self.path}: {what}: {value:%Y-%m-%d %H:%M} is out of range; check the year"
            ) from None

    def ahead(self, due: datetime, what: str, *, now: datetime) -> datetime:
        """``due``, if it is not more than :data:`MAX_AHEAD` after ``now``."""
        if due - now > MAX_AHEAD:
            raise CampaignFileError(
                f"{self.path}: {what}: {due.astimezone(self.zone):%Y-%m-%d} is more than "
                f"{MAX_AHEAD.days // 365} years ahead; check the year"
            )
        return due

    def event(
        self,
        *,
        domain: str,
        sequence: int = 0,
        status: str = "confirmed",
        shift: timedelta | None = None,
    ) -> EventInfo | None:
        section = self.data.event
        if section is None:
            return None
        start, _ = self.local(section.start, "event.start")
        end = self.local(section.end, "event.end")[0] if section.end else None
        if shift is not None:
            start, end = start + shift, (end + shift if end else None)
        return EventInfo(
            uid=f"{self.data.name}@{domain}",
            title=section.title,
            start=start,
            end=end,
            timezone=self.zone.key,
            place=section.place,
            link=section.link,
            description=section.description,
            sequence=sequence,
            status=status,
        )


def demo_start(now: datetime) -> datetime:
    """Where --demo puts an event: three to four minutes from now, on a whole minute."""
    return now.replace(second=0, microsecond=0) + timedelta(minutes=4)


def plan(
    campaign: Campaign, *, now: datetime, domain: str, demo: bool = False, horizon: int = 3
) -> tuple[list[schedule.Planned], list[str]]:
    """The sends of a campaign with their due times (UTC), and notes on choices made.

    With ``demo`` an event starts three to four minutes from now and a day of reminder offset lasts
    twenty seconds, so a newcomer sees the invitation and the reminders go out.
    """
    data = campaign.data
    notes: list[str] = []
    path = campaign.path
    if data.kind == CampaignKind.ANNOUNCEMENT:
        if data.send_at in (None, "now"):
            return [schedule.Planned("announce", "announcement", now)], notes
        if isinstance(data.send_at, str):
            raise CampaignFileError(f'{path}: send_at: expected a local time or "now"')
        due, note = campaign.local(data.send_at, "send_at")
        campaign.ahead(due, "send_at", now=now)
        return [schedule.Planned("announce", "announcement", due, note)], [n for n in [note] if n]
    if data.kind == CampaignKind.NEWSLETTER:
        assert data.newsletter is not None
        until = (
            campaign.local(data.newsletter.until, "newsletter.until")[0]
            if data.newsletter.until
            else None
        )
        try:
            issues = schedule.newsletter_issues(
                data.newsletter.cron, campaign.zone, after=now, until=until, count=horizon
            )
        except schedule.ScheduleError as exc:
            raise CampaignFileError(f"{path}: newsletter.{exc}") from None
        return issues, notes
    section = data.event
    assert section is not None
    shift = None
    if demo:
        real = campaign.event(domain=domain)
        assert real is not None
        shift = demo_start(now) - real.start
    event = campaign.event(domain=domain, shift=shift)
    assert event is not None
    campaign.ahead(event.start, "event.start", now=now)
    if event.end is not None:
        campaign.ahead(event.end, "event.end", now=now)
    if event.start <= now:
        raise CampaignFileError(
            f"{path}: event.start: {event.start.astimezone(campaign.zone):%Y-%m-%d %H:%M} has "
            "passed; an event campaign is for an event ahead (try --demo to rehearse it)"
        )
    if section.announce == "now" or demo:
        invitation = schedule.Planned("invitation", "invitation", now)
    elif isinstance(section.announce, str):
        raise CampaignFileError(f'{path}: event.announce: expected a local time or "now"')
    else:
        due, note = campaign.local(section.announce, "event.announce")
        if due >= event.start:
            raise CampaignFileError(
                f"{path}: event.announce: the invitation must go before the start"
            )
        invitation = schedule.Planned("invitation", "invitation", due, note)
        notes += [note] if note else []
    try:
        reminders, skipped = schedule.reminders(
            event.start,
            section.reminders,
            now=now,
            zone=campaign.zone,
            scale=20 / 86400 if demo else 1.0,
        )
    except schedule.ScheduleError as exc:
        raise CampaignFileError(f"{path}: event.{exc}") from None
    return [invitation, *reminders], notes + skipped


def load(
    path: Path, *, default_zone: str = "Europe/Paris", templates_dir: Path | None = None
) -> Campaign:
    """Read and validate a campaign file; :class:`CampaignFileError` names file and field.

    A file without ``timezone`` is in ``default_zone`` (MAILER_SCHEDULER__TIMEZONE).
    ``body_file`` is read only from the campaign file's folder or below (links resolved);
    with ``templates_dir``, a ``template`` must exist there (and not link out of it)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CampaignFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CampaignFileError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise CampaignFileError(
            f"{path}: not valid TOML for a campaign (arrays or tables nested too deeply)"
        ) from None
    try:
        data = CampaignFile.model_validate(raw)
    except RecursionError:
        raise CampaignFileError(f"{path}: values nested too deeply for a campaign file") from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "(file)"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{path}: {field}: {message}")
        raise CampaignFileError("\n".join(lines)) from None
    body = data.body
    if data.body_file:
        body_path = _inside(path, path.parent, data.body_file, "body_file", "the campaign's folder")
        try:
            body = body_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CampaignFileError(f"{path}: body_file: cannot read {body_path} ({exc})") from None
    if data.template is not None and templates_dir is not None:
        _check_template(path, templates_dir, data.template)
    return Campaign(path, data, body, zone=default_zone)


def _inside(path: Path, folder: Path, name: str, field: str, what: str) -> Path:
    """``folder / name`` with links resolved, if it is inside ``folder`` (links resolved)."""
    root = folder.resolve()
    try:
        target = (folder / name).resolve()
    except (OSError, RuntimeError) as exc:  # a link loop
        raise CampaignFileError(f"{path}: {field}: cannot resolve {name!r} ({exc})") from None
    if not target.is_relative_to(root):
        raise CampaignFileError(
            f"{path}: {field}: {name!r} is outside {what} ({root}); keep the file there"
        )
    return target


def _check_template(path: Path, templates_dir: Path, template: str) -> None:
    """The template kind exists in the templates folder and none of its files links out."""
    email = templates_dir / "email"
    found = sorted(email.glob(f"{template}.*.html")) + sorted(email.glob(f"{template}.*.txt"))
    if not any(f.name.endswith(".html") for f in found):
        raise CampaignFileError(
            f"{path}: template: no {email}/{template}.fr.html (or another locale) in the "
            "templates folder"
        )
    for file in found:
        _inside(path, templates_dir, str(file.relative_to(templates_dir)), "template",
                "the templates folder")  # fmt: skip
