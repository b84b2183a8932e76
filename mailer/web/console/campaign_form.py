"""The campaign form of the console, both ways: the posted form read into the one campaign
model (:func:`read`), and a stored campaign's spec spread back into form values
(:func:`values_of`).

The console builds no schema of its own: the fields are named after the model's paths
(``event.start``, ``content.fr.subject``...) and :func:`mailer.campaigns.from_data` validates
them with :class:`~mailer.campaigns.CampaignFile` and :func:`mailer.campaigns.plan`, so a
form gets the words a campaign file gets, each beside its field. Pure: no store, no clock of
its own.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.campaigns import Campaign, CampaignFileError, from_data, plan
from mailer.models import CampaignKind
from mailer.schedule import Planned

LANGUAGES = ("fr", "en")  # the languages the form offers, the first the default fallback
KINDS = tuple(k.value for k in CampaignKind)
WORDS = ("subject", "preheader", "body")
EVENT_WORDS = ("title", "place", "description")
EVENT_FIELDS = ("title", "start", "end", "place", "link", "description", "announce")
MAX_BODY = 1_000_000  # characters of one body: a mail larger than this is not a newsletter
GENERAL = "(campaign)"  # the key of an error that belongs to no one field
_FIELD = re.compile(r"^[a-z_][a-z0-9_.]*$")


@dataclass
class FormReading:
    """What a posted form says: the values as typed (to show the form again), the campaign
    when it is valid, its plan, and the errors by field (:data:`GENERAL` for the others)."""

    values: dict[str, Any]
    campaign: Campaign | None = None
    planned: list[Planned] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    @property
    def ok(self) -> bool:
        return self.campaign is not None and not self.errors


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.replace("\r\n", "\n") if isinstance(value, str) else ""


def values_from(form: Any) -> dict[str, Any]:
    """The form's values as typed, keyed by field name; ``lists`` and ``languages`` are lists."""
    values: dict[str, Any] = {
        name: _text(form, name)
        for name in (
            "name", "kind", "template", "timezone", "ambiguous", "sender_name",
            "sender_address", "body_format", "send_at", "newsletter.cron", "newsletter.until",
            "event.reminders", "event.invite", "version",
            *(f"event.{f}" for f in EVENT_FIELDS),
        )
    }  # fmt: skip
    values["event.rsvp"] = _text(form, "event.rsvp") in ("on", "true", "1")
    values["lists"] = [v for v in form.getlist("lists") if isinstance(v, str) and v]
    chosen = [v for v in form.getlist("languages") if isinstance(v, str)]
    values["languages"] = [lang for lang in LANGUAGES if lang in chosen]
    for lang in LANGUAGES:
        for word in WORDS:
            values[f"content.{lang}.{word}"] = _text(form, f"content.{lang}.{word}")
        for word in EVENT_WORDS:
            values[f"content.{lang}.event.{word}"] = _text(form, f"content.{lang}.event.{word}")
    return values


def _time(values: Mapping[str, Any], name: str, reading: FormReading) -> str | None:
    """A ``datetime-local`` value checked for form, as the model's text; None when empty."""
    text = str(values.get(name) or "").strip()
    if not text:
        return None
    try:
        datetime.fromisoformat(text)
    except ValueError:
        reading.error(name, f"{text!r} is not a date and time (expected 2027-01-15T09:00)")
        return None
    return text


