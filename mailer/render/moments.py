"""An event's times and changes in words, per language and reader: what the templates show.

- :func:`event_context` is the event as the templates of one language see it (its words in
  that language, the days left counted from ``now`` in the event's zone, or in rehearsal days
  when a day of reminder offset is shorter, what changed at its last update);
- :func:`when` is the sentence of its date and time, always with the event's zone and, for a
  reader in another zone, their own time too: "lundi 15 janvier 2024 à 09:00, heure de Paris
  (08:00 à Londres)".

Pure: ``now`` comes in; French and English words here, other languages get the English.
"""

from __future__ import annotations

import contextlib
import math
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_skeleton, format_time, get_timezone_location

from mailer.models import EventInfo
from mailer.render.dates import first_of_month

_VOWELS = tuple("AEIOUYÉÈÊÂÎÔÛ")


def _language(locale: str) -> str:
    return "fr" if locale.split("_")[0] == "fr" else "en"


def day_text(value: datetime, locale: str, fmt: str = "full") -> str:
    """The date in words, in the language; French day 1 is "1er"."""
    return first_of_month(format_date(value, fmt, locale=locale), locale)


def _day_month(value: datetime, locale: str) -> str:
    """ "15 janvier", "January 15": the day and month in the language's own order."""
    return first_of_month(format_skeleton("MMMMd", value, locale=locale), locale)


def _time(value: datetime, locale: str) -> str:
    return format_time(value, "short", locale=locale)


def _city(zone: ZoneInfo, locale: str) -> str:
    if zone.key in ("UTC", "Etc/UTC"):
        return "UTC"
    return str(get_timezone_location(zone, locale=locale, return_city=True))


def zone_words(zone: ZoneInfo, locale: str) -> str:
    """ "heure de Paris", "heure d’Amsterdam", "Paris time", "UTC"."""
    city = _city(zone, locale)
    if city == "UTC":
        return "UTC"
    if _language(locale) == "fr":
        return f"heure d’{city}" if city.startswith(_VOWELS) else f"heure de {city}"
    return f"{city} time"


@lru_cache(maxsize=256)
def when(
    start: datetime, end: datetime | None, zone_key: str, locale: str, reader_key: str | None
) -> str:
    """The event's date and time, with its zone, and the reader's own time in theirs."""
    zone = ZoneInfo(zone_key)
    s, e = start.astimezone(zone), end.astimezone(zone) if end else None
    fr = _language(locale) == "fr"
    if e is None:
        text = f"{day_text(s, locale)} {'à' if fr else 'at'} {_time(s, locale)}"
    elif e.date() == s.date():
        text = (
            f"{day_text(s, locale)}, de {_time(s, locale)} à {_time(e, locale)}"
            if fr
            else f"{day_text(s, locale)}, {_time(s, locale)} to {_time(e, locale)}"
        )
    else:
        text = (
            f"du {day_text(s, locale)} à {_time(s, locale)} au {day_text(e, locale)} à "
            f"{_time(e, locale)}"
            if fr
            else f"from {day_text(s, locale)} at {_time(s, locale)} to {day_text(e, locale)} "
            f"at {_time(e, locale)}"
        )
    text += f", {zone_words(zone, locale)}"
    if reader_key and reader_key != zone_key:
        text += f" ({_reader(s, e, ZoneInfo(reader_key), locale)})"
    return text


