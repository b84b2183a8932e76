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
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailer.errors import MailerError
from mailer.models import CampaignKind, Content, EventInfo

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


class CampaignFileError(MailerError, ValueError):
    """A campaign file is unreadable or invalid; the message names file and field."""


class SenderOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    address: str | None = None


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

    @model_validator(mode="after")
    def _order(self) -> EventSection:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class CampaignFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME.pattern)
    kind: CampaignKind
    lists: list[str] = Field(min_length=1)
    template: str | None = None
    subject: str = ""
    body: str = ""
    body_file: str | None = None
    body_format: str = Field(default="markdown", pattern="^(markdown|html|text)$")
    timezone: str = "Europe/Paris"
    sender: SenderOverride = SenderOverride()
    send_at: str | datetime | None = None  # announcements: local time, or "now"
    event: EventSection | None = None
    newsletter: dict[str, Any] | None = None  # cron and end, read by the scheduler

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"expected an IANA time zone such as Europe/Paris, got {value!r}"
            ) from None
        return value

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("the subject must be on one line")
        return value.strip()

    @model_validator(mode="after")
    def _kind_sections(self) -> CampaignFile:
        if self.kind == CampaignKind.EVENT and self.event is None:
            raise ValueError("an event campaign needs an [event] section (title, start...)")
        if self.kind != CampaignKind.EVENT and self.event is not None:
            raise ValueError(
                f'an [event] section only goes with kind = "event", not {self.kind.value!r}'
            )
        if self.body and self.body_file:
            raise ValueError("give body or body_file, not both")
        return self


class Campaign:
    """A validated campaign file, with its body loaded and its times made aware."""

    def __init__(self, path: Path, data: CampaignFile, body: str) -> None:
        self.path = path
        self.data = data
        self.zone = ZoneInfo(data.timezone)
        self.content = Content(
            name=data.name,
            kind=data.kind.value,
            subject=data.subject,
            body=body,
            body_format=data.body_format,
            timezone=data.timezone,
            template=data.template,
        )

    @property
    def name(self) -> str:
        return self.data.name

    def event(
        self, *, domain: str, sequence: int = 0, status: str = "confirmed"
    ) -> EventInfo | None:
        section = self.data.event
        if section is None:
            return None
        return EventInfo(
            uid=f"{self.data.name}@{domain}",
            title=section.title,
            start=_aware(section.start, self.zone),
            end=_aware(section.end, self.zone) if section.end else None,
            timezone=self.data.timezone,
            place=section.place,
            link=section.link,
            description=section.description,
            sequence=sequence,
            status=status,
        )


def _aware(value: datetime, zone: ZoneInfo) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def load(path: Path) -> Campaign:
    """Read and validate a campaign file; :class:`CampaignFileError` names file and field."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CampaignFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CampaignFileError(f"{path}: not valid TOML ({exc})") from None
    try:
        data = CampaignFile.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "(file)"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{path}: {field}: {message}")
        raise CampaignFileError("\n".join(lines)) from None
    body = data.body
    if data.body_file:
        body_path = path.parent / data.body_file
        try:
            body = body_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CampaignFileError(f"{path}: body_file: cannot read {body_path} ({exc})") from None
    return Campaign(path, data, body)