def raw_of(values: Mapping[str, Any], reading: FormReading) -> dict[str, Any]:
    """The campaign as the model reads it, from the form's values (errors of form noted)."""
    kind = values.get("kind") or ""
    raw: dict[str, Any] = {"name": (values.get("name") or "").strip(), "kind": kind}
    raw["lists"] = list(values.get("lists") or [])
    for name in ("template", "timezone"):
        if (values.get(name) or "").strip():
            raw[name] = values[name].strip()
    if values.get("ambiguous") in ("first", "second"):
        raw["ambiguous"] = values["ambiguous"]
    if values.get("body_format"):
        raw["body_format"] = values["body_format"]
    sender = {k: values[f"sender_{k}"].strip() for k in ("name", "address")
              if (values.get(f"sender_{k}") or "").strip()}  # fmt: skip
    if sender:
        raw["sender"] = sender
    languages = list(values.get("languages") or [])
    if not languages:
        reading.error("languages", "choose at least one language")
    content: dict[str, Any] = {}
    for lang in languages:
        section: dict[str, Any] = {w: values.get(f"content.{lang}.{w}") or "" for w in WORDS}
        if len(section["body"]) > MAX_BODY:
            reading.error(
                f"content.{lang}.body",
                f"the body has {len(section['body']):,} characters; at most {MAX_BODY:,}",
            )
            section["body"] = ""
        words = {w: values.get(f"content.{lang}.event.{w}") or "" for w in EVENT_WORDS}
        if kind == CampaignKind.EVENT and any(words.values()):
            section["event"] = words
        content[lang] = section
    if content:
        raw["content"] = content
    if kind == CampaignKind.ANNOUNCEMENT:
        raw["send_at"] = _time(values, "send_at", reading) or "now"
    elif kind == CampaignKind.EVENT:
        raw["event"] = _event(values, reading)
    elif kind == CampaignKind.NEWSLETTER:
        newsletter: dict[str, Any] = {"cron": (values.get("newsletter.cron") or "").strip()}
        until = _time(values, "newsletter.until", reading)
        if until:
            newsletter["until"] = until
        raw["newsletter"] = newsletter
    return raw


def _event(values: Mapping[str, Any], reading: FormReading) -> dict[str, Any]:
    event: dict[str, Any] = {
        f: (values.get(f"event.{f}") or "").strip() for f in ("title", "place", "description")
    }
    event["description"] = values.get("event.description") or ""
    start = _time(values, "event.start", reading)
    if start:  # none: the model says the field is required, as for a file
        event["start"] = start
    end = _time(values, "event.end", reading)
    if end:
        event["end"] = end
    if (values.get("event.link") or "").strip():
        event["link"] = values["event.link"].strip()
    event["announce"] = _time(values, "event.announce", reading) or "now"
    text = values.get("event.reminders") or ""
    event["reminders"] = [r.strip() for r in re.split(r"[,;\s]+", text) if r.strip()]
    if values.get("event.invite"):
        event["invite"] = values["event.invite"]
    event["rsvp"] = bool(values.get("event.rsvp"))
    return event


def read(
    form: Any,
    *,
    now: datetime,
    domain: str,
    default_zone: str,
    templates_dir: Path | None,
) -> FormReading:
    """The posted form, validated as a campaign file is, and planned; every error beside its
    field, in the words ``mailer campaign check`` uses."""
    values = values_from(form)
    reading = FormReading(values)
    raw = raw_of(values, reading)
    source = Path(raw["name"] or "campaign")
    try:
        campaign = from_data(
            raw, source=source, default_zone=default_zone, templates_dir=templates_dir
        )
        if reading.errors:  # the form's own (a time that does not parse): not planned
            return reading
        planned, notes = plan(campaign, now=now, domain=domain)
    except CampaignFileError as exc:
        for line in str(exc).splitlines():
            name, message = split_error(line, str(source), known=values)
            if name not in reading.errors or message not in reading.errors[name]:
                reading.error(name, message)
        return reading
    reading.campaign, reading.planned, reading.notes = campaign, planned, notes
    return reading