def _reader(start: datetime, end: datetime | None, reader: ZoneInfo, locale: str) -> str:
    """The reader's own time: "08:00 à Londres", "de 08:00 à 16:30 à Londres", "le 16 janvier
    à 01:00 à Auckland", "8:00 AM in London", "8:00 AM UTC"..."""
    fr = _language(locale) == "fr"
    s, e = start.astimezone(reader), end.astimezone(reader) if end else None
    city = _city(reader, locale)
    place = "UTC" if city == "UTC" else (f"à {city}" if fr else f"in {city}")
    if s.utcoffset() == start.utcoffset():
        return (f"même heure {place}" if fr else f"the same time {place}").replace(
            "même heure UTC", "même heure en UTC"
        )
    other_day = s.date() != start.date() or (e is not None and e.date() != s.date())

    def at(moment: datetime) -> str:
        day = _day_month(moment, locale)
        if not other_day:
            return _time(moment, locale)
        return f"{day} à {_time(moment, locale)}" if fr else f"{day} at {_time(moment, locale)}"

    if e is None:
        text = f"le {at(s)}" if fr and other_day else at(s)
    elif e.date() == s.date() and other_day:  # one day of theirs, not the event's
        day = _day_month(s, locale)
        text = (
            f"le {day}, de {_time(s, locale)} à {_time(e, locale)}"
            if fr
            else f"{day}, {_time(s, locale)} to {_time(e, locale)}"
        )
    elif other_day:
        text = f"du {at(s)} au {at(e)}" if fr else f"from {at(s)} to {at(e)}"
    else:
        text = f"de {at(s)} à {at(e)}" if fr else f"{at(s)} to {at(e)}"
    return f"{text} {place}"


def days_left(event: EventInfo, now: datetime, zone: ZoneInfo) -> int:
    """Days from ``now`` to the start: calendar days in the event's zone, or, in a rehearsal
    (a day of offset shorter than a day), rehearsal days rounded up: a reminder whose pass
    starts a few seconds late still says "tomorrow", not "today"."""
    if event.day_seconds and event.day_seconds != 86400:
        return max(math.ceil((event.start - now).total_seconds() / event.day_seconds), 0)
    return max((event.start.astimezone(zone).date() - now.astimezone(zone).date()).days, 0)


def days_words(days: int, locale: str) -> str:
    """ "aujourd’hui", "demain", "dans 7 jours"; "today", "tomorrow", "in 7 days"."""
    if _language(locale) == "fr":
        return "aujourd’hui" if days == 0 else "demain" if days == 1 else f"dans {days} jours"
    return "today" if days == 0 else "tomorrow" if days == 1 else f"in {days} days"


_LABELS = {
    "fr": {"when": "Date", "place": "Lieu", "title": "Titre", "link": "Lien",
           "description": "Description", "none": "(aucun)"},
    "en": {"when": "When", "place": "Where", "title": "Title", "link": "Link",
           "description": "Description", "none": "(none)"},
}  # fmt: skip


def changes(event: EventInfo, zone: ZoneInfo, locale: str) -> list[dict[str, str]]:
    """What the last update changed: ``[{"label", "before", "after"}]`` (empty if none)."""
    before = event.previous
    if before is None:
        return []
    words = _LABELS[_language(locale)]
    out = []
    if (before.start, before.end) != (event.start, event.end):
        out.append(("when", when(before.start, before.end, zone.key, locale, None),
                    when(event.start, event.end, zone.key, locale, None)))  # fmt: skip
    for name in ("place", "title", "link", "description"):
        old, new = getattr(before, name) or "", getattr(event, name) or ""
        if old != new:
            out.append((name, old or words["none"], new or words["none"]))
    return [{"label": words[k], "before": b, "after": a} for k, b, a in out]


def event_context(
    event: EventInfo | None, now: datetime, zone: ZoneInfo, locale: str
) -> dict[str, Any] | None:
    """``event`` as the templates of ``locale`` get it (``event.start``, ``event.days_left``,
    ``event.changes``...)."""
    if event is None:
        return None
    event = event.localized(locale)
    return {
        "title": event.title,
        "start": event.start.astimezone(zone),
        "end": event.end.astimezone(zone) if event.end else None,
        "place": event.place,
        "link": event.link,
        "description": event.description,
        "days_left": days_left(event, now, zone),
        "days_words": days_words(days_left(event, now, zone), locale),
        "status": event.status,
        "sequence": event.sequence,
        "changes": changes(event, zone, locale),
        "zone": zone_words(zone, locale),
    }


def issue_date(key: str, now: datetime, zone: ZoneInfo) -> datetime:
    """The local day a newsletter issue is of (its key "issue:2026-12-01", else today), as
    local noon (the date filters take a datetime)."""
    day: date = now.astimezone(zone).date()
    if key.startswith("issue:"):
        with contextlib.suppress(ValueError):
            day = date.fromisoformat(key.removeprefix("issue:"))
    return datetime(day.year, day.month, day.day, 12, tzinfo=zone)
