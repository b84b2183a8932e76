"""The campaign form's helpers beside its pages (:mod:`mailer.web.console.compose`): what the
form offers (template kinds, common zones), a newsletter's cron in words with its next dates,
the templates compiled once per language before a draft is saved (a Jinja error in a body is
said beside that body, with its line), the field ids and labels of the error summary, and a
stored spec written back as a campaign file (TOML, times as TOML local date-times).

Pure but for reading the templates folder; no store.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli_w

from mailer import schedule
from mailer.campaigns import Campaign
from mailer.errors import TemplateError
from mailer.models import EventInfo, ListInfo, SendInfo
from mailer.render import Renderer
from mailer.web.console.campaign_form import GENERAL, LANGUAGES

# The zones staff most often need; any other IANA name may be typed.
COMMON_ZONES = (
    "Europe/Paris", "Europe/Brussels", "Europe/Luxembourg", "Europe/Zurich", "Europe/London",
    "Europe/Dublin", "Europe/Lisbon", "Europe/Madrid", "Europe/Berlin", "Europe/Rome",
    "Europe/Amsterdam", "Europe/Athens", "America/Montreal", "America/New_York",
    "America/Chicago", "America/Los_Angeles", "America/Guadeloupe", "America/Martinique",
    "America/Cayenne", "Indian/Reunion", "Indian/Mayotte", "Pacific/Noumea", "Pacific/Tahiti",
    "Africa/Dakar", "Africa/Casablanca", "Asia/Tokyo", "Australia/Sydney", "UTC",
)  # fmt: skip
NOT_CAMPAIGNS = ("base", "confirm")  # the shared layout and the system's confirmation mail
ISSUES = 5  # a newsletter's next dates shown under its cron
# The spec's local times, written as TOML date-times (not strings) in a downloaded file.
TIMES = (("send_at",), ("event", "start"), ("event", "end"), ("event", "announce"),
         ("newsletter", "until"))  # fmt: skip


def field_id(name: str) -> str:
    """The HTML id of a form field (``content.fr.body`` -> ``f-content-fr-body``)."""
    return "f-" + name.replace(".", "-").replace("_", "-")


def label_of(name: str, words: Mapping[str, str]) -> str:
    """The words naming a field in the error summary (``Objet (fr)``); the field's own name
    for one the form does not show."""
    parts = name.split(".")
    if parts[0] == "content" and len(parts) >= 3:
        key = "compose_" + "_".join(["event", *parts[3:]] if parts[2] == "event" else parts[2:])
        return f"{words.get(key, name)} ({parts[1]})"
    if name == GENERAL:
        return words["compose_general"]
    return words.get("compose_" + name.replace(".", "_"), name)


def template_kinds(templates_dir: Path) -> list[str]:
    """The template kinds a campaign may use: ``templates/email/<kind>.<lang>.html`` in one of
    the form's languages, the layout and the confirmation mail left out."""
    found = set()
    for lang in LANGUAGES:
        for path in (templates_dir / "email").glob(f"*.{lang}.html"):
            kind = path.name.removesuffix(f".{lang}.html")
            if "." not in kind and kind not in NOT_CAMPAIGNS:
                found.add(kind)
    return sorted(found)


@dataclass(frozen=True, slots=True)
class CronWords:
    """A newsletter's cron said in words, with its next issues in local time; or why not."""

    cron: str
    text: str = ""
    dates: list[datetime] = field(default_factory=list)
    zone: str = ""
    error: str = ""


def cron_words(cron: str, zone: str, lang: str, *, now: datetime) -> CronWords:
    """``cron`` in the staff's words and its next :data:`ISSUES` dates in ``zone``; an empty
    cron is nothing to say, an invalid one (or zone) the scheduler's message."""
    cron = cron.strip()
    if not cron:
        return CronWords(cron)
    try:
        tz = ZoneInfo(zone.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return CronWords(cron, error=f"timezone: unknown time zone {zone.strip()[:60]!r}")
    try:
        text = schedule.describe_cron(cron, lang)
        dates = schedule.next_issues(cron, tz, now, count=ISSUES)
    except schedule.ScheduleError as exc:
        return CronWords(cron, error=str(exc))
    return CronWords(cron, text=text, dates=dates, zone=tz.key)


@functools.lru_cache(maxsize=4)
def renderer_for(templates_dir: Path) -> Renderer:
    """The renderer of a templates folder, made once (its compiled templates are kept)."""
    return Renderer(templates_dir)


def template_errors(
    campaign: Campaign,
    *,
    templates_dir: Path,
    first_list: ListInfo,
    sender: tuple[str, str],
    action: str,
    event: EventInfo | None,
    now: datetime,
) -> list[tuple[str, str]]:
    """Compile the campaign's templates and words as its send would, one language at a time
    (so an error is said beside the words of its language): ``(field, message)`` pairs, the
    renderer's messages, which name the line."""
    renderer = renderer_for(templates_dir)
    content = campaign.content
    found: list[tuple[str, str]] = []
    for text in content.texts:
        one = replace(content, subject=text.subject, body=text.body, texts=(text,))
        send = SendInfo(one, first_list, sender[0], sender[1], action, now, event)
        try:
            renderer.compile(send)
        except TemplateError as exc:
            message = str(exc)
            if message.startswith("the campaign's subject"):
                name = f"content.{text.locale}.subject"
            elif message.startswith("the campaign's body"):
                name = f"content.{text.locale}.body"
            else:  # the template's own files
                name = "template"
            found.append((name, message))
    return found


def campaign_toml(spec: Mapping[str, Any], *, heading: str = "") -> str:
    """A stored spec as a campaign file ``mailer campaign create`` reads back into the same
    campaign: its local times as TOML local date-times, everything else as it is stored."""
    data = copy.deepcopy(dict(spec))
    for path in TIMES:
        holder: Any = data
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(holder.get(path[-1]), str):
            with contextlib.suppress(ValueError):  # "now" is kept as the word it is
                holder[path[-1]] = datetime.fromisoformat(holder[path[-1]])
    text = tomli_w.dumps(data)
    tomllib.loads(text)  # what we hand out reads back
    lines = "".join(f"# {line}\n" for line in heading.splitlines())
    return lines + text


__all__ = [
    "COMMON_ZONES",
    "CronWords",
    "campaign_toml",
    "cron_words",
    "field_id",
    "label_of",
    "template_errors",
    "template_kinds",
]