def split_error(line: str, source: str, *, known: Iterable[str]) -> tuple[str, str]:
    """``(field, message)`` of one error line ``source: field: message``: the field is the
    longest form field the error's path starts with (``event.reminders.0`` ->
    ``event.reminders``), :data:`GENERAL` when it names none."""
    rest = line.removeprefix(f"{source}: ")
    path, sep, message = rest.partition(": ")
    if not sep or not _FIELD.match(path):
        return GENERAL, rest
    fields = set(known)
    parts = path.split(".")
    for size in range(len(parts), 0, -1):
        name = ".".join(parts[:size])
        if name in fields:
            return name, message
    # a check of a whole section ("event: end must be after start"): beside the field of the
    # section its message names first
    named = [
        (found.start(), name)
        for name in fields
        if name.startswith(path + ".")
        and (found := re.search(rf"\b{re.escape(name.rpartition('.')[2])}\b", message))
    ]
    if named:
        return min(named)[1], message
    if parts[0] == "content" and len(parts) >= 3:  # content.fr (a whole section)
        return "languages", message
    return GENERAL, f"{path}: {message}"


def values_of(
    spec: Mapping[str, Any], *, version: int | None = None, default_zone: str = "Europe/Paris"
) -> dict[str, Any]:
    """A stored campaign's spec (:meth:`mailer.campaigns.Campaign.spec`) as form values,
    its times at local time in its zone (``default_zone`` when it names none)."""
    zone = str(spec.get("timezone") or default_zone)
    values: dict[str, Any] = {"name": spec.get("name", ""), "kind": spec.get("kind", "")}
    values["lists"] = list(spec.get("lists", []))
    for name in ("template", "timezone", "ambiguous", "body_format"):
        values[name] = spec.get(name) or ""
    sender = spec.get("sender") or {}
    values["sender_name"] = sender.get("name") or ""
    values["sender_address"] = sender.get("address") or ""
    content = dict(spec.get("content") or {})
    if not content:  # one language at the top of a file
        content = {spec.get("language") or LANGUAGES[0]: {w: spec.get(w, "") for w in WORDS}}
    values["languages"] = list(content)
    for lang, section in content.items():
        for word in WORDS:
            values[f"content.{lang}.{word}"] = section.get(word) or ""
        for word in EVENT_WORDS:
            values[f"content.{lang}.event.{word}"] = (section.get("event") or {}).get(word) or ""
    values["send_at"] = _local(spec.get("send_at"), zone)
    event = spec.get("event") or {}
    for name in EVENT_FIELDS:
        value = event.get(name)
        values[f"event.{name}"] = _local(value, zone) if name in ("start", "end", "announce") else (
            value or ""
        )  # fmt: skip
    values["event.reminders"] = ", ".join(event.get("reminders") or [])
    values["event.invite"] = event.get("invite") or "request"
    values["event.rsvp"] = bool(event.get("rsvp"))
    newsletter = spec.get("newsletter") or {}
    values["newsletter.cron"] = newsletter.get("cron") or ""
    values["newsletter.until"] = _local(newsletter.get("until"), zone)
    values["version"] = "" if version is None else str(version)
    return values


def _local(value: Any, zone: str) -> str:
    """A stored time as a ``datetime-local`` input shows it (minutes, at the campaign's
    local time when it carries a UTC offset: the same instant read back), "" for none."""
    if not value or value == "now":
        return ""
    moment = value if isinstance(value, datetime) else None
    if moment is None:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)[:16]  # the model says what is wrong with it when read back
    if moment.tzinfo is not None:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError, OSError):
            moment = moment.astimezone(ZoneInfo(zone))
    return moment.replace(tzinfo=None).isoformat()[:16]


def blank(kind: str, *, lists: Iterable[str] = ()) -> dict[str, Any]:
    """The values of a new campaign's form: French and English, an invitation by default."""
    values = values_of({"kind": kind, "lists": list(lists), "content": {"fr": {}, "en": {}}})
    values["body_format"] = "markdown"
    return values


__all__ = [
    "GENERAL",
    "KINDS",
    "LANGUAGES",
    "MAX_BODY",
    "FormReading",
    "blank",
    "raw_of",
    "read",
    "split_error",
    "values_from",
    "values_of",
]
